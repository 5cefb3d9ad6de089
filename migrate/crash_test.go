package migrate

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/passbridge/passbridge/config"
	"github.com/passbridge/passbridge/internal/testsrv"
	"github.com/passbridge/passbridge/schema"
	"github.com/passbridge/passbridge/store"
)

// stepIndex finds a step of the plan by kind and object suffix. The users
// columns' step is found as add-column whether they come one per step or
// both in one online rebuild (add-columns).
func stepIndex(t *testing.T, p *Plan, kind, object string) int {
	t.Helper()
	for i, s := range p.Steps {
		if s.Kind == kind && strings.HasSuffix(s.Object, object) {
			return i
		}
		if kind == "add-column" && s.Kind == "add-columns" && strings.Contains(s.Object, object) {
			return i
		}
	}
	t.Fatalf("no %s step for %s", kind, object)
	return -1
}

// TestKillDuringApply kills a real apply process with SIGKILL at points
// between and inside steps (inside the baseline, inside a transaction,
// after a non-transactional statement but before its history record) and
// checks that running apply again finishes the job, with the password
// hashes untouched; then the same for rollback.
func TestKillDuringApply(t *testing.T) {
	for _, f := range fixtureList {
		t.Run(f.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			cfg, db := load(t, f)
			before := readPasswords(t, db, cfg)
			p, err := NewPlan(ctx, db, cfg)
			if err != nil {
				t.Fatal(err)
			}
			col := stepIndex(t, p, "add-column", "passkey_state")
			credentials := stepIndex(t, p, "create-table", "_credentials")
			index := stepIndex(t, p, "create-index", "_credentials_user_key")
			points := []string{
				fmt.Sprintf("chunk:%d", 0),            // baseline: one chunk committed, more to go
				fmt.Sprintf("executed:%d", col),       // users column added, not yet recorded (inside the transaction where there is one)
				fmt.Sprintf("before:%d", credentials), // between steps
				fmt.Sprintf("executed:%d", index),     // index built, not recorded
			}
			if f.engine != SQLite {
				fk := stepIndex(t, p, "add-foreign-key", "_credentials_user_key_fk")
				points = append(points, fmt.Sprintf("executed:%d", fk))
			}
			for _, pt := range points {
				step := killAt(t, cfg, "apply", pt, testChunk)
				st, err := Status(ctx, db, cfg)
				if err != nil {
					t.Fatalf("status after kill at %s (%s): %v", pt, step, err)
				}
				if len(st.Pending()) == 0 {
					t.Fatalf("kill at %s left nothing pending", pt)
				}
				samePasswords(t, "after kill at "+pt, before, readPasswords(t, db, cfg))
			}
			rep, err := Apply(ctx, db, cfg, Options{chunk: testChunk})
			if err != nil {
				t.Fatalf("apply after kills: %v", err)
			}
			a := actions(rep)
			if a[ActionApplied] == 0 || a[ActionSkipped] == 0 {
				t.Fatalf("apply after kills: %v", a)
			}
			if f.engine == MySQL && a[ActionRecorded] == 0 {
				// MySQL DDL commits on its own: a kill after it and before
				// the history record leaves an object to record.
				t.Fatalf("apply after kills recorded nothing found: %v", a)
			}
			v, err := Verify(ctx, db, cfg)
			if err != nil || !v.OK || v.Passwords.BaselineRows != int64(len(before)) || v.Passwords.Chunks != (len(before)+testChunk-1)/testChunk {
				t.Fatalf("verify after kills: %+v %+v %v", v, v.Passwords, err)
			}
			samePasswords(t, "after apply", before, readPasswords(t, db, cfg))

			// Rollback killed in the middle, then finished.
			killAt(t, cfg, "rollback", fmt.Sprintf("before-undo:%d", col), testChunk)
			if _, err := Rollback(ctx, db, cfg, Options{}); err != nil {
				t.Fatalf("rollback after kill: %v", err)
			}
			st, err := Status(ctx, db, cfg)
			if err != nil || len(st.Pending()) != len(st.Steps) {
				t.Fatalf("rollback after kill left applied steps: %v", err)
			}
			samePasswords(t, "after rollback", before, readPasswords(t, db, cfg))
		})
	}
}

