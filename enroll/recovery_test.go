package enroll

import (
	"context"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/pquerna/otp/totp"

	"github.com/passbridge/passbridge/config"
	"github.com/passbridge/passbridge/internal/testsrv"
	"github.com/passbridge/passbridge/schema"
	"github.com/passbridge/passbridge/store"
)

// recoveryEnv is a portal with every recovery path on, mail through a real
// SMTP server (STARTTLS, AUTH), and old passkeys revoked by a recovery.
func recoveryEnv(t testing.TB) *env {
	return newEnv(t, envOptions{mail: true, configure: func(cfg *config.Config) {
		cfg.Portal.Recovery = config.Recovery{EmailCode: true, TOTP: true, Link: true, RevokeOld: true,
			CodeLifetime: config.Duration(10 * time.Minute), PerUser: 5, Window: config.Duration(time.Hour)}
	}})
}

// oldPasskey gives u a passkey on another device (a software authenticator
// over HTTP): the one they lost.
func (e *env) oldPasskey(u *user) {
	e.t.Helper()
	c := e.client()
	c.mustSignIn(u.name, u.password)
	c.register("old phone")
}

func (e *env) setTOTP(u *user, secret string) {
	e.t.Helper()
	n := schema.NamesFor(e.cfg)
	if _, err := store.Exec(context.Background(), e.db, "UPDATE "+n.Users+" SET "+n.UserTOTP+" = ? WHERE "+n.UserKey+" = ?", secret, u.key); err != nil {
		e.t.Fatal(err)
	}
}

var sixDigitsRE = regexp.MustCompile(`\b[0-9]{6}\b`)

