package directory

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/passbridge/passbridge/config"
)

// TestIsMember asks about direct and nested members, a non-member, groups
// that contain each other, a group DN with a comma, a plus sign, quotes and
// filter characters, and groups and users that are not there, on a real
// OpenLDAP (memberOf, and the member walk) and a real Samba AD.
func TestIsMember(t *testing.T) {
	type variant struct {
		name  string
		walk  bool
		fixFn func(t *testing.T) fixture
	}
	var variants []variant
	for name, mk := range fixtures(t) {
		variants = append(variants, variant{name: name, fixFn: mk})
	}
	variants = append(variants, variant{name: "openldap-member-walk", walk: true, fixFn: fixtures(t)["openldap"]})
	for _, v := range variants {
		t.Run(v.name, func(t *testing.T) {
			f := v.fixFn(t)
			ctx := context.Background()
			cfg := baseConfig(t, config.Database{}, f.Kind())
			ou := f.NewOU(t)
			people := f.AddOU(t, ou, "people")
			groups := f.AddOU(t, ou, "groups")
			f.Configure(cfg, ou)
			c, err := NewClient(cfg.Directory, nil)
			if err != nil {
				t.Fatal(err)
			}
			opts := ScopeOptions{ForceMemberWalk: v.walk}

			ann := f.AddUser(t, people, "ann", nil) // direct member
			bea := f.AddUser(t, people, "bea", nil) // two levels down
			cid := f.AddUser(t, people, "cid", nil) // in no group
			dan := f.AddUser(t, people, "dan", nil) // in the cycle
			inner2 := f.AddGroup(t, groups, "inner2", bea)
			inner1 := f.AddGroup(t, groups, "inner1", inner2)
			admins := f.AddGroup(t, groups, "admins", ann, inner1)
			cycA := f.AddGroup(t, groups, "cycle-a", dan)
			cycB := f.AddGroup(t, groups, "cycle-b", cycA)
			f.AddMember(t, cycA, cycB)
			oddName := `IT, "Admins" + Ops (Paris) *`
			var odd string
			if f.Kind() == "ad" {
				// sAMAccountName may not hold these characters; the CN may.
				odd = f.Rename(t, f.AddGroup(t, groups, "itops", ann, inner1), oddName)
			} else {
				odd = f.AddGroup(t, groups, oddName, ann, inner1)
			}

			is := func(user, group string, want bool) {
				t.Helper()
				got, err := c.isMember(ctx, user, group, opts)
				if err != nil {
					t.Fatalf("is %s a member of %s: %v", user, group, err)
				}
				if got != want {
					t.Fatalf("is %s a member of %s: %v, want %v", user, group, got, want)
				}
			}
			is(ann, admins, true)
			is(bea, admins, true)
			is(bea, inner1, true)
			is(bea, inner2, true)
			is(ann, inner1, false)
			is(cid, admins, false)
			is(dan, admins, false)
			// The cycle: every group contains the other; the answer ends.
			is(dan, cycA, true)
			is(dan, cycB, true)
			is(ann, cycA, false)
			is(cid, cycB, false)
			// The odd group, and DNs written another way than the server's.
			is(ann, odd, true)
			is(bea, odd, true)
			is(cid, odd, false)
			is(strings.ToUpper(ann), odd, true)
			is(strings.ToUpper(bea), strings.ToUpper(odd), true)
			is(strings.ToUpper(cid), odd, false)
			if !strings.Contains(odd, `\,`) && !strings.Contains(odd, `\2C`) {
				t.Fatalf("the odd group's DN %q should have an escaped comma", odd)
			}

			// The exported method: the same answers.
			if ok, err := c.IsMember(ctx, bea, admins); err != nil || !ok {
				t.Fatalf("IsMember(bea, admins) = %v, %v", ok, err)
			}
			if ok, err := c.IsMember(ctx, cid, admins); err != nil || ok {
				t.Fatalf("IsMember(cid, admins) = %v, %v", ok, err)
			}

			// Groups that are not there are errors that name them, for a
			// member and a non-member alike.
			for _, g := range []string{"cn=nobody-here," + groups, "cn=x,ou=no-such-ou," + groups, ann} {
				for _, u := range []string{ann, cid} {
					ok, err := c.isMember(ctx, u, g, opts)
					if err == nil || ok || !errors.Is(err, ErrGroupNotFound) || !strings.Contains(err.Error(), g) {
						t.Fatalf("is %s a member of %s (no such group): %v, %v; want an ErrGroupNotFound naming the group", u, g, ok, err)
					}
					t.Logf("%v", err)
				}
			}
			// A user that is not there.
			missing := "cn=nobody-here," + people
			if ok, err := c.isMember(ctx, missing, admins, opts); err == nil || ok || !errors.Is(err, ErrUserNotFound) || !strings.Contains(err.Error(), missing) {
				t.Fatalf("missing user: %v, %v; want an ErrUserNotFound naming the user", ok, err)
			}
			// Not DNs at all.
			for _, bad := range [][2]string{{"not a dn", admins}, {ann, "not a dn"}, {ann, ""}} {
				if ok, err := c.isMember(ctx, bad[0], bad[1], opts); err == nil || ok {
					t.Fatalf("is %q a member of %q: %v, %v; want an error", bad[0], bad[1], ok, err)
				}
			}
		})
	}
}