// TestCollision: a table or a column of another shape that holds a name
// passbridge needs stops the plan before anything changes, and names the
// remedy; another prefix then works.
func TestCollision(t *testing.T) {
	for _, f := range fixtureList {
		t.Run(f.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			cfg, db := load(t, f)
			n := schema.NamesFor(cfg)
			colType := "integer"
			if f.engine == MySQL {
				colType = "int"
			}
			for _, q := range []string{
				"CREATE TABLE " + n.Audit + " (id integer PRIMARY KEY, message text)",
				"ALTER TABLE " + n.Users + " ADD COLUMN " + n.PasskeyState + " " + colType,
			} {
				if _, err := db.ExecContext(ctx, q); err != nil {
					t.Fatalf("%s: %v", q, err)
				}
			}
			_, err := NewPlan(ctx, db, cfg)
			var ce *CollisionError
			if !errors.As(err, &ce) || len(ce.Items) != 2 {
				t.Fatalf("plan: %v", err)
			}
			msg := err.Error()
			for _, want := range []string{"passbridge_audit", "passbridge_passkey_state", "migrate.prefix", "Nothing was changed"} {
				if !strings.Contains(msg, want) {
					t.Errorf("collision error lacks %q:\n%s", want, msg)
				}
			}
			if _, err := Apply(ctx, db, cfg, Options{}); !errors.As(err, &ce) {
				t.Fatalf("apply: %v", err)
			}
			cat, err := loadCatalog(ctx, db.DB.DB, f.engine, schemaOf(t, db, cfg), cfg.UsersTable.Name, cfg.Migrate.Prefix)
			if err != nil {
				t.Fatal(err)
			}
			for name, kind := range cat.relations {
				if kind == "table" && name != cfg.Migrate.Prefix+"audit" {
					t.Fatalf("apply with a collision created %v", cat.relations)
				}
			}
			// Rollback never drops what is not passbridge's.
			if _, err := Rollback(ctx, db, cfg, Options{}); err != nil {
				t.Fatal(err)
			}
			if cat, _ := loadCatalog(ctx, db.DB.DB, f.engine, schemaOf(t, db, cfg), cfg.UsersTable.Name, cfg.Migrate.Prefix); cat.table(cfg.Migrate.Prefix+"audit") == nil {
				t.Fatal("rollback dropped a table that is not passbridge's")
			}

			cfg.Migrate.Prefix = "pbx_"
			if _, err := Apply(ctx, db, cfg, Options{chunk: testChunk}); err != nil {
				t.Fatalf("apply with another prefix: %v", err)
			}
			if v, err := Verify(ctx, db, cfg); err != nil || !v.OK {
				t.Fatalf("verify with another prefix: %+v %v", v, err)
			}
		})
	}
}

func schemaOf(t *testing.T, db *store.DB, cfg *config.Config) string {
	u, err := Inspect(context.Background(), db, cfg.UsersTable)
	if err != nil {
		t.Fatal(err)
	}
	return u.Schema
}

