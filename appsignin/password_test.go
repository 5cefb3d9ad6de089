package appsignin_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"
	gooidc "github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"

	"github.com/passbridge/passbridge/internal/testsrv"
)

// TestOIDCPasswordFallbackInBrowser: on a client with password_fallback,
// an employee without a passkey signs in to a Go relying party with the
// directory password in Chromium; the invitation that follows creates a
// passkey (CDP virtual authenticator) and goes on to the application,
// whose verified ID token says amr ["pwd"]; the next sign-in is with the
// new passkey, and says so. On slapd and Samba AD.
func TestOIDCPasswordFallbackInBrowser(t *testing.T) {
	for _, dir := range []string{"openldap", "ad"} {
		t.Run(dir, func(t *testing.T) {
			port := testsrv.FreePort(t)
			d := startDaemon(t, daemonOptions{ad: dir == "ad", yaml: fmt.Sprintf(`oidc:
  clients:
    - id: erp-pwd
      name: Northwind ERP
      secret: erp-pwd-secret-0123456789abcdef
      redirect_uris: ["http://localhost:%d/callback"]
      password_fallback: true
`, port)})
			u := d.addUser("paula")
			rp := startGoRP(t, d.URL, "erp-pwd", "erp-pwd-secret-0123456789abcdef", port)

			ctx := testsrv.Browser(t)
			testsrv.VirtualAuthenticator(t, ctx)
			run := browserRun(t, ctx)
			claims := func() map[string]any {
				t.Helper()
				text := waitText(t, ctx, "claims")
				var m map[string]any
				if err := json.Unmarshal([]byte(text), &m); err != nil {
					t.Fatalf("claims: %v: %s", err, text)
				}
				return m
			}
			run("sign in with the directory password, then create the passkey the invitation offers",
				chromedp.Navigate(rp.URL+"/"),
				passwordForm("password-form", u.name, testsrv.DefaultUserPassword),
				chromedp.WaitVisible(chromedp.ID("passkey-create")),
				chromedp.WaitVisible(chromedp.ID("not-now")),
				chromedp.Click(chromedp.ID("passkey-create")),
			)
			key := strconv.FormatInt(u.key, 10)
			got := claims()
			if amr, _ := json.Marshal(got["amr"]); got["sub"] != key || string(amr) != `["pwd"]` {
				t.Errorf("after the password sign-in: sub %v, amr %s; want %s and [\"pwd\"]", got["sub"], amr, key)
			}
			if n := d.activePasskeys(u); n != 1 {
				t.Fatalf("%d passkeys after the invitation, want 1", n)
			}
			q := d.db.Dialect().Quote
			if n := d.count("SELECT COUNT(*) FROM " + q("passbridge_ceremonies") + " WHERE " + q("kind") + " = 'app_registration' AND " + q("result") + " = 'succeeded'"); n != 1 {
				t.Errorf("%d app_registration ceremonies succeeded, want 1 (its own method in the adoption figures)", n)
			}
			if n := d.events(u, "passkey.register", true, `"via":"app"`, `"client_id":"erp-pwd"`); n != 1 {
				t.Errorf("%d passkey.register events from the invitation, want 1", n)
			}
			if n := d.events(u, "app.signin", true, `"method":"password"`, `"client_id":"erp-pwd"`); n != 1 {
				t.Errorf("%d app.signin events with method password, want 1", n)
			}

			run("sign in with the new passkey",
				chromedp.Navigate(rp.URL+"/"),
				chromedp.WaitVisible(chromedp.ID("passkey-signin")),
				chromedp.Click(chromedp.ID("passkey-signin")),
			)
			got = claims()
			if amr, _ := json.Marshal(got["amr"]); got["sub"] != key || !strings.Contains(string(amr), `"pop"`) || strings.Contains(string(amr), "pwd") {
				t.Errorf("the passkey sign-in: sub %v, amr %s; want a passkey's", got["sub"], amr)
			}
			if n := d.events(u, "app.signin", true, `"method":"passkey"`); n != 1 {
				t.Errorf("%d app.signin events with method passkey, want 1", n)
			}

			// With a passkey and a policy that still allows the password,
			// the password goes straight back to the application: the
			// form's post ends at its redirect URI, which the login page's
			// form-action allows.
			run("sign in with the password again, with a passkey",
				chromedp.Navigate(rp.URL+"/"),
				passwordForm("password-form", u.name, testsrv.DefaultUserPassword),
			)
			got = claims()
			if amr, _ := json.Marshal(got["amr"]); got["sub"] != key || string(amr) != `["pwd"]` {
				t.Errorf("the second password sign-in: sub %v, amr %s; want %s and [\"pwd\"]", got["sub"], amr, key)
			}
			if n := d.events(u, "app.signin", true, `"method":"password"`); n != 2 || d.activePasskeys(u) != 1 {
				t.Errorf("%d app.signin events with method password, %d passkeys; want 2 and 1", n, d.activePasskeys(u))
			}
		})
	}
}

