package migrate

import (
	"context"
	"strings"
	"testing"

	"github.com/passbridge/passbridge/config"
	"github.com/passbridge/passbridge/schema"
)

// TestPlanIsPasteable runs the text of `plan` as a DBA would paste it into
// psql, mysql or sqlite3 (one session, statement by statement), then checks
// that apply finds every step made by hand, records it, and takes only the
// baseline itself.
func TestPlanIsPasteable(t *testing.T) {
	for _, name := range []string{"erp", "wordpress", "gitea"} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			f := fixtureNamed(t, name)
			cfg, db := load(t, f)
			before := readPasswords(t, db, cfg)
			p, err := NewPlan(ctx, db, cfg)
			if err != nil {
				t.Fatal(err)
			}
			var text strings.Builder
			if err := p.WriteText(&text, cfg.Migrate.Prefix); err != nil {
				t.Fatal(err)
			}
			conn, err := db.Conn(ctx)
			if err != nil {
				t.Fatal(err)
			}
			for _, stmt := range splitSQL(text.String()) {
				if _, err := conn.ExecContext(ctx, stmt); err != nil {
					t.Fatalf("pasted plan: %v\n%s", err, stmt)
				}
			}
			conn.Close()

			rep, err := Apply(ctx, db, cfg, Options{chunk: testChunk})
			if err != nil {
				t.Fatal(err)
			}
			a := actions(rep)
			if a[ActionApplied] != 1 || a[ActionRecorded] != len(p.Steps)-1 {
				t.Fatalf("apply after the pasted plan: %v", a)
			}
			if v, err := Verify(ctx, db, cfg); err != nil || !v.OK {
				t.Fatalf("verify: %+v %v", v, err)
			}
			samePasswords(t, "after the pasted plan", before, readPasswords(t, db, cfg))
		})
	}
}

// TestStatusReportsDrift: a recorded step whose object was dropped by hand,
// and a step whose recorded SQL differs from the plan's, show as drift;
// apply puts the missing object back.
func TestStatusReportsDrift(t *testing.T) {
	ctx := context.Background()
	f := fixtureNamed(t, "wordpress")
	cfg, db := load(t, f)
	if _, err := Apply(ctx, db, cfg, Options{chunk: testChunk}); err != nil {
		t.Fatal(err)
	}
	n := schema.NamesFor(cfg)
	mustExec(t, db, "ALTER TABLE "+n.Audit+" DROP INDEX "+n.Index("audit", "event"))
	mustExec(t, db, "UPDATE "+n.History+" SET checksum = 'deadbeef' WHERE step_id = ?", "create-table passbridge_tokens")
	mustExec(t, db, "INSERT INTO "+n.History+" (step_id, kind, checksum, statements, applied_at, duration_ms, passbridge_version) VALUES ('create-table passbridge_old', 'create-table', 'x', '', NOW(), 0, '0.1')")

	st, err := Status(ctx, db, cfg)
	if err != nil {
		t.Fatal(err)
	}
	drift := map[string]string{}
	for _, s := range st.Drift() {
		drift[s.ID] = s.Drift
	}
	if !strings.Contains(drift["create-index passbridge_audit_event"], "missing") ||
		!strings.Contains(drift["create-table passbridge_tokens"], "different SQL") ||
		len(st.Unknown) != 1 || st.Unknown[0].StepID != "create-table passbridge_old" {
		t.Fatalf("drift: %v, unknown: %v", drift, st.Unknown)
	}
	var text strings.Builder
	if err := st.WriteStatus(&text); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"1 pending", "recorded as applied but missing", "not in this plan"} {
		if !strings.Contains(text.String(), want) {
			t.Errorf("status text lacks %q:\n%s", want, text.String())
		}
	}
	if v, _ := Verify(ctx, db, cfg); v.OK {
		t.Fatal("verify passed with drift")
	}
	rep, err := Apply(ctx, db, cfg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if a := actions(rep); a[ActionApplied] != 1 {
		t.Fatalf("apply: %v", a)
	}
}

// TestStringKeyWithCollation: a MariaDB users table keyed by a varchar with
// its own character set and collation gets foreign keys of exactly that
// type (MySQL refuses a foreign key between columns of different
// collations), and a baseline walked in the key's collation order.
func TestStringKeyWithCollation(t *testing.T) {
	ctx := context.Background()
	d := newDatabase(t, MySQL)
	db := openDB(t, d)
	mustExec(t, db, "CREATE TABLE accounts (login varchar(40) CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci NOT NULL PRIMARY KEY, "+
		"mail varchar(100) CHARACTER SET latin1 NOT NULL, pwd varbinary(60) NULL) ENGINE=InnoDB DEFAULT CHARSET=latin1")
	for _, l := range []string{"Zoë", "alice", "Bob", "émile", "carol", "Dave", "eve"} {
		mustExec(t, db, "INSERT INTO accounts VALUES (?, ?, ?)", l, l+"@corp.example", []byte("$2y$10$"+l))
	}
	mustExec(t, db, "INSERT INTO accounts VALUES ('nopass', 'x@corp.example', NULL)")
	cfg := testConfig(d, config.UsersTable{Name: "accounts", Key: "login", Username: "login", Email: "mail", Password: "pwd"})
	u, err := Inspect(ctx, db, cfg.UsersTable)
	if err != nil {
		t.Fatal(err)
	}
	if u.KeyType != "varchar(40) CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci" {
		t.Fatalf("key type %q", u.KeyType)
	}
	if _, err := Apply(ctx, db, cfg, Options{chunk: testChunk}); err != nil {
		t.Fatal(err)
	}
	if v, err := Verify(ctx, db, cfg); err != nil || !v.OK || v.Passwords.BaselineRows != 8 {
		t.Fatalf("verify: %+v %v", v, err)
	}
	mustExec(t, db, "UPDATE accounts SET pwd = 'x' WHERE login = 'émile'")
	v, err := Verify(ctx, db, cfg)
	if err != nil || v.OK || len(v.Passwords.Rows) != 1 || v.Passwords.Rows[0].Key != "émile" {
		t.Fatalf("verify after a change: %+v %v", v.Passwords, err)
	}
}
