package migrate

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/passbridge/passbridge/config"
	"github.com/passbridge/passbridge/internal/testsrv"
	"github.com/passbridge/passbridge/schema"
	"github.com/passbridge/passbridge/store"
)

// Real application schemas as a DBA meets them: tables on which MySQL
// cannot change columns INSTANTly, a strict server sql_mode, and an
// application whose long reader is in the way, on apply and on rollback.
// Every failure advises the statement that moves the database on in the
// direction of the command, and every summary is true of the database
// afterwards.

// holdReader opens the application's long transaction: it has read the
// users table, so it holds the lock (PostgreSQL ACCESS SHARE, MySQL a
// shared metadata lock) that ALTER TABLE has to wait for.
func holdReader(t *testing.T, db *store.DB, cfg *config.Config) (release func()) {
	t.Helper()
	ctx := context.Background()
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	var c int
	if err := tx.QueryRowContext(ctx, "SELECT count(*) FROM "+schema.NamesFor(cfg).Users).Scan(&c); err != nil {
		t.Fatal(err)
	}
	return func() { tx.Rollback() }
}

func reportText(t *testing.T, rep *Report, what string) string {
	t.Helper()
	var sb strings.Builder
	if err := rep.WriteText(&sb, what); err != nil {
		t.Fatal(err)
	}
	return sb.String()
}

// TestRollbackStoppedByReader: a rollback that cannot get its lock behind
// the application's reader stops and says to run rollback (not apply)
// again; its summary counts the failed step and those not reached, and
// says the baseline is still there (it was checked, not dropped). Once the
// reader is gone, rollback finishes and apply goes forward again.
func TestRollbackStoppedByReader(t *testing.T) {
	for _, name := range []string{"django", "nextcloud"} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			f := fixtureNamed(t, name)
			cfg, db := load(t, f)
			before := readPasswords(t, db, cfg)
			if _, err := Apply(ctx, db, cfg, Options{chunk: testChunk}); err != nil {
				t.Fatal(err)
			}
			cfg.Migrate.LockTimeout = config.Duration(100 * time.Millisecond)
			cfg.Migrate.Retries = 1

			release := holdReader(t, db, cfg)
			rep, err := Rollback(ctx, db, cfg, Options{})
			release()
			if err == nil {
				t.Fatal("rollback went through behind the reader")
			}
			msg := err.Error()
			if !strings.Contains(msg, "gave up after 2 attempts") || !strings.Contains(msg, "run `passbridge migrate rollback` again") || strings.Contains(msg, "migrate apply") {
				t.Fatalf("rollback's failure advises the wrong way:\n%s", msg)
			}
			text := reportText(t, rep, "rollback")
			a := actions(rep)
			if a[ActionFailed] != 1 || a[ActionNotReached] == 0 || len(rep.Steps) != len(mustPlan(t, db, cfg).Steps) ||
				!strings.Contains(text, " 1 failed") || strings.Contains(text, "  in ") || !strings.Contains(text, "stopped at ") {
				t.Fatalf("summary of the stopped rollback: %v\n%s", a, text)
			}
			if rep.Passwords == nil || !rep.BaselineKept || strings.Contains(text, "before it was dropped") || !strings.Contains(text, "still there") {
				t.Fatalf("the summary must say the baseline is still there:\n%s", text)
			}
			cat, err := loadCatalog(ctx, db.DB.DB, f.engine, schemaOf(t, db, cfg), cfg.UsersTable.Name, cfg.Migrate.Prefix)
			if err != nil || cat.table(cfg.Migrate.Prefix+schema.BaselineRowsTable) == nil {
				t.Fatalf("the baseline is gone after the stopped rollback (%v)", err)
			}

			// Without the reader: rollback finishes, and says so.
			rep, err = Rollback(ctx, db, cfg, Options{})
			if err != nil {
				t.Fatalf("rollback again: %v", err)
			}
			if text := reportText(t, rep, "rollback"); rep.BaselineKept || !strings.Contains(text, "before it was dropped") || strings.Contains(text, "failed") {
				t.Fatalf("summary of the finished rollback:\n%s", text)
			}
			if st, err := Status(ctx, db, cfg); err != nil || len(st.Pending()) != len(st.Steps) || len(st.Unknown) != 0 {
				t.Fatalf("after rollback: %d of %d pending, unknown %v, %v", len(st.Pending()), len(st.Steps), st.Unknown, err)
			}
			samePasswords(t, "after rollback", before, readPasswords(t, db, cfg))

			// Forward again.
			if _, err := Apply(ctx, db, cfg, Options{chunk: testChunk}); err != nil {
				t.Fatal(err)
			}
			if v, err := Verify(ctx, db, cfg); err != nil || !v.OK {
				t.Fatalf("verify after apply again: %+v %v", v, err)
			}
		})
	}
}

