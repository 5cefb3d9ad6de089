package enroll

import (
	"context"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/cdproto/page"
	cdpwebauthn "github.com/chromedp/cdproto/webauthn"
	"github.com/chromedp/chromedp"

	"github.com/passbridge/passbridge/config"
	"github.com/passbridge/passbridge/internal/testsrv"
	"github.com/passbridge/passbridge/schema"
	"github.com/passbridge/passbridge/store"
)

// End-to-end tests: headless Chromium with a CDP virtual authenticator
// (CTAP 2.1, internal transport, resident keys, user verification) against
// the real portal, on a real slapd and a real Samba AD DC.
//
// With PASSBRIDGE_SCREENSHOTS=DIR the tests write a PNG of each page into
// DIR (the README's pictures come from docs/screenshots, made with
// PASSBRIDGE_SCREENSHOTS=$PWD/docs/screenshots go test -run TestE2E ./enroll/).

// browser is one employee's browser tab with its authenticator.
type browser struct {
	t    *testing.T
	e    *env
	ctx  context.Context
	auth cdpwebauthn.AuthenticatorID
}

// browserOptions shape a test browser.
type browserOptions struct {
	// autofill keeps the browser's conditional mediation (passkeys offered
	// in the username field's autofill). The virtual authenticator
	// simulates the user's touch, so with autofill every visit of the
	// sign-in page signs in at once with a passkey the authenticator holds;
	// the other tests emulate a browser without it, and use the button.
	autofill bool
	// edit changes the virtual authenticator's options.
	edit func(*cdpwebauthn.VirtualAuthenticatorOptions)
}

func (e *env) browser(t *testing.T, o browserOptions) *browser {
	t.Helper()
	ctx := testsrv.Browser(t)
	b := &browser{t: t, e: e, ctx: ctx}
	b.auth = testsrv.VirtualAuthenticatorWith(t, ctx, o.edit)
	if !o.autofill {
		_, err := chromedp.Call(ctx, page.AddScriptToEvaluateOnNewDocument, page.AddScriptToEvaluateOnNewDocumentParams{
			Source: `if (window.PublicKeyCredential) { PublicKeyCredential.isConditionalMediationAvailable = function () { return Promise.resolve(false); }; }`,
		})
		if err != nil {
			t.Fatalf("emulate a browser without conditional mediation: %v", err)
		}
	}
	return b
}

// run runs chromedp actions with a deadline, failing the test on error.
func (b *browser) run(what string, actions ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		b.shot("failed-" + sanitize(b.t.Name()))
		tctx, tcancel := context.WithTimeout(b.ctx, 5*time.Second)
		defer tcancel()
		body, _ := chromedp.Run(tctx, chromedp.Text(chromedp.CSS("main")))
		b.t.Fatalf("%s: %v\npage: %s", what, err, body)
	}
}

func (b *browser) open(path string) {
	b.t.Helper()
	b.run("open "+path, chromedp.Navigate(b.e.URL+path), chromedp.WaitReady(chromedp.CSS("main")))
}

// waitHeading waits for the page's h1 to contain text.
func (b *browser) waitHeading(text string) {
	b.t.Helper()
	b.run("wait for heading "+text, chromedp.WaitVisible(chromedp.Search(`//h1[contains(., "`+text+`")]`)))
}

// waitStatus waits for the script's status line to contain text.
func (b *browser) waitStatus(text string) {
	b.t.Helper()
	b.run("wait for status "+text, chromedp.Poll[chromedp.Void](`(function(){var s=document.getElementById("status");return !!s && !s.hidden && s.textContent.indexOf(`+jsString(text)+`) >= 0;})()`, chromedp.WithPollingTimeout(20*time.Second)))
}

// waitNotice waits for the server's notice (after a redirect) to contain text.
func (b *browser) waitNotice(text string) {
	b.t.Helper()
	b.run("wait for notice "+text, chromedp.WaitVisible(chromedp.Search(`//div[contains(@class,"notice") and contains(., "`+text+`")]`)))
}

func (b *browser) text(sel string) string {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 15*time.Second)
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(sel)))
	if err != nil {
		b.t.Fatalf("read %s: %v", sel, err)
	}
	return s
}

func (b *browser) signInPassword(login, password string) {
	b.t.Helper()
	b.open("/")
	b.run("password sign-in",
		chromedp.WaitVisible(chromedp.ID("username")),
		chromedp.SetValue(chromedp.ID("username"), login),
		chromedp.SetValue(chromedp.ID("password"), password),
		chromedp.Click(chromedp.CSS(`#password-form button[type=submit]`)),
	)
}

