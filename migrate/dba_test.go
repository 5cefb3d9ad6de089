package migrate

import (
	"context"
	"path/filepath"
	"testing"
)

// What a DBA noticed on real schemas (issue 17, item 5): files left beside
// an SQLite database, lookups that existing indexes serve, and lookups no
// index can serve.

// TestSQLiteLeavesNoLockFile: apply, rollback and apply again on an SQLite
// file leave nothing of passbridge's beside it, the migration lock's file
// included (rollback promises to remove what passbridge added).
func TestSQLiteLeavesNoLockFile(t *testing.T) {
	ctx := context.Background()
	f := fixtureNamed(t, "gitea")
	cfg, db := load(t, f)
	dbPath := cfg.Database.DSN.Reveal()
	before := readPasswords(t, db, cfg)
	for _, op := range []string{"apply", "rollback", "apply"} {
		var err error
		if op == "apply" {
			_, err = Apply(ctx, db, cfg, Options{chunk: testChunk})
		} else {
			_, err = Rollback(ctx, db, cfg, Options{})
		}
		if err != nil {
			t.Fatalf("%s: %v", op, err)
		}
		left, err := filepath.Glob(dbPath + ".passbridge-*.lock")
		if err != nil {
			t.Fatal(err)
		}
		if len(left) > 0 {
			t.Fatalf("after %s, lock files are left beside the database: %v", op, left)
		}
		samePasswords(t, "after "+op, before, readPasswords(t, db, cfg))
	}
	if v, err := Verify(ctx, db, cfg); err != nil || !v.OK {
		t.Fatalf("verify: %+v %v", v, err)
	}
}