func mustPlan(t *testing.T, db *store.DB, cfg *config.Config) *Plan {
	t.Helper()
	p, err := NewPlan(context.Background(), db, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestApplySummaryCountsEveryStep: an apply that stops behind the reader
// counts the steps it made, the one it failed and the ones it did not
// reach, with a word for each.
func TestApplySummaryCountsEveryStep(t *testing.T) {
	ctx := context.Background()
	f := fixtureNamed(t, "wordpress")
	cfg, db := load(t, f)
	cfg.Migrate.LockTimeout = config.Duration(100 * time.Millisecond)
	cfg.Migrate.Retries = 0
	release := holdReader(t, db, cfg)
	rep, err := Apply(ctx, db, cfg, Options{chunk: testChunk})
	release()
	if err == nil {
		t.Fatal("apply went through behind the reader")
	}
	text := reportText(t, rep, "apply")
	a := actions(rep)
	if a[ActionApplied] == 0 || a[ActionFailed] != 1 || a[ActionNotReached] == 0 || len(rep.Steps) != len(mustPlan(t, db, cfg).Steps) {
		t.Fatalf("actions %v of %d steps:\n%s", a, len(rep.Steps), text)
	}
	for _, want := range []string{" applied, 1 failed, ", " not reached in ", "stopped at add-column wp_users.passbridge_passkey_state", "`passbridge migrate apply` again"} {
		if !strings.Contains(text, want) {
			t.Errorf("apply summary lacks %q:\n%s", want, text)
		}
	}
}

// TestCompressedTableByHand: on Nextcloud's compressed table, a column
// added by hand one at a time (as an older passbridge advised) leaves the
// one-rebuild step half made: apply stops with the statement that adds
// only what is missing; rollback likewise with the statement that drops
// only what exists. Either way, after that statement the command finishes.
func TestCompressedTableByHand(t *testing.T) {
	ctx := context.Background()
	f := fixtureNamed(t, "nextcloud")
	cfg, db := load(t, f)
	n := schema.NamesFor(cfg)
	mustExec(t, db, "ALTER TABLE "+n.Users+" ADD COLUMN "+n.PasskeyState+" varchar(16) NULL, ALGORITHM=INPLACE, LOCK=NONE")

	p := mustPlan(t, db, cfg)
	i := stepIndex(t, p, "add-column", "passkey_state")
	if p.Steps[i].State != StatePartial || !strings.Contains(p.Steps[i].Detail, "passbridge_passkey_state exists but passbridge_password_policy does not") {
		t.Fatalf("plan of the half-made step: %s %s", p.Steps[i].State, p.Steps[i].Detail)
	}
	_, err := Apply(ctx, db, cfg, Options{chunk: testChunk})
	want := "ALTER TABLE `oc_users` ADD COLUMN `passbridge_password_policy` varchar(32) NULL COMMENT "
	if err == nil || !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), "ADD COLUMN `passbridge_passkey_state`") ||
		!strings.Contains(err.Error(), "run `passbridge migrate apply` again") {
		t.Fatalf("apply on the half-made step: %v", err)
	}
	mustExec(t, db, byHandStatement(t, err.Error()))
	rep, err := Apply(ctx, db, cfg, Options{chunk: testChunk})
	if err != nil {
		t.Fatalf("apply after the statement by hand: %v", err)
	}
	if a := actions(rep); a[ActionRecorded] != 1 {
		t.Fatalf("apply after the statement by hand: %v", a)
	}

	// Rollback, with one column already dropped by hand.
	mustExec(t, db, "ALTER TABLE "+n.Users+" DROP COLUMN "+n.PasskeyState+", ALGORITHM=INPLACE, LOCK=NONE")
	_, err = Rollback(ctx, db, cfg, Options{})
	want = "ALTER TABLE `oc_users` DROP COLUMN `passbridge_password_policy`, ALGORITHM=INPLACE, LOCK=NONE"
	if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "run `passbridge migrate rollback` again") {
		t.Fatalf("rollback on the half-made step: %v", err)
	}
	mustExec(t, db, byHandStatement(t, err.Error()))
	if _, err := Rollback(ctx, db, cfg, Options{}); err != nil {
		t.Fatalf("rollback after the statement by hand: %v", err)
	}
	if st := mustPlan(t, db, cfg); len(st.Pending()) != len(st.Steps) {
		t.Fatalf("rollback left %d steps applied", len(st.Steps)-len(st.Pending()))
	}
}