func (b *browser) register(name string) {
	b.t.Helper()
	b.run("add a passkey",
		chromedp.WaitVisible(chromedp.ID("register")),
		chromedp.Evaluate[chromedp.Void](`document.getElementById("passkey-name").value = `+jsString(name)),
		chromedp.Click(chromedp.ID("register")),
	)
}

func (b *browser) passkeySignIn() {
	b.t.Helper()
	b.open("/")
	b.run("passkey sign-in", chromedp.WaitVisible(chromedp.ID("passkey-signin")), chromedp.Click(chromedp.ID("passkey-signin")))
}

func (b *browser) signOut() {
	b.t.Helper()
	b.run("sign out", chromedp.Click(chromedp.CSS(".signout button")))
	b.waitNotice("You are signed out")
}

// credentials are the passkeys the virtual authenticator holds.
func (b *browser) credentials() []*cdpwebauthn.Credential {
	b.t.Helper()
	res, err := chromedp.Call(b.ctx, cdpwebauthn.GetCredentials, cdpwebauthn.GetCredentialsParams{AuthenticatorID: b.auth})
	if err != nil {
		b.t.Fatalf("read the authenticator's credentials: %v", err)
	}
	return res.Credentials
}

// shot saves a screenshot of the page, into PASSBRIDGE_SCREENSHOTS when
// set (the docs), else into the test's temporary directory.
func (b *browser) shot(name string) {
	dir := os.Getenv("PASSBRIDGE_SCREENSHOTS")
	if dir == "" {
		dir = b.t.TempDir()
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		b.t.Logf("screenshot dir: %v", err)
		return
	}
	ctx, cancel := context.WithTimeout(b.ctx, 15*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		b.t.Logf("screenshot %s: %v", name, err)
		return
	}
	if err := os.WriteFile(filepath.Join(dir, name+".png"), png, 0o644); err != nil {
		b.t.Logf("screenshot %s: %v", name, err)
	}
}

func sanitize(s string) string {
	return strings.NewReplacer("/", "-", " ", "-").Replace(s)
}

func jsString(s string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s) + `"`
}

