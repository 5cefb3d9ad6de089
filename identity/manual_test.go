package identity

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/passbridge/passbridge/dirsync"
	"github.com/passbridge/passbridge/internal/testdir"
	"github.com/passbridge/passbridge/internal/testsrv"
	"github.com/passbridge/passbridge/schema"
	"github.com/passbridge/passbridge/store"
)

// TestManualLink links identities by hand on a real OpenLDAP, with SQLite
// and PostgreSQL: an unmatched and an ambiguous identity linked by an admin
// keep their row through full and delta syncs even when the match rules
// would now pick another; bad keys, missing rows and rows of other
// identities are refused and change nothing; Unlink hands the identity
// back to the rules.
func TestManualLink(t *testing.T) {
	for _, driver := range []string{"sqlite", "postgres"} {
		t.Run(driver, func(t *testing.T) { manualLink(t, driver) })
	}
}

func manualLink(t *testing.T, driver string) {
	ctx := context.Background()
	f := slapdFixture{S: testsrv.Slapd(t)}
	dc, db := database(t, driver)
	cfg := baseConfig(t, dc, f.Kind())
	ou := f.NewOU(t)
	people := f.AddOU(t, ou, "people")
	f.Configure(cfg, ou)
	log, _ := testdir.NewTestLog(t)
	testdir.Migrate(t, db, cfg, log)
	s, err := dirsync.NewSyncer(cfg, db, log)
	if err != nil {
		t.Fatalf("NewSyncer: %v", err)
	}
	n := schema.NamesFor(cfg)

	mail := func(m string) map[string][]string { return map[string][]string{"mail": {m}} }
	carolDN := f.AddUser(t, people, "carol", mail("carol@corp.example"))
	daveDN := f.AddUser(t, people, "dave", mail("dave@corp.example"))
	erinDN := f.AddUser(t, people, "erin", mail("erin@corp.example"))
	frankDN := f.AddUser(t, people, "frank", mail("frank@corp.example"))
	legacy := addAppUser(t, db, "c.legacy", "") // carol's row, which no rule finds
	dave1 := addAppUser(t, db, "dave.one", "dave@corp.example")
	dave2 := addAppUser(t, db, "dave.two", "DAVE@corp.example")
	erinKey := addAppUser(t, db, "erin", "")
	frankKey := addAppUser(t, db, "frank", "")
	spare := addAppUser(t, db, "spare", "")

	// sync runs one sync and returns the kinds of its changes by directory
	// ID.
	sync := func(step string, full bool) map[string][]string {
		t.Helper()
		kinds := map[string][]string{}
		sum, err := s.Run(ctx, dirsync.RunOptions{Full: full, Trigger: "test", OnChange: func(c dirsync.Change) {
			kinds[c.DirectoryID] = append(kinds[c.DirectoryID], c.Kind)
		}})
		if err != nil {
			t.Fatalf("%s: sync (full=%v): %v", step, full, err)
		}
		if want := map[bool]string{true: "full", false: "delta"}[full]; sum.Mode != want {
			t.Fatalf("%s: a %s run, want %s (%s)", step, sum.Mode, want, sum.FullReason)
		}
		return kinds
	}
	sync("first", true)
	carol, dave := testdir.Identity(t, db, cfg, f.ID(t, carolDN)), testdir.Identity(t, db, cfg, f.ID(t, daveDN))
	erin, frank := testdir.Identity(t, db, cfg, f.ID(t, erinDN)), testdir.Identity(t, db, cfg, f.ID(t, frankDN))
	if carol.LinkState != schema.LinkUnmatched || dave.LinkState != schema.LinkAmbiguous ||
		erin.LinkState != schema.LinkLinked || erin.UserKey != itoa(erinKey) || frank.UserKey != itoa(frankKey) {
		t.Fatalf("after the first sync: carol %+v, dave %+v, erin %+v, frank %+v", carol, dave, erin, frank)
	}

	// Refused, each with a clear error, and nothing written.
	before := testdir.Dump(t, db, cfg)
	refuse := func(what string, id int64, key, actor string, want error, mentions ...string) {
		t.Helper()
		info, err := LinkManually(ctx, db, cfg, id, key, actor)
		if err == nil || info != nil || (want != nil && !errors.Is(err, want)) {
			t.Fatalf("%s: LinkManually(%d, %q) = %+v, %v; want %v", what, id, key, info, err, want)
		}
		for _, m := range mentions {
			if !strings.Contains(err.Error(), m) {
				t.Fatalf("%s: the error %q should mention %q", what, err, m)
			}
		}
		t.Logf("%s: %v", what, err)
	}
	refuse("bad key", carol.ID, "abc", "it-admin", ErrBadUserKey, `"abc"`, "integer")
	refuse("empty key", carol.ID, " ", "it-admin", ErrBadUserKey)
	refuse("missing row", carol.ID, "999999", "it-admin", ErrNoUsersRow, "999999")
	refuse("row of another identity", carol.ID, itoa(erinKey), "it-admin", ErrUsersRowTaken, "erin", erin.DirectoryID)
	refuse("missing identity", 999999, itoa(legacy), "it-admin", ErrNoIdentity, "999999")
	refuse("no actor", carol.ID, itoa(legacy), "  ", nil)
	if err := Unlink(ctx, db, cfg, erin.ID, "it-admin"); !errors.Is(err, ErrNotManualLink) {
		t.Fatalf("unlink a link made by the rules: %v, want ErrNotManualLink", err)
	}
	if after := testdir.Dump(t, db, cfg); after != before {
		t.Fatalf("refused links changed the database:\n%s\n---\n%s", before, after)
	}

	// A sync in progress holds the lock: the admin is told, after a wait.
	lock, ok, err := db.TryLock(ctx, dirsync.LockName)
	if err != nil || !ok {
		t.Fatalf("take the sync lock: %v %v", ok, err)
	}
	wait := manualLockWait
	manualLockWait = 300 * time.Millisecond
	refuse("sync running", carol.ID, itoa(legacy), "it-admin", ErrSyncRunning)
	manualLockWait = wait
	lock.Unlock()

	// Link the unmatched and the ambiguous identity by hand.
	info, err := LinkManually(ctx, db, cfg, carol.ID, " "+itoa(legacy)+" ", "it-admin@corp.example")
	if err != nil {
		t.Fatal(err)
	}
	if info.LinkState != schema.LinkManual || info.UserKey != itoa(legacy) || !strings.HasPrefix(info.LinkDetail, "linked by it-admin@corp.example at ") {
		t.Fatalf("carol linked by hand: %+v", info)
	}
	if _, err := LinkManually(ctx, db, cfg, dave.ID, itoa(dave2), "it-admin"); err != nil {
		t.Fatal(err)
	}
	d, err := IdentityByID(ctx, db, cfg, carol.ID)
	if err != nil || d.Row == nil || d.Row.Key != itoa(legacy) || d.Row.Username != "c.legacy" || d.LinkState != schema.LinkManual || d.DirectoryID != carol.DirectoryID {
		t.Fatalf("IdentityByID(carol) = %+v (row %+v), %v", d, d.Row, err)
	}
	if _, err := IdentityByID(ctx, db, cfg, 999999); !errors.Is(err, ErrNoIdentity) {
		t.Fatalf("IdentityByID(999999): %v, want ErrNoIdentity", err)
	}

	// Now the rules would pick other rows: carol's email gets a row of its
	// own, and dave's email matches dave.one only.
	carolByRules := addAppUser(t, db, "carol", "carol@corp.example")
	if _, err := store.Exec(ctx, db, "UPDATE "+n.Users+" SET "+n.UserEmail+" = ? WHERE "+n.UserKey+" = ?", "someone.else@corp.example", dave2); err != nil {
		t.Fatal(err)
	}
	kept := func(step string, changes map[string][]string) {
		t.Helper()
		c, d := testdir.Identity(t, db, cfg, carol.DirectoryID), testdir.Identity(t, db, cfg, dave.DirectoryID)
		if c.LinkState != schema.LinkManual || c.UserKey != itoa(legacy) || d.LinkState != schema.LinkManual || d.UserKey != itoa(dave2) {
			t.Fatalf("%s: the manual links must stay: carol %+v, dave %+v", step, c, d)
		}
		for _, id := range []string{carol.DirectoryID, dave.DirectoryID} {
			for _, k := range changes[id] {
				if k != dirsync.KindUpdate {
					t.Fatalf("%s: %s for a manually linked identity (%v)", step, k, changes)
				}
			}
		}
		for _, k := range []int64{carolByRules, dave1} {
			if owners := linkedTo(t, db, n, k); len(owners) != 0 {
				t.Fatalf("%s: users row %d is linked to %v, want nobody", step, k, owners)
			}
		}
	}
	kept("full sync", sync("full sync", true))
	// A delta that reads carol and dave (they changed) and one that does not.
	f.Modify(t, carolDN, map[string][]string{"displayName": {"Carol C."}})
	f.Modify(t, daveDN, map[string][]string{"displayName": {"Dave D."}})
	changes := sync("delta sync", false)
	if got := changes[carol.DirectoryID]; len(got) != 1 || got[0] != dirsync.KindUpdate {
		t.Fatalf("delta sync: carol's changes %v, want one update (the display name)", got)
	}
	kept("delta sync", changes)
	kept("empty delta sync", sync("empty delta sync", false))

	// A deleted identity lets its row go to the identity linked by hand
	// (the account was recreated under a new ID); a deleted identity
	// cannot be linked itself.
	f.S.Delete(t, frankDN)
	sync("frank deleted", true)
	frank2DN := f.AddUser(t, people, "frank2", mail("frank.new@corp.example"))
	sync("frank2 added", false)
	frank2 := testdir.Identity(t, db, cfg, f.ID(t, frank2DN))
	if frank2.LinkState != schema.LinkUnmatched || testdir.Identity(t, db, cfg, frank.DirectoryID).UserKey != itoa(frankKey) {
		t.Fatalf("frank2 %+v, frank %+v", frank2, testdir.Identity(t, db, cfg, frank.DirectoryID))
	}
	refuse("deleted identity", frank.ID, itoa(spare), "it-admin", nil, "deleted")
	info, err = LinkManually(ctx, db, cfg, frank2.ID, itoa(frankKey), "it-admin")
	if err != nil {
		t.Fatal(err)
	}
	if info.UserKey != itoa(frankKey) || !strings.Contains(info.LinkDetail, "taken from deleted identity") {
		t.Fatalf("frank2 linked by hand: %+v", info)
	}
	if old := testdir.Identity(t, db, cfg, frank.DirectoryID); old.UserKey != "" || old.LinkState != schema.LinkUnmatched || !strings.Contains(old.LinkDetail, "linked by hand to identity") {
		t.Fatalf("the deleted frank after his row was taken: %+v", old)
	}
	sync("after frank2's link", true)
	if got := testdir.Identity(t, db, cfg, frank2.DirectoryID); got.LinkState != schema.LinkManual || got.UserKey != itoa(frankKey) {
		t.Fatalf("frank2 after a sync: %+v", got)
	}

	// Active passkeys keep an identity on its row.
	q := n.Dialect.Quote
	_, err = store.Exec(ctx, db, "INSERT INTO "+n.Credentials+" ("+q("user_key")+", "+q("identity_id")+", "+q("credential_id")+", "+q("public_key")+", "+
		q("user_handle")+", "+q("name")+", "+q("created_at")+") VALUES (?, ?, ?, ?, ?, ?, ?)",
		legacy, carol.ID, []byte("cred-carol"), []byte{0xa5}, []byte("handle-carol"), "YubiKey", time.Now().UTC())
	if err != nil {
		t.Fatal(err)
	}
	if d, err := IdentityByID(ctx, db, cfg, carol.ID); err != nil || len(d.Passkeys) != 1 {
		t.Fatalf("IdentityByID(carol) with a passkey: %+v, %v", d, err)
	}
	if err := Unlink(ctx, db, cfg, carol.ID, "it-admin"); !errors.Is(err, ErrActivePasskeys) {
		t.Fatalf("unlink with an active passkey: %v, want ErrActivePasskeys", err)
	}
	refuse("move off a row with passkeys", carol.ID, itoa(spare), "it-admin", ErrActivePasskeys)
	if _, err := store.Exec(ctx, db, "UPDATE "+n.Credentials+" SET "+q("revoked_at")+" = ?", time.Now().UTC()); err != nil {
		t.Fatal(err)
	}

	// Unlink: the next syncs link by the rules again.
	if err := Unlink(ctx, db, cfg, carol.ID, "it-admin"); err != nil {
		t.Fatal(err)
	}
	if c := testdir.Identity(t, db, cfg, carol.DirectoryID); c.LinkState != schema.LinkUnmatched || c.UserKey != "" || !strings.Contains(c.LinkDetail, "removed by it-admin") {
		t.Fatalf("carol after Unlink: %+v", c)
	}
	if err := Unlink(ctx, db, cfg, dave.ID, "it-admin"); err != nil {
		t.Fatal(err)
	}
	changes = sync("delta after unlink", false)
	if got := changes[carol.DirectoryID]; len(got) != 1 || got[0] != dirsync.KindLink {
		t.Fatalf("delta after unlink: carol's changes %v, want a link", got)
	}
	if c := testdir.Identity(t, db, cfg, carol.DirectoryID); c.LinkState != schema.LinkLinked || c.UserKey != itoa(carolByRules) {
		t.Fatalf("carol after unlink and a sync: %+v, want linked by email to row %d", c, carolByRules)
	}
	if d := testdir.Identity(t, db, cfg, dave.DirectoryID); d.LinkState != schema.LinkLinked || d.UserKey != itoa(dave1) {
		t.Fatalf("dave after unlink and a sync: %+v, want linked by email to row %d", d, dave1)
	}
	// And a manual link of an identity the rules linked: it becomes manual.
	if info, err := LinkManually(ctx, db, cfg, erin.ID, itoa(spare), "it-admin"); err != nil || info.UserKey != itoa(spare) ||
		!strings.Contains(info.LinkDetail, "; before: users row "+itoa(erinKey)+" (linked)") {
		t.Fatalf("relink erin by hand: %+v, %v", info, err)
	}
	sync("after erin's relink", true)
	if e := testdir.Identity(t, db, cfg, erin.DirectoryID); e.LinkState != schema.LinkManual || e.UserKey != itoa(spare) {
		t.Fatalf("erin after a sync: %+v", e)
	}
	// Her row deleted by the application (the foreign key clears the
	// link), erin stays linked by hand, without a row, although her
	// username now matches a free row: a person decided, a person undoes.
	if _, err := store.Exec(ctx, db, "DELETE FROM "+n.Users+" WHERE "+n.UserKey+" = ?", spare); err != nil {
		t.Fatal(err)
	}
	for _, full := range []bool{true, false} {
		changes := sync("after erin's row was deleted", full)
		if e := testdir.Identity(t, db, cfg, erin.DirectoryID); e.LinkState != schema.LinkManual || e.UserKey != "" || len(changes[erin.DirectoryID]) != 0 {
			t.Fatalf("erin after her row was deleted (full=%v): %+v, changes %v", full, e, changes)
		}
	}
	if err := Unlink(ctx, db, cfg, erin.ID, "it-admin"); err != nil {
		t.Fatal(err)
	}
	sync("after erin's unlink", false)
	if e := testdir.Identity(t, db, cfg, erin.DirectoryID); e.LinkState != schema.LinkLinked || e.UserKey != itoa(erinKey) {
		t.Fatalf("erin after unlink and a sync: %+v, want linked by username to row %d", e, erinKey)
	}
}

// linkedTo lists the identities (directory IDs) linked to a users row.
func linkedTo(t *testing.T, db *store.DB, n schema.Names, key int64) []string {
	t.Helper()
	var ids []string
	if err := store.Select(context.Background(), db, &ids, "SELECT "+n.Column("directory_id")+" FROM "+n.Identities+" WHERE "+n.Column("user_key")+" = ?", key); err != nil {
		t.Fatal(err)
	}
	return ids
}
