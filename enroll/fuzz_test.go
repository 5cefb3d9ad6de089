package enroll

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/pquerna/otp/totp"

	"github.com/passbridge/passbridge/schema"
)

// The ceremony API and the link and token parsing, fuzzed through HTTP on
// a real portal (SQLite, slapd). In every body, CEREMONY is replaced by the
// ID of a ceremony begun for that request, so the fuzzer gets past the
// ceremony lookup and into the WebAuthn response parsing.

// finishSeeds are bodies for both finish endpoints: the shapes of
// TestMalformedFinish, small, plus a real response of the authenticator.
func finishSeeds(good string) []string {
	return []string{
		`{"ceremony":"CEREMONY","credential":` + good + `}`,
		`{"ceremony":"CEREMONY","name":"Laptop","credential":` + good + `}`,
		`{`, `{"ceremony":"CEREMONY"}`, `{"ceremony":"CEREMONY","credential":null}`, `{"ceremony":"CEREMONY","credential":{}}`,
		`{"ceremony":"CEREMONY","credential":` + good[:len(good)/2], `{"ceremony":"CEREMONY","credential":"` + good[:len(good)/3] + `"}`,
		`{"ceremony":"CEREMONY","credential":{"id":"AAAA","rawId":"AAAA","type":"public-key","response":{}}}`,
		`{"ceremony":"CEREMONY","credential":{"id":"","type":"public-key","response":{"clientDataJSON":"","attestationObject":"","authenticatorData":"","signature":""}}}`,
		`{"ceremony":"CEREMONY","credential":{"id":"AAAA","rawId":"AAAA","type":"public-key","response":{"clientDataJSON":"e30","attestationObject":"oA","authenticatorData":"AA","signature":"AA","userHandle":"AA"}}}`,
		`{"ceremony":42,"credential":[]}`, `{"ceremony":"CEREMONY","credential":[[[[[[[[[[]]]]]]]]]]}`, `{"ceremony":"x"} {"ceremony":"y"}`,
		`{"ceremony":"../../etc/passwd","credential":{}}`, `{"ceremony":"CEREMONY","credential":{},"admin":true}`, "", "null", `"\u0000"`,
		`{"ceremony":"CEREMONY","credential":{"id":"AAAA","type":"public-key","response":{"clientDataJSON":"` + base64.RawURLEncoding.EncodeToString([]byte(`{"type":"webauthn.create","challenge":"AAAA","origin":"http://localhost"}`)) + `"}}}`,
	}
}

// in is the env with its checks reporting to t (a fuzz target's
// iterations must not call the F's methods).
func (e *env) in(t testing.TB) *env {
	c := *e
	c.t = t
	return &c
}

// checkRefusal: a refused ceremony call is a 4xx with the portal's JSON
// error (a message and a code), never a 5xx.
func checkRefusal(t *testing.T, r response, body string) {
	t.Helper()
	if r.status >= 500 {
		t.Fatalf("status %d for %q: %s", r.status, body, r.body)
	}
	if r.status == http.StatusOK {
		return
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(r.body), &m); err != nil || m["error"] == "" || m["code"] == "" {
		t.Fatalf("status %d without the JSON error for %q: %s", r.status, body, r.body)
	}
}

// FuzzRegisterFinish posts any body to /webauthn/register/finish of a
// signed-in user. Properties: never a 5xx or a panic; a refusal is a 4xx
// with a JSON message; nothing is stored unless the answer is 200.
func FuzzRegisterFinish(f *testing.F) {
	e := newEnv(f, envOptions{quiet: true})
	u := e.addUser("fuzzreg", true)
	e.sync()
	c := e.client()
	c.mustSignIn(u.name, u.password)
	_, options := c.begin("/webauthn/register/begin", nil)
	_, good := c.attest(options)
	for _, s := range finishSeeds(good) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, body string) {
		cc := *c
		cc.t = t
		ceremony, _ := cc.begin("/webauthn/register/begin", nil)
		before := e.in(t).activePasskeys(u)
		body = strings.ReplaceAll(body, "CEREMONY", ceremony)
		r := cc.post("/webauthn/register/finish", body)
		checkRefusal(t, r, body)
		if after := e.in(t).activePasskeys(u); r.status != http.StatusOK && after != before {
			t.Fatalf("status %d stored a passkey (%d -> %d) for %q", r.status, before, after, body)
		}
	})
}

// FuzzLoginFinish posts any body to /webauthn/login/finish. Properties:
// never a 5xx or a panic; always refused (the signatures the fuzzer can
// make are over stale challenges), with a JSON message; no session.
func FuzzLoginFinish(f *testing.F) {
	e := newEnv(f, envOptions{quiet: true})
	u := e.addUser("fuzzlogin", true)
	e.sync()
	owner := e.client()
	owner.mustSignIn(u.name, u.password)
	cred := owner.register("")
	_, lopts := owner.begin("/webauthn/login/begin", nil)
	good := owner.assert(lopts, &cred)
	for _, s := range finishSeeds(good) {
		f.Add(s)
	}
	sessions := schema.NamesFor(e.cfg).Sessions
	f.Fuzz(func(t *testing.T, body string) {
		c := newClient(t, e.URL)
		c.auth = owner.auth
		ceremony, _ := c.begin("/webauthn/login/begin", nil)
		before := e.in(t).count("SELECT COUNT(*) FROM " + sessions)
		body = strings.ReplaceAll(body, "CEREMONY", ceremony)
		r := c.post("/webauthn/login/finish", body)
		checkRefusal(t, r, body)
		if r.status == http.StatusOK {
			t.Fatalf("a sign-in from a fuzzed body: %q", body)
		}
		for _, ck := range r.header.Values("Set-Cookie") {
			if strings.HasPrefix(ck, sessionCookie+"=") && !strings.HasPrefix(ck, sessionCookie+"=;") {
				t.Fatalf("a session cookie on a refusal: %s", ck)
			}
		}
		if after := e.in(t).count("SELECT COUNT(*) FROM " + sessions); after != before {
			t.Fatalf("sessions %d -> %d after a refused sign-in", before, after)
		}
	})
}

