package dirsync

import (
	"strings"
	"testing"

	"github.com/passbridge/passbridge/directory"
	"github.com/passbridge/passbridge/schema"
)

// groupName has LDAP filter characters: the memberOf filter must escape
// them (AD's sAMAccountName forbids * and \, so AD gets the parentheses).
func groupName(f fixture) string {
	if f.Kind() == "ad" {
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
				cfg := baseConfig(t, dc, f.Kind())
				ou := f.NewOU(t)
				people := f.AddOU(t, ou, "people")
				groups := f.AddOU(t, ou, "groups")
				f.Configure(cfg, ou)
				gina := f.AddUser(t, people, "gina", nil)
				hank := f.AddUser(t, people, "hank", nil)
				ivan := f.AddUser(t, people, "ivan", nil)
				inner := f.AddGroup(t, groups, "inner", hank)
				outer := f.AddGroup(t, groups, groupName(f), gina, inner)
				cfg.Directory.Group = outer
				s, _ := newSyncer(t, cfg, db)
				s.scopeOpts.ForceMemberWalk = v.walk

				sum, _ := run(t, s, RunOptions{Full: full})
				got := identities(t, s)
				if len(got) != 2 || got[f.ID(t, gina)].State != schema.StateActive || got[f.ID(t, hank)].State != schema.StateActive {
					t.Fatalf("scope %s: want gina (direct) and hank (nested), got %+v", outer, got)
				}
				if _, ok := got[f.ID(t, ivan)]; ok {
					t.Fatal("ivan is in no group and must be out of scope")
				}
				if sum.Entries < 2 {
					t.Fatalf("summary %+v", sum)
				}

				f.AddMember(t, inner, ivan)
				f.RemoveMember(t, inner, hank)
				sum, changes := run(t, s, RunOptions{Full: full})
				if !full && sum.FullReason == "" && sum.Mode != "delta" {
					t.Fatalf("unexpected mode %+v", sum)
				}
				c := countKinds(changes)
				if c[KindDelete] != 1 || c[KindCreate] != 1 {
					t.Fatalf("after hank left and ivan joined: %v", changes)
				}
				got = identities(t, s)
				if got[f.ID(t, hank)].State != schema.StateDeleted || got[f.ID(t, ivan)].State != schema.StateActive || got[f.ID(t, gina)].State != schema.StateActive {
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
				cfg := baseConfig(t, dc, f.Kind())
				ou := f.NewOU(t)
				odd := f.AddOU(t, ou, `Sales, "EMEA" + R&D`)
				f.Configure(cfg, ou)
				s, _ := newSyncer(t, cfg, db)
				zoeKey := addAppUser(t, db, "ZOË", "")

				liam := `O'Brien, "Liam" + Jr`
				login := "obrien"
				attrs := map[string][]string{"displayName": {liam}}
				if f.Kind() == "openldap" {
					login = liam // uid may hold anything; sAMAccountName may not
				}
				liamDN := f.AddUser(t, odd, login, attrs)
				if f.Kind() == "ad" {
					liamDN = f.Rename(t, liamDN, liam)
				}
				zoeDN := f.AddUser(t, odd, "zoë", map[string][]string{"displayName": {"Zoë Ñúñez 山田"}, "mail": {"zoe.nunez@corp.example"}})
				run(t, s, RunOptions{Full: full})

				l := identity(t, s, f.ID(t, liamDN))
				if directory.NormDN(l.DN) != directory.NormDN(liamDN) || l.DisplayName != liam || !strings.Contains(directory.NormDN(l.DN), `o'brien\, \"liam\" \+ jr`) {
					t.Fatalf("liam stored as %+v, DN %q", l, liamDN)
				}
				z := identity(t, s, f.ID(t, zoeDN))
				if z.Username != "zoë" || z.DisplayName != "Zoë Ñúñez 山田" || z.LinkState != schema.LinkLinked || z.UserKey != itoa(zoeKey) {
					t.Fatalf("zoë stored as %+v: want linked to ZOË (row %d) by username", z, zoeKey)
				}

				// Rename and move the odd entries.
				plain := f.AddOU(t, ou, "plain")
				zoeDN = f.Rename(t, zoeDN, "zoë ñ")
				liamDN = f.Move(t, liamDN, plain)
				_, changes := run(t, s, RunOptions{Full: full})
				if c := countKinds(changes); c[KindRename] != 1 || c[KindMove] != 1 {
					t.Fatalf("rename + move: %v", changes)
				}
				if got := identity(t, s, f.ID(t, liamDN)); directory.NormDN(got.DN) != directory.NormDN(liamDN) || got.ID != l.ID {
					t.Fatalf("moved liam stored as %+v, want DN %q", got, liamDN)
				}
				if got := identity(t, s, f.ID(t, zoeDN)); directory.NormDN(got.DN) != directory.NormDN(zoeDN) || got.ID != z.ID || got.UserKey != itoa(zoeKey) {
					t.Fatalf("renamed zoë stored as %+v, want DN %q", got, zoeDN)
				}
			})
		}
	}
}
