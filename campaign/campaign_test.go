package campaign_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/passbridge/passbridge/campaign"
	"github.com/passbridge/passbridge/config"
	"github.com/passbridge/passbridge/enroll/mail"
	"github.com/passbridge/passbridge/internal/testsrv"
	"github.com/passbridge/passbridge/schema"
	"github.com/passbridge/passbridge/store"
)

const day = 24 * time.Hour

// TestCampaignGroup runs a campaign for a directory group with a nested
// group: invitations to the members without a passkey only, nothing twice,
// a reminder after a clock step, no reminder to who enrolled, a disabled
// member dropped, the funnel exact.
func TestCampaignGroup(t *testing.T) {
	for _, driver := range []string{"sqlite", "postgres", "mysql"} {
		t.Run(driver, func(t *testing.T) {
			e := newEnv(t, driver, nil)
			alice, bob, carol, dave := e.person("alice"), e.person("bob"), e.person("carol"), e.person("dave")
			inner := e.ldap.AddGroup(t, e.ou, "pilot-inner", alice.dn)
			group := e.ldap.AddGroup(t, e.ou, "pilot", inner, bob.dn, carol.dn)
			e.sync()
			e.enroll(carol) // already has a passkey: nothing to invite to
			c := e.create(campaign.Spec{Name: "pilot", Target: campaign.Target{Kind: campaign.TargetGroup, DN: group},
				Reminders: []string{"3d", "7d"}, Template: campaign.Template{Company: "Northwind"}})
			eng := e.engine(engineOptions{node: "a"})

			st := e.pass(eng)
			if st.Added != 2 || st.Sent != 2 {
				t.Fatalf("first pass: %+v, want 2 added and sent", st)
			}
			got := e.mails()
			if got[alice.email] != 1 || got[bob.email] != 1 || got[carol.email] != 0 || got[dave.email] != 0 {
				t.Fatalf("mails %v: want alice and bob once, nobody else", got)
			}
			m := e.smtp.Wait(t, alice.email, time.Second)
			if m.Subject != "Add a passkey to your Northwind account" || !linkRE.MatchString(m.Text) || !strings.Contains(m.Text, "Hello alice Tester") || !m.TLS {
				t.Fatalf("invitation: subject %q, TLS %v, text:\n%s", m.Subject, m.TLS, m.Text)
			}
			if !strings.Contains(string(m.Raw), "text/html") {
				t.Error("the invitation has no HTML part")
			}
			// A second pass at the same time sends nothing.
			if st := e.pass(eng); st.Sent != 0 || st.Added != 0 || st.Reminders != 0 {
				t.Fatalf("second pass: %+v, want nothing", st)
			}

			e.clock.Step(3*day + time.Minute)
			if st := e.pass(eng); st.Reminders != 2 || st.Sent != 2 {
				t.Fatalf("after 3 days: %+v, want 2 reminders sent", st)
			}
			e.enroll(alice)
			e.ldap.Disable(t, bob.dn)
			e.sync()
			e.clock.Step(day + time.Minute) // one day to go before now
			st = e.pass(eng)
			if st.Enrolled != 1 || st.Dropped != 1 || st.Sent != 0 {
				t.Fatalf("after alice enrolled and bob was disabled: %+v", st)
			}
			e.clock.Step(4 * day) // the 7-day reminder is due: nobody left to get it
			if st := e.pass(eng); st.Sent != 0 || st.Reminders != 0 {
				t.Fatalf("after 7 days: %+v, want nothing", st)
			}
			got = e.mails()
			if got[alice.email] != 2 || got[bob.email] != 2 {
				t.Fatalf("mails %v: want 2 each (invitation, first reminder)", got)
			}

			f := e.funnel(c)
			want := campaign.Funnel{Recipients: 2, Invited: 2, Delivered: 2, Enrolled: 1, Dropped: 1}
			if f.Recipients != want.Recipients || f.Invited != want.Invited || f.Delivered != want.Delivered || f.Enrolled != want.Enrolled || f.Dropped != want.Dropped || f.Bounced != 0 || f.Failed != 0 || f.Pending != 0 {
				t.Fatalf("funnel %+v, want %+v", f, want)
			}
			if len(f.Steps) != 2 || f.Steps[0].Step != "invite" || f.Steps[1].Step != "remind-3d" || f.Steps[1].Enrolled != 1 || f.Steps[1].Share != 0.5 {
				t.Fatalf("steps %+v: want alice counted after remind-3d", f.Steps)
			}
			if f.TimeToPasskey.Count != 1 || f.TimeToPasskey.Median < 3*day {
				t.Fatalf("time to passkey %+v", f.TimeToPasskey)
			}
			// The database refuses a second message of a step.
			n := schema.NamesFor(e.cfg)
			q := e.db.Dialect().Quote
			var row struct {
				C int64 `db:"campaign_id"`
				R int64 `db:"recipient_id"`
				I int64 `db:"identity_id"`
			}
			if err := store.Get(context.Background(), e.db, &row, "SELECT "+q("campaign_id")+", "+q("recipient_id")+", "+q("identity_id")+" FROM "+n.Table("campaign_messages")+" WHERE "+q("step")+" = ? ORDER BY "+q("id")+" LIMIT 1", "invite"); err != nil {
				t.Fatal(err)
			}
			_, err := store.Exec(context.Background(), e.db, "INSERT INTO "+n.Table("campaign_messages")+" ("+q("campaign_id")+", "+q("recipient_id")+", "+q("identity_id")+", "+q("step")+", "+q("state")+", "+q("next_attempt_at")+", "+q("queued_at")+") VALUES (?, ?, ?, ?, ?, ?, ?)",
				row.C, row.R, row.I, "invite", "queued", time.Now(), time.Now())
			if !store.IsUniqueViolation(err) {
				t.Fatalf("a second invitation row: %v, want a unique violation", err)
			}
		})
	}
}