// TestE2EEnrollAndUse walks an employee through the portal on each real
// directory: password sign-in, enroll, a second enrollment on the same
// authenticator excluded, sign out, passkey sign-in, rename, delete.
func TestE2EEnrollAndUse(t *testing.T) {
	for _, dir := range []string{"openldap", "ad"} {
		t.Run(dir, func(t *testing.T) {
			e := newEnv(t, envOptions{dir: dir})
			alice := e.addUser("alice", true)
			e.sync()
			b := e.browser(t, browserOptions{})
			shots := dir == "openldap"

			b.open("/")
			b.waitHeading("Sign in")
			if shots {
				b.shot("signin")
			}
			login := alice.name
			if dir == "ad" {
				login = alice.name + "@corp.example" // the UPN works as well as the sAMAccountName
			}
			b.signInPassword(login, alice.password)
			b.waitHeading("Your passkeys")
			if shots {
				b.shot("home-empty")
			}

			b.register("Work laptop")
			b.waitNotice("Your passkey is ready")
			if shots {
				b.shot("home-enrolled")
				// The same page on a phone (390x844, touch).
				b.run("phone", chromedp.EmulateViewport(390, 844, chromedp.EmulateMobile, chromedp.EmulateScale(2)))
				b.shot("home-phone")
				var overflow bool
				ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
				overflow, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`document.documentElement.scrollWidth > window.innerWidth`))
				cancel()
				if err != nil || overflow {
					t.Errorf("the page is wider than a phone's screen (%v)", err)
				}
				b.run("desktop", chromedp.EmulateReset())
			}
			if n := e.activePasskeys(alice); n != 1 {
				t.Fatalf("%d active passkeys stored, want 1", n)
			}
			if got := e.passkeyState(alice); got != "enrolled" {
				t.Errorf("users.passbridge_passkey_state = %s, want enrolled", got)
			}
			creds := b.credentials()
			if len(creds) != 1 || !creds[0].IsResidentCredential {
				t.Fatalf("authenticator holds %+v, want one resident credential", creds)
			}
			cr := e.storedPasskeys(alice)[0]
			if cr.Name != "Work laptop" || !cr.UserVerified || !cr.UserPresent || cr.BackupEligible || cr.BackupState || len(cr.PublicKey) == 0 || !cr.JSON.Valid {
				t.Errorf("stored passkey = %+v, want the whole credential with its flags", cr)
			}
			if e.auditCount(evRegistered, true, alice.name) != 1 {
				t.Error("no audit entry for the enrollment")
			}

			// The authenticator already holds a passkey for this user: the
			// excludeCredentials list makes it refuse, and the page says so.
			b.register("")
			b.waitStatus("already holds a passkey")
			if n := e.activePasskeys(alice); n != 1 {
				t.Fatalf("%d active passkeys after the excluded registration, want 1", n)
			}

			b.signOut()
			b.passkeySignIn()
			b.waitHeading("Your passkeys")
			if got := b.text(".badge"); !strings.Contains(got, "signed in with this one") {
				t.Errorf("badge = %q", got)
			}
			cr = e.storedPasskeys(alice)[0]
			if !cr.LastUsedAt.Valid || cr.SignCount < 1 {
				t.Errorf("after a sign-in: last_used_at %v, sign_count %d; want both updated", cr.LastUsedAt, cr.SignCount)
			}

			b.run("rename",
				chromedp.SetValue(chromedp.ID("rename-"+itoa(int(cr.ID))), "Laptop (renamed)"),
				chromedp.Click(chromedp.CSS(`#passkey-`+itoa(int(cr.ID))+` form[action$="/rename"] button`)))
			b.waitNotice("renamed")
			if got := e.storedPasskeys(alice)[0].Name; got != "Laptop (renamed)" {
				t.Errorf("name after rename = %q", got)
			}

			// The last passkey goes only after a confirmation.
			b.run("delete", chromedp.Click(chromedp.CSS(`#passkey-`+itoa(int(cr.ID))+` form[action$="/delete"] button`)))
			b.waitHeading("Delete your last passkey?")
			if shots {
				b.shot("confirm-delete")
			}
			if n := e.activePasskeys(alice); n != 1 {
				t.Fatalf("the confirmation page deleted the passkey already")
			}
			b.run("confirm", chromedp.Click(chromedp.ID("confirm-delete")))
			b.waitNotice("The passkey was deleted")
			if n := e.activePasskeys(alice); n != 0 {
				t.Fatalf("%d active passkeys after deleting, want 0", n)
			}
			if got := e.passkeyState(alice); got != "NULL" {
				t.Errorf("passkey_state after deleting the last passkey = %s, want NULL", got)
			}
			all := e.storedPasskeys(alice)
			if len(all) != 1 || !all[0].RevokedAt.Valid {
				t.Errorf("the deleted passkey should stay as revoked: %+v", all)
			}

			// A deleted passkey no longer signs in: the passkeys page told
			// the authenticator (signalAllAcceptedCredentials), which no
			// longer holds it. (The portal's own refusal of a revoked
			// passkey that a browser still offers: TestE2ESignals.)
			waitFor(t, "the authenticator to drop the deleted passkey", func() bool { return len(b.credentials()) == 0 })
			b.signOut()
			b.passkeySignIn()
			b.waitStatus("this device has no passkey for this portal")
		})
	}
}

// storedPasskeys reads a user's passkeys, revoked ones included.
func (e *env) storedPasskeys(u *user) []*credential {
	e.t.Helper()
	cs, err := e.portal.data.core.CredentialsWhere(context.Background(), e.portal.data.q("user_key")+" = ?", u.key)
	if err != nil {
		e.t.Fatal(err)
	}
	return cs
}

// TestE2EEnrollmentLink: IT hands out a link; it signs the employee in once.
func TestE2EEnrollmentLink(t *testing.T) {
	e := newEnv(t, envOptions{})
	bob := e.addUser("bob", true)
	e.sync()
	link := e.link(bob)
	u, err := url.Parse(link)
	if err != nil || !strings.HasPrefix(link, e.URL+"/link/") {
		t.Fatalf("link %q", link)
	}
	b := e.browser(t, browserOptions{})
	b.open(u.Path)
	b.waitHeading("Add a passkey")
	b.shot("link")
	if e.auditCount(evLinkUsed, true, bob.name) != 0 {
		t.Fatal("opening the link used it up: it must take the button")
	}
	b.run("continue", chromedp.Click(chromedp.CSS(`form[action^="/link/"] button`)))
	b.waitNotice("Welcome")
	b.register("")
	b.waitNotice("Your passkey is ready")
	if got := e.storedPasskeys(bob); len(got) != 1 || got[0].Name == "" {
		t.Fatalf("passkeys after the link flow: %+v", got)
	}
	if e.auditCount(evLinkUsed, true, bob.name) != 1 {
		t.Error("no audit entry for the used link")
	}

	// Single use.
	b.signOut()
	b.open(u.Path)
	b.waitHeading("Gone")
	if got := b.text("main"); !strings.Contains(got, "This link is not valid") {
		t.Errorf("second use of the link: %q", got)
	}
}