// mailFor waits for the newest mail to `to` whose subject contains subject,
// among those received after the first `after` mails to that address.
func (e *env) mailFor(t testing.TB, to, subject string, after int) testsrv.ReceivedMail {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		var mine []testsrv.ReceivedMail
		for _, m := range e.smtp.Messages() {
			if strings.EqualFold(m.To, to) {
				mine = append(mine, m)
			}
		}
		for i := len(mine) - 1; i >= after; i-- {
			if strings.Contains(mine[i].Subject, subject) {
				return mine[i]
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("no mail %q to %s", subject, to)
	return testsrv.ReceivedMail{}
}

// mailCount is how many mails went to an address.
func (e *env) mailCount(to string) int {
	n := 0
	for _, m := range e.smtp.Messages() {
		if strings.EqualFold(m.To, to) {
			n++
		}
	}
	return n
}

// checkRecovered checks the end of a recovery: one new active passkey, the
// old one revoked, a mail saying a passkey was added, the audit entry.
func (e *env) checkRecovered(t *testing.T, u *user, path string) {
	t.Helper()
	all := e.storedPasskeys(u)
	if len(all) != 2 || !all[0].RevokedAt.Valid || all[1].RevokedAt.Valid {
		t.Fatalf("after the recovery: %d passkeys, want the old one revoked and the new one active", len(all))
	}
	m := e.mailFor(t, u.email, "A passkey was added", 1) // the first was about the old passkey
	mustContain(t, "notice", m.Text, "through a recovery")
	mustContain(t, "notice", m.Text, "earlier passkey(s) were revoked")
	if e.auditCount(evRecovery+path, true, u.name) != 1 {
		t.Errorf("no recovery.%s audit entry", path)
	}
}

// TestE2ERecovery walks each recovery path in Chromium, with a new
// authenticator (the old device is lost).
func TestE2ERecovery(t *testing.T) {
	e := recoveryEnv(t)

	t.Run("email", func(t *testing.T) {
		u := e.addUser("remail", true)
		e.sync()
		e.oldPasskey(u)
		b := e.browser(t, browserOptions{})
		b.open("/")
		b.run("to recovery", chromedp.Click(chromedp.CSS(`a[href="/recover"]`)))
		b.waitHeading("Lost your passkey?")
		b.shot("recover")
		b.run("password",
			chromedp.SetValue(chromedp.ID("re-username"), u.name),
			chromedp.SetValue(chromedp.ID("re-password"), u.password),
			chromedp.Click(chromedp.CSS(`#recover-email-form button`)))
		b.waitHeading("Enter your code")
		m := e.mailFor(t, u.email, "recovery code", 0)
		code := sixDigitsRE.FindString(m.Subject)
		if code == "" || !strings.Contains(m.Text, code) {
			t.Fatalf("no code in the mail: %q / %q", m.Subject, m.Text)
		}
		if !m.TLS {
			t.Error("the code went over an unencrypted connection")
		}
		b.run("code", chromedp.SetValue(chromedp.ID("code"), code), chromedp.Click(chromedp.CSS(`#recover-code-form button`)))
		b.waitNotice("signed in for a recovery")
		b.register("")
		b.waitNotice("Your passkey is ready")
		e.checkRecovered(t, u, recoveryEmail)
	})

	t.Run("totp", func(t *testing.T) {
		u := e.addUser("rtotp", true)
		e.sync()
		e.oldPasskey(u)
		secret := "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
		e.setTOTP(u, secret)
		code, err := totp.GenerateCode(secret, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		b := e.browser(t, browserOptions{})
		b.open("/recover")
		b.run("totp",
			chromedp.SetValue(chromedp.ID("rt-username"), u.name),
			chromedp.SetValue(chromedp.ID("rt-password"), u.password),
			chromedp.SetValue(chromedp.ID("rt-code"), code),
			chromedp.Click(chromedp.CSS(`#recover-totp-form button`)))
		b.waitNotice("signed in for a recovery")
		b.register("")
		b.waitNotice("Your passkey is ready")
		e.checkRecovered(t, u, recoveryTOTP)
	})

	t.Run("link", func(t *testing.T) {
		u := e.addUser("rlink", true)
		e.sync()
		e.oldPasskey(u)
		l, err := IssueLink(context.Background(), e.db, e.cfg, u.name, LinkOptions{Kind: LinkRecovery, CreatedBy: "cli:test"})
		if err != nil {
			t.Fatal(err)
		}
		b := e.browser(t, browserOptions{})
		b.open(strings.TrimPrefix(l.URL, e.URL))
		b.run("continue", chromedp.Click(chromedp.CSS(`form[action^="/link/"] button`)))
		b.waitNotice("signed in for a recovery")
		b.register("")
		b.waitNotice("Your passkey is ready")
		e.checkRecovered(t, u, recoveryLink)
	})
}

// TestRecoveryRevealsNothing: an unknown user, a wrong password and a
// disabled account get the same answer, and no mail goes out.
func TestRecoveryRevealsNothing(t *testing.T) {
	e := recoveryEnv(t)
	u := e.addUser("reveal", true)
	off := e.addUser("revoff", true)
	e.sync()
	e.dir.disable(t, off.dn)
	e.sync()
	var bodies []string
	for _, tc := range []struct{ name, password string }{{"nobody-" + u.name, u.password}, {u.name, "wrong-password"}, {off.name, off.password}} {
		r := e.client().form("/recover/email", url.Values{"username": {tc.name}, "password": {tc.password}})
		if r.status != http.StatusUnauthorized {
			t.Errorf("%s: %d %s", tc.name, r.status, strip(r.body))
		}
		bodies = append(bodies, strings.ReplaceAll(strip(r.body), tc.name, "USER"))
		mustContain(t, tc.name, strip(r.body), "That did not work")
	}
	if bodies[0] != bodies[1] || bodies[1] != bodies[2] {
		t.Errorf("the answers differ:\n%s\n%s\n%s", bodies[0], bodies[1], bodies[2])
	}
	if n := len(e.smtp.Messages()); n != 0 {
		t.Errorf("%d mails sent for failed recoveries", n)
	}
}

// startEmailRecovery does step one of the email recovery for u in a new
// browser and returns it with the code the mail brought.
func (e *env) startEmailRecovery(t testing.TB, u *user) (*client, string) {
	t.Helper()
	c := e.client()
	before := e.mailCount(u.email)
	if r := c.form("/recover/email", url.Values{"username": {u.name}, "password": {u.password}}); r.status != http.StatusOK {
		t.Fatalf("start a recovery: %d %s", r.status, strip(r.body))
	}
	return c, sixDigitsRE.FindString(e.mailFor(t, u.email, "recovery code", before).Subject)
}

// TestRecoveryCode: wrong codes are limited per recovery, a code works once,
// and only in the browser that asked for it.
func TestRecoveryCode(t *testing.T) {
	e := recoveryEnv(t)
	u := e.addUser("rcode", true)
	e.sync()
	c, code := e.startEmailRecovery(t, u)
	// Another browser (without the recovery cookie) cannot use the code.
	if r := e.client().form("/recover/code", url.Values{"code": {code}}); r.status == http.StatusSeeOther {
		t.Fatal("the code worked in another browser")
	}
	wrong := "000000"
	if code == wrong {
		wrong = "111111"
	}
	for i := range codeAttempts - 1 {
		if r := c.form("/recover/code", url.Values{"code": {wrong}}); r.status != http.StatusUnauthorized {
			t.Fatalf("wrong code %d: %d", i+1, r.status)
		}
	}
	// The last allowed attempt, with the right code, works.
	if r := c.form("/recover/code", url.Values{"code": {code}}); r.status != http.StatusSeeOther {
		t.Fatalf("right code: %d %s", r.status, strip(r.body))
	}
	// A second recovery: after too many wrong codes even the right one is refused.
	c2 := e.client()
	before := e.mailCount(u.email)
	c2.form("/recover/email", url.Values{"username": {u.name}, "password": {u.password}})
	code2 := sixDigitsRE.FindString(e.mailFor(t, u.email, "recovery code", before).Subject)
	for range codeAttempts {
		c2.form("/recover/code", url.Values{"code": {wrong}})
	}
	if r := c2.form("/recover/code", url.Values{"code": {code2}}); r.status != http.StatusTooManyRequests {
		t.Errorf("right code after too many wrong ones: %d", r.status)
	}
	if e.auditCount(evRecovery+recoveryEmail, true, u.name) != 1 {
		t.Error("want exactly one successful recovery")
	}
}

// TestRecoveryTOTPReplay: a TOTP code is accepted once, and so is no older
// one.
func TestRecoveryTOTPReplay(t *testing.T) {
	e := recoveryEnv(t)
	u := e.addUser("replay", true)
	e.sync()
	secret := "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"
	e.setTOTP(u, secret)
	now := time.Now()
	code, _ := totp.GenerateCode(secret, now)
	older, _ := totp.GenerateCode(secret, now.Add(-30*time.Second))
	try := func(code string) response {
		return e.client().form("/recover/totp", url.Values{"username": {u.name}, "password": {u.password}, "code": {code}})
	}
	if r := try(code); r.status != http.StatusSeeOther {
		t.Fatalf("first use: %d %s", r.status, strip(r.body))
	}
	if r := try(code); r.status != http.StatusUnauthorized || !strings.Contains(strip(r.body), "already used") {
		t.Errorf("replay: %d %s", r.status, strip(r.body))
	}
	if older != code {
		if r := try(older); r.status != http.StatusUnauthorized {
			t.Errorf("an older code after a newer one: %d", r.status)
		}
	}
	if r := try("12345"); r.status != http.StatusBadRequest {
		t.Errorf("a malformed code: %d", r.status)
	}
	// The secret is read only: the users row is unchanged.
	n := schema.NamesFor(e.cfg)
	var got string
	if err := store.Get(context.Background(), e.db, &got, "SELECT "+n.UserTOTP+" FROM "+n.Users+" WHERE "+n.UserKey+" = ?", u.key); err != nil || got != secret {
		t.Errorf("the TOTP secret changed: %q (%v)", got, err)
	}
}

// TestRecoveryLimits: recoveries are rate-limited per account.
func TestRecoveryLimits(t *testing.T) {
	e := recoveryEnv(t)
	u := e.addUser("rlimit", true)
	e.sync()
	for i := range 5 {
		r := e.client().form("/recover/totp", url.Values{"username": {u.name}, "password": {"wrong"}, "code": {"123456"}})
		if r.status != http.StatusUnauthorized && r.status != http.StatusTooManyRequests {
			t.Fatalf("attempt %d: %d", i+1, r.status)
		}
	}
	r := e.client().form("/recover/totp", url.Values{"username": {u.name}, "password": {u.password}, "code": {"123456"}})
	if r.status != http.StatusTooManyRequests {
		t.Errorf("6th recovery attempt in the hour: %d %s", r.status, strip(r.body))
	}
}

// TestRecoveryOff: with every self-service path off, /recover says so and
// the forms are 404.
func TestRecoveryOff(t *testing.T) {
	e := newEnv(t, envOptions{configure: func(cfg *config.Config) { cfg.Portal.Recovery.Link = false }})
	c := e.client()
	if r := c.get("/recover"); r.status != http.StatusNotFound {
		t.Errorf("/recover: %d", r.status)
	}
	for _, p := range []string{"/recover/email", "/recover/totp", "/recover/code"} {
		if r := c.form(p, url.Values{"username": {"x"}, "password": {"y"}}); r.status != http.StatusNotFound {
			t.Errorf("%s: %d", p, r.status)
		}
	}
	u := e.addUser("nolink", true)
	e.sync()
	if _, err := IssueLink(context.Background(), e.db, e.cfg, u.name, LinkOptions{Kind: LinkRecovery}); err == nil {
		t.Error("a recovery link was issued with portal.recovery.link off")
	}
}

// TestRecoveryMailDown: when the mail server is down, the recovery says so
// (503), nothing is half-done, and the failure is audited.
func TestRecoveryMailDown(t *testing.T) {
	e := recoveryEnv(t)
	u := e.addUser("maildown", true)
	e.sync()
	e.smtp.Stop()
	r := e.client().form("/recover/email", url.Values{"username": {u.name}, "password": {u.password}})
	if r.status != http.StatusServiceUnavailable || !strings.Contains(strip(r.body), "could not be sent") {
		t.Fatalf("mail down: %d %s", r.status, strip(r.body))
	}
	if e.auditCount(evMailFailed, false, u.name) != 1 {
		t.Error("the mail failure is not in the audit trail")
	}
}
