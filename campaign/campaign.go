// Package campaign is how IT raises passkey adoption instead of only
// measuring it: an enrollment campaign invites the people of a directory
// group (nested membership counts), of an OU, or of a list of usernames,
// who have no passkey yet, each by mail with a personal one-time
// enrollment link, reminds those who have not enrolled (so many days after
// the invitation, or before the deadline), drops people who left the scope
// or were disabled, and at the deadline may switch the password fallback
// of the remaining ones to "passkey required".
//
// Everything is in the application database (passbridge_campaigns,
// passbridge_campaign_recipients, passbridge_campaign_messages): a campaign
// survives restarts, and any replica can take over. One replica sends (the
// Engine holds the database lock LockName), at most campaign.per_minute
// messages a minute; a message is one row per person and step under a
// unique key, so nobody ever gets the same step twice, whatever crashes.
//
// The pipeline of one pass reads top to bottom in Engine.Pass: read the
// directory's identities and passkeys, resolve each campaign's audience,
// plan the changes as data (add, drop, enrolled, remind, end), apply them,
// then send what is due.
package campaign

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/go-ldap/ldap/v3"
	"github.com/jmoiron/sqlx"

	"github.com/passbridge/passbridge/audit"
	"github.com/passbridge/passbridge/config"
	"github.com/passbridge/passbridge/schema"
	"github.com/passbridge/passbridge/store"
)

// Campaign states.
const (
	StateActive    = "active"
	StatePaused    = "paused"    // nothing is sent, nobody is added; resume goes on
	StateCancelled = "cancelled" // final: queued mail is cancelled, the links expire
	StateEnded     = "ended"     // the deadline passed: no more mail (and, with enforce, the policy switched)
)

// Target kinds.
const (
	TargetGroup = "group" // a directory group's DN, nested membership counts
	TargetOU    = "ou"    // an OU's DN: every identity whose DN is under it
	TargetUsers = "users" // a list of usernames
)

// Recipient states.
const (
	RecipientPending  = "pending"  // selected, invitation not delivered yet
	RecipientInvited  = "invited"  // the invitation was accepted by the mail server
	RecipientEnrolled = "enrolled" // has a passkey now: no more mail
	RecipientDropped  = "dropped"  // left the scope, disabled, deleted or unlinked: no more mail
)

// Message states.
const (
	MsgQueued    = "queued"    // due at next_attempt_at
	MsgSending   = "sending"   // claimed by the sender
	MsgSent      = "sent"      // accepted by the mail server: delivered
	MsgBounced   = "bounced"   // refused for good (5xx)
	MsgFailed    = "failed"    // still failing after campaign.max_attempts
	MsgUnknown   = "unknown"   // the sender stopped during delivery: not sent again, so that nobody gets it twice
	MsgSkipped   = "skipped"   // a reminder overtaken by a later one that was due at the same time
	MsgCancelled = "cancelled" // the person enrolled or was dropped, or the campaign ended, before it went out
)

// StepInvite is the invitation's step; reminders are named by their Spec.
const StepInvite = "invite"

// LockName is the database lock the sending replica holds.
const LockName = "passbridge.campaigns"

// Audit events.
const (
	EvCreate  = "campaign.create"
	EvPause   = "campaign.pause"
	EvResume  = "campaign.resume"
	EvCancel  = "campaign.cancel"
	EvEnd     = "campaign.end"
	EvEnforce = "campaign.enforce" // one per user whose password policy the deadline switched
)

// Target is who a campaign is for.
type Target struct {
	Kind  string   `json:"kind"`
	DN    string   `json:"dn,omitempty"`    // group, ou
	Users []string `json:"users,omitempty"` // users: lower-cased, sorted
}

func (t Target) String() string {
	if t.Kind == TargetUsers {
		return fmt.Sprintf("users (%d): %s", len(t.Users), strings.Join(t.Users, ", "))
	}
	return t.Kind + " " + t.DN
}

// Reminder is one reminder step: After the invitation was delivered, or
// BeforeDeadline the deadline.
type Reminder struct {
	Name           string        `json:"name"`
	After          time.Duration `json:"after,omitempty"`
	BeforeDeadline time.Duration `json:"before_deadline,omitempty"`
}

