package enroll

import (
	"context"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/passbridge/passbridge/campaign"
	"github.com/passbridge/passbridge/directory"
	"github.com/passbridge/passbridge/enroll/mail"
	"github.com/passbridge/passbridge/internal/testsrv"
	"github.com/passbridge/passbridge/schema"
	"github.com/passbridge/passbridge/store"
)

// TestE2ECampaign: a campaign for a slapd group; the SMTP server receives
// the invitations; a reminder goes out after a clock step; an employee
// enrolls in Chromium from the mailed link; the same link again, an
// expired one and another person's are refused; the funnel is exact on
// the console, in the CLI's figures and in /metrics.
func TestE2ECampaign(t *testing.T) {
	e, admin := adminEnv(t)
	alice, bob := e.addUser("calice", true), e.addUser("cbob", true)
	s := e.dir.(slapdDir).s
	group := s.AddGroup(t, e.ou, "rollout-"+alice.name, alice.dn, bob.dn)
	e.sync()
	// The campaign clock starts four days back and catches up with real
	// time, so that what the portal stamps (the passkey) comes after the
	// mail the campaign sent.
	clock := testsrv.NewClock(time.Now().Add(-4 * 24 * time.Hour))
	sender, err := mail.New(e.cfg.Mail, nil)
	if err != nil {
		t.Fatal(err)
	}
	dir, err := directory.NewClient(e.cfg.Directory, nil)
	if err != nil {
		t.Fatal(err)
	}
	eng, err := campaign.New(e.cfg, campaign.Options{DB: e.db, Links: e.portal, Mail: sender, Directory: dir, Now: clock.Now, Node: "test", Registerer: e.metrics.Registry()})
	if err != nil {
		t.Fatal(err)
	}
	pass := func() campaign.Stats {
		t.Helper()
		st, err := eng.Pass(context.Background())
		if err != nil {
			t.Fatalf("campaign pass: %v", err)
		}
		return st
	}
	ctx := context.Background()
	c, err := campaign.Create(ctx, e.db, e.cfg, campaign.Spec{Name: "rollout", Target: campaign.Target{Kind: campaign.TargetGroup, DN: group},
		StartsAt: clock.Now(), Reminders: []string{"3d"}, Template: campaign.Template{Company: "Test Corp"}}, "cli:test")
	if err != nil {
		t.Fatal(err)
	}
	if st := pass(); st.Sent != 2 {
		t.Fatalf("invitations: %+v", st)
	}
	clock.Step(3*24*time.Hour + time.Minute)
	if st := pass(); st.Sent != 2 || st.Reminders != 2 {
		t.Fatalf("reminders: %+v", st)
	}
	clock.Step(24 * time.Hour) // now
	linkOf := regexp.MustCompile(regexp.QuoteMeta(e.URL) + `/link/[A-Za-z0-9_-]{43}`)
	var aliceLinks, bobLinks []string
	for _, m := range e.smtp.Messages() {
		l := linkOf.FindString(m.Text)
		if l == "" {
			t.Fatalf("a campaign mail without a link:\n%s", m.Text)
		}
		switch m.To {
		case alice.email:
			aliceLinks = append(aliceLinks, l)
		case bob.email:
			bobLinks = append(bobLinks, l)
		}
	}
	if len(aliceLinks) != 2 || len(bobLinks) != 2 || aliceLinks[0] == aliceLinks[1] {
		t.Fatalf("links: alice %v, bob %v: want two different links each", aliceLinks, bobLinks)
	}

	// Alice enrolls from the reminder's link.
	b := e.browser(t, browserOptions{})
	path := strings.TrimPrefix(aliceLinks[1], e.URL)
	b.open(path)
	b.waitHeading("Add a passkey")
	b.run("continue", chromedp.Click(chromedp.CSS(`form[action^="/link/"] button`)))
	b.waitNotice("Welcome")
	b.register("Laptop")
	b.waitNotice("Your passkey is ready")
	if e.activePasskeys(alice) != 1 {
		t.Fatal("alice has no passkey")
	}

	// Hostile: the same link again, another person's link while signed
	// in, an expired link.
	b.open(path)
	if got := b.text("main"); !strings.Contains(got, "This link is not valid") {
		t.Errorf("the used link again: %q", got)
	}
	b.open(strings.TrimPrefix(bobLinks[0], e.URL))
	if got := b.text("main"); !strings.Contains(got, "mailed to someone else") {
		t.Errorf("bob's link in alice's browser: %q", got)
	}
	b.run("post bob's link", chromedp.Evaluate[chromedp.Void](`fetch(`+jsString(strings.TrimPrefix(bobLinks[0], e.URL))+`, {method: "POST", headers: {"X-CSRF-Token": document.querySelector('meta[name="csrf-token"]').content}}).then(r => { document.title = "status " + r.status; })`))
	b.run("refused", chromedp.Poll[chromedp.Void](`document.title === "status 409"`, chromedp.WithPollingTimeout(10*time.Second)))
	n := schema.NamesFor(e.cfg)
	q := e.db.Dialect().Quote
	if got := e.count("SELECT COUNT(*) FROM "+n.Tokens+" WHERE "+q("kind")+" = ? AND "+q("used_at")+" IS NOT NULL", LinkCampaign); got != 1 {
		t.Errorf("%d campaign links used, want 1 (bob's stays unused)", got)
	}
	if _, err := store.Exec(ctx, e.db, "UPDATE "+n.Tokens+" SET "+q("expires_at")+" = ? WHERE "+q("kind")+" = ? AND "+q("used_at")+" IS NULL", time.Now().Add(-time.Minute).UTC(), LinkCampaign); err != nil {
		t.Fatal(err)
	}
	other := e.browser(t, browserOptions{})
	other.open(strings.TrimPrefix(bobLinks[1], e.URL))
	if got := other.text("main"); !strings.Contains(got, "This link is not valid") {
		t.Errorf("an expired link: %q", got)
	}

	if st := pass(); st.Enrolled != 1 {
		t.Fatalf("after alice enrolled: %+v", st)
	}
	f, err := campaign.ComputeFunnel(ctx, e.db, e.cfg, c)
	if err != nil {
		t.Fatal(err)
	}
	if f.Recipients != 2 || f.Invited != 2 || f.Delivered != 2 || f.Opened != 1 || f.Began != 1 || f.Enrolled != 1 || f.Dropped != 0 || f.Bounced+f.Failed+f.Pending != 0 {
		t.Fatalf("funnel %+v", f)
	}
	if len(f.Steps) != 2 || f.Steps[1].Step != "remind-3d" || f.Steps[1].Enrolled != 1 || f.TimeToPasskey.Count != 1 {
		t.Fatalf("steps %+v, time to passkey %+v", f.Steps, f.TimeToPasskey)
	}
	t.Logf("funnel of the test campaign: %+v", *f)

	// The console shows it, with the chart; IT pauses it from there.
	ab := e.browser(t, browserOptions{})
	ab.signInPassword(admin.name, admin.password)
	ab.waitNotice("You are signed in")
	ab.open("/admin/campaigns")
	ab.waitHeading("Enrollment campaigns")
	ab.run("open the campaign", chromedp.Click(chromedp.CSS(`a[href="/admin/campaigns/`+itoa(int(c.ID))+`"]`)))
	ab.waitHeading("Campaign rollout")
	ab.run("chart", chromedp.WaitVisible(chromedp.CSS(`svg[role="img"]`)))
	funnel := ab.text("#funnel")
	for _, want := range []string{"mail delivered 2", "link opened 1", "ceremony begun 1", "passkey added 1 50 %"} {
		if !strings.Contains(strings.Join(strings.Fields(funnel), " "), want) {
			t.Errorf("the console's funnel lacks %q:\n%s", want, funnel)
		}
	}
	if got := ab.text("#steps"); !strings.Contains(got, "remind-3d") {
		t.Errorf("steps table: %q", got)
	}
	ab.shot("admin-campaign")
	ab.run("pause", chromedp.Click(chromedp.CSS(`form[action$="/pause"] button`)))
	ab.waitNotice("The campaign is paused")
	if cp, err := campaign.Get(ctx, e.db, e.cfg, "rollout"); err != nil || cp.State != campaign.StatePaused {
		t.Fatalf("after pause: %+v %v", cp, err)
	}
	if e.auditCount(campaign.EvPause, true, "rollout") != 1 {
		t.Error("the pause is not audited")
	}

	body := e.client().get("/metrics").body
	for _, want := range []string{
		`passbridge_campaign_people{campaign="rollout",stage="delivered"} 2`,
		`passbridge_campaign_people{campaign="rollout",stage="enrolled"} 1`,
		`passbridge_campaign_people{campaign="rollout",stage="opened"} 1`,
		`passbridge_campaign_enrolled_after{campaign="rollout",step="remind-3d"} 1`,
		`passbridge_campaign_mail_total{result="sent"} 4`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}

// TestCampaignConsoleForm: the console's create form makes a campaign, and
// a bad one is refused with its reasons and the form kept.
func TestCampaignConsoleForm(t *testing.T) {
	e, admin := adminEnv(t)
	u := e.addUser("cform", true)
	e.sync()
	b := e.browser(t, browserOptions{})
	b.signInPassword(admin.name, admin.password)
	b.waitNotice("You are signed in")
	b.open("/admin/campaigns")
	b.run("fill in a bad campaign",
		chromedp.SetValue(chromedp.ID("c-name"), "q1"),
		chromedp.Click(chromedp.CSS(`input[name=kind][value=users]`)),
		chromedp.SetValue(chromedp.ID("c-target"), u.name+", nobody-at-all"),
		chromedp.SetValue(chromedp.ID("c-reminders"), "3d, deadline-1d"),
		chromedp.Click(chromedp.ID("campaign-create")))
	b.run("refused", chromedp.WaitVisible(chromedp.ID("server-error")))
	if got := b.text("#server-error"); !strings.Contains(got, "nobody-at-all") && !strings.Contains(got, "has none") {
		t.Errorf("error %q", got)
	}
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	kept, err := chromedp.Run(ctx, chromedp.Value(chromedp.ID("c-target")))
	cancel()
	if err != nil || !strings.Contains(kept, "nobody-at-all") {
		t.Errorf("the form lost what was typed: %q %v", kept, err)
	}
	b.run("fix it",
		chromedp.SetValue(chromedp.ID("c-target"), u.name),
		chromedp.SetValue(chromedp.ID("c-reminders"), "3d"),
		chromedp.SetValue(chromedp.ID("c-deadline"), "30d"),
		chromedp.Click(chromedp.ID("campaign-create")))
	b.waitNotice("The campaign is saved")
	cp, err := campaign.Get(context.Background(), e.db, e.cfg, "q1")
	if err != nil || cp.Target.Kind != campaign.TargetUsers || len(cp.Target.Users) != 1 || cp.Deadline == nil || cp.CreatedBy != admin.name {
		t.Fatalf("campaign %+v, %v", cp, err)
	}
}
