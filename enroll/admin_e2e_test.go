package enroll

import (
	"context"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// TestE2EAdminConsole: an IT admin (in the admin group through a nested
// group) signs in with the directory password in Chromium, sees the
// adoption dashboard with its chart, opens an employee's page, revokes one
// of their passkeys with the button, makes a recovery link and reads the
// audit trail. The screenshots of the README come from here.
func TestE2EAdminConsole(t *testing.T) {
	e, admin := adminEnv(t)
	worker := e.addUser("wconsole", true)
	e.sync()
	wc := e.client()
	wc.mustSignIn(worker.name, worker.password)
	wc.register("Work laptop")
	wc.register("Phone")
	id := strconv.FormatInt(e.identityID(worker), 10)

	b := e.browser(t, browserOptions{})
	b.signInPassword(admin.name, admin.password)
	b.run("to the console", chromedp.Click(chromedp.CSS(`a[href="/admin"]`)))
	b.waitHeading("IT console")
	b.run("chart", chromedp.WaitVisible(chromedp.CSS(`svg`)))
	if got := b.text("main"); !strings.Contains(got, "12 s") || !strings.Contains(got, "45 s") {
		t.Errorf("the dashboard does not show the field report's figures next to ours: %q", got)
	}
	b.shot("admin-home")

	// The search form is a GET form: its results page, as submitting it
	// in upper case would open it.
	b.open("/admin/users?q=" + url.QueryEscape(strings.ToUpper(worker.name)))
	b.run("search result", chromedp.Click(chromedp.CSS(`a[href="/admin/users/`+id+`"]`)))
	b.run("user page", chromedp.WaitVisible(chromedp.ID("pk-h")))
	b.shot("admin-user")
	b.run("revoke the first passkey", chromedp.Click(chromedp.CSS(`form[action$="/revoke"] button`)))
	b.waitNotice("The passkey was revoked")
	if n := strings.Count(b.text("ul.passkeys"), "revoked"); n != 1 {
		t.Errorf("%d passkeys shown revoked, want 1", n)
	}
	if active, err := e.portal.data.activeCredentials(context.Background(), worker.key); err != nil || len(active) != 1 {
		t.Errorf("%d passkeys left active in the database (%v), want 1", len(active), err)
	}

	b.run("recovery link",
		chromedp.SetValue(chromedp.CSS(`form[action$="/links"] select[name=kind]`), LinkRecovery),
		chromedp.Click(chromedp.CSS(`form[action$="/links"] button`)))
	b.waitHeading("Link for")
	ctx, cancel := context.WithTimeout(b.ctx, 15*time.Second)
	link, err := chromedp.Run(ctx, chromedp.Value(chromedp.ID("issued-url")))
	cancel()
	if err != nil {
		t.Fatalf("read the link: %v", err)
	}
	if !strings.HasPrefix(link, e.URL+"/link/") || !strings.Contains(b.text("main"), "recovery link") {
		t.Errorf("the console shows %q as the recovery link", link)
	}
	b.shot("admin-link")

	b.open("/admin/audit")
	b.waitHeading("Audit trail")
	got := b.text("main")
	for _, want := range []string{evAdminRevoke, evLinkIssued, evRegistered, evSignIn + "password"} {
		if !strings.Contains(got, want) {
			t.Errorf("the audit page does not show %s", want)
		}
	}
	b.shot("admin-audit")
}