// Template is the campaign's mail. Subject, Text and HTML are Go templates
// (text/template for the subject and text, html/template for the HTML)
// over Fields; Text must show {{.Link}}.
type Template struct {
	Company string `json:"company"`
	Subject string `json:"subject"`
	Text    string `json:"text"`
	HTML    string `json:"html,omitempty"`
}

// Campaign is a stored campaign.
type Campaign struct {
	ID         int64      `json:"id"`
	Name       string     `json:"name"`
	State      string     `json:"state"`
	Target     Target     `json:"target"`
	StartsAt   time.Time  `json:"starts_at"`
	Deadline   *time.Time `json:"deadline,omitempty"`
	Reminders  []Reminder `json:"reminders"`
	Template   Template   `json:"template"`
	Enforce    bool       `json:"enforce"`
	Grace      []string   `json:"grace,omitempty"`
	EnforcedAt *time.Time `json:"enforced_at,omitempty"`
	LastError  string     `json:"last_error,omitempty"`
	CreatedBy  string     `json:"created_by"`
	CreatedAt  time.Time  `json:"created_at"`
	UpdatedAt  time.Time  `json:"updated_at"`
}

// Spec is what IT gives to create a campaign.
type Spec struct {
	Name   string
	Target Target
	// StartsAt zero: now.
	StartsAt time.Time
	Deadline *time.Time
	// Reminders in the CLI's notation: "3d" (three days after the
	// invitation), "36h", "deadline-1d" (a day before the deadline).
	Reminders []string
	Template  Template
	// Enforce switches the password policy of those who have not enrolled
	// by the deadline to passkey_required, except the Grace usernames.
	Enforce bool
	Grace   []string
}

// store is the campaign tables of one configuration.
type tables struct {
	db                       *store.DB
	n                        schema.Names
	campaigns, recipients, m string
}

func newTables(db *store.DB, cfg *config.Config) *tables {
	n := schema.NamesFor(cfg)
	return &tables{db: db, n: n, campaigns: n.Table("campaigns"), recipients: n.Table("campaign_recipients"), m: n.Table("campaign_messages")}
}

func (t *tables) q(name string) string { return t.n.Column(name) }

func (t *tables) cols(alias string, names ...string) string {
	out := make([]string, len(names))
	for i, c := range names {
		out[i] = t.q(c)
		if alias != "" {
			out[i] = alias + "." + out[i]
		}
	}
	return strings.Join(out, ", ")
}

// stamp is a time as passbridge stores it: UTC, microseconds.
func stamp(t time.Time) time.Time { return t.UTC().Truncate(time.Microsecond) }

// ParseReminder reads one reminder in the CLI's notation.
func ParseReminder(s string) (Reminder, error) {
	s = strings.ToLower(strings.TrimSpace(s))
	rest, before := strings.CutPrefix(s, "deadline-")
	d, err := parseDays(rest)
	if err != nil || d <= 0 {
		return Reminder{}, fmt.Errorf("reminder %q: expected a time after the invitation such as 3d or 36h, or before the deadline such as deadline-1d", s)
	}
	if before {
		return Reminder{Name: "deadline-" + rest, BeforeDeadline: d}, nil
	}
	return Reminder{Name: "remind-" + rest, After: d}, nil
}

// parseDays reads "3d" as 72h, anything else as a Go duration.
func parseDays(s string) (time.Duration, error) {
	if n, ok := strings.CutSuffix(s, "d"); ok {
		days, err := strconv.Atoi(n)
		if err != nil {
			return 0, err
		}
		return time.Duration(days) * 24 * time.Hour, nil
	}
	return time.ParseDuration(s)
}