// byHandStatement is the indented statement of a failure's advice.
func byHandStatement(t *testing.T, msg string) string {
	t.Helper()
	for _, l := range strings.Split(msg, "\n") {
		if l = strings.TrimSpace(l); strings.HasPrefix(l, "ALTER TABLE") {
			return strings.TrimSuffix(l, ";")
		}
	}
	t.Fatalf("no statement in:\n%s", msg)
	return ""
}

// TestRowFormatChangedAfterApply: a table applied with INSTANT (two
// add-column steps) and later compressed is planned as one rebuild step;
// the history of the two steps counts for it (no drift, nothing unknown),
// and rollback drops both columns in one online rebuild.
func TestRowFormatChangedAfterApply(t *testing.T) {
	ctx := context.Background()
	f := fixtureNamed(t, "wordpress")
	cfg, db := load(t, f)
	before := readPasswords(t, db, cfg)
	if _, err := Apply(ctx, db, cfg, Options{chunk: testChunk}); err != nil {
		t.Fatal(err)
	}
	mustExec(t, db, "ALTER TABLE wp_users ROW_FORMAT=COMPRESSED")
	st, err := Status(ctx, db, cfg)
	if err != nil {
		t.Fatal(err)
	}
	i := stepIndex(t, st, "add-column", "passkey_state")
	if s := st.Steps[i]; s.Kind != "add-columns" || s.State != StateApplied || s.Recorded == nil || s.Drift != "" || len(st.Drift()) != 0 || len(st.Unknown) != 0 {
		t.Fatalf("status of the compressed table: %s %s recorded %v drift %q, all drift %v, unknown %v", s.ID, s.State, s.Recorded, s.Drift, st.Drift(), st.Unknown)
	}
	if v, err := Verify(ctx, db, cfg); err != nil || !v.OK {
		t.Fatalf("verify: %+v %v", v, err)
	}
	out := &strings.Builder{}
	if _, err := Rollback(ctx, db, cfg, Options{Out: out}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "undo add-columns wp_users.passbridge_passkey_state,passbridge_password_policy") {
		t.Fatalf("rollback did not undo the one rebuild step:\n%s", out)
	}
	if st := mustPlan(t, db, cfg); len(st.Pending()) != len(st.Steps) || len(st.Unknown) != 0 {
		t.Fatalf("after rollback: %d of %d pending, unknown %v", len(st.Pending()), len(st.Steps), st.Unknown)
	}
	samePasswords(t, "after rollback", before, readPasswords(t, db, cfg))
}

