package directory

import (
	"strconv"
	"strings"
	"testing"

	"github.com/go-ldap/ldap/v3"

	"github.com/passbridge/passbridge/config"
	"github.com/passbridge/passbridge/internal/testsrv"
	"github.com/passbridge/passbridge/schema"
)

// fixture drives one kind of real directory for the lifecycle tests.
type fixture interface {
	kind() string
	configure(cfg *config.Config, base string)
	newOU(t *testing.T) string
	addOU(t *testing.T, parent, name string) string
	// addUser adds an enabled user with the given login name and mail.
	addUser(t *testing.T, parent, name string, attrs map[string][]string) string
	modify(t *testing.T, dn string, attrs map[string][]string)
	// rename changes the RDN value (the login name stays on AD).
	rename(t *testing.T, dn, newValue string) string
	move(t *testing.T, dn, parent string) string
	disable(t *testing.T, dn string)
	enable(t *testing.T, dn string)
	// remove deletes the user and returns what restore needs.
	remove(t *testing.T, dn string) func(t *testing.T) string
	id(t *testing.T, dn string) string
	addGroup(t *testing.T, parent, name string, members ...string) string
	addMember(t *testing.T, group, member string)
	removeMember(t *testing.T, group, member string)
	// renamesLogin reports whether rename changes the username.
	renamesLogin() bool
}

type slapdFixture struct{ s *testsrv.LDAP }

func (f slapdFixture) kind() string { return "openldap" }
func (f slapdFixture) configure(cfg *config.Config, base string) {
	slapdConfig(f.s, cfg, base)
}
func (f slapdFixture) newOU(t *testing.T) string { return f.s.NewOU(t) }
func (f slapdFixture) addOU(t *testing.T, parent, name string) string {
	return f.s.AddOU(t, parent, name)
}
func (f slapdFixture) addUser(t *testing.T, parent, name string, attrs map[string][]string) string {
	return f.s.AddUser(t, parent, name, attrs)
}
func (f slapdFixture) modify(t *testing.T, dn string, attrs map[string][]string) {
	f.s.Modify(t, dn, attrs)
}
func (f slapdFixture) rename(t *testing.T, dn, v string) string {
	return f.s.Rename(t, dn, "uid="+ldap.EscapeDN(v))
}
func (f slapdFixture) move(t *testing.T, dn, parent string) string { return f.s.Move(t, dn, parent) }
func (f slapdFixture) disable(t *testing.T, dn string)             { f.s.Disable(t, dn) }
func (f slapdFixture) enable(t *testing.T, dn string)              { f.s.Enable(t, dn) }
func (f slapdFixture) id(t *testing.T, dn string) string           { return f.s.UUID(t, dn) }
func (f slapdFixture) renamesLogin() bool                          { return true }
func (f slapdFixture) addGroup(t *testing.T, parent, name string, members ...string) string {
	return f.s.AddGroup(t, parent, name, members...)
}
func (f slapdFixture) addMember(t *testing.T, g, m string)    { f.s.AddMember(t, g, m) }
func (f slapdFixture) removeMember(t *testing.T, g, m string) { f.s.RemoveMember(t, g, m) }

// remove deletes the entry; restore adds it back with the same entryUUID,
// as an LDIF restore from backup does (slapadd or ldapadd with the Relax
// Rules control keep operational attributes).
func (f slapdFixture) remove(t *testing.T, dn string) func(t *testing.T) string {
	e := f.s.Entry(t, dn, "*", "entryUUID")
	f.s.Delete(t, dn)
	return func(t *testing.T) string {
		t.Helper()
		c := f.s.Conn(t)
		req := ldap.NewAddRequest(dn, []ldap.Control{ldap.NewControlString("1.3.6.1.4.1.4203.666.5.12", true, "")})
		for _, a := range e.Attributes {
			req.Attribute(a.Name, a.Values)
		}
		if err := c.Add(req); err != nil {
			t.Fatalf("restore %s with its entryUUID: %v", dn, err)
		}
		return dn
	}
}

type sambaFixture struct{ s *testsrv.AD }

