package migrate

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/passbridge/passbridge/config"
	"github.com/passbridge/passbridge/store"
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
		run(t, db, cfg, op)
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

// run runs apply or rollback, which must succeed.
func run(t *testing.T, db *store.DB, cfg *config.Config, op string) {
	t.Helper()
	var err error
	if op == "apply" {
		_, err = Apply(context.Background(), db, cfg, Options{chunk: testChunk})
	} else {
		_, err = Rollback(context.Background(), db, cfg, Options{})
	}
	if err != nil {
		t.Fatalf("%s: %v", op, err)
	}
}

// mattermost is Mattermost's users table on PostgreSQL, whose own
// lower(email) and lower(username) indexes serve passbridge's lookups.
var mattermost = fixture{
	name: "mattermost", engine: Postgres, file: "mattermost_postgres.sql",
	ut: config.UsersTable{Name: "users", Key: "id", Username: "username", Email: "email",
		DisplayName: "nickname", Password: "password"},
}

// TestPlanSaysWhichIndexesServe: on Mattermost's table the plan makes no
// lookup index, and says so, one line per step it left out, naming the
// index that serves the lookup; forward, back and forward again, with the
// application's indexes and password hashes untouched.
func TestPlanSaysWhichIndexesServe(t *testing.T) {
	ctx := context.Background()
	cfg, db := load(t, mattermost)
	before := readPasswords(t, db, cfg)
	want := map[string]string{
		"create-index " + cfg.Migrate.Prefix + "user_email":    "idx_users_email_lower_textpattern",
		"create-index " + cfg.Migrate.Prefix + "user_username": "idx_users_username_lower_textpattern",
	}
	for _, op := range []string{"apply", "rollback", "apply"} {
		p := mustPlan(t, db, cfg)
		if len(p.Skipped) != len(want) {
			t.Fatalf("before %s: skipped %+v, want %v", op, p.Skipped, want)
		}
		for _, s := range p.Skipped {
			if want[s.ID] != s.ServedBy || s.Reason == "" || !strings.Contains(s.Reason, s.ServedBy) {
				t.Errorf("before %s: skipped %+v, want it served by %q", op, s, want[s.ID])
			}
		}
		for _, s := range p.Steps {
			if _, ok := want[s.ID]; ok || s.Kind == "analyze" {
				t.Errorf("before %s: the plan has %s although an existing index serves the lookup", op, s.ID)
			}
		}
		var sb strings.Builder
		if err := p.WriteText(&sb, cfg.Migrate.Prefix); err != nil {
			t.Fatal(err)
		}
		var lines []string
		for _, l := range strings.Split(sb.String(), "\n") {
			if strings.HasPrefix(l, "-- skipped: ") {
				lines = append(lines, l)
			}
		}
		if len(lines) != len(want) {
			t.Fatalf("before %s: %d skipped lines, want %d:\n%s", op, len(lines), len(want), sb.String())
		}
		for id, ix := range want {
			if !strings.Contains(sb.String(), "-- skipped: "+id+": ") || !strings.Contains(sb.String(), ix) {
				t.Errorf("before %s: no skipped line for %s served by %s:\n%s", op, id, ix, sb.String())
			}
		}

		run(t, db, cfg, op)
		samePasswords(t, "after "+op, before, readPasswords(t, db, cfg))
		u, err := Inspect(ctx, db, cfg.UsersTable)
		if err != nil {
			t.Fatal(err)
		}
		for _, ix := range want {
			found := false
			for _, have := range u.Indexes {
				found = found || have.Name == ix
			}
			if !found {
				t.Fatalf("after %s: Mattermost's index %s is gone", op, ix)
			}
		}
	}
	if v, err := Verify(ctx, db, cfg); err != nil || !v.OK {
		t.Fatalf("verify: %+v %v", v, err)
	}
}

// TestPlanWarnsCaseSensitiveLookups: where a column that directory sync
// matches on case-insensitively has a binary (case-sensitive) collation on
// MySQL, no index serves LOWER(col): the plan warns, naming the column,
// that those matches scan the table. A case-insensitive column, and
// PostgreSQL (lower(col) indexes), get no warning.
func TestPlanWarnsCaseSensitiveLookups(t *testing.T) {
	t.Run("nextcloud", func(t *testing.T) {
		t.Parallel()
		cfg, db := load(t, fixtureNamed(t, "nextcloud"))
		p := mustPlan(t, db, cfg)
		if len(p.Warnings) != 1 || !strings.Contains(p.Warnings[0], "oc_users.uid") || !strings.Contains(p.Warnings[0], "utf8mb4_bin") || !strings.Contains(p.Warnings[0], "scan") {
			t.Fatalf("warnings %q", p.Warnings)
		}
		var sb strings.Builder
		if err := p.WriteText(&sb, cfg.Migrate.Prefix); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(sb.String(), "-- warning: "+p.Warnings[0]+"\n") {
			t.Fatalf("plan text lacks the warning:\n%s", sb.String())
		}
	})
	t.Run("binary-username", func(t *testing.T) {
		t.Parallel()
		d := newDatabase(t, MySQL)
		db := openDB(t, d)
		mustExec(t, db, "CREATE TABLE accounts (id int NOT NULL PRIMARY KEY, login varchar(40) COLLATE utf8mb4_bin NOT NULL, "+
			"mail varchar(100) COLLATE utf8mb4_unicode_ci, pw varchar(60), UNIQUE KEY login (login)) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4")
		cfg := testConfig(d, config.UsersTable{Name: "accounts", Key: "id", Username: "login", Email: "mail", Password: "pw"})
		p := mustPlan(t, db, cfg)
		if len(p.Warnings) != 1 || !strings.Contains(p.Warnings[0], "accounts.login") || !strings.Contains(p.Warnings[0], "utf8mb4_bin") {
			t.Fatalf("warnings %q", p.Warnings)
		}
	})
	for _, name := range []string{"wordpress", "django", "gitea"} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			cfg, db := load(t, fixtureNamed(t, name))
			if p := mustPlan(t, db, cfg); len(p.Warnings) != 0 {
				t.Fatalf("warnings on a table whose lookups are indexed: %q", p.Warnings)
			}
		})
	}
}
