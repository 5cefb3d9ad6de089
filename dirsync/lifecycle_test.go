package dirsync

import (
	"strconv"
	"strings"
	"testing"

	"github.com/passbridge/passbridge/schema"
)

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
	cfg := baseConfig(t, dc, f.Kind())
	ou := f.NewOU(t)
	people := f.AddOU(t, ou, "people")
	other := f.AddOU(t, ou, "other")
	f.Configure(cfg, ou)
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
	aliceDN := f.AddUser(t, people, "alice", map[string][]string{"mail": {"alice@corp.example"}, "displayName": {"Alice Liddell"}})
	bobDN := f.AddUser(t, people, "bob", nil)
	alice, bob := f.ID(t, aliceDN), f.ID(t, bobDN)
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
	f.Modify(t, aliceDN, map[string][]string{"displayName": {"Alice Pleasance Liddell"}, "mail": {"alice.liddell@corp.example"}})
	_, changes = sync("modify")
	expectKinds("modify", changes, alice, KindUpdate)
	if a := identity(t, s, alice); a.DisplayName != "Alice Pleasance Liddell" || a.Email != "alice.liddell@corp.example" || a.UserKey != itoa(aliceKey) {
		t.Fatalf("modify: alice stored as %+v (the link must stay)", a)
	}

	// Rename.
	aliceDN = f.Rename(t, aliceDN, "alice2")
	_, changes = sync("rename")
	expectKinds("rename", changes, alice, wantRename(f)...)
	a = identity(t, s, alice)
	if a.DN != aliceDN || a.UserKey != itoa(aliceKey) || len(identities(t, s)) != 2 {
		t.Fatalf("rename: alice stored as %+v: same identity, new DN, same link", a)
	}
	if f.RenamesLogin() && a.Username != "alice2" {
		t.Fatalf("rename: username %q, want alice2", a.Username)
	}

	// Move to another OU.
	aliceDN = f.Move(t, aliceDN, other)
	_, changes = sync("move")
	expectKinds("move", changes, alice, KindMove)
	if a := identity(t, s, alice); a.DN != aliceDN || a.UserKey != itoa(aliceKey) {
		t.Fatalf("move: alice stored as %+v", a)
	}

	// Disable, re-enable.
	f.Disable(t, aliceDN)
	_, changes = sync("disable")
	expectKinds("disable", changes, alice, KindDisable)
	if a := identity(t, s, alice); a.State != schema.StateDisabled || a.StateReason == "" || a.UserKey != itoa(aliceKey) {
		t.Fatalf("disable: alice stored as %+v", a)
	}
	f.Enable(t, aliceDN)
	_, changes = sync("enable")
	expectKinds("enable", changes, alice, KindEnable)
	if a := identity(t, s, alice); a.State != schema.StateActive || a.UserKey != itoa(aliceKey) {
		t.Fatalf("enable: alice stored as %+v", a)
	}

	// Delete: marked deleted, never removed, link kept.
	restore := f.Remove(t, aliceDN)
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
	if f.RenamesLogin() {
		return []string{KindRename, KindUpdate}
	}
	return []string{KindRename}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }
