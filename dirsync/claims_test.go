package dirsync

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/passbridge/passbridge/schema"
	"github.com/passbridge/passbridge/store"
)

// TestLinkingNeverGuesses: on OpenLDAP and on AD, two directory users with
// one e-mail and one users row with it: neither is linked, whichever the
// directory returns first (both orders are run), each names the other; the
// same when the two are pages apart and when one is re-matched after the
// read. A row linked in an earlier run keeps its link and the newcomer who
// claims it is ambiguous; a manual link decides and is kept.
func TestLinkingNeverGuesses(t *testing.T) {
	for name, mk := range fixtures(t) {
		t.Run(name, func(t *testing.T) {
			f := mk(t)
			orders := map[string]string{}
			for _, first := range []string{"amy", "zed"} {
				t.Run(first+"-first", func(t *testing.T) {
					orders[first] = sharedEmail(t, f, first)
				})
			}
			t.Logf("directory order: %v", orders)
			if orders["amy"] != "" && orders["amy"] == orders["zed"] && name == "openldap" {
				t.Errorf("slapd returned both runs in the same order (%s): the test does not try both orders", orders["amy"])
			}
			t.Run("earlier-link", func(t *testing.T) { earlierLinkStays(t, f) })
		})
	}
}

// sharedEmail adds amy and zed (first one first) with one e-mail and a
// users row with it, syncs, and checks neither is linked. It returns the
// order in which the run planned them.
func sharedEmail(t *testing.T, f fixture, first string) string {
	dc, db := database(t, "sqlite")
	cfg := baseConfig(t, dc, f.Kind())
	ou := f.NewOU(t)
	f.Configure(cfg, ou)
	cfg.Directory.PageSize = 1 // the two claimants come pages apart
	mail := map[string][]string{"mail": {"Sales@corp.example"}}
	names := []string{first, map[string]string{"amy": "zed", "zed": "amy"}[first]}
	tag := fmt.Sprintf("%s%d", names[0][:1], len(t.Name())%97)
	dns := map[string]string{}
	for _, n := range names {
		dns[n] = f.AddUser(t, ou, n+tag, mail)
	}
	shared := addAppUser(t, db, "sales-box", "sales@corp.example")
	s, _ := newSyncer(t, cfg, db)

	sum, changes := run(t, s, RunOptions{DryRun: true})
	var order []string
	for _, c := range changes {
		if c.Kind == KindCreate {
			order = append(order, strings.TrimSuffix(c.Username, tag))
		}
		if strings.Contains(c.Description, "; linked: ") {
			t.Errorf("dry run plans a link of the shared row: %s", c)
		}
	}
	if sum.Linked != 0 || sum.Ambiguous != 2 {
		t.Fatalf("dry run: %d linked, %d ambiguous, want 0 and 2: %+v", sum.Linked, sum.Ambiguous, sum.LinkIssues)
	}
	run(t, s, RunOptions{})
	got := identities(t, s)
	for i, n := range names {
		r, other := got[f.ID(t, dns[n])], got[f.ID(t, dns[names[1-i]])]
		if r.LinkState != schema.LinkAmbiguous || r.UserKey != "" {
			t.Fatalf("%s: link %s %q, want ambiguous and no row", n, r.LinkState, r.UserKey)
		}
		if !strings.Contains(r.LinkDetail, fmt.Sprintf("users row %d", shared)) || !strings.Contains(r.LinkDetail, other.DirectoryID) ||
			!strings.Contains(r.LinkDetail, "none is linked") {
			t.Fatalf("%s: detail %q does not name the row and the other claimant", n, r.LinkDetail)
		}
	}
	// Nothing changes on the next runs, full or delta: still nobody.
	for _, full := range []bool{true, false} {
		sum, _ := run(t, s, RunOptions{Full: full})
		if sum.Linked != 0 {
			t.Fatalf("a later run (full %v) linked %d: %+v", full, sum.Linked, sum.LinkIssues)
		}
	}
	// A manual link decides, and later syncs keep it.
	zed := got[f.ID(t, dns["zed"])]
	manualLink(t, db, zed.ID, shared)
	for _, full := range []bool{true, false} {
		run(t, s, RunOptions{Full: full})
		got = identities(t, s)
		if r := got[f.ID(t, dns["zed"])]; r.LinkState != schema.LinkManual || r.UserKey != fmt.Sprint(shared) {
			t.Fatalf("zed after the manual link and a sync (full %v): %+v", full, r)
		}
		if r := got[f.ID(t, dns["amy"])]; r.LinkState != schema.LinkAmbiguous || !strings.Contains(r.LinkDetail, "already linked") {
			t.Fatalf("amy after zed's manual link (full %v): %+v", full, r)
		}
	}
	return strings.Join(order, ",")
}

