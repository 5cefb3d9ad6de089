package migrate

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/passbridge/passbridge/config"
	"github.com/passbridge/passbridge/schema"
	"github.com/passbridge/passbridge/store"
)

// testChunk makes the small fixtures span several baseline chunks.
const testChunk = 3

// readPasswords reads every row's password column directly, bytes as they
// are, keyed by the key as text: the test's own check, independent of
// verify.
func readPasswords(t *testing.T, db *store.DB, cfg *config.Config) map[string]*string {
	t.Helper()
	n := schema.NamesFor(cfg)
	key := n.UserKey + "::text"
	switch Engine(n.Dialect.Kind()) {
	case MySQL:
		key = "CAST(" + n.UserKey + " AS CHAR)"
	case SQLite:
		key = "CAST(" + n.UserKey + " AS TEXT)"
	}
	rows, err := db.QueryContext(context.Background(), "SELECT "+key+", "+n.UserPassword+" FROM "+n.Users)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[string]*string{}
	for rows.Next() {
		var k string
		var v any
		if err := rows.Scan(&k, &v); err != nil {
			t.Fatal(err)
		}
		switch x := v.(type) {
		case nil:
			out[k] = nil
		case []byte:
			s := string(x)
			out[k] = &s
		case string:
			out[k] = &x
		default:
			t.Fatalf("password of %s scanned as %T", k, v)
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func samePasswords(t *testing.T, stage string, want, got map[string]*string) {
	t.Helper()
	if len(want) != len(got) {
		t.Fatalf("%s: %d rows, want %d", stage, len(got), len(want))
	}
	for k, w := range want {
		g, ok := got[k]
		switch {
		case !ok:
			t.Fatalf("%s: row %s is gone", stage, k)
		case (w == nil) != (g == nil):
			t.Fatalf("%s: row %s password NULL-ness changed", stage, k)
		case w != nil && *w != *g:
			t.Fatalf("%s: row %s password changed: %q -> %q", stage, k, *w, *g)
		}
	}
}

func actions(rep *Report) map[string]int {
	out := map[string]int{}
	for _, s := range rep.Steps {
		out[s.Action]++
	}
	return out
}

// TestLifecycle runs each legacy schema forward, back and forward again:
// plan, apply, verify, apply (no-op), rollback (refused with a passkey,
// then forced with an export), apply; the password hashes are compared
// byte for byte at every stage.
func TestLifecycle(t *testing.T) {
	for _, f := range fixtureList {
		t.Run(f.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			cfg, db := load(t, f)
			before := readPasswords(t, db, cfg)
			if len(before) < 6 {
				t.Fatalf("fixture has %d rows", len(before))
			}
			origUsers, err := Inspect(ctx, db, cfg.UsersTable)
			if err != nil {
				t.Fatal(err)
			}

			// plan: everything pending, the exact SQL, nothing changed.
			p, err := NewPlan(ctx, db, cfg)
			if err != nil {
				t.Fatal(err)
			}
			if got := len(p.Pending()); got != len(p.Steps) || got < 30 {
				t.Fatalf("plan: %d pending of %d", got, len(p.Steps))
			}
			checkPlanSQL(t, f, cfg, p)
			var sb strings.Builder
			if err := p.WriteText(&sb, cfg.Migrate.Prefix); err != nil {
				t.Fatal(err)
			}
			for _, s := range p.Steps {
				for _, q := range s.SQL {
					if !strings.HasPrefix(q, "--") && s.Kind != "take-baseline" && !strings.Contains(sb.String(), q+";") {
						t.Fatalf("plan text lacks the statement of %s:\n%s", s.ID, q)
					}
				}
			}
			if st, _ := Status(ctx, db, cfg); len(st.Pending()) != len(p.Steps) {
				t.Fatal("plan changed the database")
			}
			samePasswords(t, "after plan", before, readPasswords(t, db, cfg))

			// dry run: prints, changes nothing.
			var dry strings.Builder
			rep, err := Apply(ctx, db, cfg, Options{DryRun: true, Out: &dry, chunk: testChunk})
			if err != nil {
				t.Fatal(err)
			}
			if a := actions(rep); a[ActionWould] != len(p.Steps) {
				t.Fatalf("dry run actions: %v", a)
			}
			if !strings.Contains(dry.String(), "CREATE TABLE") {
				t.Fatalf("dry run printed no SQL:\n%s", dry.String())
			}
			if st, _ := Status(ctx, db, cfg); len(st.Pending()) != len(p.Steps) {
				t.Fatal("dry run changed the database")
			}

			// apply
			rep, err = Apply(ctx, db, cfg, Options{chunk: testChunk})
			if err != nil {
				t.Fatal(err)
			}
			if a := actions(rep); a[ActionApplied] != len(p.Steps) {
				t.Fatalf("apply actions: %v", a)
			}
			samePasswords(t, "after apply", before, readPasswords(t, db, cfg))
			checkSchema(t, f, cfg, db, origUsers)

			v, err := Verify(ctx, db, cfg)
			if err != nil {
				t.Fatal(err)
			}
			if !v.OK || v.Passwords == nil || v.Passwords.BaselineRows != int64(len(before)) ||
				v.Passwords.Chunks != (len(before)+testChunk-1)/testChunk || v.Passwords.Unchanged != int64(len(before)) {
				t.Fatalf("verify after apply: %+v %+v", v, v.Passwords)
			}

			// apply again: a no-op that runs no SQL.
			rep, err = Apply(ctx, db, cfg, Options{chunk: testChunk})
			if err != nil {
				t.Fatal(err)
			}
			if a := actions(rep); a[ActionSkipped] != len(p.Steps) {
				t.Fatalf("second apply actions: %v, want %d skipped", a, len(p.Steps))
			}
			if pend, err := Pending(ctx, db, cfg); err != nil || len(pend) != 0 {
				t.Fatalf("pending after apply: %v %v", pend, err)
			}
			st, err := Status(ctx, db, cfg)
			if err != nil || len(st.Drift()) != 0 || len(st.Unknown) != 0 {
				t.Fatalf("status after apply: drift %v unknown %v err %v", st.Drift(), st.Unknown, err)
			}

			// The application goes on: a new user is not a violation.
			addUser(t, f, cfg, db, "newcomer")
			v, err = Verify(ctx, db, cfg)
			if err != nil || !v.OK || v.Passwords.Added != 1 {
				t.Fatalf("verify with an added user: %+v %+v %v", v, v.Passwords, err)
			}

			// A passkey is enrolled: rollback refuses and removes nothing.
			credID := enroll(t, cfg, db, firstKey(before))
			_, err = Rollback(ctx, db, cfg, Options{})
			var pe *PasskeysEnrolledError
			if !errors.As(err, &pe) || pe.Count != 1 || !strings.Contains(err.Error(), "--force") {
				t.Fatalf("rollback with a passkey: %v", err)
			}
			if pend, _ := Pending(ctx, db, cfg); len(pend) != 0 {
				t.Fatal("refused rollback changed the database")
			}

			// --force exports first.
			export := filepath.Join(t.TempDir(), "passkeys.json")
			rep, err = Rollback(ctx, db, cfg, Options{Force: true, ExportPath: export})
			if err != nil {
				t.Fatal(err)
			}
			if rep.Export == nil || rep.Export.Count != 1 || rep.Passwords == nil || !rep.Passwords.OK {
				t.Fatalf("rollback report: %+v", rep)
			}
			checkExport(t, export, firstKey(before), credID)
			checkRemoved(t, f, cfg, db, origUsers)
			after := readPasswords(t, db, cfg)
			for k := range after {
				if _, ok := before[k]; !ok {
					delete(after, k) // the newcomer
				}
			}
			samePasswords(t, "after rollback", before, after)

			// A second rollback is a no-op; so is the export file, which is
			// never overwritten.
			if _, err := Rollback(ctx, db, cfg, Options{}); err != nil {
				t.Fatalf("second rollback: %v", err)
			}

			// Forward again.
			rep, err = Apply(ctx, db, cfg, Options{chunk: testChunk})
			if err != nil {
				t.Fatal(err)
			}
			if a := actions(rep); a[ActionApplied] != len(p.Steps) {
				t.Fatalf("apply after rollback: %v", a)
			}
			v, err = Verify(ctx, db, cfg)
			if err != nil || !v.OK || v.Passwords.BaselineRows != int64(len(before)+1) {
				t.Fatalf("verify after re-apply: %+v %v", v, err)
			}
			after = readPasswords(t, db, cfg)
			for k := range before {
				if (before[k] == nil) != (after[k] == nil) || (before[k] != nil && *before[k] != *after[k]) {
					t.Fatalf("row %s changed", k)
				}
			}
		})
	}
}

func firstKey(m map[string]*string) string {
	var keys []string
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys[0]
}

// checkPlanSQL checks the engine-specific online behaviour in the plan.
func checkPlanSQL(t *testing.T, f fixture, cfg *config.Config, p *Plan) {
	t.Helper()
	pwCol := schema.NamesFor(cfg).UserPassword
	for _, s := range p.Steps {
		all := strings.Join(s.SQL, "\n")
		if s.Kind != "take-baseline" && strings.Contains(all, pwCol) {
			t.Errorf("%s touches the password column:\n%s", s.ID, all)
		}
		if s.Risk == "" || (len(s.Undo) == 0 && s.UndoRisk == "") {
			t.Errorf("%s has no risk note or undo", s.ID)
		}
		switch {
		case s.Kind == "add-column" || s.Kind == "add-columns":
			if strings.Contains(strings.ToUpper(all), "DEFAULT") || strings.Contains(strings.ToUpper(all), "NOT NULL") {
				t.Errorf("%s: a column on the users table must be nullable without default:\n%s", s.ID, all)
			}
			// INSTANT where the table allows it; where not (Nextcloud's
			// compressed table), both columns in one online rebuild,
			// announced as such, with its undo one rebuild too.
			switch {
			case f.name == "nextcloud":
				if s.Kind != "add-columns" || strings.Count(all, "ADD COLUMN") != 2 || !strings.HasSuffix(all, "ALGORITHM=INPLACE, LOCK=NONE") ||
					!strings.Contains(s.Risk, "ROW_FORMAT=COMPRESSED") || !strings.Contains(s.Risk, "rebuilt online") || !strings.Contains(s.Risk, "MiB") ||
					len(s.Undo) != 1 || strings.Count(s.Undo[0], "DROP COLUMN") != 2 || !strings.HasSuffix(s.Undo[0], "ALGORITHM=INPLACE, LOCK=NONE") {
					t.Errorf("%s on a compressed table: not one online rebuild:\n%s\nrisk: %s\nundo: %v", s.ID, all, s.Risk, s.Undo)
				}
			case f.engine == MySQL && (s.Kind != "add-column" || !strings.Contains(all, "ALGORITHM=INSTANT")):
				t.Errorf("%s: not INSTANT:\n%s", s.ID, all)
			}
		case s.Kind == "create-index" && f.engine == Postgres && !s.Bookkeeping:
			if !strings.Contains(all, "CONCURRENTLY") || s.Transactional {
				t.Errorf("%s: not CONCURRENTLY outside a transaction:\n%s", s.ID, all)
			}
		case s.Kind == "create-index" && f.engine == MySQL:
			if !strings.Contains(all, "ALGORITHM=INPLACE, LOCK=NONE") {
				t.Errorf("%s: not INPLACE, LOCK=NONE:\n%s", s.ID, all)
			}
		case s.Kind == "add-foreign-key" && f.engine == Postgres:
			if !strings.HasSuffix(all, "NOT VALID") {
				t.Errorf("%s: not NOT VALID:\n%s", s.ID, all)
			}
		}
	}
	// Inspection-driven: an index that already serves a lookup is not
	// built again.
	has := func(id string) bool {
		for _, s := range p.Steps {
			if s.ID == id {
				return true
			}
		}
		return false
	}
	switch f.name {
	case "wordpress": // user_login_key and user_email exist, case-insensitive collation
		if has("create-index passbridge_user_email") || has("create-index passbridge_user_username") {
			t.Error("wordpress: planned a lookup index that exists")
		}
	case "erp": // ix_AppUser_email_lower exists on lower("Email")
		if has("create-index passbridge_user_email") || !has("create-index passbridge_user_username") {
			t.Error("erp: lookup indexes planned wrongly")
		}
	case "django", "gitea":
		if !has("create-index passbridge_user_email") || !has("create-index passbridge_user_username") {
			t.Error(f.name + ": lookup indexes missing")
		}
	case "nextcloud": // the login name is the key; no e-mail column
		if has("create-index passbridge_user_email") || has("create-index passbridge_user_username") {
			t.Error("nextcloud: planned a lookup index")
		}
	}
}

// checkSchema checks what apply made: the users table gained exactly the
// two nullable columns, the user_key columns have the key's exact type, and
// the foreign keys to the users table exist and are validated.
func checkSchema(t *testing.T, f fixture, cfg *config.Config, db *store.DB, orig *UsersTable) {
	t.Helper()
	ctx := context.Background()
	u, err := Inspect(ctx, db, cfg.UsersTable)
	if err != nil {
		t.Fatal(err)
	}
	if len(u.Columns) != len(orig.Columns)+2 {
		t.Fatalf("users table has %d columns, want %d", len(u.Columns), len(orig.Columns)+2)
	}
	for i, c := range orig.Columns {
		if !reflect.DeepEqual(u.Columns[i], c) {
			t.Fatalf("column %s changed: %+v -> %+v", c.Name, c, u.Columns[i])
		}
	}
	for _, c := range u.Columns[len(orig.Columns):] {
		if !strings.HasPrefix(c.Name, cfg.Migrate.Prefix) || !c.Nullable || c.Default != "" {
			t.Fatalf("added column %+v", c)
		}
	}
	cat, err := loadCatalog(ctx, db.DB.DB, f.engine, u.Schema, u.Name, cfg.Migrate.Prefix)
	if err != nil {
		t.Fatal(err)
	}
	for _, tn := range []string{"identities", "credentials"} {
		tbl := cat.table(cfg.Migrate.Prefix + tn)
		col, ok := tbl.column(f.engine, "user_key")
		if !ok {
			t.Fatalf("%s has no user_key", tn)
		}
		want := map[string]string{"django": "integer", "erp": "uuid", "wordpress": "bigint(20) unsigned", "gitea": "INTEGER", "nextcloud": "varchar(64)"}[f.name]
		if col.typ != want {
			t.Errorf("%s.user_key is %s, want %s (the users key's type)", tn, col.typ, want)
		}
		fk := cat.fk(schema.FKName(cfg.Migrate.Prefix, tn, "user_key"), cfg.Migrate.Prefix+tn)
		if fk == nil || !fk.validated || !strings.EqualFold(fk.refTable, u.Name) || fk.refCols[0] != u.Key.Name {
			t.Errorf("%s: foreign key to the users table: %+v", tn, fk)
		}
	}
}

// checkRemoved checks that rollback left the database as it found it.
func checkRemoved(t *testing.T, f fixture, cfg *config.Config, db *store.DB, orig *UsersTable) {
	t.Helper()
	ctx := context.Background()
	u, err := Inspect(ctx, db, cfg.UsersTable)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(u.Columns, orig.Columns) {
		t.Fatalf("users columns after rollback:\n%+v\nwant\n%+v", u.Columns, orig.Columns)
	}
	var idx, origIdx []string
	for _, ix := range u.Indexes {
		idx = append(idx, ix.Name)
	}
	for _, ix := range orig.Indexes {
		origIdx = append(origIdx, ix.Name)
	}
	if !slices.Equal(idx, origIdx) {
		t.Fatalf("users indexes after rollback: %v, want %v", idx, origIdx)
	}
	cat, err := loadCatalog(ctx, db.DB.DB, f.engine, u.Schema, u.Name, cfg.Migrate.Prefix)
	if err != nil {
		t.Fatal(err)
	}
	if len(cat.relations) != 0 {
		t.Fatalf("rollback left %v", cat.relations)
	}
}

// addUser inserts a row the way the application would.
func addUser(t *testing.T, f fixture, cfg *config.Config, db *store.DB, name string) {
	t.Helper()
	var q string
	switch f.name {
	case "django":
		q = `INSERT INTO auth_user (password, is_superuser, username, first_name, last_name, email, is_staff, is_active, date_joined)
			VALUES ('pbkdf2_sha256$870000$abc$def=', false, '` + name + `', '', '', '` + name + `@corp.example', false, true, now())`
	case "nextcloud":
		q = "INSERT INTO oc_users (uid, displayname, password, uid_lower) VALUES ('" + name + "', '" + name + "', '3|$argon2id$v=19$m=65536,t=4,p=1$bmV3$bmV3bmV3', '" + name + "')"
	case "wordpress":
		q = "INSERT INTO wp_users (user_login, user_pass, user_email, user_registered) VALUES ('" + name + "', '$P$Bnewnewnewnewnewnewnewnewnewnew.', '" + name + "@corp.example', NOW())"
	case "gitea":
		q = "INSERT INTO `user` (lower_name, name, email, passwd, avatar, avatar_email) VALUES ('" + name + "', '" + name + "', '" + name + "@corp.example', 'abcd', '', '')"
	case "erp":
		q = `INSERT INTO erp."AppUser" ("userName", "Email", hashed_password) VALUES ('` + name + `', '` + name + `@corp.example', '$2b$12$xyz')`
	}
	if _, err := db.ExecContext(context.Background(), q); err != nil {
		t.Fatal(err)
	}
}

// enroll writes a passkey for the user with key, as the portal would.
func enroll(t *testing.T, cfg *config.Config, db *store.DB, key string) []byte {
	t.Helper()
	n := schema.NamesFor(cfg)
	ctx := context.Background()
	now := time.Now().UTC().Truncate(time.Second)
	_, err := store.Exec(ctx, db, "INSERT INTO "+n.Identities+" (directory_id, dn, username, state, link_state, user_key, first_seen_at, last_seen_at, updated_at) VALUES (?, ?, ?, 'active', 'linked', ?, ?, ?, ?)",
		"6f1c2b3a-0000-4000-8000-000000000001", "CN=Alice,OU=Staff,DC=corp,DC=example", "alice", key, now, now, now)
	if err != nil {
		t.Fatal(err)
	}
	var idID int64
	if err := store.Get(ctx, db, &idID, "SELECT id FROM "+n.Identities+" WHERE directory_id = ?", "6f1c2b3a-0000-4000-8000-000000000001"); err != nil {
		t.Fatal(err)
	}
	credID := []byte{0x00, 0xff, 0x10, 0x80, 'p', 'k', 0x01}
	_, err = store.Exec(ctx, db, "INSERT INTO "+n.Credentials+" (user_key, identity_id, credential_id, public_key, sign_count, aaguid, transports, backup_eligible, backup_state, user_handle, name, created_at) VALUES (?, ?, ?, ?, 7, ?, 'internal,hybrid', ?, ?, ?, 'MacBook Touch ID', ?)",
		key, idID, credID, []byte{0xa5, 0x01, 0x02, 0x03, 0x26}, make([]byte, 16), true, true, []byte("user-handle-1"), now)
	if err != nil {
		t.Fatal(err)
	}
	return credID
}

func checkExport(t *testing.T, path, key string, credID []byte) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o600 {
		t.Errorf("export file mode %v", st.Mode().Perm())
	}
	var ex Export
	if err := json.Unmarshal(data, &ex); err != nil {
		t.Fatal(err)
	}
	if ex.Format != ExportFormat || ex.Count != 1 || len(ex.Passkeys) != 1 {
		t.Fatalf("export: %+v", ex)
	}
	pk := ex.Passkeys[0]
	checks := map[string]any{
		"credential_id":   base64.RawURLEncoding.EncodeToString(credID),
		"user_key":        key,
		"sign_count":      float64(7),
		"backup_eligible": true, "backup_state": true,
		"transports":  "internal,hybrid",
		"name":        "MacBook Touch ID",
		"user_handle": base64.RawURLEncoding.EncodeToString([]byte("user-handle-1")),
	}
	for k, want := range checks {
		if fmt.Sprint(pk[k]) != fmt.Sprint(want) {
			t.Errorf("export %s = %v, want %v", k, pk[k], want)
		}
	}
	if id, _ := pk["identity"].(map[string]any); id["directory_id"] != "6f1c2b3a-0000-4000-8000-000000000001" {
		t.Errorf("export identity = %v", pk["identity"])
	}
}