// validate checks a spec and turns it into a campaign (not yet stored).
func (sp Spec) validate(now time.Time) (*Campaign, error) {
	var errs []string
	bad := func(format string, args ...any) { errs = append(errs, fmt.Sprintf(format, args...)) }
	c := &Campaign{Name: strings.TrimSpace(sp.Name), State: StateActive, Enforce: sp.Enforce}
	if c.Name == "" || len(c.Name) > 191 || strings.ContainsFunc(c.Name, func(r rune) bool { return r < ' ' }) {
		bad("the name must be 1 to 191 characters, without control characters")
	}
	if _, err := strconv.ParseInt(c.Name, 10, 64); err == nil {
		bad("the name %q is a number, which commands would take for a campaign's id: give it a word", c.Name)
	}
	c.Target = sp.Target
	switch sp.Target.Kind {
	case TargetGroup, TargetOU:
		c.Target.DN = strings.TrimSpace(sp.Target.DN)
		c.Target.Users = nil
		if _, err := ldap.ParseDN(c.Target.DN); err != nil || c.Target.DN == "" {
			bad("the %s %q is not a DN", sp.Target.Kind, sp.Target.DN)
		}
	case TargetUsers:
		c.Target.DN = ""
		c.Target.Users = cleanNames(sp.Target.Users)
		if len(c.Target.Users) == 0 {
			bad("a campaign for users needs at least one username")
		}
	default:
		bad("the target must be a group, an OU or a list of users")
	}
	c.StartsAt = stamp(sp.StartsAt)
	if sp.StartsAt.IsZero() {
		c.StartsAt = stamp(now)
	}
	if sp.Deadline != nil {
		d := stamp(*sp.Deadline)
		c.Deadline = &d
		if !d.After(c.StartsAt) {
			bad("the deadline (%s) must be after the start (%s)", d.Format(time.RFC3339), c.StartsAt.Format(time.RFC3339))
		}
	}
	seen := map[string]bool{}
	for _, s := range sp.Reminders {
		if strings.TrimSpace(s) == "" {
			continue
		}
		r, err := ParseReminder(s)
		if err != nil {
			bad("%v", err)
			continue
		}
		if seen[r.Name] {
			bad("reminder %s is given twice", r.Name)
			continue
		}
		seen[r.Name] = true
		if r.BeforeDeadline > 0 && c.Deadline == nil {
			bad("reminder %s is relative to the deadline, but the campaign has none", r.Name)
		}
		c.Reminders = append(c.Reminders, r)
	}
	if len(c.Reminders) > 10 {
		bad("at most 10 reminders")
	}
	c.Template = sp.Template.withDefaults()
	if err := c.Template.check(); err != nil {
		bad("%v", err)
	}
	if sp.Enforce && c.Deadline == nil {
		bad("enforcing needs a deadline")
	}
	c.Grace = cleanNames(sp.Grace)
	if len(errs) > 0 {
		return nil, fmt.Errorf("campaign %q: %s", c.Name, strings.Join(errs, "; "))
	}
	return c, nil
}

