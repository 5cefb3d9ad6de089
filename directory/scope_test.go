package directory

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/passbridge/passbridge/config"
	"github.com/passbridge/passbridge/internal/testsrv"
	"github.com/passbridge/passbridge/schema"
)

// groupName has LDAP filter characters: the memberOf filter must escape
// them (AD's sAMAccountName forbids * and \, so AD gets the parentheses).
func groupName(f fixture) string {
	if f.kind() == "ad" {
		return "Staff (Paris) & R&D"
	}
	return `Staff (Paris) * R\D`
}

// TestNestedGroupScope: only members of the configured group count, at any
// depth; leaving the inner group takes a user out of scope, joining it
// brings one in, through full and delta syncs.
func TestNestedGroupScope(t *testing.T) {
	type variant struct {
		name  string
		walk  bool // OpenLDAP: resolve member values instead of memberOf
		fixFn func(t *testing.T) fixture
	}
	var variants []variant
	for name, mk := range fixtures(t) {
		variants = append(variants, variant{name: name, fixFn: mk})
	}
	variants = append(variants, variant{name: "openldap-member-walk", walk: true, fixFn: fixtures(t)["openldap"]})
	for _, v := range variants {
		for _, mode := range []string{"full", "delta"} {
			t.Run(v.name+"/"+mode, func(t *testing.T) {
				f := v.fixFn(t)
				full := mode == "full"
				dc, db := database(t, "sqlite")
				cfg := baseConfig(t, dc, f.kind())
				ou := f.newOU(t)
				people := f.addOU(t, ou, "people")
				groups := f.addOU(t, ou, "groups")
				f.configure(cfg, ou)
				gina := f.addUser(t, people, "gina", nil)
				hank := f.addUser(t, people, "hank", nil)
				ivan := f.addUser(t, people, "ivan", nil)
				inner := f.addGroup(t, groups, "inner", hank)
				outer := f.addGroup(t, groups, groupName(f), gina, inner)
				cfg.Directory.Group = outer
				s, _ := newSyncer(t, cfg, db)
				s.scopeOpts.forceMemberWalk = v.walk

				sum, _ := run(t, s, RunOptions{Full: full})
				got := identities(t, s)
				if len(got) != 2 || got[f.id(t, gina)].State != schema.StateActive || got[f.id(t, hank)].State != schema.StateActive {
					t.Fatalf("scope %s: want gina (direct) and hank (nested), got %+v", outer, got)
				}
				if _, ok := got[f.id(t, ivan)]; ok {
					t.Fatal("ivan is in no group and must be out of scope")
				}
				if sum.Entries < 2 {
					t.Fatalf("summary %+v", sum)
				}

				f.addMember(t, inner, ivan)
				f.removeMember(t, inner, hank)
				sum, changes := run(t, s, RunOptions{Full: full})
				if !full && sum.FullReason == "" && sum.Mode != "delta" {
					t.Fatalf("unexpected mode %+v", sum)
				}
				c := countKinds(changes)
				if c[KindDelete] != 1 || c[KindCreate] != 1 {
					t.Fatalf("after hank left and ivan joined: %v", changes)
				}
				got = identities(t, s)
				if got[f.id(t, hank)].State != schema.StateDeleted || got[f.id(t, ivan)].State != schema.StateActive || got[f.id(t, gina)].State != schema.StateActive {
					t.Fatalf("after hank left and ivan joined: %+v", got)
				}
				// Nothing changed: a delta finds nothing to do.
				_, changes = run(t, s, RunOptions{Full: full})
				if len(changes) != 0 {
					t.Fatalf("no change, yet %v", changes)
				}
			})
		}
	}
}