// TestRebuildHint: a server that refuses INSTANT although the catalog
// showed nothing against it (MariaDB with
// innodb_instant_alter_column_allowed changed after the plan was made,
// MySQL 8.0.28 on DROP COLUMN) gets, on rollback, the one online rebuild
// that drops both columns and the advice to run rollback again; on apply,
// the one that adds both and the advice to run apply again.
func TestRebuildHint(t *testing.T) {
	ctx := context.Background()
	f := fixtureNamed(t, "wordpress")
	cfg, db := load(t, f)
	if _, err := Apply(ctx, db, cfg, Options{chunk: testChunk}); err != nil {
		t.Fatal(err)
	}
	m, err := newMigrator(ctx, db, cfg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	// A real refusal of the server: INSTANT on a compressed table.
	mustExec(t, db, "CREATE TABLE squeezed (id int PRIMARY KEY, x int) ROW_FORMAT=COMPRESSED")
	_, refusal := db.ExecContext(ctx, "ALTER TABLE squeezed DROP COLUMN x, ALGORITHM=INSTANT")
	if refusal == nil {
		t.Fatal("the server dropped a column of a compressed table INSTANTly")
	}
	conn, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	p := mustPlan(t, db, cfg)
	step := p.Steps[stepIndex(t, p, "add-column", "password_policy")].Step

	m.cmd = "rollback"
	hint := m.rebuildHint(ctx, conn, refusal, step)
	want := "ALTER TABLE `wp_users` DROP COLUMN `passbridge_passkey_state`, DROP COLUMN `passbridge_password_policy`, ALGORITHM=INPLACE, LOCK=NONE;"
	if !strings.Contains(hint, want) || !strings.Contains(hint, "run `passbridge migrate rollback` again") || strings.Contains(hint, "ADD COLUMN") {
		t.Fatalf("rollback's hint:\n%s", hint)
	}

	mustExec(t, db, want[:len(want)-1])
	m.cmd = "apply"
	hint = m.rebuildHint(ctx, conn, refusal, step)
	if !strings.Contains(hint, "ADD COLUMN `passbridge_passkey_state` varchar(16) NULL COMMENT ") || !strings.Contains(hint, "ADD COLUMN `passbridge_password_policy`") ||
		!strings.HasSuffix(strings.Split(hint, ";\n")[0], "ALGORITHM=INPLACE, LOCK=NONE") || !strings.Contains(hint, "run `passbridge migrate apply` again") {
		t.Fatalf("apply's hint:\n%s", hint)
	}
	mustExec(t, db, byHandStatement(t, hint))
	if _, err := Apply(ctx, db, cfg, Options{}); err != nil {
		t.Fatalf("apply after the hint's statement: %v", err)
	}
	if pend, err := Pending(ctx, db, cfg); err != nil || len(pend) != 0 {
		t.Fatalf("pending after the hint's statement: %v %v", pend, err)
	}
}

// mysql8Mode is MySQL 8's default sql_mode, strict about zero dates.
const mysql8Mode = "ONLY_FULL_GROUP_BY,STRICT_TRANS_TABLES,NO_ZERO_IN_DATE,NO_ZERO_DATE,ERROR_FOR_DIVISION_BY_ZERO,NO_ENGINE_SUBSTITUTION"

// TestStrictSQLMode: WordPress's wp_users, created long ago under a lax
// mode with its '0000-00-00 00:00:00' default, on a server whose global
// sql_mode is now MySQL 8's: every ALTER TABLE of it re-validates that
// default and fails (Error 1067). The plan names the cause and sets, in
// apply's own session only, the same mode without the two zero-date
// flags; apply, rollback and apply again then go through. The server's
// global mode is changed for the test's length, so the test does not run
// in parallel with the others.
func TestStrictSQLMode(t *testing.T) {
	ctx := context.Background()
	f := fixtureNamed(t, "wordpress")
	cfg, _ := load(t, f) // created under the server's default (lax) mode
	admin := openDB(t, config.Database{Driver: "mysql", DSN: config.Secret(testsrv.MariaDB(t).DSN("mysql")), ConnectTimeout: config.Duration(time.Minute)})
	var old string
	if err := admin.QueryRowContext(ctx, "SELECT @@GLOBAL.sql_mode").Scan(&old); err != nil {
		t.Fatal(err)
	}
	mustExec(t, admin, "SET GLOBAL sql_mode = '"+mysql8Mode+"'")
	t.Cleanup(func() { mustExec(t, admin, "SET GLOBAL sql_mode = '"+old+"'") })
	db := openDB(t, cfg.Database) // sessions from now on start strict
	before := readPasswords(t, db, cfg)

	p := mustPlan(t, db, cfg)
	want := "SET SESSION sql_mode = 'ONLY_FULL_GROUP_BY,STRICT_TRANS_TABLES,ERROR_FOR_DIVISION_BY_ZERO,NO_ENGINE_SUBSTITUTION'"
	if !slices.Contains(p.Session, want) {
		t.Fatalf("the plan's session settings lack %s:\n%s", want, strings.Join(p.Session, "\n"))
	}
	var text strings.Builder
	if err := p.WriteText(&text, cfg.Migrate.Prefix); err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{want + ";", "user_registered", "NO_ZERO_DATE", "1067"} {
		if !strings.Contains(text.String(), w) {
			t.Errorf("plan text lacks %q:\n%s", w, text.String())
		}
	}
	if _, err := Apply(ctx, db, cfg, Options{chunk: testChunk}); err != nil {
		t.Fatalf("apply under the strict mode: %v", err)
	}
	if v, err := Verify(ctx, db, cfg); err != nil || !v.OK {
		t.Fatalf("verify: %+v %v", v, err)
	}
	if _, err := Rollback(ctx, db, cfg, Options{}); err != nil {
		t.Fatalf("rollback under the strict mode: %v", err)
	}
	if _, err := Apply(ctx, db, cfg, Options{chunk: testChunk}); err != nil {
		t.Fatalf("apply again under the strict mode: %v", err)
	}
	samePasswords(t, "after apply, rollback, apply", before, readPasswords(t, db, cfg))
	// The application's own sessions keep the server's mode.
	var mode string
	if err := db.QueryRowContext(ctx, "SELECT @@SESSION.sql_mode").Scan(&mode); err != nil || mode != mysql8Mode {
		t.Fatalf("an application session's mode is %q (%v)", mode, err)
	}
}

// TestLockWaitUnderASecond: MySQL counts lock_wait_timeout in whole
// seconds, so behind an open reader the server alone would let a DDL
// statement wait (and the application's writers queue behind it) for a
// full second. The watchdog ends the statement at lock_timeout instead:
// the step's attempts end with the watchdog's lockWaitError, not with the
// server's 1205, and apply retries, then stops with the blocker query and
// the advice to run apply again.
func TestLockWaitUnderASecond(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := fixtureNamed(t, "wordpress")
	cfg, db := load(t, f)
	cfg.Migrate.LockTimeout = config.Duration(300 * time.Millisecond)
	cfg.Migrate.Retries = 1
	release := holdReader(t, db, cfg)
	out := &testsrv.Buffer{}
	_, err := Apply(ctx, db, cfg, Options{Out: out, chunk: testChunk})
	release()
	var lw *lockWaitError
	if !errors.As(err, &lw) || !strings.Contains(lw.state, "metadata lock") || lw.waited < 300*time.Millisecond {
		t.Fatalf("apply behind the reader was not ended by the watchdog at lock_timeout: %v", err)
	}
	if !strings.Contains(err.Error(), "gave up after 2 attempts") || !strings.Contains(err.Error(), "run `passbridge migrate apply` again") ||
		!strings.Contains(out.String(), "lock not granted within 300ms (attempt 1 of 2)") {
		t.Fatalf("apply's failure: %v\n%s", err, out.String())
	}
	// The session's next statements are not hit by a KILL QUERY meant
	// for an earlier one: apply without the reader goes through.
	if _, err := Apply(ctx, db, cfg, Options{chunk: testChunk}); err != nil {
		t.Fatalf("apply without the reader: %v", err)
	}
	if v, err := Verify(ctx, db, cfg); err != nil || !v.OK {
		t.Fatalf("verify: %+v %v", v, err)
	}
}

// TestLockPolicyInPlan: the defaults keep a DDL's wait (the longest stall
// it causes the application) at 200ms or less, with more retries and a
// jittered, doubling pause; the plan prints the policy and the deadline
// after which a step stops, computed here independently.
func TestLockPolicyInPlan(t *testing.T) {
	def := config.Default()
	if lt := def.Migrate.LockTimeout.D(); lt <= 0 || lt > 200*time.Millisecond || def.Migrate.Retries < 20 {
		t.Fatalf("defaults: lock_timeout %s, retries %d", lt, def.Migrate.Retries)
	}
	for _, name := range []string{"django", "wordpress"} {
		f := fixtureNamed(t, name)
		cfg, db := load(t, f)
		cfg.Migrate = def.Migrate
		p := mustPlan(t, db, cfg)
		// 21 waits of 200ms; pauses of at most 400ms, 800ms, ... 6.4s,
		// then 10s for the remaining 15.
		want := 21*200*time.Millisecond + (400+800+1600+3200+6400)*time.Millisecond + 15*10*time.Second
		var text strings.Builder
		if err := p.WriteText(&text, cfg.Migrate.Prefix); err != nil {
			t.Fatal(err)
		}
		for _, w := range []string{"lock_timeout 200ms, 20 retries", "at most " + want.Round(time.Second).String() + " of lock waits and pauses",
			"doubling from 200ms-400ms up to 5s-10s", "after 21 attempts"} {
			if !strings.Contains(text.String(), w) {
				t.Errorf("%s: plan text lacks %q:\n%s", name, w, text.String()[:min(3000, text.Len())])
			}
		}
		if p.LockDeadline != want.Round(time.Second).String() {
			t.Errorf("%s: lock_deadline %s, want %s", name, p.LockDeadline, want.Round(time.Second))
		}
		if f.engine == MySQL && !strings.Contains(p.LockPolicy, "KILL QUERY") {
			t.Errorf("the MySQL plan does not say how a sub-second lock_timeout is held: %s", p.LockPolicy)
		}
	}
}

// TestAnalyzeAfterLookupIndexes: once the users table's lookup indexes
// exist, apply gathers its statistics (PostgreSQL: for the lower(email)
// expression, which the planner otherwise guesses) in a step of its own,
// recorded in the history. An install from before that step sees it
// pending, no drift in the steps it applied (their SQL and checksums are
// unchanged), and `passbridge run` does not wait for it.
func TestAnalyzeAfterLookupIndexes(t *testing.T) {
	ctx := context.Background()
	t.Run("postgres", func(t *testing.T) {
		t.Parallel()
		cfg, db := load(t, fixtureNamed(t, "django"))
		p := mustPlan(t, db, cfg)
		a := stepIndex(t, p, "analyze", "auth_user")
		if p.Steps[a-1].Kind != "create-index" || !strings.Contains(p.Steps[a-1].Object, "_user_") || p.Steps[a].SQL[0] != `ANALYZE "auth_user"` {
			t.Fatalf("the analyze step: %+v after %s", p.Steps[a], p.Steps[a-1].ID)
		}
		if _, err := Apply(ctx, db, cfg, Options{chunk: testChunk}); err != nil {
			t.Fatal(err)
		}
		var stats int
		if err := db.QueryRowContext(ctx, "SELECT count(*) FROM pg_stats WHERE tablename IN ('passbridge_user_email', 'passbridge_user_username')").Scan(&stats); err != nil || stats != 2 {
			t.Fatalf("statistics of the lookup indexes' expressions after apply: %d (%v)", stats, err)
		}
		// An install from before the step: no history row, no statistics.
		mustExec(t, db, "DELETE FROM "+schema.NamesFor(cfg).History+" WHERE step_id = 'analyze auth_user'")
		admin := openDB(t, config.Database{Driver: "postgres", DSN: config.Secret(superuserDSN(t, db)), ConnectTimeout: config.Duration(time.Minute)})
		mustExec(t, admin, "DELETE FROM pg_statistic WHERE starelid IN ('passbridge_user_email'::regclass, 'passbridge_user_username'::regclass)")
		checkOldInstall(t, db, cfg, "analyze auth_user")
	})
	t.Run("mysql", func(t *testing.T) {
		t.Parallel()
		d := newDatabase(t, MySQL)
		db := openDB(t, d)
		mustExec(t, db, "CREATE TABLE members (id int PRIMARY KEY, login varchar(40) NOT NULL, mail varchar(100) NOT NULL, pw varchar(60)) ENGINE=InnoDB")
		for i := range 20 {
			mustExec(t, db, "INSERT INTO members VALUES (?, ?, ?, '$2y$10$x')", i, fmt.Sprint("user", i), fmt.Sprint("User", i, "@corp.example"))
		}
		cfg := testConfig(d, config.UsersTable{Name: "members", Key: "id", Username: "login", Email: "mail", Password: "pw"})
		p := mustPlan(t, db, cfg)
		a := stepIndex(t, p, "analyze", "members")
		if p.Steps[a].SQL[0] != "ANALYZE TABLE `members`" {
			t.Fatalf("the analyze step: %+v", p.Steps[a])
		}
		rep, err := Apply(ctx, db, cfg, Options{chunk: testChunk})
		if err != nil || rep.Steps[a].Action != ActionApplied {
			t.Fatalf("apply: %v %+v", err, rep.Steps[a])
		}
		mustExec(t, db, "DELETE FROM "+schema.NamesFor(cfg).History+" WHERE step_id = 'analyze members'")
		checkOldInstall(t, db, cfg, "analyze members")
	})
}

// checkOldInstall: every step but the analyze one applied with its
// recorded checksum, the analyze step pending and not a reason for `run`
// to wait; apply then runs only it; rollback has nothing to undo for it.
func checkOldInstall(t *testing.T, db *store.DB, cfg *config.Config, id string) {
	t.Helper()
	ctx := context.Background()
	st, err := Status(ctx, db, cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range st.Steps {
		switch {
		case s.ID == id && s.State != StatePending:
			t.Fatalf("%s: %s, want pending", s.ID, s.State)
		case s.ID != id && (s.State != StateApplied || s.Drift != "" || s.Recorded == nil || s.Recorded.Checksum != s.Checksum):
			t.Fatalf("%s: %s, drift %q", s.ID, s.State, s.Drift)
		}
	}
	if pend, err := Pending(ctx, db, cfg); err != nil || len(pend) != 0 {
		t.Fatalf("run would wait for %v (%v)", pend, err)
	}
	rep, err := Apply(ctx, db, cfg, Options{chunk: testChunk})
	if a := actions(rep); err != nil || a[ActionApplied] != 1 || a[ActionSkipped] != len(st.Steps)-1 {
		t.Fatalf("apply on the old install: %v %v", a, err)
	}
	if st, err := Status(ctx, db, cfg); err != nil || len(st.Pending()) != 0 || len(st.Drift()) != 0 {
		t.Fatalf("status after apply: %v", err)
	}
	rep, err = Rollback(ctx, db, cfg, Options{Force: true, ExportPath: t.TempDir() + "/x.json"})
	if err != nil || actions(rep)[ActionNothing] != 1 {
		t.Fatalf("rollback: %v %v", actions(rep), err)
	}
}

// superuserDSN is the PostgreSQL superuser's DSN for db's database (to
// remove statistics, as an install from before ANALYZE lacks them).
func superuserDSN(t *testing.T, db *store.DB) string {
	t.Helper()
	var name string
	if err := db.QueryRowContext(context.Background(), "SELECT current_database()").Scan(&name); err != nil {
		t.Fatal(err)
	}
	return testsrv.Postgres(t).DSN(name)
}