func cleanNames(in []string) []string {
	var out []string
	for _, u := range in {
		for _, f := range strings.FieldsFunc(u, func(r rune) bool { return r == ',' || r == '\n' || r == ' ' || r == '\t' || r == '\r' }) {
			out = append(out, strings.ToLower(f))
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// Create stores a new campaign (active from StartsAt) and audits it; the
// daemon's next pass starts inviting.
func Create(ctx context.Context, db *store.DB, cfg *config.Config, sp Spec, actor string) (*Campaign, error) {
	return create(ctx, db, cfg, sp, actor, time.Now())
}

func create(ctx context.Context, db *store.DB, cfg *config.Config, sp Spec, actor string, now time.Time) (*Campaign, error) {
	now = stamp(now)
	c, err := sp.validate(now)
	if err != nil {
		return nil, err
	}
	t := newTables(db, cfg)
	if c.Target.Kind == TargetUsers {
		if err := t.checkUsers(ctx, c.Target.Users); err != nil {
			return nil, fmt.Errorf("campaign %q: %w", c.Name, err)
		}
	}
	c.CreatedBy, c.CreatedAt, c.UpdatedAt = actor, now, now
	target, _ := json.Marshal(c.Target)
	reminders, _ := json.Marshal(c.Reminders)
	tmpl, _ := json.Marshal(c.Template)
	var grace any
	if len(c.Grace) > 0 {
		b, _ := json.Marshal(c.Grace)
		grace = string(b)
	}
	var deadline any
	if c.Deadline != nil {
		deadline = *c.Deadline
	}
	err = db.InTx(ctx, func(tx *sqlx.Tx) error {
		id, err := db.Dialect().InsertID(ctx, tx, "INSERT INTO "+t.campaigns+" ("+t.cols("", "name", "state", "target_kind", "target", "starts_at", "deadline", "reminders", "template", "enforce", "grace", "created_by", "created_at", "updated_at")+
			") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", "id",
			c.Name, c.State, c.Target.Kind, string(target), c.StartsAt, deadline, string(reminders), string(tmpl), c.Enforce, grace, clip(actor, 255), now, now)
		if err != nil {
			return err
		}
		c.ID = id
		return t.record(ctx, tx, now, EvCreate, actor, c.Name, map[string]any{"campaign_id": id, "target": c.Target.String(), "deadline": c.Deadline, "enforce": c.Enforce})
	})
	if store.IsUniqueViolation(err) {
		return nil, fmt.Errorf("there is already a campaign called %q", c.Name)
	}
	if err != nil {
		return nil, fmt.Errorf("create campaign %q: %w", c.Name, err)
	}
	return c, nil
}

// checkUsers refuses usernames no identity has: a typo would otherwise
// silently invite nobody.
func (t *tables) checkUsers(ctx context.Context, users []string) error {
	known := map[string]bool{}
	for chunk := range slices.Chunk(users, 500) {
		args := make([]any, len(chunk))
		for i, u := range chunk {
			args[i] = u
		}
		var names []string
		err := store.Select(ctx, t.db, &names, "SELECT LOWER("+t.q("username")+") FROM "+t.n.Identities+" WHERE LOWER("+t.q("username")+") IN (?"+strings.Repeat(", ?", len(chunk)-1)+")", args...)
		if err != nil {
			return fmt.Errorf("look the users up: %w", err)
		}
		for _, n := range names {
			known[n] = true
		}
	}
	var unknown []string
	for _, u := range users {
		if !known[u] {
			unknown = append(unknown, u)
		}
	}
	if len(unknown) > 0 {
		return fmt.Errorf("no synced identity has the username %s (see passbridge users list)", strings.Join(unknown, ", "))
	}
	return nil
}

func (t *tables) record(ctx context.Context, q store.Querier, at time.Time, event, actor, target string, detail map[string]any) error {
	return audit.Record(ctx, q, t.n, audit.Event{At: at, Event: event, Success: true, Actor: actor, Target: target, Detail: audit.Detail(detail)})
}

type campaignRow struct {
	ID         int64          `db:"id"`
	Name       string         `db:"name"`
	State      string         `db:"state"`
	TargetKind string         `db:"target_kind"`
	Target     string         `db:"target"`
	StartsAt   time.Time      `db:"starts_at"`
	Deadline   sql.NullTime   `db:"deadline"`
	Reminders  string         `db:"reminders"`
	Template   string         `db:"template"`
	Enforce    bool           `db:"enforce"`
	Grace      sql.NullString `db:"grace"`
	EnforcedAt sql.NullTime   `db:"enforced_at"`
	LastError  sql.NullString `db:"last_error"`
	CreatedBy  string         `db:"created_by"`
	CreatedAt  time.Time      `db:"created_at"`
	UpdatedAt  time.Time      `db:"updated_at"`
}

var campaignCols = []string{"id", "name", "state", "target_kind", "target", "starts_at", "deadline", "reminders", "template", "enforce", "grace", "enforced_at", "last_error", "created_by", "created_at", "updated_at"}

func (r campaignRow) campaign() (*Campaign, error) {
	c := &Campaign{ID: r.ID, Name: r.Name, State: r.State, StartsAt: r.StartsAt.UTC(), Enforce: r.Enforce, LastError: r.LastError.String,
		CreatedBy: r.CreatedBy, CreatedAt: r.CreatedAt.UTC(), UpdatedAt: r.UpdatedAt.UTC()}
	if err := json.Unmarshal([]byte(r.Target), &c.Target); err != nil {
		return nil, fmt.Errorf("campaign %d: target: %w", r.ID, err)
	}
	if err := json.Unmarshal([]byte(r.Reminders), &c.Reminders); err != nil {
		return nil, fmt.Errorf("campaign %d: reminders: %w", r.ID, err)
	}
	if err := json.Unmarshal([]byte(r.Template), &c.Template); err != nil {
		return nil, fmt.Errorf("campaign %d: template: %w", r.ID, err)
	}
	if r.Grace.Valid && r.Grace.String != "" {
		if err := json.Unmarshal([]byte(r.Grace.String), &c.Grace); err != nil {
			return nil, fmt.Errorf("campaign %d: grace: %w", r.ID, err)
		}
	}
	if r.Deadline.Valid {
		d := r.Deadline.Time.UTC()
		c.Deadline = &d
	}
	if r.EnforcedAt.Valid {
		d := r.EnforcedAt.Time.UTC()
		c.EnforcedAt = &d
	}
	if c.Reminders == nil {
		c.Reminders = []Reminder{}
	}
	return c, nil
}

func (t *tables) list(ctx context.Context, where string, args ...any) ([]*Campaign, error) {
	var rows []campaignRow
	query := "SELECT " + t.cols("", campaignCols...) + " FROM " + t.campaigns
	if where != "" {
		query += " WHERE " + where
	}
	if err := store.Select(ctx, t.db, &rows, query+" ORDER BY "+t.q("id"), args...); err != nil {
		return nil, fmt.Errorf("read campaigns: %w", err)
	}
	out := make([]*Campaign, 0, len(rows))
	for _, r := range rows {
		c, err := r.campaign()
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, nil
}

// List returns every campaign, oldest first.
func List(ctx context.Context, db *store.DB, cfg *config.Config) ([]*Campaign, error) {
	return newTables(db, cfg).list(ctx, "")
}

// ErrNotFound means no campaign has that name or id.
var ErrNotFound = errors.New("no such campaign")

// Get finds a campaign by name or id.
func Get(ctx context.Context, db *store.DB, cfg *config.Config, nameOrID string) (*Campaign, error) {
	t := newTables(db, cfg)
	nameOrID = strings.TrimSpace(nameOrID)
	var cs []*Campaign
	var err error
	if id, perr := strconv.ParseInt(nameOrID, 10, 64); perr == nil {
		cs, err = t.list(ctx, t.q("id")+" = ?", id)
	} else {
		cs, err = t.list(ctx, t.q("name")+" = ?", nameOrID)
	}
	if err != nil {
		return nil, err
	}
	if len(cs) == 0 {
		return nil, fmt.Errorf("%w %q (see passbridge campaign list)", ErrNotFound, nameOrID)
	}
	return cs[0], nil
}

// Actions on a campaign's state.
const (
	ActionPause  = "pause"
	ActionResume = "resume"
	ActionCancel = "cancel"
)

// SetState pauses, resumes or cancels a campaign, audited. Cancelling is
// final: queued mail is cancelled and the campaign's unused links expire.
func SetState(ctx context.Context, db *store.DB, cfg *config.Config, nameOrID, action, actor string) (*Campaign, error) {
	return setState(ctx, db, cfg, nameOrID, action, actor, time.Now())
}

func setState(ctx context.Context, db *store.DB, cfg *config.Config, nameOrID, action, actor string, now time.Time) (*Campaign, error) {
	now = stamp(now)
	c, err := Get(ctx, db, cfg, nameOrID)
	if err != nil {
		return nil, err
	}
	from, to, ev := map[string][]string{
		ActionPause:  {StateActive},
		ActionResume: {StatePaused},
		ActionCancel: {StateActive, StatePaused, StateEnded},
	}[action], map[string]string{ActionPause: StatePaused, ActionResume: StateActive, ActionCancel: StateCancelled}[action],
		map[string]string{ActionPause: EvPause, ActionResume: EvResume, ActionCancel: EvCancel}[action]
	if to == "" {
		return nil, fmt.Errorf("unknown action %q: pause, resume or cancel", action)
	}
	if !slices.Contains(from, c.State) {
		return nil, fmt.Errorf("campaign %q is %s: it cannot be %s", c.Name, c.State, map[string]string{ActionPause: "paused", ActionResume: "resumed", ActionCancel: "cancelled"}[action])
	}
	t := newTables(db, cfg)
	err = db.InTx(ctx, func(tx *sqlx.Tx) error {
		res, err := store.Exec(ctx, tx, "UPDATE "+t.campaigns+" SET "+t.q("state")+" = ?, "+t.q("updated_at")+" = ? WHERE "+t.q("id")+" = ? AND "+t.q("state")+" = ?", to, now, c.ID, c.State)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n != 1 {
			return fmt.Errorf("campaign %q changed meanwhile; look again", c.Name)
		}
		detail := map[string]any{"campaign_id": c.ID, "from": c.State}
		if action == ActionCancel {
			n, err := t.cancelQueued(ctx, tx, now, t.q("campaign_id")+" = ?", "the campaign was cancelled", c.ID)
			if err != nil {
				return err
			}
			detail["cancelled_messages"] = n
			if err := t.expireLinks(ctx, tx, t.q("campaign_id")+" = ?", c.ID); err != nil {
				return err
			}
		}
		return t.record(ctx, tx, now, ev, actor, c.Name, detail)
	})
	if err != nil {
		return nil, fmt.Errorf("%s campaign %q: %w", action, c.Name, err)
	}
	c.State, c.UpdatedAt = to, now
	return c, nil
}

// cancelQueued cancels the queued messages matching where (on the
// messages table).
func (t *tables) cancelQueued(ctx context.Context, q store.Querier, now time.Time, where, why string, args ...any) (int64, error) {
	res, err := store.Exec(ctx, q, "UPDATE "+t.m+" SET "+t.q("state")+" = ?, "+t.q("error")+" = ? WHERE "+t.q("state")+" = ? AND "+where,
		append([]any{MsgCancelled, why, MsgQueued}, args...)...)
	if err != nil {
		return 0, fmt.Errorf("cancel queued mail: %w", err)
	}
	n, _ := res.RowsAffected()
	return n, nil
}

// expireLinks ends the unused links of the messages matching where: a
// person who enrolled, left, or whose campaign is over needs none.
func (t *tables) expireLinks(ctx context.Context, q store.Querier, where string, args ...any) error {
	now := linkNow()
	_, err := store.Exec(ctx, q, "UPDATE "+t.n.Tokens+" SET "+t.q("expires_at")+" = ? WHERE "+t.q("used_at")+" IS NULL AND "+t.q("expires_at")+" > ? AND "+
		t.q("id")+" IN (SELECT "+t.q("token_id")+" FROM "+t.m+" WHERE "+t.q("token_id")+" IS NOT NULL AND "+where+")",
		append([]any{now, now}, args...)...)
	if err != nil {
		return fmt.Errorf("expire campaign links: %w", err)
	}
	return nil
}

// linkNow is the time for the links' expiry: the portal's clock, real
// time, whatever the campaign clock says.
func linkNow() time.Time { return stamp(time.Now()) }

// LinkUsed records that the person a campaign link was mailed to used it
// (the funnel's "link opened"): the portal calls it when a campaign link
// is redeemed.
func LinkUsed(ctx context.Context, db *store.DB, cfg *config.Config, tokenID int64, at time.Time) error {
	t := newTables(db, cfg)
	_, err := store.Exec(ctx, db, "UPDATE "+t.recipients+" SET "+t.q("opened_at")+" = ?, "+t.q("updated_at")+" = ? WHERE "+t.q("opened_at")+" IS NULL AND "+
		t.q("id")+" IN (SELECT "+t.q("recipient_id")+" FROM "+t.m+" WHERE "+t.q("token_id")+" = ?)", stamp(at), stamp(at), tokenID)
	if err != nil {
		return fmt.Errorf("record the campaign link's use: %w", err)
	}
	return nil
}

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

func utf8RuneStart(b byte) bool { return b&0xC0 != 0x80 }

// ParseWhen reads a time given to the CLI or the console: a time from now
// ("14d", "36h", "+14d"), a date ("2026-12-24": its start, or with
// endOfDay its end, UTC), or an RFC 3339 time.
func ParseWhen(s string, now time.Time, endOfDay bool) (time.Time, error) {
	s = strings.TrimPrefix(strings.TrimSpace(s), "+")
	if d, err := parseDays(s); err == nil && d > 0 {
		return stamp(now.Add(d)), nil
	}
	if t, err := time.Parse(time.DateOnly, s); err == nil {
		if endOfDay {
			t = t.AddDate(0, 0, 1)
		}
		return t, nil
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return stamp(t), nil
	}
	return time.Time{}, fmt.Errorf("time %q: expected a time from now (14d, 36h), a date (2026-12-24) or an RFC 3339 time (2026-12-24T18:00:00Z)", s)
}