func (f sambaFixture) kind() string { return "ad" }
func (f sambaFixture) configure(cfg *config.Config, base string) {
	sambaConfig(f.s, cfg, base)
}
func (f sambaFixture) newOU(t *testing.T) string { return f.s.NewOU(t) }
func (f sambaFixture) addOU(t *testing.T, parent, name string) string {
	return f.s.AddOU(t, parent, name)
}
func (f sambaFixture) addUser(t *testing.T, parent, name string, attrs map[string][]string) string {
	return f.s.AddUser(t, parent, name, attrs)
}
func (f sambaFixture) modify(t *testing.T, dn string, attrs map[string][]string) {
	f.s.Modify(t, dn, attrs)
}
func (f sambaFixture) rename(t *testing.T, dn, v string) string {
	return f.s.Rename(t, dn, "CN="+ldap.EscapeDN(v))
}
func (f sambaFixture) move(t *testing.T, dn, parent string) string { return f.s.Move(t, dn, parent) }
func (f sambaFixture) disable(t *testing.T, dn string)             { f.s.Disable(t, dn) }
func (f sambaFixture) enable(t *testing.T, dn string)              { f.s.Enable(t, dn) }
func (f sambaFixture) renamesLogin() bool                          { return false }
func (f sambaFixture) id(t *testing.T, dn string) string {
	id, err := GUIDString(f.s.GUID(t, dn))
	if err != nil {
		t.Fatal(err)
	}
	return id
}
func (f sambaFixture) addGroup(t *testing.T, parent, name string, members ...string) string {
	return f.s.AddGroup(t, parent, name, members...)
}
func (f sambaFixture) addMember(t *testing.T, g, m string)    { f.s.AddMember(t, g, m) }
func (f sambaFixture) removeMember(t *testing.T, g, m string) { f.s.RemoveMember(t, g, m) }
func (f sambaFixture) remove(t *testing.T, dn string) func(t *testing.T) string {
	e := f.s.Entry(t, dn, "objectGUID", "mail", "displayName")
	guid := e.GetRawAttributeValue("objectGUID")
	f.s.Delete(t, dn)
	return func(t *testing.T) string {
		t.Helper()
		f.s.Restore(t, guid, dn)
		// Reanimation keeps few attributes: put back what IT would.
		f.s.Modify(t, dn, map[string][]string{"mail": e.GetAttributeValues("mail"), "displayName": e.GetAttributeValues("displayName")})
		f.s.SetPassword(t, dn, testsrv.DefaultUserPassword)
		f.s.Enable(t, dn)
		return dn
	}
}

func fixtures(t *testing.T) map[string]func(t *testing.T) fixture {
	return map[string]func(t *testing.T) fixture{
		"openldap": func(t *testing.T) fixture { return slapdFixture{testsrv.Slapd(t)} },
		"ad":       func(t *testing.T) fixture { return sambaFixture{testsrv.SambaDC(t)} },
	}
}

// TestLifecycle creates, modifies, renames, moves, disables, re-enables,
// deletes and restores users on a real OpenLDAP and a real Samba AD, and
// sees each step through a full sync and through a delta sync.
func TestLifecycle(t *testing.T) {
	for name, mk := range fixtures(t) {
		for _, mode := range []string{"full", "delta"} {
			t.Run(name+"/"+mode, func(t *testing.T) {
				lifecycle(t, mk(t), mode == "full", "sqlite")
			})
		}
	}
}

