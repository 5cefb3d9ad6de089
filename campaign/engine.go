package campaign

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-ldap/ldap/v3"
	"github.com/jmoiron/sqlx"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/passbridge/passbridge/config"
	"github.com/passbridge/passbridge/enroll/mail"
	"github.com/passbridge/passbridge/schema"
	"github.com/passbridge/passbridge/store"
)

// Link is a one-time enrollment link made for a campaign mail.
type Link struct {
	URL       string
	TokenID   int64
	ExpiresAt time.Time
}

// Links makes the personal links the mail carries; the portal
// (enroll.Portal) is the real one.
type Links interface {
	// CampaignLink makes a one-time enrollment link for the identity,
	// valid for ttl. An identity that may not use the portal is an error
	// wrapping ErrIneligible.
	CampaignLink(ctx context.Context, identityID int64, ttl time.Duration, createdBy string) (Link, error)
}

// ErrIneligible means the person may not use the portal (disabled,
// unlinked, the application row deactivated): nobody to invite.
var ErrIneligible = errors.New("may not use the portal")

// Directory resolves a group campaign's members; *directory.Client is the
// real one.
type Directory interface {
	Members(ctx context.Context, groupDN string) ([]string, error)
}

// Options are the engine's dependencies.
type Options struct {
	DB *store.DB
	// Links and Mail are needed to send; without either, passes plan but
	// nothing is sent (and the log says why).
	Links Links
	Mail  mail.Sender
	// Directory resolves group campaigns; nil: they wait, saying why.
	Directory Directory
	Log       *slog.Logger
	// Now is the campaign clock (start, reminders, deadline): tests step
	// it. Default time.Now. The pacing of sends is in real time.
	Now func() time.Time
	// Node names this replica in claimed_by (default hostname:pid).
	Node string
	// Registerer receives the engine's metrics (the daemon's registry);
	// nil: none.
	Registerer prometheus.Registerer
}

// Engine runs campaigns: on the replica that holds LockName, one Pass per
// campaign.interval.
type Engine struct {
	cfg   *config.Config
	t     *tables
	opts  Options
	log   *slog.Logger
	now   func() time.Time
	node  string
	pace  *pacer
	wake  chan struct{}
	sent  *prometheus.CounterVec
	lmu   sync.Mutex
	lock  *store.Lock
	delay func(attempts int) time.Duration
}

// New builds the engine of a configuration (validated: campaign.*).
func New(cfg *config.Config, opts Options) (*Engine, error) {
	if opts.DB == nil {
		return nil, errors.New("campaign engine: no database")
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Node == "" {
		host, _ := os.Hostname()
		opts.Node = host + ":" + strconv.Itoa(os.Getpid())
	}
	e := &Engine{cfg: cfg, t: newTables(opts.DB, cfg), opts: opts, log: opts.Log, node: opts.Node,
		now:  func() time.Time { return stamp(opts.Now()) },
		pace: newPacer(cfg.Campaign.PerMinute), wake: make(chan struct{}, 1)}
	retry := cfg.Campaign.Retry.D()
	e.delay = func(attempts int) time.Duration {
		d := retry << min(max(attempts-1, 0), 20)
		if d > time.Hour || d <= 0 {
			d = time.Hour
		}
		return d
	}
	e.sent = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "passbridge", Name: "campaign_mail_total",
		Help: "Campaign mail this process handed to the mail server, by result (sent, bounced, retry: a temporary failure, failed: given up, unknown: interrupted).",
	}, []string{"result"})
	for _, r := range []string{"sent", "bounced", "retry", "failed", "unknown"} {
		e.sent.WithLabelValues(r)
	}
	if opts.Registerer != nil {
		if err := opts.Registerer.Register(e.sent); err != nil {
			return nil, fmt.Errorf("campaign metrics: %w", err)
		}
		if err := opts.Registerer.Register(funnelCollector{db: opts.DB, cfg: cfg, log: e.log, now: e.now}); err != nil {
			return nil, fmt.Errorf("campaign metrics: %w", err)
		}
	}
	return e, nil
}

// Wake asks for a pass now (a campaign was created or resumed here).
func (e *Engine) Wake() {
	select {
	case e.wake <- struct{}{}:
	default:
	}
}

// Run passes every campaign.interval until ctx ends, on whichever replica
// holds the lock; then it lets the lock go. A mail being sent when ctx
// ends is finished (within mail.timeout) and recorded.
func (e *Engine) Run(ctx context.Context) {
	t := time.NewTicker(e.cfg.Campaign.Interval.D())
	defer t.Stop()
	defer e.release()
	for {
		if _, err := e.Pass(ctx); err != nil && !errors.Is(err, ErrNotLeader) && ctx.Err() == nil {
			e.log.Warn("campaign pass failed; the next one tries again", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-e.wake:
		}
	}
}

// Close lets the lock go (Run does when it returns): another replica, or
// a new engine in this process, takes over at its next pass.
func (e *Engine) Close() { e.release() }

func (e *Engine) release() {
	e.lmu.Lock()
	defer e.lmu.Unlock()
	if e.lock != nil {
		_ = e.lock.Unlock()
		e.lock = nil
	}
}

// ErrNotLeader means another replica holds the campaign lock: it sends.
var ErrNotLeader = errors.New("another replica runs the campaigns")

// lead takes the lock, or checks that it is still held.
func (e *Engine) lead(ctx context.Context) error {
	e.lmu.Lock()
	defer e.lmu.Unlock()
	if e.lock != nil {
		held, err := e.lock.Held(ctx)
		if err == nil && held {
			return nil
		}
		e.log.Warn("the campaign lock was lost (the database session ended); taking it again", "err", err)
		_ = e.lock.Unlock()
		e.lock = nil
	}
	l, ok, err := e.opts.DB.TryLock(ctx, LockName)
	if err != nil {
		return fmt.Errorf("take the campaign lock: %w", err)
	}
	if !ok {
		return ErrNotLeader
	}
	e.lock = l
	e.log.Info("this replica runs the campaigns", "node", e.node)
	return nil
}

// Stats are the counts of one pass.
type Stats struct {
	Campaigns int `json:"campaigns"`
	Added     int `json:"added"`
	Dropped   int `json:"dropped"`
	Restored  int `json:"restored"`
	Enrolled  int `json:"enrolled"`
	Reminders int `json:"reminders"`
	Ended     int `json:"ended"`
	Enforced  int `json:"enforced"`
	Orphans   int `json:"orphans"`
	Sent      int `json:"sent"`
	Bounced   int `json:"bounced"`
	Retried   int `json:"retried"`
	Failed    int `json:"failed"`
}

// Pass runs every active campaign once, if this replica holds the lock
// (ErrNotLeader otherwise): resolve, plan, apply, send what is due.
func (e *Engine) Pass(ctx context.Context) (Stats, error) {
	var st Stats
	if err := e.lead(ctx); err != nil {
		return st, err
	}
	start := time.Now()
	now := e.now()
	// With the lock held and nothing being sent here, a message still
	// "sending" was being sent by a process that stopped: whether the
	// server took it is unknown, and sending it again could deliver it
	// twice.
	res, err := store.Exec(ctx, e.opts.DB, "UPDATE "+e.t.m+" SET "+e.t.q("state")+" = ?, "+e.t.q("error")+" = ? WHERE "+e.t.q("state")+" = ?",
		MsgUnknown, "the sending process stopped during delivery: not sent again, so that nobody gets it twice", MsgSending)
	if err != nil {
		return st, fmt.Errorf("close interrupted sends: %w", err)
	}
	if n, _ := res.RowsAffected(); n > 0 {
		st.Orphans = int(n)
		e.sent.WithLabelValues("unknown").Add(float64(n))
		e.log.Warn("campaign mail interrupted by a stopped sender: marked unknown, not resent", "messages", n)
	}

	campaigns, err := e.t.list(ctx, e.t.q("state")+" = ? AND "+e.t.q("starts_at")+" <= ?", StateActive, now)
	if err != nil {
		return st, err
	}
	var snap *snapshot
	for _, c := range campaigns {
		st.Campaigns++
		if c.Deadline != nil && !now.Before(*c.Deadline) {
			n, err := e.end(ctx, c, now)
			if err != nil {
				return st, err
			}
			st.Ended++
			st.Enforced += n
			continue
		}
		if snap == nil {
			if snap, err = e.t.snapshot(ctx); err != nil {
				return st, err
			}
		}
		p, err := e.plan(ctx, c, snap, now)
		if err != nil {
			e.setError(ctx, c, err)
			e.log.Warn("campaign waits: its target cannot be resolved", "campaign", c.Name, "err", err)
			continue
		}
		if err := e.apply(ctx, c, p, now); err != nil {
			return st, fmt.Errorf("campaign %q: %w", c.Name, err)
		}
		e.setError(ctx, c, nil)
		st.Added += len(p.add)
		st.Dropped += len(p.drop)
		st.Restored += len(p.restore)
		st.Enrolled += len(p.enrolled)
		st.Reminders += len(p.remind)
	}
	if err := e.sendDue(ctx, campaigns, &st); err != nil {
		return st, err
	}
	if st != (Stats{Campaigns: st.Campaigns}) {
		e.log.Info("campaign pass finished", "campaigns", st.Campaigns, "added", st.Added, "dropped", st.Dropped, "restored", st.Restored,
			"enrolled", st.Enrolled, "reminders", st.Reminders, "ended", st.Ended, "enforced", st.Enforced, "orphans", st.Orphans,
			"sent", st.Sent, "bounced", st.Bounced, "retried", st.Retried, "failed", st.Failed, "took_ms", time.Since(start).Milliseconds())
	}
	return st, nil
}

// setError records (or clears) why a campaign's target could not be
// resolved, for `campaign show` and the console.
func (e *Engine) setError(ctx context.Context, c *Campaign, err error) {
	var v any
	if err != nil {
		v = clip(err.Error(), 2000)
	} else if c.LastError == "" {
		return
	}
	if _, xerr := store.Exec(ctx, e.opts.DB, "UPDATE "+e.t.campaigns+" SET "+e.t.q("last_error")+" = ? WHERE "+e.t.q("id")+" = ?", v, c.ID); xerr != nil {
		e.log.Warn("cannot record the campaign's error", "campaign", c.Name, "err", xerr)
	}
}

// person is an identity as a pass sees it.
type person struct {
	ID          int64          `db:"id"`
	DirectoryID string         `db:"directory_id"`
	DN          string         `db:"dn"`
	Username    string         `db:"username"`
	Email       sql.NullString `db:"email"`
	DisplayName sql.NullString `db:"display_name"`
	State       string         `db:"state"`
	UserKey     any            `db:"user_key"`
}

// eligible: a person the portal would let in, with an address to mail.
func (p *person) eligible() bool {
	return p.State == schema.StateActive && p.UserKey != nil && strings.TrimSpace(p.Email.String) != ""
}

// why says why a person is not (or no longer) someone to mail.
func (p *person) why(target Target) string {
	switch {
	case p == nil:
		return "the identity is gone"
	case p.State == schema.StateDisabled:
		return "disabled in the directory"
	case p.State != schema.StateActive:
		return "no longer in the directory's scope"
	case p.UserKey == nil:
		return "no longer linked to a users row"
	case strings.TrimSpace(p.Email.String) == "":
		return "has no mail address in the directory"
	}
	return "left the campaign's " + map[string]string{TargetGroup: "group", TargetOU: "OU", TargetUsers: "list of users"}[target.Kind]
}

// snapshot is what every campaign of a pass reads: the identities and who
// has a passkey (the earliest created of their active ones).
type snapshot struct {
	people   map[int64]*person
	enrolled map[string]time.Time // by users key
}

func keyString(k any) string {
	switch v := k.(type) {
	case nil:
		return ""
	case []byte:
		return string(v)
	}
	return fmt.Sprint(k)
}

func (t *tables) snapshot(ctx context.Context) (*snapshot, error) {
	s := &snapshot{people: map[int64]*person{}, enrolled: map[string]time.Time{}}
	var people []*person
	if err := store.Select(ctx, t.db, &people, "SELECT "+t.cols("", "id", "directory_id", "dn", "username", "email", "display_name", "state", "user_key")+" FROM "+t.n.Identities); err != nil {
		return nil, fmt.Errorf("read identities: %w", err)
	}
	for _, p := range people {
		if b, ok := p.UserKey.([]byte); ok {
			p.UserKey = string(b)
		}
		s.people[p.ID] = p
	}
	// Every active passkey, the earliest per users row taken here: SQLite
	// gives MIN() of a time column back as text.
	var creds []struct {
		UserKey any       `db:"user_key"`
		Created time.Time `db:"created_at"`
	}
	if err := store.Select(ctx, t.db, &creds, "SELECT "+t.cols("", "user_key", "created_at")+" FROM "+t.n.Credentials+" WHERE "+t.q("revoked_at")+" IS NULL"); err != nil {
		return nil, fmt.Errorf("read passkeys: %w", err)
	}
	for _, c := range creds {
		k := keyString(c.UserKey)
		if first, ok := s.enrolled[k]; !ok || c.Created.Before(first) {
			s.enrolled[k] = c.Created.UTC()
		}
	}
	return s, nil
}

// audience resolves who the campaign is for now: eligible identities in
// its target, by identity id.
func (e *Engine) audience(ctx context.Context, c *Campaign, s *snapshot) (map[int64]*person, error) {
	out := map[int64]*person{}
	switch c.Target.Kind {
	case TargetUsers:
		want := map[string]bool{}
		for _, u := range c.Target.Users {
			want[u] = true
		}
		for _, p := range s.people {
			if p.eligible() && want[strings.ToLower(p.Username)] {
				out[p.ID] = p
			}
		}
	case TargetOU:
		ou, err := ldap.ParseDN(c.Target.DN)
		if err != nil {
			return nil, fmt.Errorf("the OU %q is not a DN: %w", c.Target.DN, err)
		}
		for _, p := range s.people {
			if !p.eligible() {
				continue
			}
			if dn, err := ldap.ParseDN(p.DN); err == nil && ou.AncestorOfFold(dn) {
				out[p.ID] = p
			}
		}
	case TargetGroup:
		if e.opts.Directory == nil {
			return nil, errors.New("no directory to resolve the group's members (directory.urls)")
		}
		ids, err := e.opts.Directory.Members(ctx, c.Target.DN)
		if err != nil {
			return nil, err
		}
		in := map[string]bool{}
		for _, id := range ids {
			in[id] = true
		}
		for _, p := range s.people {
			if p.eligible() && in[p.DirectoryID] {
				out[p.ID] = p
			}
		}
	default:
		return nil, fmt.Errorf("unknown target kind %q", c.Target.Kind)
	}
	return out, nil
}

// recipient is a stored recipient with the steps of its messages.
type recipient struct {
	ID         int64        `db:"id"`
	IdentityID int64        `db:"identity_id"`
	State      string       `db:"state"`
	AddedAt    time.Time    `db:"added_at"`
	InvitedAt  sql.NullTime `db:"invited_at"`
	steps      map[string]string
}

// plan is what one pass changes in one campaign, as plain data.
type plan struct {
	add      []int64 // identity ids: a recipient and its invitation
	drop     []change
	restore  []change
	enrolled []change
	remind   []reminderPlan
}

type change struct {
	recipient int64
	reason    string    // drop: why; restore: the state to restore
	at        time.Time // enrolled: when
	requeue   bool      // restore: the cancelled invitation goes out again
}

type reminderPlan struct {
	recipient, identity int64
	step                string
	skip                []string // earlier reminders due at the same time: not sent
}

func (e *Engine) plan(ctx context.Context, c *Campaign, s *snapshot, now time.Time) (*plan, error) {
	aud, err := e.audience(ctx, c, s)
	if err != nil {
		return nil, err
	}
	recs, err := e.t.recipientsOf(ctx, c.ID)
	if err != nil {
		return nil, err
	}
	p := &plan{}
	live := 0
	for _, r := range recs {
		if r.State == RecipientPending || r.State == RecipientInvited {
			live++
		}
	}
	if len(aud) == 0 && live > 0 {
		// The same guard as the sync's: an empty answer never means that
		// everyone left.
		return nil, fmt.Errorf("the target has nobody in scope now, but %d people are being invited: nobody was dropped; cancel the campaign if this is intended", live)
	}
	known := map[int64]bool{}
	for _, r := range recs {
		known[r.IdentityID] = true
		pp, in := aud[r.IdentityID]
		switch r.State {
		case RecipientEnrolled:
			continue
		case RecipientDropped:
			if in {
				if _, has := s.enrolled[keyString(pp.UserKey)]; !has {
					state := RecipientPending
					if r.InvitedAt.Valid {
						state = RecipientInvited
					}
					p.restore = append(p.restore, change{recipient: r.ID, reason: state, requeue: !r.InvitedAt.Valid && r.steps[StepInvite] == MsgCancelled})
				}
			}
			continue
		}
		if !in {
			p.drop = append(p.drop, change{recipient: r.ID, reason: s.people[r.IdentityID].why(c.Target)})
			continue
		}
		if first, has := s.enrolled[keyString(pp.UserKey)]; has {
			p.enrolled = append(p.enrolled, change{recipient: r.ID, at: maxTime(first, r.AddedAt.UTC())})
			continue
		}
		if r.State == RecipientInvited {
			if rp := dueReminder(c, r, now); rp != nil {
				p.remind = append(p.remind, *rp)
			}
		}
	}
	var add []int64
	for id, pp := range aud {
		if known[id] {
			continue
		}
		if _, has := s.enrolled[keyString(pp.UserKey)]; has {
			continue // already has a passkey: nothing to invite to
		}
		add = append(add, id)
	}
	slices.Sort(add)
	p.add = add
	return p, nil
}

// dueReminder is the reminder to send a recipient now, if one is due: the
// latest of those due that has no message yet; earlier ones due at the
// same time (the daemon was down, the clock jumped) are skipped rather
// than sent in a burst. A reminder due before the invitation went out, or
// at or after the deadline, is never sent.
func dueReminder(c *Campaign, r *recipient, now time.Time) *reminderPlan {
	invited := r.InvitedAt.Time.UTC()
	var due []Reminder
	var dueAt []time.Time
	var skip []string
	for _, rem := range c.Reminders {
		if _, done := r.steps[rem.Name]; done {
			continue
		}
		var at time.Time
		if rem.BeforeDeadline > 0 {
			if c.Deadline == nil {
				continue
			}
			at = c.Deadline.Add(-rem.BeforeDeadline)
		} else {
			at = invited.Add(rem.After)
		}
		if at.After(now) {
			continue
		}
		if !at.After(invited) || (c.Deadline != nil && !now.Before(*c.Deadline)) {
			skip = append(skip, rem.Name)
			continue
		}
		due = append(due, rem)
		dueAt = append(dueAt, at)
	}
	if len(due) == 0 && len(skip) == 0 {
		return nil
	}
	rp := &reminderPlan{recipient: r.ID, identity: r.IdentityID, skip: skip}
	latest := -1
	for i := range due {
		if latest < 0 || dueAt[i].After(dueAt[latest]) {
			latest = i
		}
	}
	for i, rem := range due {
		if i == latest {
			rp.step = rem.Name
		} else {
			rp.skip = append(rp.skip, rem.Name)
		}
	}
	slices.Sort(rp.skip)
	return rp
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

func (t *tables) recipientsOf(ctx context.Context, campaignID int64) ([]*recipient, error) {
	var recs []*recipient
	if err := store.Select(ctx, t.db, &recs, "SELECT "+t.cols("", "id", "identity_id", "state", "added_at", "invited_at")+" FROM "+t.recipients+
		" WHERE "+t.q("campaign_id")+" = ? ORDER BY "+t.q("id"), campaignID); err != nil {
		return nil, fmt.Errorf("read recipients: %w", err)
	}
	var msgs []struct {
		Recipient int64  `db:"recipient_id"`
		Step      string `db:"step"`
		State     string `db:"state"`
	}
	if err := store.Select(ctx, t.db, &msgs, "SELECT "+t.cols("", "recipient_id", "step", "state")+" FROM "+t.m+" WHERE "+t.q("campaign_id")+" = ?", campaignID); err != nil {
		return nil, fmt.Errorf("read messages: %w", err)
	}
	byID := make(map[int64]*recipient, len(recs))
	for _, r := range recs {
		r.steps = map[string]string{}
		byID[r.ID] = r
	}
	for _, m := range msgs {
		if r := byID[m.Recipient]; r != nil {
			r.steps[m.Step] = m.State
		}
	}
	return recs, nil
}

// batch is how many changes one transaction applies.
const batch = 500

// apply writes a plan in transactions of at most batch changes. A pass
// that stops half-way leaves whole batches: the next pass plans the rest.
func (e *Engine) apply(ctx context.Context, c *Campaign, p *plan, now time.Time) error {
	t := e.t
	var ops []func(tx *sqlx.Tx) error
	for _, id := range p.add {
		ops = append(ops, func(tx *sqlx.Tx) error {
			rid, err := t.db.Dialect().InsertID(ctx, tx, "INSERT INTO "+t.recipients+" ("+t.cols("", "campaign_id", "identity_id", "state", "added_at", "updated_at")+") VALUES (?, ?, ?, ?, ?)", "id",
				c.ID, id, RecipientPending, now, now)
			if err != nil {
				return fmt.Errorf("add recipient: %w", err)
			}
			return t.queue(ctx, tx, c.ID, rid, id, StepInvite, MsgQueued, now)
		})
	}
	for _, d := range p.drop {
		ops = append(ops, func(tx *sqlx.Tx) error {
			if _, err := store.Exec(ctx, tx, "UPDATE "+t.recipients+" SET "+t.q("state")+" = ?, "+t.q("state_reason")+" = ?, "+t.q("dropped_at")+" = ?, "+t.q("updated_at")+" = ? WHERE "+t.q("id")+" = ?",
				RecipientDropped, clip(d.reason, 255), now, now, d.recipient); err != nil {
				return fmt.Errorf("drop recipient: %w", err)
			}
			return t.quiet(ctx, tx, now, d.recipient, "dropped: "+d.reason)
		})
	}
	for _, d := range p.enrolled {
		ops = append(ops, func(tx *sqlx.Tx) error {
			if _, err := store.Exec(ctx, tx, "UPDATE "+t.recipients+" SET "+t.q("state")+" = ?, "+t.q("enrolled_at")+" = ?, "+t.q("updated_at")+" = ? WHERE "+t.q("id")+" = ?",
				RecipientEnrolled, d.at, now, d.recipient); err != nil {
				return fmt.Errorf("mark enrolled: %w", err)
			}
			return t.quiet(ctx, tx, now, d.recipient, "enrolled")
		})
	}
	for _, d := range p.restore {
		ops = append(ops, func(tx *sqlx.Tx) error {
			if _, err := store.Exec(ctx, tx, "UPDATE "+t.recipients+" SET "+t.q("state")+" = ?, "+t.q("state_reason")+" = NULL, "+t.q("dropped_at")+" = NULL, "+t.q("updated_at")+" = ? WHERE "+t.q("id")+" = ?",
				d.reason, now, d.recipient); err != nil {
				return fmt.Errorf("restore recipient: %w", err)
			}
			if !d.requeue {
				return nil
			}
			_, err := store.Exec(ctx, tx, "UPDATE "+t.m+" SET "+t.q("state")+" = ?, "+t.q("next_attempt_at")+" = ?, "+t.q("error")+" = NULL WHERE "+t.q("recipient_id")+" = ? AND "+t.q("step")+" = ? AND "+t.q("state")+" = ?",
				MsgQueued, now, d.recipient, StepInvite, MsgCancelled)
			return err
		})
	}
	for _, r := range p.remind {
		ops = append(ops, func(tx *sqlx.Tx) error {
			for _, s := range r.skip {
				if err := t.queue(ctx, tx, c.ID, r.recipient, r.identity, s, MsgSkipped, now); err != nil {
					return err
				}
			}
			if r.step == "" {
				return nil
			}
			return t.queue(ctx, tx, c.ID, r.recipient, r.identity, r.step, MsgQueued, now)
		})
	}
	for chunk := range slices.Chunk(ops, batch) {
		err := t.db.InTx(ctx, func(tx *sqlx.Tx) error {
			for _, op := range chunk {
				if err := op(tx); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// queue inserts one message. The unique key (campaign, person, step) is
// what makes "never twice" hold even against a bug here.
func (t *tables) queue(ctx context.Context, tx store.Querier, campaignID, recipientID, identityID int64, step, state string, now time.Time) error {
	_, err := store.Exec(ctx, tx, "INSERT INTO "+t.m+" ("+t.cols("", "campaign_id", "recipient_id", "identity_id", "step", "state", "attempts", "next_attempt_at", "queued_at")+") VALUES (?, ?, ?, ?, ?, 0, ?, ?)",
		campaignID, recipientID, identityID, step, state, now, now)
	if err != nil {
		return fmt.Errorf("queue %s: %w", step, err)
	}
	return nil
}

// quiet stops a recipient's mail: queued messages cancelled, unused links
// expired.
func (t *tables) quiet(ctx context.Context, tx store.Querier, now time.Time, recipientID int64, why string) error {
	if _, err := t.cancelQueued(ctx, tx, now, t.q("recipient_id")+" = ?", why, recipientID); err != nil {
		return err
	}
	return t.expireLinks(ctx, tx, t.q("recipient_id")+" = ?", recipientID)
}