// TestVerifyDetectsChanges: verify names the range and the row of a
// changed hash, a deleted row and a hash set to NULL, counts an added row
// without calling it a violation, and catches a fingerprint edited along
// with the hash.
func TestVerifyDetectsChanges(t *testing.T) {
	for _, f := range fixtureList {
		t.Run(f.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			cfg, db := load(t, f)
			if _, err := Apply(ctx, db, cfg, Options{chunk: testChunk}); err != nil {
				t.Fatal(err)
			}
			n := schema.NamesFor(cfg)
			before := readPasswords(t, db, cfg)
			var keys []string
			for k := range before {
				keys = append(keys, k)
			}
			changed, deleted := firstKey(before), ""
			// Delete a row nothing references.
			for _, k := range keys {
				if k != changed && !referenced(f, k) && (deleted == "" || k > deleted) {
					deleted = k
				}
			}
			keyArg := func(k string) any { return (&baseliner{keyFamily: f.engine.family(keyTypeOf(t, db, cfg))}).keyArg(k) }
			mustExec(t, db, "UPDATE "+n.Users+" SET "+n.UserPassword+" = ? WHERE "+n.UserKey+" = ?", "pbkdf2_sha256$1$tampered$", keyArg(changed))
			mustExec(t, db, "DELETE FROM "+n.Users+" WHERE "+n.UserKey+" = ?", keyArg(deleted))
			addUser(t, f, cfg, db, "latecomer")

			v, err := Verify(ctx, db, cfg)
			if err != nil {
				t.Fatal(err)
			}
			pr := v.Passwords
			if v.OK || pr.OK || pr.Changed != 1 || pr.Deleted != 1 || pr.Added != 1 || len(pr.Rows) != 2 {
				t.Fatalf("verify: %+v %+v", v, pr)
			}
			kinds := map[string]string{}
			for _, r := range pr.Rows {
				kinds[r.Key] = r.Kind
			}
			if kinds[changed] != "changed" || kinds[deleted] != "deleted" {
				t.Fatalf("violations: %+v (changed %s, deleted %s)", pr.Rows, changed, deleted)
			}
			for _, c := range pr.BadChunks {
				if c.FirstKey == "" || c.LastKey == "" || c.Changed+c.Deleted == 0 {
					t.Fatalf("bad chunk report: %+v", c)
				}
			}
			var text strings.Builder
			if err := v.WriteText(&text); err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(text.String(), "FAILED") || !strings.Contains(text.String(), changed) {
				t.Fatalf("verify text:\n%s", text.String())
			}

			// Restore the hash: the change is gone. Editing a fingerprint
			// along with a hash is still caught by the chunk checksum.
			mustExec(t, db, "UPDATE "+n.Users+" SET "+n.UserPassword+" = ? WHERE "+n.UserKey+" = ?", *before[changed], keyArg(changed))
			// A row in a chunk without other violations.
			chunkOf := map[string]int{}
			for _, r := range pr.Rows {
				chunkOf[r.Key] = r.Chunk
			}
			other, otherChunk := "", -1
			for _, k := range keys {
				var c int
				if err := store.Get(ctx, db, &c, "SELECT chunk FROM "+n.BaselineRows+" WHERE user_key = ?", keyArg(k)); err != nil {
					t.Fatal(err)
				}
				if k != changed && k != deleted && before[k] != nil && c != chunkOf[deleted] {
					other, otherChunk = k, c
				}
			}
			mustExec(t, db, "UPDATE "+n.Users+" SET "+n.UserPassword+" = ? WHERE "+n.UserKey+" = ?", "forged", keyArg(other))
			fp := fingerprintValue("forged")
			mustExec(t, db, "UPDATE "+n.BaselineRows+" SET fingerprint = ? WHERE user_key = ?", fp, keyArg(other))
			v, err = Verify(ctx, db, cfg)
			if err != nil {
				t.Fatal(err)
			}
			caught := false
			for _, c := range v.Passwords.BadChunks {
				caught = caught || (c.Chunk == otherChunk && c.Changed == 0 && c.Deleted == 0)
			}
			if v.OK || v.Passwords.Deleted != 1 || v.Passwords.Changed != 0 || !caught {
				t.Fatalf("forged fingerprint not caught by the checksum of chunk %d: %+v", otherChunk, v.Passwords)
			}
		})
	}
}

// referenced reports fixture rows that other tables point at.
func referenced(f fixture, key string) bool {
	switch f.name {
	case "django":
		return key == "1" || key == "2"
	case "erp":
		return key == "0b6f2c52-4a8e-4d3a-9f5e-1c2d3e4f5a6b" || key == "f3a1b2c3-d4e5-4f60-8172-93a4b5c6d7e8"
	}
	return false
}

func keyTypeOf(t *testing.T, db *store.DB, cfg *config.Config) string {
	u, err := Inspect(context.Background(), db, cfg.UsersTable)
	if err != nil {
		t.Fatal(err)
	}
	return u.KeyType
}

func mustExec(t *testing.T, db *store.DB, q string, args ...any) {
	t.Helper()
	if _, err := store.Exec(context.Background(), db, q, args...); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
}