func lifecycle(t *testing.T, f fixture, full bool, driver string) {
	dc, db := database(t, driver)
	cfg := baseConfig(t, dc, f.kind())
	ou := f.newOU(t)
	people := f.addOU(t, ou, "people")
	other := f.addOU(t, ou, "other")
	f.configure(cfg, ou)
	s, _ := newSyncer(t, cfg, db)
	aliceKey := addAppUser(t, db, "legacy-alice", "Alice@Corp.Example")

	sync := func(step string) (*Summary, []Change) {
		t.Helper()
		sum, changes := run(t, s, RunOptions{Full: full})
		wantMode := "delta"
		if full || sum.RunID == 1 {
			wantMode = "full"
		}
		if sum.Mode != wantMode {
			t.Fatalf("%s: mode %s, want %s (reason: %s)", step, sum.Mode, wantMode, sum.FullReason)
		}
		t.Logf("%s: %s", step, sum.Changes)
		return sum, changes
	}
	expectKinds := func(step string, changes []Change, id string, want ...string) {
		t.Helper()
		got := kindsOf(changes, id)
		if strings.Join(got, ",") != strings.Join(want, ",") {
			t.Fatalf("%s: changes of %s = %v, want %v (all: %v)", step, id, got, want, changes)
		}
	}

	// Create.
	aliceDN := f.addUser(t, people, "alice", map[string][]string{"mail": {"alice@corp.example"}, "displayName": {"Alice Liddell"}})
	bobDN := f.addUser(t, people, "bob", nil)
	alice, bob := f.id(t, aliceDN), f.id(t, bobDN)
	sum, changes := sync("create")
	expectKinds("create", changes, alice, KindCreate)
	expectKinds("create", changes, bob, KindCreate)
	if sum.Changes[KindCreate] != 2 || sum.Linked != 1 || sum.Unmatched != 1 {
		t.Fatalf("create: summary %+v", sum)
	}
	a := identity(t, s, alice)
	if a.State != schema.StateActive || a.DN != aliceDN || a.Username != "alice" || a.Email != "alice@corp.example" || a.DisplayName != "Alice Liddell" {
		t.Fatalf("create: alice stored as %+v", a)
	}
	if a.LinkState != schema.LinkLinked || a.UserKey != itoa(aliceKey) {
		t.Fatalf("create: alice should be linked by email (case-insensitively) to users row %d: %+v", aliceKey, a)
	}
	if b := identity(t, s, bob); b.LinkState != schema.LinkUnmatched || b.UserKey != "" {
		t.Fatalf("create: bob has no users row and must stay unmatched: %+v", b)
	}

	// Nothing changed: nothing to do.
	_, changes = sync("no change")
	if len(changes) != 0 {
		t.Fatalf("no change: planned %v", changes)
	}

	// Modify.
	f.modify(t, aliceDN, map[string][]string{"displayName": {"Alice Pleasance Liddell"}, "mail": {"alice.liddell@corp.example"}})
	_, changes = sync("modify")
	expectKinds("modify", changes, alice, KindUpdate)
	if a := identity(t, s, alice); a.DisplayName != "Alice Pleasance Liddell" || a.Email != "alice.liddell@corp.example" || a.UserKey != itoa(aliceKey) {
		t.Fatalf("modify: alice stored as %+v (the link must stay)", a)
	}

	// Rename.
	aliceDN = f.rename(t, aliceDN, "alice2")
	_, changes = sync("rename")
	expectKinds("rename", changes, alice, wantRename(f)...)
	a = identity(t, s, alice)
	if a.DN != aliceDN || a.UserKey != itoa(aliceKey) || len(identities(t, s)) != 2 {
		t.Fatalf("rename: alice stored as %+v: same identity, new DN, same link", a)
	}
	if f.renamesLogin() && a.Username != "alice2" {
		t.Fatalf("rename: username %q, want alice2", a.Username)
	}

	// Move to another OU.
	aliceDN = f.move(t, aliceDN, other)
	_, changes = sync("move")
	expectKinds("move", changes, alice, KindMove)
	if a := identity(t, s, alice); a.DN != aliceDN || a.UserKey != itoa(aliceKey) {
		t.Fatalf("move: alice stored as %+v", a)
	}

	// Disable, re-enable.
	f.disable(t, aliceDN)
	_, changes = sync("disable")
	expectKinds("disable", changes, alice, KindDisable)
	if a := identity(t, s, alice); a.State != schema.StateDisabled || a.StateReason == "" || a.UserKey != itoa(aliceKey) {
		t.Fatalf("disable: alice stored as %+v", a)
	}
	f.enable(t, aliceDN)
	_, changes = sync("enable")
	expectKinds("enable", changes, alice, KindEnable)
	if a := identity(t, s, alice); a.State != schema.StateActive || a.UserKey != itoa(aliceKey) {
		t.Fatalf("enable: alice stored as %+v", a)
	}

	// Delete: marked deleted, never removed, link kept.
	restore := f.remove(t, aliceDN)
	_, changes = sync("delete")
	expectKinds("delete", changes, alice, KindDelete)
	if a := identity(t, s, alice); a.State != schema.StateDeleted || a.UserKey != itoa(aliceKey) || a.LinkState != schema.LinkLinked {
		t.Fatalf("delete: alice stored as %+v", a)
	}
	if b := identity(t, s, bob); b.State != schema.StateActive {
		t.Fatalf("delete: bob must be untouched: %+v", b)
	}

	// Restore: the same identity comes back with its link.
	aliceDN = restore(t)
	_, changes = sync("restore")
	expectKinds("restore", changes, alice, KindRestore)
	if a := identity(t, s, alice); a.State != schema.StateActive || a.UserKey != itoa(aliceKey) || a.LinkState != schema.LinkLinked || a.DN != aliceDN {
		t.Fatalf("restore: alice stored as %+v", a)
	}

	// Bob gets a users row: the next run links him.
	bobKey := addAppUser(t, db, "bob", "")
	_, changes = sync("link")
	expectKinds("link", changes, bob, KindLink)
	if b := identity(t, s, bob); b.LinkState != schema.LinkLinked || b.UserKey != itoa(bobKey) {
		t.Fatalf("link: bob stored as %+v", b)
	}
	if got := len(identities(t, s)); got != 2 {
		t.Fatalf("%d identities, want 2", got)
	}
}

func wantRename(f fixture) []string {
	if f.renamesLogin() {
		return []string{KindRename, KindUpdate}
	}
	return []string{KindRename}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }
