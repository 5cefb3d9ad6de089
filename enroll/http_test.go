package enroll

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/descope/virtualwebauthn"
	"github.com/go-webauthn/webauthn/protocol"
	"github.com/go-webauthn/webauthn/protocol/webauthncose"
	"github.com/go-webauthn/webauthn/webauthn"

	"github.com/passbridge/passbridge/config"
	"github.com/passbridge/passbridge/schema"
	"github.com/passbridge/passbridge/store"
)

// HTTP-level tests: the portal as a browser without JavaScript sees it,
// and as an attacker does.

// TestMalformedFinish: broken, truncated, oversized and replayed ceremony
// responses are 4xx with a message, never a 500, and store nothing.
func TestMalformedFinish(t *testing.T) {
	e := newEnv(t, envOptions{})
	u := e.addUser("mal", true)
	e.sync()
	c := e.client()
	c.mustSignIn(u.name, u.password)

	ceremony, options := c.begin("/webauthn/register/begin", nil)
	_, good := c.attest(options)
	for _, tc := range []struct {
		name   string
		body   string
		status int
	}{
		{"not JSON", `{`, 400},
		{"truncated", `{"ceremony":"` + ceremony + `","credential":` + good[:len(good)/2], 400},
		{"truncated credential", `{"ceremony":"` + ceremony + `","credential":"` + good[:len(good)/2] + `"}`, 400},
		{"unknown field", `{"ceremony":"` + ceremony + `","credential":{},"admin":true}`, 400},
		{"no credential", `{"ceremony":"` + ceremony + `"}`, 400},
		{"null credential", `{"ceremony":"` + ceremony + `","credential":null}`, 400},
		{"bad ceremony", `{"ceremony":"../../etc/passwd","credential":{}}`, 400},
		{"two values", `{"ceremony":"x"} {"ceremony":"y"}`, 400},
		{"oversized", `{"ceremony":"` + ceremony + `","credential":"` + strings.Repeat("A", maxBody) + `"}`, 413},
		{"deeply nested", `{"ceremony":"` + ceremony + `","credential":` + strings.Repeat("[", 100000) + strings.Repeat("]", 100000) + `}`, 400},
		{"nested under the size limit", `{"ceremony":"` + ceremony + `","credential":` + strings.Repeat(`{"a":`, 6000) + "1" + strings.Repeat("}", 6000) + `}`, 400},
	} {
		r := c.post("/webauthn/register/finish", tc.body)
		if r.status != tc.status {
			t.Errorf("%s: status %d, want %d: %s", tc.name, r.status, tc.status, r.body)
			continue
		}
		if m := r.json(t); m["error"] == "" || m["code"] == "" {
			t.Errorf("%s: no message in %s", tc.name, r.body)
		}
	}
	if n := e.activePasskeys(u); n != 0 {
		t.Fatalf("%d passkeys stored from malformed requests", n)
	}
	// The last case was well-formed JSON with a credential that does not
	// parse: that used the ceremony up, so the good response is refused
	// too (no second try on one challenge).
	r := c.post("/webauthn/register/finish", map[string]any{"ceremony": ceremony, "credential": json.RawMessage(good)})
	if r.status != 400 || r.json(t)["code"] != "ceremony_expired" {
		t.Errorf("finish on a used ceremony: %d %s", r.status, r.body)
	}
	if n := e.activePasskeys(u); n != 0 {
		t.Fatalf("%d passkeys stored from malformed requests", n)
	}

	// A good registration, then malformed sign-ins.
	cred := c.register("")
	lc, lopts := c.begin("/webauthn/login/begin", nil)
	goodAssert := c.assert(lopts, &cred)
	for _, tc := range []struct{ name, body string }{
		{"truncated", `{"ceremony":"` + lc + `","credential":` + goodAssert[:len(goodAssert)/3]},
		{"garbage credential", `{"ceremony":"` + lc + `","credential":{"id":"AAAA","type":"public-key","response":{}}}`},
		{"wrong types", `{"ceremony":42,"credential":[]}`},
	} {
		r := c.post("/webauthn/login/finish", tc.body)
		if r.status != 400 {
			t.Errorf("login %s: status %d: %s", tc.name, r.status, r.body)
		}
	}
	// A tampered signature is refused and signs nobody in.
	lc, lopts = c.begin("/webauthn/login/begin", nil)
	var a map[string]any
	_ = json.Unmarshal([]byte(c.assert(lopts, &cred)), &a)
	a["response"].(map[string]any)["signature"] = base64.RawURLEncoding.EncodeToString(bytes.Repeat([]byte{1}, 70))
	r = c.post("/webauthn/login/finish", map[string]any{"ceremony": lc, "credential": a})
	if r.status != 400 || r.json(t)["code"] != "unverified" {
		t.Errorf("tampered signature: %d %s", r.status, r.body)
	}
	// An unknown passkey.
	stranger := newClient(t, e.URL)
	other, _ := stranger.attest(options)
	lc, lopts = stranger.begin("/webauthn/login/begin", nil)
	stranger.auth.Options.UserHandle = []byte("someone")
	r = stranger.post("/webauthn/login/finish", map[string]any{"ceremony": lc, "credential": json.RawMessage(stranger.assert(lopts, &other))})
	if r.status != 400 || r.json(t)["code"] != "unknown_passkey" {
		t.Errorf("unknown passkey: %d %s", r.status, r.body)
	}
	if r := stranger.get("/"); !strings.Contains(r.body, `id="password-form"`) {
		t.Error("a refused passkey sign-in left a session")
	}
}

