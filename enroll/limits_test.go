package enroll

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/passbridge/passbridge/config"
)

// from is a client whose requests come, through the trusted proxy on
// loopback, from addr.
func (e *env) from(addr string) *client {
	c := e.client()
	c.header = http.Header{"X-Forwarded-For": {addr}}
	return c
}

// TestAddressLimitsIPv6: the per-address limits count an IPv6 client by
// its /64 (one subscriber's network: rotating through it buys nothing) and
// an IPv4 client by its address, for password sign-ins and recoveries.
func TestAddressLimitsIPv6(t *testing.T) {
	e := newEnv(t, envOptions{mail: true, configure: func(cfg *config.Config) {
		cfg.Portal.TrustedProxies = []string{"127.0.0.1"}
		cfg.Portal.RateLimits.PasswordPerIP = 5
		cfg.Portal.Recovery = config.Recovery{EmailCode: true, TOTP: true, Link: true,
			CodeLifetime: config.Duration(10 * time.Minute), PerUser: 1, Window: config.Duration(time.Hour)}
	}})
	var users []*user
	for i := range 6 {
		users = append(users, e.addUser(fmt.Sprintf("v6-%d", i), true))
	}
	e.sync()

	t.Run("password", func(t *testing.T) {
		// Five wrong passwords for five accounts, each from another
		// address of one /64: the sixth address of that /64 is refused.
		for i := range 5 {
			if r := e.from(fmt.Sprintf("2001:db8:aa:1::%x", i+1)).signIn(users[i].name, "wrong"); r.status != http.StatusUnauthorized {
				t.Fatalf("attempt %d: %d %s", i+1, r.status, strip(r.body))
			}
		}
		r := e.from("2001:db8:aa:1:ffff:ffff:ffff:fffe").signIn(users[5].name, users[5].password)
		if r.status != http.StatusTooManyRequests {
			t.Fatalf("6th attempt from the same /64: %d %s", r.status, strip(r.body))
		}
		mustContain(t, "429 page", strip(r.body), "from your network")
		// The next /64 is another network; IPv4 addresses count one by one.
		e.from("2001:db8:aa:2::1").mustSignIn(users[5].name, users[5].password)
		for i := range 5 {
			e.from(fmt.Sprintf("192.0.2.%d", i+1)).signIn("nobody-"+users[5].name, "wrong")
		}
		e.from("192.0.2.6").mustSignIn(users[5].name, users[5].password)
	})

	t.Run("recovery", func(t *testing.T) {
		// portal.recovery.per_user 1: four recoveries per address (its /64).
		for i := range 4 {
			r := e.from(fmt.Sprintf("2001:db8:bb:1::%x", i+1)).form("/recover/totp", url.Values{"username": {users[i].name}, "password": {"wrong"}, "code": {"123456"}})
			if r.status != http.StatusUnauthorized {
				t.Fatalf("recovery %d: %d %s", i+1, r.status, strip(r.body))
			}
		}
		r := e.from("2001:db8:bb:1::99").form("/recover/totp", url.Values{"username": {users[4].name}, "password": {"wrong"}, "code": {"123456"}})
		if r.status != http.StatusTooManyRequests {
			t.Fatalf("5th recovery from the same /64: %d %s", r.status, strip(r.body))
		}
	})
}

// fullwidth spells s in fullwidth Latin letters and digits (ａｌｉｃｅ),
// which LDAP's caseIgnoreMatch folds to the same value as s.
func fullwidth(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
			b.WriteRune(r - 0x21 + 0xff01)
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

// TestRecoveryLimitPerAccount: the recovery budget belongs to the directory
// account, not to a spelling of its name: five spellings the directory
// resolves to one account (on AD the UPN and DOMAIN\name with the NetBIOS
// or the DNS name; on OpenLDAP what caseIgnoreMatch folds together) share
// portal.recovery.per_user, and a DOMAIN\ prefix naming another domain is
// nobody.
func TestRecoveryLimitPerAccount(t *testing.T) {
	for _, dir := range []string{"openldap", "ad"} {
		t.Run(dir, func(t *testing.T) {
			e := newEnv(t, envOptions{dir: dir, mail: true, configure: func(cfg *config.Config) {
				cfg.Portal.Recovery = config.Recovery{EmailCode: true, TOTP: true, Link: true,
					CodeLifetime: config.Duration(10 * time.Minute), PerUser: 2, Window: config.Duration(time.Hour)}
			}})
			u := e.addUser("rspell", true)
			e.sync()
			spellings := []string{u.name, strings.ToUpper(u.name), fullwidth(u.name), fullwidth(u.name[:3]) + u.name[3:], strings.ToUpper(u.name[:1]) + u.name[1:]}
			if dir == "ad" {
				spellings = []string{u.name, strings.ToUpper(u.name) + "@CORP.EXAMPLE", `CORP\` + u.name, `corp.example\` + u.name, u.name + "@corp.example"}
				// Another domain's account of that name is not this one,
				// even with this one's password.
				r := e.client().signIn(`OTHER\`+u.name, u.password)
				if r.status != http.StatusUnauthorized {
					t.Fatalf(`OTHER\%s with the right password: %d %s`, u.name, r.status, strip(r.body))
				}
			}
			for i, name := range spellings {
				r := e.client().form("/recover/totp", url.Values{"username": {name}, "password": {"wrong-" + name}, "code": {"123456"}})
				want := http.StatusUnauthorized
				if i >= 2 {
					want = http.StatusTooManyRequests
				}
				if r.status != want {
					t.Fatalf("recovery %d as %q: %d %s, want %d", i+1, name, r.status, strip(r.body), want)
				}
				if want == http.StatusTooManyRequests {
					mustContain(t, name, strip(r.body), "Too many recovery attempts")
				}
			}
			if n := e.auditCount(evRecoveryLimit, false, u.name); n != 3 {
				t.Errorf("%d recovery.limited entries for %s, want 3 (audited under the account's name)", n, u.name)
			}
		})
	}
}