// TestReminderBurst: when several reminders are due at once (the daemon
// was down), only the latest goes out; the others are skipped, not sent.
func TestReminderBurst(t *testing.T) {
	e := newEnv(t, "sqlite", nil)
	a := e.person("ann")
	e.sync()
	e.create(campaign.Spec{Name: "burst", Target: campaign.Target{Kind: campaign.TargetUsers, Users: []string{strings.ToUpper(a.name)}}, Reminders: []string{"3d", "7d"}})
	eng := e.engine(engineOptions{node: "a"})
	e.pass(eng)
	e.clock.Step(8 * day)
	if st := e.pass(eng); st.Reminders != 1 || st.Sent != 1 {
		t.Fatalf("after 8 days: %+v, want one reminder", st)
	}
	if n := e.mails()[a.email]; n != 2 {
		t.Fatalf("%d mails, want 2 (invitation and the 7-day reminder)", n)
	}
	if !strings.HasPrefix(e.smtp.Messages()[1].Subject, "Reminder: ") {
		t.Errorf("reminder subject %q", e.smtp.Messages()[1].Subject)
	}
	n := schema.NamesFor(e.cfg)
	q := e.db.Dialect().Quote
	if got := e.count("SELECT COUNT(*) FROM "+n.Table("campaign_messages")+" WHERE "+q("step")+" = ? AND "+q("state")+" = ?", "remind-3d", campaign.MsgSkipped); got != 1 {
		t.Fatalf("remind-3d skipped %d times, want 1", got)
	}
}

// TestTargets: an OU target counts sub-OUs; a list of usernames refuses
// one no identity has; people who join the target later are invited.
func TestTargets(t *testing.T) {
	e := newEnv(t, "sqlite", nil)
	sales := e.ldap.AddOU(t, e.ou, "Sales")
	emea := e.ldap.AddOU(t, sales, "EMEA")
	a := e.person("in-root")
	b := &person{name: "emea-" + strings.ToLower(strings.ReplaceAll(time.Now().Format("150405.000"), ".", ""))}
	b.email = b.name + "@corp.example"
	b.dn = e.ldap.AddUser(t, emea, b.name, nil)
	d := e.db.Dialect()
	if _, err := store.Exec(context.Background(), e.db, "INSERT INTO "+d.Table("", "users")+" ("+d.Quote("username")+", "+d.Quote("email")+") VALUES (?, ?)", b.name, b.email); err != nil {
		t.Fatal(err)
	}
	e.sync()
	e.create(campaign.Spec{Name: "sales", Target: campaign.Target{Kind: campaign.TargetOU, DN: strings.ToUpper(sales[:3]) + sales[3:]}})
	eng := e.engine(engineOptions{node: "a"})
	if st := e.pass(eng); st.Sent != 1 {
		t.Fatalf("%+v, want one invitation", st)
	}
	if e.mails()[b.email] != 1 || e.mails()[a.email] != 0 {
		t.Fatalf("mails %v: want only the EMEA person", e.mails())
	}
	_, err := campaign.Create(context.Background(), e.db, e.cfg, campaign.Spec{Name: "typo", Target: campaign.Target{Kind: campaign.TargetUsers, Users: []string{a.name, "nobody-here"}}}, "cli:test")
	if err == nil || !strings.Contains(err.Error(), "nobody-here") {
		t.Fatalf("unknown username: %v", err)
	}
	// Someone added to the OU later is invited by the next pass.
	c := e.person("late")
	e.ldap.Move(t, c.dn, sales)
	e.sync()
	if st := e.pass(eng); st.Sent != 1 || e.mails()[c.email] != 1 {
		t.Fatalf("%+v, mails %v: want the newcomer invited", st, e.mails())
	}
}

