package enroll

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/passbridge/passbridge/store"
)

// TestApplicationInactive: a users row the application itself marks
// inactive (users_table.active false) cannot use the portal although the
// directory account is active: the open session ends at its next request,
// the passkey and the password no longer sign in, and the account page of
// the console says why. Back to active, or NULL (the application says
// nothing), everything works again. On every engine: the flag is read with
// the identity by a correlated subquery on the users table.
func TestApplicationInactive(t *testing.T) {
	for _, driver := range []string{"sqlite", "postgres", "mysql"} {
		t.Run(driver, func(t *testing.T) {
			e := newEnv(t, envOptions{driver: driver})
			u := e.addUser("inact", true)
			e.sync()
			c := e.client()
			c.mustSignIn(u.name, u.password)
			cred := c.register("laptop")

			setActive := func(v any) {
				t.Helper()
				d := e.db.Dialect()
				if _, err := store.Exec(context.Background(), e.db, "UPDATE "+d.Table("", "users")+" SET "+d.Quote("is_active")+" = ? WHERE "+d.Quote("id")+" = ?", v, u.key); err != nil {
					t.Fatal(err)
				}
			}
			setActive(false)
			if r := c.get("/"); r.status != http.StatusForbidden || !strings.Contains(r.body, "application account is deactivated") {
				t.Fatalf("the open session of a deactivated row: %d %s", r.status, strip(r.body))
			}
			if r := other(c).passkeySignIn(&cred); r.status == http.StatusOK {
				t.Fatalf("passkey sign-in of a deactivated row: %d %s", r.status, r.body)
			} else if !strings.Contains(r.body, "deactivated") {
				t.Errorf("passkey sign-in of a deactivated row says %q", r.body)
			}
			if r := e.client().signIn(u.name, u.password); r.status == http.StatusSeeOther {
				t.Fatal("a deactivated row signed in with the password")
			}

			setActive(nil)
			if r := other(c).passkeySignIn(&cred); r.status != http.StatusOK {
				t.Fatalf("NULL active must not refuse: %d %s", r.status, r.body)
			}
			setActive(true)
			e.client().mustSignIn(u.name, u.password)
		})
	}
}

// other is a new browser of the same person: their authenticator, no
// cookies.
func other(c *client) *client {
	o := newClient(c.t, c.base)
	o.auth = c.auth
	return o
}
