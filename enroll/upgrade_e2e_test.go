package enroll

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"

	"github.com/passbridge/passbridge/enroll/adoption"
	"github.com/passbridge/passbridge/schema"
	"github.com/passbridge/passbridge/signin"
)

// recorder is a script that runs before the portal's in every page: it
// keeps, in sessionStorage (which survives the page's navigations), the
// page's errors, every navigator.credentials.create call's mediation, and
// every Signals API call with its arguments and how the browser's own
// implementation answered it. The CDP virtual authenticator does not show
// what a signal does to the credentials it holds, so the tests assert the
// calls the page makes, passed through to Chromium's implementation.
const recorder = `(function () {
  function log(k, v) { var a = JSON.parse(sessionStorage.getItem(k) || "[]"); a.push(v); sessionStorage.setItem(k, JSON.stringify(a)); }
  window.addEventListener("error", function (e) { log("errors", String(e.message)); });
  window.addEventListener("unhandledrejection", function (e) { log("errors", String(e.reason)); });
  if (!window.PublicKeyCredential) return;
  var create = navigator.credentials.create.bind(navigator.credentials);
  navigator.credentials.create = function (o) {
    log("creates", (o && o.mediation) || "");
    if (window.__passwordManager && o && o.mediation === "conditional") {
      // The virtual authenticator plays the password manager that
      // creates the passkey without a dialog.
      var c = Object.assign({}, o); delete c.mediation; return create(c);
    }
    return create(o);
  };
  ["signalUnknownCredential", "signalAllAcceptedCredentials", "signalCurrentUserDetails"].forEach(function (n) {
    var orig = PublicKeyCredential[n];
    if (window.__noSignals) { PublicKeyCredential[n] = undefined; return; }
    PublicKeyCredential[n] = function (args) {
      var rec = { name: n, args: args, native: typeof orig === "function" };
      var p = typeof orig === "function" ? orig.call(PublicKeyCredential, args) : Promise.resolve();
      return p.then(function () { rec.result = "ok"; log("signals", rec); }, function (e) { rec.result = e.name; log("signals", rec); throw e; });
    };
  });
})();`

// waitFor polls what a real browser did (not a timing) for up to 20 s.
func waitFor(t testing.TB, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// recorded reads what the recorder kept under key.
func (b *browser) recorded(key string, into any) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	defer cancel()
	raw, err := chromedp.Run(ctx, chromedp.Evaluate[string](`sessionStorage.getItem(`+jsString(key)+`) || "[]"`))
	if err != nil {
		b.t.Fatalf("read %s: %v", key, err)
	}
	if err := json.Unmarshal([]byte(raw), into); err != nil {
		b.t.Fatalf("%s: %v: %s", key, err, raw)
	}
}

// withRecorder installs the recorder; before it, setup (a script) sets
// what the emulated browser can do.
func (b *browser) withRecorder(setup string) {
	b.t.Helper()
	_, err := chromedp.Call(b.ctx, page.AddScriptToEvaluateOnNewDocument, page.AddScriptToEvaluateOnNewDocumentParams{Source: setup + "\n" + recorder})
	if err != nil {
		b.t.Fatal(err)
	}
}

type signalCall struct {
	Name   string         `json:"name"`
	Args   map[string]any `json:"args"`
	Native bool           `json:"native"`
	Result string         `json:"result"`
}

