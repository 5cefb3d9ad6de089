package enroll

import (
	"fmt"
	"net/http"
	"net/url"
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