// TestE2EDisabledUser: a user the directory disables after enrolling is
// refused at the next request, and their passkey no longer signs in.
func TestE2EDisabledUser(t *testing.T) {
	for _, dir := range []string{"openldap", "ad"} {
		t.Run(dir, func(t *testing.T) {
			e := newEnv(t, envOptions{dir: dir})
			carol := e.addUser("carol", true)
			e.sync()
			b := e.browser(t, browserOptions{})
			b.signInPassword(carol.name, carol.password)
			b.waitHeading("Your passkeys")
			b.register("")
			b.waitNotice("Your passkey is ready")

			e.dir.disable(t, carol.dn)
			e.sync()
			b.open("/")
			b.waitHeading("Forbidden")
			if got := b.text("main"); !strings.Contains(got, "disabled") {
				t.Errorf("a disabled user's next request: %q", got)
			}
			// The session ended with the refusal; the passkey is refused too.
			b.passkeySignIn()
			b.waitStatus("disabled")
			// And the directory password, whatever it is.
			b.signInPassword(carol.name, carol.password)
			b.waitHeading("Sign in")
			if got := b.text("#server-error"); !strings.Contains(got, "did not work") {
				t.Errorf("password sign-in of a disabled user: %q", got)
			}

			// Re-enabled, everything comes back.
			e.dir.enable(t, carol.dn)
			e.sync()
			b.passkeySignIn()
			b.waitHeading("Your passkeys")
		})
	}
}

// TestE2ECloneWarning: a sign counter that went backwards refuses the
// sign-in (go-webauthn only sets CloneWarning) and is recorded.
func TestE2ECloneWarning(t *testing.T) {
	e := newEnv(t, envOptions{})
	dave := e.addUser("dave", true)
	e.sync()
	b := e.browser(t, browserOptions{})
	b.signInPassword(dave.name, dave.password)
	b.waitHeading("Your passkeys")
	b.register("")
	b.waitNotice("Your passkey is ready")
	b.signOut()

	// As if another copy of the key had been used 1000 times.
	n := schema.NamesFor(e.cfg)
	q := e.db.Dialect().Quote
	if _, err := store.Exec(context.Background(), e.db, "UPDATE "+n.Credentials+" SET "+q("sign_count")+" = 1000 WHERE "+q("user_key")+" = ?", dave.key); err != nil {
		t.Fatal(err)
	}
	b.passkeySignIn()
	b.waitStatus("signature counter went backwards")
	b.shot("clone-warning")
	if e.auditCount(evCloneWarning, false, dave.name) != 1 {
		t.Error("the clone warning is not in the audit trail")
	}
	if got := e.storedPasskeys(dave)[0].SignCount; got != 1000 {
		t.Errorf("stored sign count = %d after a refused sign-in, want it kept at 1000", got)
	}
	b.open("/")
	b.waitHeading("Sign in") // not signed in
}

// TestE2EPolicy: an authenticator the company did not approve, and a synced
// passkey where only device-bound ones are allowed, are refused with a
// message that says why.
func TestE2EPolicy(t *testing.T) {
	t.Run("aaguid", func(t *testing.T) {
		e := newEnv(t, envOptions{configure: func(cfg *config.Config) {
			cfg.Portal.Policy.AllowedAAGUIDs = []string{"ea9b8d66-4d01-1d21-3ce4-b6b48cb575d4"} // Google Password Manager only
		}})
		erin := e.addUser("erin", true)
		e.sync()
		b := e.browser(t, browserOptions{})
		b.signInPassword(erin.name, erin.password)
		b.waitHeading("Your passkeys")
		b.register("")
		b.waitStatus("not among the authenticators your company approved")
		b.shot("policy-refused")
		if n := e.activePasskeys(erin); n != 0 {
			t.Fatalf("%d passkeys stored despite the AAGUID policy", n)
		}
		if e.auditCount(evRegistered, false, erin.name) != 1 {
			t.Error("the refusal is not in the audit trail")
		}
	})
	t.Run("synced", func(t *testing.T) {
		e := newEnv(t, envOptions{configure: func(cfg *config.Config) { cfg.Portal.Policy.ForbidSynced = true }})
		fay := e.addUser("fay", true)
		e.sync()
		b := e.browser(t, browserOptions{edit: func(o *cdpwebauthn.VirtualAuthenticatorOptions) {
			o.DefaultBackupEligibility, o.DefaultBackupState = true, true
		}})
		b.signInPassword(fay.name, fay.password)
		b.waitHeading("Your passkeys")
		b.register("")
		b.waitStatus("only device-bound passkeys")
		if n := e.activePasskeys(fay); n != 0 {
			t.Fatalf("%d passkeys stored despite forbid_synced", n)
		}
	})
}