// TestInvalidIndexIsRebuilt: an index left INVALID by an interrupted
// CREATE INDEX CONCURRENTLY is reported by status and rebuilt by apply.
func TestInvalidIndexIsRebuilt(t *testing.T) {
	ctx := context.Background()
	f := fixtureNamed(t, "django")
	cfg, db := load(t, f)
	if _, err := Apply(ctx, db, cfg, Options{chunk: testChunk}); err != nil {
		t.Fatal(err)
	}
	// What a killed build leaves: the catalog entry, marked not valid.
	// Only a superuser may write pg_index.
	pg := testsrv.Postgres(t)
	var dbName string
	if err := db.QueryRowContext(ctx, "SELECT current_database()").Scan(&dbName); err != nil {
		t.Fatal(err)
	}
	admin := openDB(t, config.Database{Driver: "postgres", DSN: config.Secret(pg.DSN(dbName)), ConnectTimeout: config.Duration(time.Minute)})
	mustExec(t, admin, "UPDATE pg_index SET indisvalid = false WHERE indexrelid = 'passbridge_user_email'::regclass")

	st, err := Status(ctx, db, cfg)
	if err != nil {
		t.Fatal(err)
	}
	i := stepIndex(t, st, "create-index", "passbridge_user_email")
	if s := st.Steps[i]; s.State != StateInvalid || !strings.Contains(s.Drift, "INVALID") {
		t.Fatalf("status of the invalid index: %+v", s)
	}
	if v, _ := Verify(ctx, db, cfg); v.OK {
		t.Fatal("verify passed with an INVALID index")
	}
	var out strings.Builder
	rep, err := Apply(ctx, db, cfg, Options{Out: &out})
	if err != nil {
		t.Fatal(err)
	}
	if a := actions(rep); a[ActionRebuilt] != 1 {
		t.Fatalf("apply: %v\n%s", a, out.String())
	}
	var valid bool
	if err := db.QueryRowContext(ctx, "SELECT indisvalid FROM pg_index WHERE indexrelid = 'passbridge_user_email'::regclass").Scan(&valid); err != nil || !valid {
		t.Fatalf("index valid after apply: %v %v", valid, err)
	}
	if v, err := Verify(ctx, db, cfg); err != nil || !v.OK {
		t.Fatalf("verify: %+v %v", v, err)
	}
}

// TestLockTimeoutRetries: a step that cannot get its lock because the
// application holds one gives up within lock_timeout, backs off and tries
// again; it goes through once the lock is released, and names the blocker
// query when the retries run out.
func TestLockTimeoutRetries(t *testing.T) {
	for _, name := range []string{"django", "wordpress"} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			f := fixtureNamed(t, name)
			cfg, db := load(t, f)
			n := schema.NamesFor(cfg)
			cfg.Migrate.LockTimeout = config.Duration(200 * time.Millisecond)
			cfg.Migrate.Retries = 2

			// The application's long transaction: it read the users table,
			// so it holds a lock that ALTER TABLE must wait for.
			hold := func() (release func()) {
				tx, err := db.BeginTx(ctx, nil)
				if err != nil {
					t.Fatal(err)
				}
				var c int
				if err := tx.QueryRowContext(ctx, "SELECT count(*) FROM "+n.Users).Scan(&c); err != nil {
					t.Fatal(err)
				}
				return func() { tx.Rollback() }
			}
			release := hold()
			_, err := Apply(ctx, db, cfg, Options{chunk: testChunk})
			release()
			if err == nil || !strings.Contains(err.Error(), "gave up after 3 attempts") || !strings.Contains(err.Error(), "run `passbridge migrate apply` again") {
				t.Fatalf("apply behind a lock: %v", err)
			}
			if pend, _ := Pending(ctx, db, cfg); len(pend) == 0 {
				t.Fatal("nothing pending after a failed apply")
			}

			// Released while apply is retrying: it goes through.
			cfg.Migrate.Retries = 50
			release = hold()
			out := &testsrv.Buffer{}
			done := make(chan error, 1)
			var rep *Report
			go func() {
				var err error
				rep, err = Apply(ctx, db, cfg, Options{Out: out, chunk: testChunk})
				done <- err
			}()
			for !strings.Contains(out.String(), "retrying") {
				select {
				case err := <-done:
					t.Fatalf("apply ended before retrying: %v\n%s", err, out.String())
				case <-time.After(20 * time.Millisecond):
				}
			}
			release()
			if err := <-done; err != nil {
				t.Fatalf("apply after the lock was released: %v", err)
			}
			retried := false
			for _, s := range rep.Steps {
				retried = retried || s.Attempts > 1
			}
			if !retried {
				t.Fatalf("no step retried:\n%s", out.String())
			}
			if v, err := Verify(ctx, db, cfg); err != nil || !v.OK {
				t.Fatalf("verify: %+v %v", v, err)
			}
		})
	}
}