// TestMailServerDown: with the SMTP server gone, a mail is retried with
// backoff and counted, nothing is lost; after a restart of the daemon
// (a new engine) against a server that is back, it goes out once.
func TestMailServerDown(t *testing.T) {
	e := newEnv(t, "sqlite", nil)
	a := e.person("ann")
	e.sync()
	c := e.create(campaign.Spec{Name: "down", Target: campaign.Target{Kind: campaign.TargetUsers, Users: []string{a.name}}})
	e.smtp.Stop()
	eng := e.engine(engineOptions{node: "a"})
	if st := e.pass(eng); st.Retried != 1 || st.Sent != 0 {
		t.Fatalf("server down: %+v, want one retry", st)
	}
	// Not due yet: nothing tried.
	if st := e.pass(eng); st.Retried != 0 {
		t.Fatalf("before the retry delay: %+v", st)
	}
	e.clock.Step(61 * time.Second)
	if st := e.pass(eng); st.Retried != 1 {
		t.Fatalf("second attempt: %+v, want a retry", st)
	}
	f := e.funnel(c)
	if f.Pending != 1 || f.Retries != 1 || f.Delivered != 0 {
		t.Fatalf("funnel %+v: want pending, one retry", f)
	}
	// The server comes back (elsewhere); the daemon restarts with it.
	e.smtp = testsrv.StartSMTP(t, testsrv.SMTPOptions{Security: "starttls", Username: "passbridge", Password: "smtp-Secret-1"})
	cfg2 := *e.cfg
	e.useSMTP(&cfg2, e.smtp)
	eng.Close() // the old daemon stops
	eng2 := e.engine(engineOptions{node: "b", config: &cfg2})
	e.clock.Step(121 * time.Second)
	if st := e.pass(eng2); st.Sent != 1 {
		t.Fatalf("server back: %+v, want the mail sent", st)
	}
	if f := e.funnel(c); f.Delivered != 1 || f.Retries != 2 || f.Pending != 0 {
		t.Fatalf("funnel %+v", f)
	}
	// Given up after max_attempts (3) when it never comes back.
	b := e.person("bob")
	e.sync()
	c2 := e.create(campaign.Spec{Name: "down-for-good", Target: campaign.Target{Kind: campaign.TargetUsers, Users: []string{b.name}}})
	e.smtp.Stop()
	for i := range 3 {
		e.pass(eng2)
		e.clock.Step(time.Duration(2<<i) * time.Minute)
	}
	if f := e.funnel(c2); f.Failed != 1 || f.Pending != 0 {
		t.Fatalf("never back: funnel %+v, want failed", f)
	}
}

// TestBounce: a recipient the server refuses (550) is a bounce, not retried.
func TestBounce(t *testing.T) {
	e := newEnv(t, "sqlite", nil)
	a := e.person("gone")
	e.sync()
	e.smtp = testsrv.StartSMTP(t, testsrv.SMTPOptions{Security: "starttls", Username: "passbridge", Password: "smtp-Secret-1", RejectRecipients: []string{a.email}})
	cfg2 := *e.cfg
	e.useSMTP(&cfg2, e.smtp)
	c := e.create(campaign.Spec{Name: "bounce", Target: campaign.Target{Kind: campaign.TargetUsers, Users: []string{a.name}}})
	eng := e.engine(engineOptions{node: "a", config: &cfg2})
	if st := e.pass(eng); st.Bounced != 1 || st.Retried != 0 {
		t.Fatalf("%+v, want a bounce", st)
	}
	if f := e.funnel(c); f.Bounced != 1 || f.Invited != 1 {
		t.Fatalf("funnel %+v", f)
	}
}