// TestE2EAutofill: with conditional mediation, the sign-in page offers the
// passkey in the username field's autofill; choosing it (the virtual
// authenticator chooses at once) signs in without any click.
func TestE2EAutofill(t *testing.T) {
	e := newEnv(t, envOptions{})
	gus := e.addUser("gus", true)
	e.sync()
	b := e.browser(t, browserOptions{autofill: true})
	b.signInPassword(gus.name, gus.password)
	b.waitHeading("Your passkeys")
	b.register("")
	b.waitNotice("Your passkey is ready")
	b.run("sign out", chromedp.Click(chromedp.CSS(".signout button")))
	// The sign-out lands on the sign-in page, whose autofill request the
	// authenticator answers: signed in again, with the passkey.
	b.waitNotice("You are signed in")
	if got := b.text(".badge"); !strings.Contains(got, "signed in with this one") {
		t.Errorf("after autofill: badge %q", got)
	}
	if e.auditCount(evSignIn+methodPassword, true, gus.name) != 1 || e.auditCount(evSignIn+methodPasskey, true, gus.name) != 1 {
		t.Errorf("want 2 sign-ins (password, then passkey by autofill) in the audit trail")
	}
}

// TestE2EButtonsWaitForTheScript: the passkey buttons, which only the
// script can serve, are not shown before it has taken them (a click in
// between was lost: the sign-in button did nothing, the enrollment form
// reloaded the page). A page whose script does not run shows none.
func TestE2EButtonsWaitForTheScript(t *testing.T) {
	e := newEnv(t, envOptions{})
	b := e.browser(t, browserOptions{})
	eval := func(js string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(b.ctx, 15*time.Second)
		defer cancel()
		v, err := chromedp.Run(ctx, chromedp.Evaluate[string](js))
		if err != nil {
			t.Fatalf("evaluate %s: %v", js, err)
		}
		return v
	}
	visible := func() bool {
		return eval(`(function(){var s=document.getElementById("passkey-signin");return String(!!s && s.offsetWidth > 0);})()`) == "true"
	}
	if _, err := chromedp.Call(b.ctx, emulation.SetScriptExecutionDisabled, emulation.SetScriptExecutionDisabledParams{Value: true}); err != nil {
		t.Fatalf("disable scripts: %v", err)
	}
	b.open("/")
	b.waitHeading("Sign in")
	if visible() {
		t.Error("the passkey sign-in button is shown on a page whose script has not run")
	}
	if _, err := chromedp.Call(b.ctx, emulation.SetScriptExecutionDisabled, emulation.SetScriptExecutionDisabledParams{Value: false}); err != nil {
		t.Fatalf("enable scripts: %v", err)
	}
	b.open("/")
	b.run("wait for the button", chromedp.WaitVisible(chromedp.ID("passkey-signin")))
	if ready := eval(`document.documentElement.getAttribute("data-js") || ""`); ready != "ready" {
		t.Errorf("the button is shown before the script marked the page ready (data-js %q)", ready)
	}
}

// TestE2EAutofillQuiet: a browser with passkey autofill and no passkey for
// the portal ends the autofill request without the user doing anything
// (the virtual authenticator does at once). That is not an error of the
// user's: the sign-in page stays as it is. It used to show "No passkey was
// used" above the form, which moved the password form down under the
// user's (and the tests') pointer.
func TestE2EAutofillQuiet(t *testing.T) {
	e := newEnv(t, envOptions{})
	b := e.browser(t, browserOptions{autofill: true})
	b.open("/")
	b.run("sign-in page ready", chromedp.WaitVisible(chromedp.ID("username")),
		chromedp.Poll[chromedp.Void](`document.documentElement.getAttribute("data-js") === "ready"`, chromedp.WithPollingTimeout(10*time.Second)))
	// Long enough for the autofill request to end: it ended within a
	// second of the page in every run seen.
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		shown, err := chromedp.Run(b.ctx, chromedp.Evaluate[bool](`(function(){var s=document.getElementById("status");return !!s && !s.hidden;})()`))
		if err != nil {
			t.Fatal(err)
		}
		if shown {
			t.Fatalf("the sign-in page shows %q without anything asked of the user", b.text("#status"))
		}
		time.Sleep(100 * time.Millisecond)
	}
}