// TestE2EUpgrade: after a password sign-in without a passkey, where the
// browser can create one without a dialog (getClientCapabilities says
// conditionalCreate), the page asks for it with mediation "conditional"
// and the passkey is stored as an automatic upgrade, its own method in the
// figures; where it cannot, nothing is asked and the page offers the
// button at once.
func TestE2EUpgrade(t *testing.T) {
	e := newEnv(t, envOptions{})
	ann, ben := e.addUser("uann", true), e.addUser("uben", true)
	e.sync()

	b := e.browser(t, browserOptions{})
	b.withRecorder(`window.__passwordManager = true; if (window.PublicKeyCredential) { PublicKeyCredential.getClientCapabilities = function () { return Promise.resolve({ conditionalCreate: true }); }; }`)
	b.signInPassword(ann.name, ann.password)
	b.waitNotice("Your password manager saved a passkey")
	var creates []string
	b.recorded("creates", &creates)
	if !slices.Equal(creates, []string{"conditional"}) {
		t.Fatalf("create calls %v, want one with mediation conditional", creates)
	}
	if e.activePasskeys(ann) != 1 || e.passkeyState(ann) != signin.PasskeyEnrolled {
		t.Fatalf("ann has %d passkeys", e.activePasskeys(ann))
	}
	n := schema.NamesFor(e.cfg)
	q := e.db.Dialect().Quote
	if got := e.count("SELECT COUNT(*) FROM "+n.Ceremonies+" WHERE "+q("kind")+" = ? AND "+q("result")+" = ?", kindUpgrade, resultSucceeded); got != 1 {
		t.Fatalf("%d upgrade ceremonies succeeded", got)
	}
	if got := e.count("SELECT COUNT(*) FROM "+n.Audit+" WHERE "+q("event")+" = ? AND "+q("detail")+" LIKE ?", evRegistered, `%"via":"upgrade"%`); got != 1 {
		t.Errorf("%d passkey.register entries via upgrade", got)
	}
	// Signed in again with the password, ann has a passkey: no upgrade.
	b.signOut()
	b.signInPassword(ann.name, ann.password)
	b.waitNotice("You are signed in")
	b.recorded("creates", &creates)
	if len(creates) != 1 {
		t.Errorf("create calls %v after a sign-in with a passkey, want no new one", creates)
	}

	// A browser without conditional creation: no create call, the offer.
	b2 := e.browser(t, browserOptions{})
	b2.withRecorder(`if (window.PublicKeyCredential) { PublicKeyCredential.getClientCapabilities = function () { return Promise.resolve({ conditionalCreate: false }); }; }`)
	b2.signInPassword(ben.name, ben.password)
	b2.waitNotice("You are signed in")
	b2.run("offer", chromedp.WaitVisible(chromedp.ID("upgrade-offer")))
	b2.recorded("creates", &creates)
	if len(creates) != 0 {
		t.Errorf("create calls %v without conditional creation, want none", creates)
	}
	b2.register("")
	b2.waitNotice("Your passkey is ready")

	rep, err := adoption.Compute(context.Background(), e.db, e.cfg, time.Now(), 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Upgrades != 1 || rep.Registration.Count != 1 {
		t.Fatalf("adoption: %d upgrades, %d registrations; want 1 and 1", rep.Upgrades, rep.Registration.Count)
	}
	body := e.client().get("/metrics").body
	for _, want := range []string{`passbridge_adoption_registrations_by_method{method="upgrade"} 1`, `passbridge_adoption_registrations_by_method{method="portal"} 1`} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	var errs []string
	b.recorded("errors", &errs)
	if len(errs) > 0 {
		t.Errorf("page errors: %v", errs)
	}
}

// TestUpgradeRefused: the upgrade ceremony is only for a password session
// without a passkey.
func TestUpgradeRefused(t *testing.T) {
	e := newEnv(t, envOptions{})
	u := e.addUser("uref", true)
	e.sync()
	c := e.client()
	c.mustSignIn(u.name, u.password)
	if r := c.post("/webauthn/register/begin", map[string]any{"upgrade": true}); r.status != http.StatusOK {
		t.Fatalf("upgrade for a password session without a passkey: %d %s", r.status, r.body)
	}
	c.register("first")
	if r := c.post("/webauthn/register/begin", map[string]any{"upgrade": true}); r.status != http.StatusConflict || !strings.Contains(r.body, "no_upgrade") {
		t.Fatalf("upgrade with a passkey: %d %s", r.status, r.body)
	}
	lc := e.client()
	if r := lc.form(strings.TrimPrefix(e.link(u), e.URL), url.Values{}); r.status != http.StatusSeeOther {
		t.Fatalf("link sign-in: %d", r.status)
	}
	if r := lc.post("/webauthn/register/begin", map[string]any{"upgrade": true}); r.status != http.StatusConflict {
		t.Fatalf("upgrade in a link session: %d %s", r.status, r.body)
	}
}

// TestE2ESignals: the passkeys page tells the password manager which of
// the user's passkeys the portal accepts and the user's current names
// (after IT revokes one, and after a rename in the directory); a passkey
// sign-in refused because IT revoked the passkey reports it unknown, and
// Chromium's virtual authenticator drops it (the CDP domain shows that
// effect, and the new display name); a disabled account's passkey is not
// signalled (re-enabled, it works again); where the browser has no Signals
// API, nothing fails.
func TestE2ESignals(t *testing.T) {
	e := newEnv(t, envOptions{})
	u := e.addUser("sig", true)
	e.sync()
	// Two passkeys from another device, one in this browser.
	hc := e.client()
	hc.mustSignIn(u.name, u.password)
	hc.register("phone")
	b := e.browser(t, browserOptions{})
	b.withRecorder("")
	b.signInPassword(u.name, u.password)
	b.waitNotice("You are signed in")
	b.register("laptop")
	b.waitNotice("Your passkey is ready")

	ctx := context.Background()
	creds, err := e.portal.data.activeCredentials(ctx, u.key)
	if err != nil || len(creds) != 2 {
		t.Fatalf("%d passkeys (%v)", len(creds), err)
	}
	id := func(c *credential) string { return base64.RawURLEncoding.EncodeToString(c.CredentialID) }
	handle := base64.RawURLEncoding.EncodeToString(creds[0].UserHandle)
	last := func(name string) signalCall {
		t.Helper()
		var calls []signalCall
		b.recorded("signals", &calls)
		for i := len(calls) - 1; i >= 0; i-- {
			if calls[i].Name == name {
				return calls[i]
			}
		}
		t.Fatalf("no %s call among %+v", name, calls)
		return signalCall{}
	}
	accepted := func(c signalCall) []string {
		var out []string
		for _, v := range c.Args["allAcceptedCredentialIds"].([]any) {
			out = append(out, v.(string))
		}
		slices.Sort(out)
		return out
	}
	b.open("/")
	b.waitHeading("Your passkeys")
	b.run("signals", chromedp.Poll[chromedp.Void](`(JSON.parse(sessionStorage.getItem("signals") || "[]")).length >= 2`, chromedp.WithPollingTimeout(10*time.Second)))
	all := last("signalAllAcceptedCredentials")
	want := []string{id(creds[0]), id(creds[1])}
	slices.Sort(want)
	if !slices.Equal(accepted(all), want) || all.Args["userId"] != handle || all.Args["rpId"] != "localhost" {
		t.Fatalf("signalAllAcceptedCredentials %+v, want %v for user %s", all, want, handle)
	}
	t.Logf("signalAllAcceptedCredentials: Chromium's own implementation %v, answered %q", all.Native, all.Result)
	if all.Native && all.Result != "ok" {
		t.Errorf("Chromium refused signalAllAcceptedCredentials: %s", all.Result)
	}
	det := last("signalCurrentUserDetails")
	if det.Args["name"] != u.email || det.Args["displayName"] != displayName(u.name) || det.Args["userId"] != handle {
		t.Fatalf("signalCurrentUserDetails %+v", det)
	}

	// IT revokes the phone's passkey; the directory renames the user.
	if err := e.portal.data.revoke(ctx, u.key, creds[0].ID, "revoked by IT (test)", ""); err != nil {
		t.Fatal(err)
	}
	e.dir.(slapdDir).s.Modify(t, u.dn, map[string][]string{"displayName": {"Signe Renamed"}})
	e.sync()
	b.open("/")
	b.waitHeading("Your passkeys")
	b.run("signals again", chromedp.Poll[chromedp.Void](`(JSON.parse(sessionStorage.getItem("signals") || "[]")).length >= 4`, chromedp.WithPollingTimeout(10*time.Second)))
	if got := accepted(last("signalAllAcceptedCredentials")); !slices.Equal(got, []string{id(creds[1])}) {
		t.Fatalf("after the revocation: accepted %v, want only %s", got, id(creds[1]))
	}
	if got := last("signalCurrentUserDetails").Args["displayName"]; got != "Signe Renamed" {
		t.Fatalf("after the rename: displayName %v", got)
	}
	// The effect on the authenticator: it keeps this browser's passkey
	// (still accepted), under the new display name.
	waitFor(t, "the authenticator to show the new display name", func() bool {
		cs := b.credentials()
		return len(cs) == 1 && cs[0].UserDisplayName == "Signe Renamed"
	})

	// Disabled in the directory: the passkey is refused, and not
	// signalled; re-enabled, it signs in again.
	e.dir.disable(t, u.dn)
	e.sync()
	b.open("/") // the session is refused and ends
	b.passkeySignIn()
	b.waitStatus("disabled")
	if len(b.credentials()) != 1 {
		t.Fatal("the passkey of a disabled account was dropped from the authenticator")
	}
	e.dir.enable(t, u.dn)
	e.sync()
	b.passkeySignIn()
	b.waitHeading("Your passkeys")

	// IT revokes this browser's passkey: the next passkey sign-in is
	// refused and the page reports the passkey unknown.
	if err := e.portal.data.revoke(ctx, u.key, creds[1].ID, "revoked by IT (test)", ""); err != nil {
		t.Fatal(err)
	}
	b.signOut()
	b.passkeySignIn()
	b.waitStatus("no longer signs you in")
	b.run("unknown", chromedp.Poll[chromedp.Void](`(JSON.parse(sessionStorage.getItem("signals") || "[]")).some(function (c) { return c.name === "signalUnknownCredential"; })`, chromedp.WithPollingTimeout(10*time.Second)))
	unk := last("signalUnknownCredential")
	if unk.Args["credentialId"] != id(creds[1]) || unk.Args["rpId"] != "localhost" {
		t.Fatalf("signalUnknownCredential %+v, want %s", unk, id(creds[1]))
	}
	waitFor(t, "the authenticator to drop the revoked passkey", func() bool { return len(b.credentials()) == 0 })
	var errs []string
	b.recorded("errors", &errs)
	if len(errs) > 0 {
		t.Errorf("page errors: %v", errs)
	}

	// A browser without the Signals API: the same pages, no error.
	nb := e.browser(t, browserOptions{})
	nb.withRecorder(`window.__noSignals = true;`)
	nb.signInPassword(u.name, u.password)
	nb.waitNotice("You are signed in")
	nb.open("/")
	nb.waitHeading("Your passkeys")
	nb.recorded("errors", &errs)
	if len(errs) > 0 {
		t.Errorf("page errors without the Signals API: %v", errs)
	}
}