// activePasskeys counts a user's passkeys that are not revoked.
func (d *daemon) activePasskeys(u *user) int {
	q := d.db.Dialect().Quote
	return d.count("SELECT COUNT(*) FROM "+q("passbridge_credentials")+" WHERE "+q("user_key")+" = ? AND "+q("revoked_at")+" IS NULL", u.key)
}

// events counts the audit events of a user with that name and outcome
// whose detail contains every one of with.
func (d *daemon) events(u *user, event string, success bool, with ...string) int {
	q := d.db.Dialect().Quote
	query := "SELECT COUNT(*) FROM " + q("passbridge_audit") + " WHERE " + q("event") + " = ? AND " + q("success") + " = ? AND " + q("target") + " = ?"
	args := []any{event, success, u.name}
	for _, w := range with {
		query += " AND " + q("detail") + " LIKE ?"
		args = append(args, "%"+w+"%")
	}
	return d.count(query, args...)
}

// passwordLogin opens the login page the authorize response sent the
// browser to and posts the password form (with the page's CSRF token
// unless csrf is false); it returns the request ID and the answer.
func (f *flow) passwordLogin(res *http.Response, username, password string, csrf bool) (string, *http.Response) {
	f.t.Helper()
	loc := res.Header.Get("Location")
	if res.StatusCode != http.StatusFound || !strings.Contains(loc, "/oidc/login?id=") {
		f.t.Fatalf("authorize did not send the browser to the login page: %d %q", res.StatusCode, loc)
	}
	page, _ := url.Parse(f.d.URL)
	page = page.ResolveReference(&url.URL{Path: "/oidc/login", RawQuery: loc[strings.Index(loc, "?")+1:]})
	id := page.Query().Get("id")
	if got := f.get(page.String()); got.StatusCode != http.StatusOK {
		f.t.Fatalf("login page: %d", got.StatusCode)
	}
	form := url.Values{"request": {id}, "username": {username}, "password": {password}}
	if csrf {
		for _, c := range f.hc.Jar.Cookies(page) {
			if c.Name == "pb_oidc_csrf" {
				form.Set("_csrf", c.Value)
			}
		}
	}
	r, err := f.hc.PostForm(f.d.URL+"/oidc/login/password", form)
	if err != nil {
		f.t.Fatal(err)
	}
	r.Body.Close()
	return id, r
}