// TestSpecialDNsAndNonASCII: a DN with a comma, a plus sign and quotes, and
// non-ASCII names go through create, rename and move, full and delta; the
// non-ASCII username links case-insensitively.
func TestSpecialDNsAndNonASCII(t *testing.T) {
	for name, mk := range fixtures(t) {
		for _, mode := range []string{"full", "delta"} {
			t.Run(name+"/"+mode, func(t *testing.T) {
				f := mk(t)
				full := mode == "full"
				dc, db := database(t, "sqlite")
				cfg := baseConfig(t, dc, f.kind())
				ou := f.newOU(t)
				odd := f.addOU(t, ou, `Sales, "EMEA" + R&D`)
				f.configure(cfg, ou)
				s, _ := newSyncer(t, cfg, db)
				zoeKey := addAppUser(t, db, "ZOË", "")

				liam := `O'Brien, "Liam" + Jr`
				login := "obrien"
				attrs := map[string][]string{"displayName": {liam}}
				if f.kind() == "openldap" {
					login = liam // uid may hold anything; sAMAccountName may not
				}
				liamDN := f.addUser(t, odd, login, attrs)
				if f.kind() == "ad" {
					liamDN = f.rename(t, liamDN, liam)
				}
				zoeDN := f.addUser(t, odd, "zoë", map[string][]string{"displayName": {"Zoë Ñúñez 山田"}, "mail": {"zoe.nunez@corp.example"}})
				run(t, s, RunOptions{Full: full})

				l := identity(t, s, f.id(t, liamDN))
				if normDN(l.DN) != normDN(liamDN) || l.DisplayName != liam || !strings.Contains(normDN(l.DN), `o'brien\, \"liam\" \+ jr`) {
					t.Fatalf("liam stored as %+v, DN %q", l, liamDN)
				}
				z := identity(t, s, f.id(t, zoeDN))
				if z.Username != "zoë" || z.DisplayName != "Zoë Ñúñez 山田" || z.LinkState != schema.LinkLinked || z.UserKey != itoa(zoeKey) {
					t.Fatalf("zoë stored as %+v: want linked to ZOË (row %d) by username", z, zoeKey)
				}

				// Rename and move the odd entries.
				plain := f.addOU(t, ou, "plain")
				zoeDN = f.rename(t, zoeDN, "zoë ñ")
				liamDN = f.move(t, liamDN, plain)
				_, changes := run(t, s, RunOptions{Full: full})
				if c := countKinds(changes); c[KindRename] != 1 || c[KindMove] != 1 {
					t.Fatalf("rename + move: %v", changes)
				}
				if got := identity(t, s, f.id(t, liamDN)); normDN(got.DN) != normDN(liamDN) || got.ID != l.ID {
					t.Fatalf("moved liam stored as %+v, want DN %q", got, liamDN)
				}
				if got := identity(t, s, f.id(t, zoeDN)); normDN(got.DN) != normDN(zoeDN) || got.ID != z.ID || got.UserKey != itoa(zoeKey) {
					t.Fatalf("renamed zoë stored as %+v, want DN %q", got, zoeDN)
				}
			})
		}
	}
}

// TestAuthenticate checks a password against the directory: by the login
// name (and on AD the UPN and DOMAIN\name), refusing wrong passwords,
// disabled accounts, users out of scope, and filter injection.
func TestAuthenticate(t *testing.T) {
	for name, mk := range fixtures(t) {
		t.Run(name, func(t *testing.T) {
			f := mk(t)
			ctx := context.Background()
			cfg := baseConfig(t, config.Database{}, f.kind())
			ou := f.newOU(t)
			in := f.addOU(t, ou, "in")
			out := f.addOU(t, ou, "out")
			f.configure(cfg, in)
			ada := f.addUser(t, in, "ada", nil)
			f.addUser(t, in, "ada2", nil)
			f.addUser(t, out, "eve", nil)
			dis := f.addUser(t, in, "dis", nil)
			f.disable(t, dis)
			c, err := NewClient(cfg.Directory, nil)
			if err != nil {
				t.Fatal(err)
			}
			names := []string{"ada"}
			if f.kind() == "ad" {
				names = append(names, "ada@corp.example", `CORP\ada`)
			}
			for _, n := range names {
				it, err := c.Authenticate(ctx, n, testsrv.DefaultUserPassword)
				if err != nil {
					t.Fatalf("authenticate %q: %v", n, err)
				}
				if it.DirectoryID != f.id(t, ada) || it.DN != ada {
					t.Fatalf("authenticate %q: got %+v", n, it)
				}
			}
			refuse := func(user, pw string, want error) {
				t.Helper()
				_, err := c.Authenticate(ctx, user, pw)
				if !errors.Is(err, want) {
					t.Fatalf("authenticate %q/%q: %v, want %v", user, pw, err, want)
				}
			}
			refuse("ada", "wrong-Passw0rd", ErrInvalidCredentials)
			refuse("ada", "", ErrInvalidCredentials)
			refuse("eve", testsrv.DefaultUserPassword, ErrInvalidCredentials) // out of scope
			refuse("dis", testsrv.DefaultUserPassword, ErrDisabled)
			// Filter injection: these must match nobody, not everybody.
			refuse("*", testsrv.DefaultUserPassword, ErrInvalidCredentials)
			refuse("ada*", testsrv.DefaultUserPassword, ErrInvalidCredentials)
			refuse("*)(objectClass=*", testsrv.DefaultUserPassword, ErrInvalidCredentials)
			refuse(`ada\2a`, testsrv.DefaultUserPassword, ErrInvalidCredentials)
		})
	}
}