// TestCSRF: every state-changing request needs the token (or a browser's
// same-origin Sec-Fetch-Site); without it, 403 and nothing happens.
func TestCSRF(t *testing.T) {
	e := newEnv(t, envOptions{})
	u := e.addUser("csrf", true)
	e.sync()
	c := e.client()
	c.get("/")
	for _, path := range []string{"/signin/password", "/signout", "/passkeys/1/rename", "/passkeys/1/delete", "/link/" + strings.Repeat("a", 43)} {
		r := c.form(path, url.Values{csrfField: {""}, "username": {u.name}, "password": {u.password}})
		if r.status != http.StatusForbidden || !strings.Contains(r.body, "did not come from this portal") {
			t.Errorf("POST %s without a CSRF token: %d %s", path, r.status, strip(r.body))
		}
		r = c.form(path, url.Values{csrfField: {"forged-token"}, "username": {u.name}, "password": {u.password}})
		if r.status != http.StatusForbidden {
			t.Errorf("POST %s with a wrong CSRF token: %d", path, r.status)
		}
	}
	for _, path := range []string{"/webauthn/login/begin", "/webauthn/register/begin", "/webauthn/login/finish", "/webauthn/register/finish", "/webauthn/cancel"} {
		req, _ := http.NewRequest(http.MethodPost, e.URL+path, strings.NewReader(`{}`))
		req.Header.Set("Content-Type", "application/json")
		r := c.do(req)
		if r.status != http.StatusForbidden || r.json(t)["code"] != "csrf" {
			t.Errorf("POST %s without a CSRF header: %d %s", path, r.status, r.body)
		}
	}
	// A cross-site form post from a modern browser is refused whatever
	// the token.
	req, _ := http.NewRequest(http.MethodPost, e.URL+"/signin/password", strings.NewReader(url.Values{"username": {u.name}, "password": {u.password}, csrfField: {c.csrf}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Sec-Fetch-Site", "cross-site")
	req.Header.Set("Origin", "https://evil.example")
	if r := c.do(req); r.status != http.StatusForbidden {
		t.Errorf("cross-site POST: %d", r.status)
	}
	if n := e.auditCount(evSignIn+methodPassword, true, u.name); n != 0 {
		t.Fatalf("a forged request signed in (%d)", n)
	}
	// With the token, the same sign-in works.
	c.mustSignIn(u.name, u.password)
}

// TestPasswordRateLimit: the 4th wrong password in the window is refused
// with 429 before it reaches the directory, which has seen at most 3
// failed binds; the other spellings of the account share its limit.
func TestPasswordRateLimit(t *testing.T) {
	for _, dir := range []string{"openldap", "ad"} {
		t.Run(dir, func(t *testing.T) {
			e := newEnv(t, envOptions{dir: dir})
			u := e.addUser("rl", true)
			e.sync()
			c := e.client()
			logins := []string{u.name, u.name, u.name, u.name, u.name}
			if dir == "ad" {
				// sAMAccountName, UPN, DOMAIN\sam: one account, one limit.
				logins = []string{u.name, u.name + "@corp.example", `CORP\` + u.name, u.name, u.name}
			}
			for i := range 3 {
				if r := c.signIn(logins[i], "wrong-"+logins[i]); r.status != http.StatusUnauthorized {
					t.Fatalf("wrong password %d: %d %s", i+1, r.status, strip(r.body))
				}
			}
			before := e.dir.failedBinds(t, u.dn)
			r := c.signIn(logins[3], "wrong-again")
			if r.status != http.StatusTooManyRequests {
				t.Fatalf("4th wrong password: %d %s", r.status, strip(r.body))
			}
			mustContain(t, "429 page", strip(r.body), "Too many password attempts for this account")
			// Even the right password waits: the limit is checked first.
			if r := c.signIn(logins[4], u.password); r.status != http.StatusTooManyRequests {
				t.Errorf("right password while limited: %d", r.status)
			}
			if got := e.dir.failedBinds(t, u.dn); got > 3 || got != before {
				t.Errorf("the directory counted %d failed binds (%d before the refused attempts), want at most 3 and no more after", got, before)
			}
			if n := e.auditCount(evSignInLimited, false, logins[3]); n != 2 {
				t.Errorf("%d refused attempts in the audit trail, want 2", n)
			}
			// Another user is not affected.
			v := e.addUser("rl2", true)
			e.sync()
			e.client().mustSignIn(v.name, v.password)
		})
	}
}

// TestPasswordLimitConcurrent: many wrong passwords at once for one account
// still take at most the limit of directory binds.
func TestPasswordLimitConcurrent(t *testing.T) {
	e := newEnv(t, envOptions{driver: "postgres"})
	u := e.addUser("burst", true)
	e.sync()
	codes := make(chan int, 20)
	for range 20 {
		go func() {
			c := newClient(t, e.URL)
			codes <- c.signIn(u.name, "wrong").status
		}()
	}
	limited := 0
	for range 20 {
		if <-codes == http.StatusTooManyRequests {
			limited++
		}
	}
	if limited != 17 {
		t.Errorf("%d of 20 concurrent wrong passwords were refused by the limit, want 17", limited)
	}
	if got := e.dir.failedBinds(t, u.dn); got > 3 {
		t.Errorf("the directory saw %d failed binds, want at most 3", got)
	}
}

// TestLDAPInjection: LDAP filter and DN syntax in the username is just a
// username that does not exist: no match, no error page, no directory
// error, the same answer as a wrong password.
func TestLDAPInjection(t *testing.T) {
	e := newEnv(t, envOptions{configure: func(cfg *config.Config) { cfg.Portal.RateLimits.PasswordPerIP = 1000 }})
	u := e.addUser("victim", true)
	e.sync()
	corpus := []string{
		"*", "*)(uid=*", "*)(|(uid=*", u.name + ")(uid=*", u.name + "*", "*" + u.name[1:], "(uid=*)", `\2a`, `\00`,
		"admin)(&)", "*)(objectClass=*", "x)(|(objectClass=*)(uid=" + u.name, "uid=" + u.name + "," + e.ou,
		e.ou, "cn=admin,dc=corp,dc=example", `\`, `\\`, "))))))))", "((((((", "\u00e9*", u.name + "\x00", "%2a", "${jndi:ldap://x}",
		// More of the classic corpus: boolean and wildcard injection,
		// escapes of escapes, DN and attribute syntax, other encodings.
		"*)(&", "*))%00", u.name + ")(|(password=*))", u.name + "*)(userPassword=*", "*)(|(mail=*)(cn=*))", "(|(uid=*)(uid=" + u.name + "))",
		`\2a\29\28`, `\5c2a`, `\28uid=\2a\29`, "*\x00", "\x00*", "uid=*))(|(uid=*", "!(uid=" + u.name + ")", "(&(objectClass=*)",
		u.name + ",ou=people", u.name + "+cn=x", "cn=" + u.name + ",", "#" + u.name, " " + u.name + "*", "%2A%29%28", "\uff0a", "\u2217",
		strings.ToUpper(u.name) + "*", strings.Repeat("*", 300), strings.Repeat("(", 1000), strings.Repeat("a", 5000),
	}
	for _, name := range corpus {
		c := e.client()
		r := c.signIn(name, u.password)
		switch {
		case r.status == http.StatusSeeOther:
			t.Errorf("username %q signed in", name)
		case r.status >= 500:
			t.Errorf("username %q: %d %s", name, r.status, strip(r.body))
		case r.status != http.StatusUnauthorized && r.status != http.StatusBadRequest:
			t.Errorf("username %q: status %d, want 401 (or 400 for control characters)", name, r.status)
		}
		if r.status == http.StatusUnauthorized {
			mustContain(t, name, strip(r.body), "That username and password did not work")
		}
	}
	// Injection in the password: the victim's name with a wildcard or
	// filter syntax as the password signs nobody in (two tries: a third
	// wrong one would use up the victim's attempts).
	for _, pw := range []string{"*", "*)(|(userPassword=*))"} {
		if r := e.client().signIn(u.name, pw); r.status == http.StatusSeeOther || r.status >= 500 {
			t.Errorf("password %q: status %d", pw, r.status)
		}
	}
	if n := e.auditCount(evSignIn+methodPassword, true, u.name); n != 0 {
		t.Fatalf("an injected username signed the victim in")
	}
	// The victim's own sign-in still works: the corpus locked nothing.
	e.client().mustSignIn(u.name, u.password)
}

// TestSignInRefusals: accounts that may not use the portal are told why
// (after a right password), and get no session.
func TestSignInRefusals(t *testing.T) {
	e := newEnv(t, envOptions{})
	noRow := e.addUser("norow", false) // no users row to attach passkeys to
	e.sync()
	late := e.addUser("late", true) // not synced yet
	for _, tc := range []struct {
		u    *user
		want string
	}{
		{noRow, "not linked to an application account"},
		{late, "has not reached the passkey portal yet"},
	} {
		c := e.client()
		r := c.signIn(tc.u.name, tc.u.password)
		if r.status != http.StatusForbidden {
			t.Errorf("%s: %d %s", tc.u.name, r.status, strip(r.body))
		}
		mustContain(t, tc.u.name, strip(r.body), tc.want)
		if r := c.get("/"); !strings.Contains(r.body, `id="password-form"`) {
			t.Errorf("%s: refused but signed in", tc.u.name)
		}
	}
}

// TestSessionCookie: server-side sessions with HttpOnly, SameSite=Lax and
// Secure (over HTTPS) cookies, a new ID at each sign-in, security headers.
func TestSessionCookie(t *testing.T) {
	e := newEnv(t, envOptions{configure: func(cfg *config.Config) { cfg.Portal.PublicURL = "" }})
	u := e.addUser("cookie", true)
	e.sync()
	c := e.client()
	r := c.signIn(u.name, u.password)
	first := setCookie(t, r, sessionCookie)
	if !first.HttpOnly || first.SameSite != http.SameSiteLaxMode || first.Secure || first.Path != "/" {
		t.Errorf("session cookie over http://localhost = %+v, want HttpOnly, SameSite=Lax, not Secure", first)
	}
	second := setCookie(t, c.signIn(u.name, u.password), sessionCookie)
	if second.Value == first.Value {
		t.Error("signing in again kept the session ID")
	}
	n := schema.NamesFor(e.cfg)
	if got := e.count("SELECT COUNT(*) FROM " + n.Sessions); got != 1 {
		t.Errorf("%d session rows after two sign-ins of one browser, want 1 (the old one ended)", got)
	}
	if got := e.count("SELECT COUNT(*) FROM "+n.Sessions+" WHERE "+e.db.Dialect().Quote("id")+" = ?", first.Value); got != 0 {
		t.Error("the session table holds the cookie value; it must hold only its hash")
	}
	page := c.get("/")
	for h, want := range map[string]string{
		"Content-Security-Policy": "script-src 'self'", "X-Frame-Options": "DENY", "X-Content-Type-Options": "nosniff",
		"Referrer-Policy": "no-referrer", "Cache-Control": "no-store",
	} {
		mustContain(t, h, page.header.Get(h), want)
	}
	mustContain(t, "CSP", page.header.Get("Content-Security-Policy"), "frame-ancestors 'none'")
	if strings.Contains(page.body, "<script>") || strings.Contains(page.body, " onclick=") {
		t.Error("inline script in the page")
	}
	// Signing out ends the session on the server.
	c.form("/signout", url.Values{})
	if got := e.count("SELECT COUNT(*) FROM " + n.Sessions); got != 0 {
		t.Errorf("%d sessions after sign-out", got)
	}

	// Over HTTPS, the cookies are Secure (and HSTS is sent).
	sec := newEnv(t, envOptions{configure: func(cfg *config.Config) {
		cfg.Portal.Origins = []string{"https://passkeys.localhost"}
		cfg.Portal.RPID = "passkeys.localhost"
	}})
	v := sec.addUser("secure", true)
	sec.sync()
	sc := sec.client()
	r = sc.signIn(v.name, v.password)
	if ck := setCookie(t, r, sessionCookie); !ck.Secure {
		t.Errorf("session cookie of an https portal = %+v, want Secure", ck)
	}
	mustContain(t, "HSTS", r.header.Get("Strict-Transport-Security"), "max-age=")
}

func setCookie(t testing.TB, r response, name string) *http.Cookie {
	t.Helper()
	for _, line := range r.header.Values("Set-Cookie") {
		ck, err := http.ParseSetCookie(line)
		if err == nil && ck.Name == name {
			return ck
		}
	}
	t.Fatalf("no Set-Cookie %s (status %d: %s)", name, r.status, strip(r.body))
	return nil
}

// TestPasskeyLimit: portal.policy.max_passkeys bounds a user's passkeys.
func TestPasskeyLimit(t *testing.T) {
	e := newEnv(t, envOptions{configure: func(cfg *config.Config) { cfg.Portal.Policy.MaxPasskeys = 2 }})
	u := e.addUser("max", true)
	e.sync()
	c := e.client()
	c.mustSignIn(u.name, u.password)
	c.register("one")
	c.register("two")
	r := c.post("/webauthn/register/begin", nil)
	if r.status != http.StatusConflict || r.json(t)["code"] != "limit" {
		t.Errorf("third passkey: %d %s", r.status, r.body)
	}
	if n := e.activePasskeys(u); n != 2 {
		t.Errorf("%d passkeys, want 2", n)
	}
}

// TestInterop proves that the columns passbridge stores are enough for the
// application to verify a passkey sign-in on its own: an assertion from the
// authenticator, for a challenge the application made, is verified with
// go-webauthn's low-level protocol API and only the stored public key, sign
// count, flags and user handle, read with plain SQL; passbridge is not
// involved.
func TestInterop(t *testing.T) {
	for _, driver := range []string{"sqlite", "postgres", "mysql"} {
		t.Run(driver, func(t *testing.T) {
			e := newEnv(t, envOptions{driver: driver})
			u := e.addUser("interop", true)
			e.sync()
			c := e.client()
			c.mustSignIn(u.name, u.password)
			cred := c.register("laptop")

			// The application's own sign-in: its challenge, its RP.
			challenge := make([]byte, 32)
			_, _ = rand.Read(challenge)
			opts, _ := json.Marshal(map[string]any{"publicKey": map[string]any{"challenge": base64.RawURLEncoding.EncodeToString(challenge), "rpId": "localhost"}})
			resp := c.assert(string(opts), &cred)
			parsed, err := protocol.ParseCredentialRequestResponseBytes([]byte(resp))
			if err != nil {
				t.Fatal(err)
			}

			// What the application reads: plain SQL on the columns.
			n := schema.NamesFor(e.cfg)
			q := e.db.Dialect().Quote
			var row struct {
				UserKey        int64  `db:"user_key"`
				PublicKey      []byte `db:"public_key"`
				SignCount      int64  `db:"sign_count"`
				BackupEligible bool   `db:"backup_eligible"`
				BackupState    bool   `db:"backup_state"`
				UserHandle     []byte `db:"user_handle"`
			}
			err = store.Get(context.Background(), e.db, &row, "SELECT "+q("user_key")+", "+q("public_key")+", "+q("sign_count")+", "+q("backup_eligible")+", "+q("backup_state")+", "+q("user_handle")+
				" FROM "+n.Credentials+" WHERE "+q("credential_id")+" = ? AND "+q("revoked_at")+" IS NULL", []byte(parsed.RawID))
			if err != nil {
				t.Fatalf("read the stored passkey: %v", err)
			}
			if row.UserKey != u.key {
				t.Fatalf("passkey belongs to users row %d, want %d", row.UserKey, u.key)
			}
			if _, err := webauthncose.ParsePublicKey(row.PublicKey); err != nil {
				t.Fatalf("stored public key is not a COSE key: %v", err)
			}
			err = parsed.Verify(base64.RawURLEncoding.EncodeToString(challenge), "localhost", "", []string{e.URL}, nil, nil,
				protocol.TopOriginExplicitVerificationMode, false, true, true, row.PublicKey, protocol.SignaturePolicy{})
			if err != nil {
				t.Fatalf("the application could not verify the assertion from the stored columns: %v", err)
			}
			if !bytes.Equal(parsed.Response.UserHandle, row.UserHandle) {
				t.Error("user handle of the assertion does not match the stored one")
			}
			flags := parsed.Response.AuthenticatorData.Flags
			if flags.HasBackupEligible() != row.BackupEligible || flags.HasBackupState() != row.BackupState {
				t.Error("stored backup flags differ from the authenticator's")
			}
			if int64(parsed.Response.AuthenticatorData.Counter) <= row.SignCount {
				t.Errorf("counter %d not above the stored %d", parsed.Response.AuthenticatorData.Counter, row.SignCount)
			}
			// And the passkey signs in to the portal as well.
			if r := c.passkeySignIn(&cred); r.status != http.StatusOK {
				t.Fatalf("portal sign-in: %d %s", r.status, r.body)
			}
			// After it, credential_json is still the whole record the
			// library made at registration, attestation included, and the
			// columns hold the sign-in's counter.
			var after struct {
				SignCount int64  `db:"sign_count"`
				JSON      string `db:"credential_json"`
			}
			if err := store.Get(context.Background(), e.db, &after, "SELECT "+q("sign_count")+", "+q("credential_json")+" FROM "+n.Credentials+" WHERE "+q("credential_id")+" = ?", []byte(parsed.RawID)); err != nil {
				t.Fatal(err)
			}
			var whole webauthn.Credential
			if err := json.Unmarshal([]byte(after.JSON), &whole); err != nil {
				t.Fatalf("credential_json after a sign-in: %v", err)
			}
			if len(whole.Attestation.Object) == 0 || len(whole.Attestation.ClientDataJSON) == 0 || !bytes.Equal(whole.ID, parsed.RawID) {
				t.Errorf("credential_json after a sign-in lost the registration's record: %s", after.JSON)
			}
			if after.SignCount != int64(cred.Counter) {
				t.Errorf("sign_count %d after the portal sign-in, want the authenticator's %d", after.SignCount, cred.Counter)
			}
		})
	}
}

// TestCrossReplicaCeremony: two portals (replicas) on one PostgreSQL; a
// ceremony begun on one finishes on the other, and a session made by one is
// good on the other.
func TestCrossReplicaCeremony(t *testing.T) {
	e := newEnv(t, envOptions{driver: "postgres", replicas: 1})
	u := e.addUser("replica", true)
	e.sync()
	c := newClient(t, e.URLs[0])
	c.mustSignIn(u.name, u.password)

	ceremony, options := c.begin("/webauthn/register/begin", nil) // on replica 0
	opts, err := virtualwebauthn.ParseAttestationOptions(options)
	if err != nil {
		t.Fatal(err)
	}
	cred, att := c.attest(options)
	c.base, c.rp.Origin = e.URLs[1], e.URLs[1] // cookies are not per port: the session goes along
	r := c.post("/webauthn/register/finish", map[string]any{"ceremony": ceremony, "credential": json.RawMessage(att)})
	if r.status != http.StatusOK {
		t.Fatalf("registration begun on replica 0, finished on replica 1: %d %s", r.status, r.body)
	}
	c.auth.Options.UserHandle = []byte(opts.UserID)
	c.auth.AddCredential(cred)

	lc, lopts := c.begin("/webauthn/login/begin", nil) // on replica 1
	c.base = e.URLs[0]
	r = c.post("/webauthn/login/finish", map[string]any{"ceremony": lc, "credential": json.RawMessage(c.assert(lopts, &cred))})
	if r.status != http.StatusOK {
		t.Fatalf("sign-in begun on replica 1, finished on replica 0: %d %s", r.status, r.body)
	}
	// The same ceremony cannot be finished again on either replica.
	c.base = e.URLs[1]
	r = c.post("/webauthn/login/finish", map[string]any{"ceremony": lc, "credential": json.RawMessage(c.assert(lopts, &cred))})
	if r.status != http.StatusBadRequest {
		t.Errorf("replayed on the other replica: %d %s", r.status, r.body)
	}
}

// TestConcurrentFinish: one sign-in ceremony finished by many requests at
// once, on two replicas: the claim is made in the transaction that records
// the sign-in, and exactly one of them commits (one session, one audit
// entry); every other one is a 400 that wrote nothing.
func TestConcurrentFinish(t *testing.T) {
	e := newEnv(t, envOptions{driver: "postgres", replicas: 1})
	u := e.addUser("racer", true)
	e.sync()
	c := newClient(t, e.URLs[0])
	c.mustSignIn(u.name, u.password)
	cred := c.register("racer key")
	sessions := func() int { return e.count("SELECT COUNT(*) FROM " + schema.NamesFor(e.cfg).Sessions) }
	before := sessions()

	lc, lopts := c.begin("/webauthn/login/begin", nil)
	body := map[string]any{"ceremony": lc, "credential": json.RawMessage(c.assert(lopts, &cred))}
	const n = 8
	statuses := make(chan int, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := newClient(t, e.URLs[i%2])
			statuses <- r.post("/webauthn/login/finish", body).status
		}()
	}
	wg.Wait()
	close(statuses)
	ok := 0
	for st := range statuses {
		switch st {
		case http.StatusOK:
			ok++
		case http.StatusBadRequest:
		default:
			t.Errorf("a concurrent finish answered %d", st)
		}
	}
	if ok != 1 {
		t.Errorf("%d of %d concurrent finishes of one ceremony succeeded, want exactly 1", ok, n)
	}
	if got := sessions() - before; got != 1 {
		t.Errorf("%d sessions made, want 1", got)
	}
	if got := e.auditCount(evSignIn+methodPasskey, true, u.name); got != 1 {
		t.Errorf("%d passkey sign-ins audited, want 1", got)
	}
}

// TestPolicyAtSignIn: the policy applies at every sign-in, not only at
// registration: a passkey registered before the company restricted the
// authenticator models (or forbade synced passkeys) no longer signs in,
// with the reason, and the refusal is audited.
func TestPolicyAtSignIn(t *testing.T) {
	e := newEnv(t, envOptions{replicas: 1, replicaConfigure: func(i int, cfg *config.Config) {
		if i == 1 { // replica 1 runs the tightened policy
			cfg.Portal.Policy.AllowedAAGUIDs = []string{"ea9b8d66-4d01-1d21-3ce4-b6b48cb575d4"}
		}
	}})
	u := e.addUser("policy", true)
	e.sync()
	c := newClient(t, e.URLs[0])
	c.mustSignIn(u.name, u.password)
	cred := c.register("old key")
	if r := c.passkeySignIn(&cred); r.status != http.StatusOK {
		t.Fatalf("sign-in under the old policy: %d %s", r.status, r.body)
	}
	c.base, c.rp.Origin = e.URLs[1], e.URLs[1]
	r := c.passkeySignIn(&cred)
	if r.status != http.StatusForbidden || r.json(t)["code"] != "policy_authenticator" {
		t.Fatalf("sign-in under the tightened policy: %d %s", r.status, r.body)
	}
	if e.auditCount(evSignInFailed, false, u.name) != 1 {
		t.Error("the policy refusal is not in the audit trail")
	}
}

// TestRelatedOrigins: portal.related_origins is published at
// /.well-known/webauthn for the browsers, and a passkey assertion made on a
// related origin (an application outside the RP ID's domain) is accepted;
// one made on an origin in neither list is not.
func TestRelatedOrigins(t *testing.T) {
	related := "https://erp.example.com"
	e := newEnv(t, envOptions{configure: func(cfg *config.Config) { cfg.Portal.RelatedOrigins = []string{related} }})
	r := e.client().get("/.well-known/webauthn")
	if r.status != http.StatusOK || !strings.Contains(r.body, `"origins":["`+related+`"]`) {
		t.Fatalf("/.well-known/webauthn: %d %s", r.status, r.body)
	}
	u := e.addUser("related", true)
	e.sync()
	c := e.client()
	c.mustSignIn(u.name, u.password)
	cred := c.register("key")
	c.rp.Origin = related
	if r := c.passkeySignIn(&cred); r.status != http.StatusOK {
		t.Errorf("an assertion made on a related origin: %d %s", r.status, r.body)
	}
	c.rp.Origin = "https://evil.example.net"
	if r := c.passkeySignIn(&cred); r.status != http.StatusBadRequest || r.json(t)["code"] != "unverified" {
		t.Errorf("an assertion made on an origin in no list: %d %s", r.status, r.body)
	}
}

// TestLinks: a link works once, not after it expired, and a newer link
// replaces an older one.
func TestLinks(t *testing.T) {
	e := newEnv(t, envOptions{})
	u := e.addUser("links", true)
	e.sync()
	old := e.link(u)
	cur := e.link(u)
	path := func(l string) string { return strings.TrimPrefix(l, e.URL) }
	c := e.client()
	if r := c.get(path(old)); r.status != http.StatusGone {
		t.Errorf("superseded link: %d", r.status)
	}
	if r := c.get(path(cur)); r.status != http.StatusOK || !strings.Contains(r.body, "IT made this link for you") {
		t.Errorf("current link: %d %s", r.status, strip(r.body))
	}
	if r := c.form(path(cur), url.Values{}); r.status != http.StatusSeeOther {
		t.Errorf("use link: %d %s", r.status, strip(r.body))
	}
	if r := e.client().form(path(cur), url.Values{}); r.status != http.StatusGone {
		t.Errorf("second use: %d", r.status)
	}
	// Expired.
	exp, err := IssueLink(context.Background(), e.db, e.cfg, u.name, LinkOptions{TTL: time.Minute, CreatedBy: "cli:test"})
	if err != nil {
		t.Fatal(err)
	}
	n := schema.NamesFor(e.cfg)
	q := e.db.Dialect().Quote
	if _, err := store.Exec(context.Background(), e.db, "UPDATE "+n.Tokens+" SET "+q("expires_at")+" = ? WHERE "+q("used_at")+" IS NULL", time.Now().Add(-time.Second)); err != nil {
		t.Fatal(err)
	}
	if r := e.client().get(path(exp.URL)); r.status != http.StatusGone {
		t.Errorf("expired link: %d", r.status)
	}
	// Garbage.
	for _, p := range []string{"/link/short", "/link/" + strings.Repeat("%00", 43), "/link/" + strings.Repeat("z", 43)} {
		if r := e.client().get(p); r.status != http.StatusGone {
			t.Errorf("GET %s: %d", p, r.status)
		}
	}
	// Only the hash is stored.
	secret := path(cur)[len("/link/"):]
	if e.count("SELECT COUNT(*) FROM "+n.Tokens+" WHERE "+q("token_hash")+" = ?", secret) != 0 {
		t.Error("the link's secret is stored in clear")
	}
	// Refused for users who may not use the portal.
	nr := e.addUser("nolink", false)
	e.sync()
	if _, err := IssueLink(context.Background(), e.db, e.cfg, nr.name, LinkOptions{}); err == nil || !strings.Contains(err.Error(), "cannot use the portal") {
		t.Errorf("link for an unlinked identity: %v", err)
	}
	if _, err := IssueLink(context.Background(), e.db, e.cfg, "nobody-at-all", LinkOptions{}); err == nil || !strings.Contains(err.Error(), "no identity") {
		t.Errorf("link for an unknown user: %v", err)
	}
	// USER is a username, an email or a directory ID, in any case.
	for _, name := range []string{strings.ToUpper(u.name), strings.ToUpper(u.email), u.email} {
		if l, err := IssueLink(context.Background(), e.db, e.cfg, name, LinkOptions{}); err != nil || l.Username != u.name {
			t.Errorf("link for %q: %+v, %v", name, l, err)
		}
	}
}
