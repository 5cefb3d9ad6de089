package enroll

import (
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/passbridge/passbridge/schema"
)

// FuzzRecoverCode posts any code, with any pending-recovery cookie, to
// /recover/code (step two of the email recovery) of a portal on which a
// real recovery is pending. Properties: never a 5xx or a panic; no answer
// opens a session (only the mailed code with its own browser's cookie
// does, which TestRecoveryCode checks).
func FuzzRecoverCode(f *testing.F) {
	e := recoveryEnv(f)
	u := e.addUser("fuzzcode", true)
	e.sync()
	c, code := e.startEmailRecovery(f, u)
	pending := ""
	for _, ck := range c.http.Jar.Cookies(&url.URL{Scheme: "http", Host: strings.TrimPrefix(e.URL, "http://"), Path: "/recover"}) {
		if ck.Name == recoverCookie {
			pending = ck.Value
		}
	}
	if pending == "" || code == "" {
		f.Fatalf("no pending recovery (cookie %q, code %q)", pending, code)
	}
	fresh, _ := newSecret()
	for _, s := range []struct{ cookie, code string }{
		{fresh, code}, {fresh, "000000"}, {fresh, " 12 34 56 "}, {fresh, "１２３４５６"}, {fresh, "12345"}, {fresh, "1234567"},
		{fresh, "abcdef"}, {fresh, "' OR 1=1 --"}, {fresh, strings.Repeat("9", 4000)}, {"", code}, {"x", code},
		{pending[:42], code}, {pending + "A", code}, {strings.ToUpper(pending), code}, {strings.Repeat("A", 43), code},
	} {
		f.Add(s.cookie, s.code)
	}
	sessions := schema.NamesFor(e.cfg).Sessions
	f.Fuzz(func(t *testing.T, cookie, code string) {
		if cookie == pending {
			t.Skip("the pending recovery's own cookie: TestRecoveryCode")
		}
		for _, b := range []byte(cookie) {
			if b < 0x21 || b > 0x7e || b == ';' || b == ',' || b == '"' || b == '\\' {
				t.Skip("not a value a browser sends in a cookie")
			}
		}
		fc := newClient(t, e.URL)
		fc.get("/")
		body := url.Values{csrfField: {fc.csrf}, "code": {code}}.Encode()
		req, _ := http.NewRequest(http.MethodPost, e.URL+"/recover/code", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.AddCookie(&http.Cookie{Name: recoverCookie, Value: cookie})
		before := e.in(t).count("SELECT COUNT(*) FROM " + sessions)
		r := fc.do(req)
		if r.status >= 500 {
			t.Fatalf("cookie %q code %q: status %d: %s", cookie, code, r.status, strip(r.body))
		}
		if r.status == http.StatusSeeOther || r.status == http.StatusOK {
			t.Fatalf("cookie %q code %q opened a recovery: %d", cookie, code, r.status)
		}
		if after := e.in(t).count("SELECT COUNT(*) FROM " + sessions); after != before {
			t.Fatalf("sessions %d -> %d for cookie %q code %q", before, after, cookie, code)
		}
	})
}