// FuzzLink opens and redeems /link/<token> with any token. Properties:
// never a 5xx or a panic; only the exact token IT was given works (shown
// with 200, redeemed with a redirect into a session); anything else is
// refused and signs nobody in.
func FuzzLink(f *testing.F) {
	e := newEnv(f, envOptions{quiet: true})
	u := e.addUser("fuzzlink", true)
	e.sync()
	real := strings.TrimPrefix(e.link(u), e.URL+"/link/")
	last := real[len(real)-1:]
	flip := map[string]string{"A": "B", "B": "A"}[last]
	if flip == "" {
		flip = "A"
	}
	for _, s := range []string{real, real[:42], real + "A", real[:42] + flip, strings.ToUpper(real), real[:21] + "\n" + real[22:],
		"", "x", "../admin", "%00", strings.Repeat("A", 43), strings.Repeat("=", 43), strings.Repeat("A", 4096), "AAAA\r\nSet-Cookie: x=y"} {
		f.Add(s, false)
		f.Add(s, true)
	}
	sessions := schema.NamesFor(e.cfg).Sessions
	used := false
	f.Fuzz(func(t *testing.T, token string, redeem bool) {
		c := newClient(t, e.URL)
		path := "/link/" + url.PathEscape(token)
		before := e.in(t).count("SELECT COUNT(*) FROM " + sessions)
		var r response
		if redeem {
			r = c.form(path, url.Values{})
		} else {
			r = c.get(path)
		}
		if r.status >= 500 {
			t.Fatalf("%s %q: status %d: %s", map[bool]string{false: "GET", true: "POST"}[redeem], token, r.status, strip(r.body))
		}
		works := r.status == http.StatusOK || r.status == http.StatusSeeOther
		if works && token != real {
			t.Fatalf("token %q (not the one issued) worked: %d", token, r.status)
		}
		if redeem && token == real && !used {
			if r.status != http.StatusSeeOther {
				t.Fatalf("the issued link did not redeem: %d %s", r.status, strip(r.body))
			}
			used = true
			return
		}
		if after := e.in(t).count("SELECT COUNT(*) FROM " + sessions); after != before {
			t.Fatalf("sessions %d -> %d for token %q", before, after, token)
		}
	})
}

// FuzzTokens: the secrets of sessions, links and ceremonies, and the
// recovery codes. validSecret accepts exactly what newSecret makes (43
// base64url characters, 32 bytes) and nothing else; a TOTP code matches
// only as six digits of the secret's current window; maskEmail never shows
// more than the first character of the local part.
func FuzzTokens(f *testing.F) {
	secret, _ := newSecret()
	for _, s := range []string{secret, secret[:42], secret + "A", strings.Repeat("A", 43), strings.Repeat("_", 43), strings.Repeat("=", 43),
		secret[:42] + "\n", secret[:20] + "\r\n" + secret[22:], secret[:42] + "B", strings.Repeat("+", 43), "", "123456", " 123 456 ", "12345a",
		"zoë@corp.example", "@corp.example", "a@", "\xff\xfe@x", "no-at-sign"} {
		f.Add(s, "JBSWY3DPEHPK3PXP", int64(1748779200))
	}
	f.Add("", "", int64(0))
	f.Add("000000", "not base32!", int64(-1))
	f.Fuzz(func(t *testing.T, s, totpSecret string, unix int64) {
		if validSecret(s) {
			raw, err := base64.RawURLEncoding.Strict().DecodeString(s)
			if len(s) != 43 || err != nil || len(raw) != 32 || base64.RawURLEncoding.EncodeToString(raw) != s {
				t.Fatalf("validSecret(%q) but it is not a secret newSecret makes (%d bytes, %v)", s, len(raw), err)
			}
		}
		if h := hashSecret(s); len(h) != 64 || strings.Trim(h, "0123456789abcdef") != "" {
			t.Fatalf("hashSecret(%q) = %q", s, h)
		}

		now := time.Unix(unix%(1<<40), 0)
		code := strings.Join(strings.Fields(s), "")
		if _, ok := matchTOTP(totpSecret, code, now); ok && (len(code) != 6 || strings.Trim(code, "0123456789") != "") {
			t.Fatalf("TOTP code %q matched", code)
		}
		if want, err := totp.GenerateCode(strings.ToUpper(strings.ReplaceAll(totpSecret, " ", "")), now); err == nil && totpSecret != "" {
			if step, ok := matchTOTP(totpSecret, want, now); !ok || step != uint64(now.Unix()/30) && step != uint64(now.Unix()/30)-1 && step != uint64(now.Unix()/30)+1 {
				t.Fatalf("the current code %q of %q: step %d, %v", want, totpSecret, step, ok)
			}
		}

		m := maskEmail(s)
		local, domain, ok := strings.Cut(s, "@")
		switch {
		case !ok || local == "":
			if m != "your address" {
				t.Fatalf("maskEmail(%q) = %q", s, m)
			}
		default:
			first := string([]rune(local)[0])
			if m != first+"***@"+domain {
				t.Fatalf("maskEmail(%q) = %q", s, m)
			}
		}
		if len(s) > 0 {
			if c := clip(s, len(s)/2); len(c) > len(s)/2 || !strings.HasPrefix(s, c) || len(c) < len(s)/2-3 {
				t.Fatalf("clip(%q, %d) = %q", s, len(s)/2, c)
			}
		}
	})
}