// earlierLinkStays: a row linked in an earlier run keeps its link when a
// second identity with its e-mail appears; the newcomer is ambiguous.
func earlierLinkStays(t *testing.T, f fixture) {
	dc, db := database(t, "sqlite")
	cfg := baseConfig(t, dc, f.Kind())
	ou := f.NewOU(t)
	f.Configure(cfg, ou)
	mail := map[string][]string{"mail": {"ops@corp.example"}}
	first := f.AddUser(t, ou, "opsfirst", mail)
	row := addAppUser(t, db, "ops", "ops@corp.example")
	s, _ := newSyncer(t, cfg, db)
	run(t, s, RunOptions{})
	if r := identity(t, s, f.ID(t, first)); r.LinkState != schema.LinkLinked || r.UserKey != fmt.Sprint(row) {
		t.Fatalf("the only claimant: %+v", r)
	}
	second := f.AddUser(t, ou, "opssecond", mail)
	for _, full := range []bool{false, true} {
		run(t, s, RunOptions{Full: full})
		if r := identity(t, s, f.ID(t, first)); r.LinkState != schema.LinkLinked || r.UserKey != fmt.Sprint(row) {
			t.Fatalf("the earlier link after a newcomer (full %v): %+v", full, r)
		}
		if r := identity(t, s, f.ID(t, second)); r.LinkState != schema.LinkAmbiguous || !strings.Contains(r.LinkDetail, "already linked") {
			t.Fatalf("the newcomer (full %v): %+v", full, r)
		}
	}
}

// TestNeverLink: users_table.never_link keeps the rows it holds from
// automatic linking (ambiguous, saying why; provision: create makes no
// second row for them), leaves every other row alone, allows a manual
// link, and a condition the database refuses stops the run before it
// writes, naming the key.
func TestNeverLink(t *testing.T) {
	ctx := context.Background()
	f := fixtures(t)["openldap"](t)
	for _, driver := range []string{"sqlite", "postgres", "mysql"} {
		t.Run(driver, func(t *testing.T) {
			dc, db := database(t, driver)
			cfg := baseConfig(t, dc, f.Kind())
			ou := f.NewOU(t)
			f.Configure(cfg, ou)
			cfg.Directory.Provision = "create"
			cfg.UsersTable.NeverLink = db.Dialect().Quote("username") + " LIKE 'adm-%'"
			root := f.AddUser(t, ou, "root", map[string][]string{"mail": {"root@corp.example"}})
			pat := f.AddUser(t, ou, "pat", map[string][]string{"mail": {"pat@corp.example"}})
			adminRow := addAppUser(t, db, "adm-root", "root@corp.example")
			patRow := addAppUser(t, db, "pat", "pat@corp.example")
			s, _ := newSyncer(t, cfg, db)
			run(t, s, RunOptions{})
			r := identity(t, s, f.ID(t, root))
			if r.LinkState != schema.LinkAmbiguous || r.UserKey != "" || !strings.Contains(r.LinkDetail, "users_table.never_link") {
				t.Fatalf("root, whose row never_link protects: %+v", r)
			}
			var rows int
			if err := store.Get(ctx, db, &rows, "SELECT COUNT(*) FROM users"); err != nil || rows != 2 {
				t.Fatalf("users rows after the sync: %d (%v), want 2: provision made a row for a protected account", rows, err)
			}
			if r := identity(t, s, f.ID(t, pat)); r.LinkState != schema.LinkLinked || r.UserKey != fmt.Sprint(patRow) {
				t.Fatalf("pat, an ordinary row: %+v", r)
			}
			// A manual link to the protected row is kept by the sync.
			manualLink(t, db, r.ID, adminRow)
			run(t, s, RunOptions{Full: true})
			if r := identity(t, s, f.ID(t, root)); r.LinkState != schema.LinkManual || r.UserKey != fmt.Sprint(adminRow) {
				t.Fatalf("root after a manual link to its never_link row and a sync: %+v", r)
			}

			cfg.UsersTable.NeverLink = "no_such_column = 1"
			bad, _ := newSyncer(t, cfg, db)
			before := dump(t, bad)
			f.AddUser(t, ou, "newcomer", nil)
			_, err := bad.Run(ctx, RunOptions{Trigger: "test"})
			if err == nil || !strings.Contains(err.Error(), "users_table.never_link") {
				t.Fatalf("a condition the database refuses: %v", err)
			}
			if after := dump(t, bad); after != before {
				t.Fatalf("the refused run wrote:\n%s\nwas:\n%s", after, before)
			}
		})
	}
}

// manualLink links an identity by hand as identity.LinkManually stores it
// (that package imports this one, so its tests call it).
func manualLink(t *testing.T, db *store.DB, identityID, key int64) {
	t.Helper()
	_, err := store.Exec(context.Background(), db, "UPDATE passbridge_identities SET user_key = ?, link_state = ?, link_detail = ? WHERE id = ?",
		key, schema.LinkManual, "linked by an administrator", identityID)
	if err != nil {
		t.Fatal(err)
	}
}