// TestDeadline: at the deadline the campaign ends, queued mail is
// cancelled, and with enforce the password policy of its people switches
// to passkey_required, except the grace list, each switch audited.
func TestDeadline(t *testing.T) {
	e := newEnv(t, "sqlite", nil)
	a, b, c := e.person("ann"), e.person("ben"), e.person("cy")
	e.sync()
	deadline := e.clock.Now().Add(2 * day)
	cp := e.create(campaign.Spec{Name: "deadline", Target: campaign.Target{Kind: campaign.TargetUsers, Users: []string{a.name, b.name, c.name}},
		Deadline: &deadline, Reminders: []string{"deadline-1d"}, Enforce: true, Grace: []string{b.name}})
	eng := e.engine(engineOptions{node: "a"})
	e.pass(eng)
	e.enroll(c)
	e.clock.Step(day + time.Minute)
	if st := e.pass(eng); st.Sent != 2 || st.Enrolled != 1 {
		t.Fatalf("a day before: %+v, want reminders to ann and ben, cy enrolled", st)
	}
	e.clock.Step(day)
	st := e.pass(eng)
	if st.Ended != 1 || st.Enforced != 2 {
		t.Fatalf("at the deadline: %+v, want ended, 2 switched (ann and cy; ben has grace)", st)
	}
	n := schema.NamesFor(e.cfg)
	policy := func(p *person) string {
		var v *string
		if err := store.Get(context.Background(), e.db, &v, "SELECT "+n.PasswordPolicy+" FROM "+n.Users+" WHERE "+n.UserKey+" = ?", p.key); err != nil {
			t.Fatal(err)
		}
		if v == nil {
			return "NULL"
		}
		return *v
	}
	if policy(a) != schema.PasswordPasskeyRequired || policy(c) != schema.PasswordPasskeyRequired || policy(b) != "NULL" {
		t.Fatalf("policies ann %s, ben %s, cy %s", policy(a), policy(b), policy(c))
	}
	q := e.db.Dialect().Quote
	if got := e.count("SELECT COUNT(*) FROM "+n.Audit+" WHERE "+q("event")+" = ? AND "+q("target")+" = ?", campaign.EvEnforce, a.name); got != 1 {
		t.Fatalf("%d enforce audit entries for ann", got)
	}
	got, err := campaign.Get(context.Background(), e.db, e.cfg, "deadline")
	if err != nil || got.State != campaign.StateEnded || got.EnforcedAt == nil {
		t.Fatalf("campaign %+v, %v", got, err)
	}
	// The next pass does nothing more.
	if st := e.pass(eng); st.Ended != 0 || st.Enforced != 0 {
		t.Fatalf("after: %+v", st)
	}
	_ = cp
}

// TestStates: pause stops the mail, resume lets it go, cancel is final;
// the transitions that make no sense are refused.
func TestStates(t *testing.T) {
	e := newEnv(t, "sqlite", nil)
	a := e.person("ann")
	e.sync()
	e.create(campaign.Spec{Name: "steer", Target: campaign.Target{Kind: campaign.TargetUsers, Users: []string{a.name}}})
	ctx := context.Background()
	if _, err := campaign.SetState(ctx, e.db, e.cfg, "steer", campaign.ActionPause, "cli:test"); err != nil {
		t.Fatal(err)
	}
	eng := e.engine(engineOptions{node: "a"})
	if st := e.pass(eng); st.Sent != 0 {
		t.Fatalf("paused: %+v", st)
	}
	if _, err := campaign.SetState(ctx, e.db, e.cfg, "steer", campaign.ActionPause, "cli:test"); err == nil {
		t.Fatal("pausing a paused campaign worked")
	}
	if _, err := campaign.SetState(ctx, e.db, e.cfg, "steer", campaign.ActionResume, "cli:test"); err != nil {
		t.Fatal(err)
	}
	if st := e.pass(eng); st.Sent != 1 {
		t.Fatalf("resumed: %+v", st)
	}
	if _, err := campaign.SetState(ctx, e.db, e.cfg, "steer", campaign.ActionCancel, "cli:test"); err != nil {
		t.Fatal(err)
	}
	if _, err := campaign.SetState(ctx, e.db, e.cfg, "steer", campaign.ActionResume, "cli:test"); err == nil {
		t.Fatal("resuming a cancelled campaign worked")
	}
	if _, err := campaign.Get(ctx, e.db, e.cfg, "nope"); !errors.Is(err, campaign.ErrNotFound) {
		t.Fatalf("unknown campaign: %v", err)
	}
	// The link of the cancelled campaign's mail no longer works.
	n := schema.NamesFor(e.cfg)
	q := e.db.Dialect().Quote
	if got := e.count("SELECT COUNT(*) FROM "+n.Tokens+" WHERE "+q("kind")+" = ? AND "+q("expires_at")+" > ?", "campaign", time.Now()); got != 0 {
		t.Fatalf("%d campaign links still valid", got)
	}
}