// TestOIDCPasswordFallback: the password fallback over HTTP, every
// refusal a 4xx with nothing issued: a client without password_fallback,
// a form without its CSRF token, the passkey_required policy,
// refused_with_passkey for someone with a passkey (and not for someone
// without), an inactive users row, a disabled directory user, wrong
// passwords up to the portal's per-account limit (then 429, even with the
// right one). A password sign-in that declines the invitation ("not now")
// gets a code whose ID token, verified by go-oidc, says amr ["pwd"].
func TestOIDCPasswordFallback(t *testing.T) {
	const secret = "erp-secret-0123456789abcdefgh"
	d := startDaemon(t, daemonOptions{yaml: `oidc:
  clients:
    - id: erp
      secret: ` + secret + `
      redirect_uris: ["https://erp.corp.example/cb"]
      password_fallback: true
    - id: strict
      secret: ` + secret + `
      redirect_uris: ["https://strict.corp.example/cb"]
`})
	verifier := oauth2.GenerateVerifier()
	params := func(client string) url.Values {
		return url.Values{"client_id": {client}, "redirect_uri": {"https://" + client + ".corp.example/cb"}, "response_type": {"code"}, "scope": {"openid profile email"},
			"state": {random()}, "nonce": {random()}, "code_challenge": {oauth2.S256ChallengeFromVerifier(verifier)}, "code_challenge_method": {"S256"}}
	}
	q := d.db.Dialect().Quote
	setPolicy := func(u *user, policy any) {
		d.exec("UPDATE "+q("users")+" SET "+q("passbridge_password_policy")+" = ? WHERE "+q("id")+" = ?", policy, u.key)
	}
	// refused checks a refusal: a 4xx page, no redirect, nothing issued.
	refused := func(what string, u *user, res *http.Response, status int) {
		t.Helper()
		if res.StatusCode != status || res.Header.Get("Location") != "" {
			t.Errorf("%s: %d %q, want %d and no redirect", what, res.StatusCode, res.Header.Get("Location"), status)
		}
		if n := d.appSignIns(u); n != 0 {
			t.Errorf("%s: %d app.signin events", what, n)
		}
	}
	ctx := gooidc.InsecureIssuerURLContext(context.Background(), d.URL)
	provider, err := gooidc.NewProvider(ctx, d.URL)
	if err != nil {
		t.Fatal(err)
	}
	idVerifier := provider.Verifier(&gooidc.Config{ClientID: "erp"})
	// try is a password sign-in of u to a client, in a new browser.
	try := func(u *user, client, password string) *http.Response {
		t.Helper()
		f := newFlow(t, d)
		_, res := f.passwordLogin(f.authorize(params(client)), u.name, password, true)
		return res
	}

	// Allowed (NULL policy, no passkey): the invitation, then "not now"
	// goes on to the application with a code, whose ID token says pwd.
	ann := d.addUser("ann")
	f := newFlow(t, d)
	p := params("erp")
	id, res := f.passwordLogin(f.authorize(p), ann.name, testsrv.DefaultUserPassword, true)
	if res.StatusCode != http.StatusSeeOther || !strings.HasSuffix(res.Header.Get("Location"), "/oidc/login/passkey?id="+url.QueryEscape(id)) {
		t.Fatalf("password sign-in: %d %q, want the invitation", res.StatusCode, res.Header.Get("Location"))
	}
	if got := newFlow(t, d).get(d.URL + "/oidc/login/passkey?id=" + url.QueryEscape(id)); got.StatusCode != http.StatusBadRequest {
		t.Errorf("the invitation in another browser: %d, want 400", got.StatusCode)
	}
	if st, m, _ := api(t, d.URL, "/oidc/login/passkey/begin", "", map[string]any{"request": id}); st != http.StatusForbidden || m["options"] != nil {
		t.Errorf("the invitation's begin without the CSRF token: %d %v", st, m)
	}
	if got := f.get(res.Header.Get("Location")); got.StatusCode != http.StatusOK {
		t.Fatalf("the invitation: %d", got.StatusCode)
	}
	cb := f.get(d.URL + "/oidc/authorize/callback?id=" + url.QueryEscape(id)) // "not now"
	loc, _ := url.Parse(cb.Header.Get("Location"))
	if cb.StatusCode != http.StatusFound || loc == nil || loc.Query().Get("code") == "" || loc.Query().Get("state") != p.Get("state") {
		t.Fatalf("not now: %d %q", cb.StatusCode, cb.Header.Get("Location"))
	}
	st, tok := f.token(url.Values{"grant_type": {"authorization_code"}, "code": {loc.Query().Get("code")}, "redirect_uri": {"https://erp.corp.example/cb"}, "code_verifier": {verifier}}, "erp", secret)
	raw, _ := tok["id_token"].(string)
	if st != http.StatusOK || raw == "" {
		t.Fatalf("token: %d %v", st, tok)
	}
	idt, err := idVerifier.Verify(ctx, raw)
	if err != nil {
		t.Fatalf("the ID token does not verify: %v", err)
	}
	var claims struct {
		AMR     []string `json:"amr"`
		UserKey string   `json:"user_key"`
	}
	idt.Claims(&claims)
	if !slices.Equal(claims.AMR, []string{"pwd"}) || idt.Subject != strconv.FormatInt(ann.key, 10) || claims.UserKey != idt.Subject || idt.Nonce != p.Get("nonce") {
		t.Errorf("ID token: sub %q, amr %v, user_key %q; want %d and [pwd]", idt.Subject, claims.AMR, claims.UserKey, ann.key)
	}
	if n := d.events(ann, "app.signin", true, `"method":"password"`, `"client_id":"erp"`, `"protocol":"oidc"`); n != 1 {
		t.Errorf("%d app.signin events with method password and the client, want 1", n)
	}
	if d.activePasskeys(ann) != 0 {
		t.Errorf("not now added a passkey")
	}

	// A client without password_fallback: no form, and a posted one is
	// refused before the directory is asked.
	bob := d.addUser("bob")
	res = try(bob, "strict", testsrv.DefaultUserPassword)
	refused("a client without password_fallback", bob, res, http.StatusForbidden)
	if n := d.events(bob, "signin.failed", false, `"code":"password_off"`, `"client_id":"strict"`); n != 1 {
		t.Errorf("%d signin.failed events with code password_off", n)
	}

	// The form without its CSRF token.
	f = newFlow(t, d)
	_, res = f.passwordLogin(f.authorize(params("erp")), bob.name, testsrv.DefaultUserPassword, false)
	refused("no CSRF token", bob, res, http.StatusForbidden)

	// passkey_required refuses whether or not the user has a passkey.
	setPolicy(bob, "passkey_required")
	res = try(bob, "erp", testsrv.DefaultUserPassword)
	refused("passkey_required", bob, res, http.StatusForbidden)

	// refused_with_passkey: refused once there is a passkey, allowed
	// before (then without an invitation's second passkey: straight on).
	setPolicy(bob, "refused_with_passkey")
	if res = try(bob, "erp", testsrv.DefaultUserPassword); res.StatusCode != http.StatusSeeOther {
		t.Errorf("refused_with_passkey without a passkey: %d, want allowed", res.StatusCode)
	}
	cat := d.addUser("cat")
	d.enroll(cat)
	setPolicy(cat, "refused_with_passkey")
	res = try(cat, "erp", testsrv.DefaultUserPassword)
	refused("refused_with_passkey with a passkey", cat, res, http.StatusForbidden)
	setPolicy(cat, "allowed")
	res = try(cat, "erp", testsrv.DefaultUserPassword)
	if res.StatusCode != http.StatusSeeOther || !strings.Contains(res.Header.Get("Location"), "/oidc/authorize/callback?id=") {
		t.Errorf("allowed with a passkey: %d %q, want straight on to the callback (no invitation)", res.StatusCode, res.Header.Get("Location"))
	}

	// The account's state refuses as it refuses a passkey.
	dan := d.addUser("dan")
	d.exec("UPDATE "+q("users")+" SET "+q("is_active")+" = ? WHERE "+q("id")+" = ?", false, dan.key)
	res = try(dan, "erp", testsrv.DefaultUserPassword)
	refused("an inactive users row", dan, res, http.StatusForbidden)
	eve := d.addUser("eve")
	d.dir.Disable(t, eve.dn)
	d.command("sync", "--full")
	res = try(eve, "erp", testsrv.DefaultUserPassword)
	if res.StatusCode < 400 || res.StatusCode >= 500 || res.Header.Get("Location") != "" || d.appSignIns(eve) != 0 {
		t.Errorf("a user disabled in the directory: %d %q", res.StatusCode, res.Header.Get("Location"))
	}

	// Wrong passwords count towards the portal's per-account limit
	// (portal.rate_limits.password_per_user, 3 by default): the fourth
	// attempt is refused before the directory, even with the right one.
	fay := d.addUser("fay")
	for i := range 3 {
		res = try(fay, "erp", "wrong-password-"+strconv.Itoa(i))
		refused("a wrong password", fay, res, http.StatusUnauthorized)
	}
	res = try(fay, "erp", testsrv.DefaultUserPassword)
	refused("over the limit", fay, res, http.StatusTooManyRequests)
	if n := d.events(fay, "signin.failed", false, `"method":"password"`, `"reason":"wrong password"`, `"client_id":"erp"`); n != 3 {
		t.Errorf("%d signin.failed events for the wrong passwords, want 3 (as the portal's, with the client)", n)
	}
	if n := d.events(fay, "signin.limited", false, `"limit":"account"`, `"client_id":"erp"`); n != 1 {
		t.Errorf("%d signin.limited events, want 1", n)
	}
	// The portal shares the limit: its own password sign-in is refused too.
	if st := portalPassword(t, d, fay.name); st != http.StatusTooManyRequests {
		t.Errorf("the portal's password sign-in after the login page's wrong passwords: %d, want 429", st)
	}
}

// portalPassword posts the portal's own password sign-in form and returns
// the status.
func portalPassword(t *testing.T, d *daemon, username string) int {
	t.Helper()
	f := newFlow(t, d)
	f.get(d.URL + "/")
	base, _ := url.Parse(d.URL + "/")
	var csrf string
	for _, c := range f.hc.Jar.Cookies(base) {
		if c.Name == "pb_csrf" {
			csrf = c.Value
		}
	}
	res, err := f.hc.PostForm(d.URL+"/signin/password", url.Values{"username": {username}, "password": {testsrv.DefaultUserPassword}, "_csrf": {csrf}})
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	return res.StatusCode
}
