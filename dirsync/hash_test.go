package dirsync

import (
	"context"
	"database/sql"
	"errors"
	"testing"

	"github.com/passbridge/passbridge/directory"
	"github.com/passbridge/passbridge/schema"
)

// TestMappedHash: every identity the sync writes carries the fingerprint
// of its mapped fields; an entry whose fingerprint is unchanged plans
// nothing; an identity with several changes stores the new fingerprint
// with its last one, so a run that stops between them (a batch of one
// change, the second batch failing) leaves the old fingerprint and the next
// run plans what is left; an identity stored before the column (no
// fingerprint) is compared field by field and, unchanged, not written.
func TestMappedHash(t *testing.T) {
	for _, driver := range []string{"sqlite", "postgres"} {
		t.Run(driver, func(t *testing.T) {
			f := fixtures(t)["openldap"](t)
			dc, db := database(t, driver)
			cfg := baseConfig(t, dc, f.Kind())
			ou := f.NewOU(t)
			f.Configure(cfg, ou)
			aliceDN := f.AddUser(t, ou, "alice", map[string][]string{"mail": {"alice@corp.example"}, "displayName": {"Alice Liddell"}})
			bobDN := f.AddUser(t, ou, "bob", nil)
			alice, bob := f.ID(t, aliceDN), f.ID(t, bobDN)
			s, _ := newSyncer(t, cfg, db)
			ctx := context.Background()
			n := schema.NamesFor(cfg)
			stored := func(id string) (sql.NullString, directory.Identity) {
				t.Helper()
				rows, err := dbState{s}.identities(ctx, []string{id})
				if err != nil || rows[id] == nil {
					t.Fatalf("identity %s: %v", id, err)
				}
				r := rows[id]
				return r.MappedHash, directory.Identity{DirectoryID: r.DirectoryID, DN: r.DN, Username: r.Username, Email: r.Email.String,
					DisplayName: r.DisplayName.String, Department: r.Department.String, Disabled: r.State == schema.StateDisabled, DisabledReason: r.StateReason.String}
			}
			fingerprinted := func(step, id string) {
				t.Helper()
				h, it := stored(id)
				if !h.Valid || h.String != mappedHash(it) {
					t.Fatalf("%s: %s has fingerprint %v, want %s (of %+v)", step, id, h, mappedHash(it), it)
				}
			}

			run(t, s, RunOptions{Full: true})
			fingerprinted("create", alice)
			fingerprinted("create", bob)
			if _, changes := run(t, s, RunOptions{Full: true}); len(changes) != 0 {
				t.Fatalf("unchanged: planned %v", changes)
			}

			// alice is renamed and gets a new display name: two changes,
			// in two batches of one; the second fails.
			before, _ := stored(alice)
			aliceDN = f.Rename(t, aliceDN, "alice2")
			f.Modify(t, aliceDN, map[string][]string{"displayName": {"Alice Hargreaves"}})
			s.BatchSize = 1
			boom := errors.New("boom")
			s.hookBatch = func(n int) error {
				if n == 2 {
					return boom
				}
				return nil
			}
			if _, err := s.Run(ctx, RunOptions{Full: true, Trigger: "test"}); !errors.Is(err, boom) {
				t.Fatalf("the run must fail in its second batch: %v", err)
			}
			if h, it := stored(alice); it.DN != aliceDN || it.DisplayName != "Alice Liddell" || h != before {
				t.Fatalf("after the first batch: %+v, fingerprint %v (before %v): want the new DN, the old name and fingerprint", it, h, before)
			}
			s.hookBatch = nil
			_, changes := run(t, s, RunOptions{Full: true})
			if got := kindsOf(changes, alice); len(got) != 1 || got[0] != KindUpdate || len(changes) != 1 {
				t.Fatalf("resume: planned %v, want alice's update alone", changes)
			}
			fingerprinted("resume", alice)
			if _, changes := run(t, s, RunOptions{Full: true}); len(changes) != 0 {
				t.Fatalf("after resume: planned %v", changes)
			}

			// bob as stored before the column existed: no fingerprint.
			// Unchanged, he is compared field by field and not written.
			if _, err := db.ExecContext(ctx, db.Rebind("UPDATE "+n.Identities+" SET mapped_hash = NULL WHERE directory_id = ?"), bob); err != nil {
				t.Fatal(err)
			}
			if _, changes := run(t, s, RunOptions{Full: true}); len(changes) != 0 {
				t.Fatalf("an identity without a fingerprint, unchanged: planned %v", changes)
			}
			if h, _ := stored(bob); h.Valid {
				t.Fatalf("bob, unchanged, was written: fingerprint %v", h)
			}
			f.Modify(t, bobDN, map[string][]string{"displayName": {"Bob Dylan"}})
			if _, changes := run(t, s, RunOptions{Full: true}); len(kindsOf(changes, bob)) != 1 {
				t.Fatalf("bob changed: planned %v", changes)
			}
			fingerprinted("bob changed", bob)
		})
	}
}