// timingSender records when each Send began, then sends for real.
type timingSender struct {
	mail.Sender
	mu     sync.Mutex
	starts []time.Time
}

func (s *timingSender) Send(ctx context.Context, m mail.Message) error {
	s.mu.Lock()
	s.starts = append(s.starts, time.Now())
	s.mu.Unlock()
	return s.Sender.Send(ctx, m)
}

// TestRate: sends are spaced by campaign.per_minute (600: one every 100
// ms); the spacing of their starts is checked, not how fast they are.
func TestRate(t *testing.T) {
	e := newEnv(t, "sqlite", func(c *config.Config) { c.Campaign.PerMinute = 600 })
	var users []string
	for i := range 6 {
		users = append(users, e.person("r"+string(rune('a'+i))).name)
	}
	e.sync()
	e.create(campaign.Spec{Name: "rate", Target: campaign.Target{Kind: campaign.TargetUsers, Users: users}})
	real, err := mail.New(e.cfg.Mail, e.log)
	if err != nil {
		t.Fatal(err)
	}
	ts := &timingSender{Sender: real}
	eng := e.engine(engineOptions{node: "a", mail: ts})
	if st := e.pass(eng); st.Sent != 6 {
		t.Fatalf("%+v", st)
	}
	// The pacer lets send i go no earlier than i×100 ms after the first;
	// the first went at once (a few µs to reach Send, hence the 5 ms).
	for i := 1; i < len(ts.starts); i++ {
		if since := ts.starts[i].Sub(ts.starts[0]); since < time.Duration(i)*100*time.Millisecond-5*time.Millisecond {
			t.Fatalf("send %d started %s after the first, under the %d ms per_minute 600 allows", i, since, i*100)
		}
	}
}

// TestTwoReplicas: two engines on one PostgreSQL database, each running
// its loop: one holds the lock and sends, every mail exactly once.
func TestTwoReplicas(t *testing.T) {
	e := newEnv(t, "postgres", func(c *config.Config) { c.Campaign.Interval = config.Duration(time.Second) })
	var people []*person
	var users []string
	for i := range 20 {
		p := e.person("p" + string(rune('a'+i)))
		people = append(people, p)
		users = append(users, p.name)
	}
	e.sync()
	c := e.create(campaign.Spec{Name: "replicas", Target: campaign.Target{Kind: campaign.TargetUsers, Users: users}})
	db2, err := store.Open(context.Background(), e.cfg.Database, e.log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db2.Close() })
	engA, engB := e.engine(engineOptions{node: "replica-a"}), e.engine(engineOptions{node: "replica-b", db: db2})
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, eng := range []*campaign.Engine{engA, engB} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			eng.Run(ctx)
		}()
	}
	deadline := time.Now().Add(60 * time.Second)
	for e.funnel(c).Delivered < len(people) && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond) // polling what real servers did, not timing
	}
	// Both keep running a few more passes: nothing more may go out.
	engA.Wake()
	engB.Wake()
	time.Sleep(1500 * time.Millisecond)
	cancel()
	wg.Wait()
	got := e.mails()
	for _, p := range people {
		if got[p.email] != 1 {
			t.Fatalf("%s got %d mails, want 1 (all: %v)", p.name, got[p.email], got)
		}
	}
	n := schema.NamesFor(e.cfg)
	q := e.db.Dialect().Quote
	if nodes := e.count("SELECT COUNT(DISTINCT " + q("claimed_by") + ") FROM " + n.Table("campaign_messages")); nodes != 1 {
		t.Fatalf("mail claimed by %d replicas, want 1", nodes)
	}
}
