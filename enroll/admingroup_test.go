package enroll

import (
	"context"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/passbridge/passbridge/config"
	"github.com/passbridge/passbridge/internal/testsrv"
)

// countingDir is the real directory client, with its membership checks
// counted.
type countingDir struct {
	Directory
	isMember atomic.Int64
}

func (d *countingDir) IsMember(ctx context.Context, userDN, groupDN string) (bool, error) {
	d.isMember.Add(1)
	return d.Directory.IsMember(ctx, userDN, groupDN)
}

// TestAdminGroupRecheck: membership in portal.admin_group is asked of the
// directory once per portal.admin_group_cache (1 minute by default), for
// password and passkey sign-ins and admin requests alike; someone removed
// from the group keeps the console only until the cached answer is older
// than that, then the admin part of their session ends (audited) while
// the employee part stays. On slapd and on Samba AD.
func TestAdminGroupRecheck(t *testing.T) {
	for _, dir := range []string{"openldap", "ad"} {
		t.Run(dir, func(t *testing.T) {
			counter := &countingDir{}
			e := newEnv(t, envOptions{dir: dir, configure: func(cfg *config.Config) {
				cfg.Portal.AdminGroup = "cn=placeholder" // set below, once the group exists
			}, wrapDir: func(d Directory) Directory { counter.Directory = d; return counter }})
			if e.cfg.Portal.AdminGroupCache.D() != time.Minute {
				t.Fatalf("portal.admin_group_cache defaults to %s, want 1m", e.cfg.Portal.AdminGroupCache)
			}
			admin := e.addUser("grp", true)
			colleague := e.addUser("grpc", true) // groupOfNames needs a member left
			group := e.dir.addGroup(t, e.ou, "it-admins-"+admin.name, admin.dn, colleague.dn)
			e.cfg.Portal.AdminGroup = group
			e.sync()
			clock := testsrv.NewClock(time.Now())
			e.portal.admins.now = clock.Now

			c := e.client()
			c.mustSignIn(admin.name, admin.password)
			if r := c.get("/admin"); r.status != http.StatusOK {
				t.Fatalf("the admin's console: %d %s", r.status, strip(r.body))
			}
			cred := c.register("laptop")
			for range 3 {
				if r := other(c).passkeySignIn(&cred); r.status != http.StatusOK {
					t.Fatalf("passkey sign-in: %d %s", r.status, r.body)
				}
				if r := c.get("/admin/users"); r.status != http.StatusOK {
					t.Fatalf("console: %d", r.status)
				}
			}
			if n := counter.isMember.Load(); n != 1 {
				t.Errorf("%d membership lookups for a password sign-in, 3 passkey sign-ins and 4 console pages within a minute, want 1", n)
			}

			e.dir.removeMember(t, group, admin.dn)
			clock.Step(30 * time.Second)
			if r := c.get("/admin"); r.status != http.StatusOK {
				t.Errorf("within the cache's minute the console still opens: %d", r.status)
			}
			clock.Step(31 * time.Second)
			if r := c.get("/admin"); r.status != http.StatusForbidden {
				t.Fatalf("a minute after leaving the admin group: %d, want 403", r.status)
			}
			if n := e.auditCount(evAdminEnded, false, admin.name); n != 1 {
				t.Errorf("%d %s entries, want 1", n, evAdminEnded)
			}
			// The employee part of the session stays.
			if r := c.get("/"); r.status != http.StatusOK {
				t.Errorf("the passkeys page after the admin part ended: %d", r.status)
			}
			// Back in the group, the rights come back with the next sign-in
			// (the answer is cached again: a minute later).
			e.dir.addMember(t, group, admin.dn)
			if r := c.get("/admin"); r.status != http.StatusForbidden {
				t.Errorf("the ended admin part came back by itself: %d", r.status)
			}
			clock.Step(61 * time.Second)
			again := other(c)
			if r := again.passkeySignIn(&cred); r.status != http.StatusOK {
				t.Fatal(r.status)
			}
			if r := again.get("/admin"); r.status != http.StatusOK {
				t.Errorf("a new sign-in after rejoining the group: %d", r.status)
			}
		})
	}
}
