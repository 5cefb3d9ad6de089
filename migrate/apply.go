package migrate

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/passbridge/passbridge/store"
)

// Report is what apply or rollback did, step by step.
type Report struct {
	DryRun     bool         `json:"dry_run"`
	Steps      []StepResult `json:"steps"`
	DurationMS int64        `json:"duration_ms"`
	// Export is where rollback --force wrote the passkeys.
	Export *ExportInfo `json:"export,omitempty"`
	// Passwords is rollback's last check of the password column before the
	// baseline is dropped.
	Passwords *PasswordReport `json:"passwords,omitempty"`
	// BaselineKept is true when the baseline tables still exist after a
	// rollback that checked the passwords (it stopped before dropping them).
	BaselineKept bool `json:"baseline_kept,omitempty"`
}

// StepResult is one step of a Report.
type StepResult struct {
	ID         string `json:"id"`
	Kind       string `json:"kind"`
	Object     string `json:"object"`
	Action     string `json:"action"`
	Attempts   int    `json:"attempts,omitempty"`
	DurationMS int64  `json:"duration_ms"`
	Detail     string `json:"detail,omitempty"`
}

// Actions in a StepResult.
const (
	ActionApplied  = "applied"
	ActionSkipped  = "already applied"
	ActionRecorded = "found applied, recorded"
	ActionRebuilt  = "rebuilt (was INVALID)"
	ActionWould    = "would apply"
	ActionRemoved  = "removed"
	ActionAbsent   = "not present"
	ActionWithDrop = "removed with its table"
	ActionLeft     = "left alone (not passbridge's)"
	ActionWouldRm  = "would remove"
	ActionNothing  = "nothing to undo"
	// ActionFailed is the step a run stopped at; ActionNotReached the
	// steps after it, which the run did not look at.
	ActionFailed     = "failed"
	ActionNotReached = "not reached"
)

// apply runs the plan: every step checks the catalog first, so running
// apply again after a crash, a kill -9 or a failed step finishes the job.
func (m *migrator) apply(ctx context.Context) (*Report, error) {
	start := time.Now()
	m.cmd = "apply"
	rep := &Report{DryRun: m.opts.DryRun}
	err := m.session(ctx, func(conn *sql.Conn) error {
		if m.opts.DryRun {
			fmt.Fprintf(m.out, "-- passbridge migrate apply --dry-run: %s %s, %d steps\n", m.eng, m.users.Qualified, len(m.steps))
			m.printSessionSQL()
		}
		for i, s := range m.steps {
			res, err := m.applyStep(ctx, conn, i, s)
			if err != nil {
				rep.stopped(res, s, m.steps[i+1:])
				return err
			}
			rep.Steps = append(rep.Steps, *res)
		}
		return nil
	})
	rep.DurationMS = time.Since(start).Milliseconds()
	return rep, err
}

// stopped records the step a run failed at and the steps it did not
// reach (given in the order the run would have taken them), so that the
// report counts every step and says where it stopped.
func (r *Report) stopped(res *StepResult, s Step, rest []Step) {
	if res == nil {
		res = &StepResult{ID: s.ID(), Kind: s.Kind(), Object: s.Object()}
	}
	res.Action = ActionFailed
	r.Steps = append(r.Steps, *res)
	for _, n := range rest {
		r.Steps = append(r.Steps, StepResult{ID: n.ID(), Kind: n.Kind(), Object: n.Object(), Action: ActionNotReached})
	}
}

// session runs fn on one dedicated connection that holds the migration
// lock and whose lock waits are bounded by migrate.lock_timeout. The
// connection answers a ping first (store.LiveConn): after a cut, the pool
// may hold dead ones. The lock is the session's own, so that a statement
// the server still runs for a run that was cut or killed keeps it, and
// the next run waits for that statement instead of racing it.
func (m *migrator) session(ctx context.Context, fn func(conn *sql.Conn) error) error {
	conn, err := m.sdb.LiveConn(ctx)
	if err != nil {
		return fmt.Errorf("get a connection: %w", err)
	}
	defer func() {
		// A session whose settings were changed goes back to no pool:
		// ErrBadConn makes database/sql close it.
		conn.Raw(func(any) error { return driver.ErrBadConn })
		conn.Close()
	}()
	lock, err := m.lock(ctx, conn)
	if err != nil {
		return err
	}
	defer lock.Unlock()

	for _, q := range m.sessionSQL() {
		if _, err := conn.ExecContext(ctx, q); err != nil {
			if m.eng == Postgres && (strings.Contains(q, "client_connection_check_interval") || strings.Contains(q, "plan_cache_mode")) {
				continue // older PostgreSQL (before 14 and 12): an optimization only
			}
			return fmt.Errorf("%s: %w", q, err)
		}
	}
	if m.eng == MySQL && !m.opts.DryRun {
		w, err := newWatchdog(ctx, m.sdb, conn)
		if err != nil {
			return err
		}
		m.watch = w
		defer func() { w.close(); m.watch = nil }()
	}
	return fn(conn)
}

// sessionSQL bounds every lock wait of the migration's statements so that
// a step waiting behind a long transaction gives up (and is retried)
// instead of queueing the application's queries behind its own lock
// request.
func (m *migrator) sessionSQL() []string {
	ms := max(m.lockTimeout().Milliseconds(), 1)
	switch m.eng {
	case Postgres:
		return []string{
			"SET application_name = 'passbridge migrate'",
			fmt.Sprintf("SET lock_timeout = %d", ms),
			// Index builds on large tables take longer than a typical
			// role default; lock waits stay bounded by lock_timeout.
			"SET statement_timeout = 0",
			// A killed passbridge stops its server-side statement too.
			"SET client_connection_check_interval = 1000",
			// Plans for the values at hand: a generic plan for "key > $1"
			// could scan a whole table per baseline chunk.
			"SET plan_cache_mode = force_custom_plan",
		}
	case MySQL:
		secs := max(int64(math.Ceil(m.lockTimeout().Seconds())), 1) // whole seconds only
		stmts := []string{
			fmt.Sprintf("SET SESSION lock_wait_timeout = %d", secs),
			fmt.Sprintf("SET SESSION innodb_lock_wait_timeout = %d", secs),
		}
		if mode, _, ok := m.users.ddlSQLMode(); ok {
			stmts = append(stmts, "SET SESSION sql_mode = "+m.eng.dialect().Literal(mode))
		}
		return stmts
	}
	return []string{fmt.Sprintf("PRAGMA busy_timeout = %d", ms)}
}

func (m *migrator) printSessionSQL() {
	for _, q := range m.sessionSQL() {
		fmt.Fprintf(m.out, "%s;\n", q)
	}
}

// lock takes the migration lock (store's named lock: a PostgreSQL advisory
// lock, MySQL GET_LOCK, an flock beside an SQLite file) so that two runs
// never interleave. A run killed in the middle of a long statement keeps
// it until the server ends that statement: wait for it rather than fail.
func (m *migrator) lock(ctx context.Context, conn *sql.Conn) (*store.Lock, error) {
	name := "migrate:" + m.users.Schema + ":" + m.cfg.Migrate.Prefix
	waited := false
	for {
		l, ok, err := m.sdb.TryLockOn(ctx, conn, name)
		if err != nil {
			return nil, fmt.Errorf("take the migration lock: %w", err)
		}
		if ok {
			if waited {
				m.log.Info("migration lock acquired")
			}
			return l, nil
		}
		if !waited {
			m.log.Warn("another passbridge migrate holds the migration lock (or a killed one whose statement is still running on the server): waiting")
			fmt.Fprintln(m.out, "waiting for the migration lock held by another passbridge migrate...")
			waited = true
		}
		if err := sleep(ctx, time.Second); err != nil {
			return nil, fmt.Errorf("waiting for the migration lock: %w", err)
		}
	}
}

func (m *migrator) hook(point string, n int, s Step) {
	if m.opts.hook != nil {
		m.opts.hook(point, n, s)
	}
}

// applyStep brings one step to applied: it checks, runs, retries lock
// timeouts with backoff, and records the step in the history.
func (m *migrator) applyStep(ctx context.Context, conn *sql.Conn, i int, s Step) (*StepResult, error) {
	res := &StepResult{ID: s.ID(), Kind: s.Kind(), Object: s.Object()}
	start := time.Now()
	defer func() { res.DurationMS = time.Since(start).Milliseconds() }()
	rebuilt, ran := false, false
	bo := &backoff{m: m, conn: conn}
	for {
		env, err := m.env(ctx, conn)
		if err != nil {
			return res, err
		}
		st, detail := s.check(env)
		if ran && st == StatePending {
			// Never loop on a statement that succeeds without effect.
			return res, fmt.Errorf("step %s ran without error but the catalog does not show its effect; stopping (please report this)", s.ID())
		}
		ran = false
		switch st {
		case StateApplied:
			h, recorded, via := s.base().recorded(env.history)
			switch {
			case res.Attempts > 0 && rebuilt:
				res.Action = ActionRebuilt
			case res.Attempts > 0:
				res.Action = ActionApplied
			case recorded:
				res.Action = ActionSkipped
				if h.Checksum != s.Checksum() && !via {
					res.Detail = "applied earlier with different SQL: see status"
				}
			default:
				res.Action = ActionRecorded
			}
			if !recorded && !m.opts.DryRun {
				if err := m.hist.record(ctx, conn, s, 0, version()); err != nil {
					return res, err
				}
			}
			m.progress(i, s, res)
			return res, nil
		case StateCollision:
			return res, &CollisionError{Prefix: m.cfg.Migrate.Prefix, Items: []string{detail}}
		case StatePartial:
			if m.opts.DryRun {
				res.Action, res.Detail = ActionWould, detail
				m.printStep(i, s, st, detail)
				return res, nil
			}
			return res, m.partialError(env, s, detail)
		case StateBuilding:
			if m.opts.DryRun {
				res.Action, res.Detail = ActionWould, detail
				m.printStep(i, s, st, detail)
				return res, nil
			}
			m.log.Info("waiting for an index build of another session", "step", s.ID())
			fmt.Fprintf(m.out, "[%2d/%d] %s: %s; waiting\n", i+1, len(m.steps), s.ID(), detail)
			if err := sleep(ctx, 2*time.Second); err != nil {
				return res, err
			}
			continue
		case StateInvalid:
			if m.opts.DryRun {
				res.Action, res.Detail = ActionWould, detail
				m.printStep(i, s, st, detail)
				return res, nil
			}
			m.log.Warn("dropping an INVALID index left by an interrupted build", "index", s.Object())
			res.Attempts++
			err = m.execPatient(ctx, conn, s, s.Undo())
			rebuilt = true
		case StatePending:
			if m.opts.DryRun {
				res.Action = ActionWould
				m.printStep(i, s, st, "")
				return res, nil
			}
			res.Attempts++
			err = m.run(ctx, conn, i, s)
			ran = err == nil
		}
		if err == nil {
			continue // check again, which also confirms the step took
		}
		// Whatever failed, the next round looks at the catalog again:
		// a CREATE INDEX CONCURRENTLY that timed out leaves an INVALID
		// index to drop first.
		if err := bo.failed(ctx, err, res.Attempts, s); err != nil {
			return res, err
		}
	}
}

// run executes a pending step and records it: in one transaction when the
// step allows, otherwise statement by statement and then the record (a
// kill between the two is healed by the next run, which finds the object
// and records it).
func (m *migrator) run(ctx context.Context, conn *sql.Conn, i int, s Step) error {
	start := time.Now()
	m.hook("before", i, s)
	if tb, ok := s.(*TakeBaseline); ok {
		tb.bl.afterChunk = func(c int) { m.hook("chunk", c, s) }
		rows, chunks, err := tb.bl.take(ctx, conn)
		if err != nil {
			return err
		}
		m.log.Info("password baseline taken", "rows", rows, "chunks", chunks, "took_ms", time.Since(start).Milliseconds())
		m.hook("executed", i, s)
		return m.hist.record(ctx, conn, s, time.Since(start), version())
	}
	if s.base().patient {
		if err := m.setPatience(ctx, conn, true); err != nil {
			return err
		}
		defer m.setPatience(context.WithoutCancel(ctx), conn, false)
	}
	if s.Transactional() {
		tx, err := conn.BeginTx(ctx, nil)
		if err != nil {
			return err
		}
		defer tx.Rollback()
		for _, q := range s.SQL() {
			if _, err := tx.ExecContext(ctx, q); err != nil {
				return err
			}
		}
		m.hook("executed", i, s)
		if err := m.hist.record(ctx, tx, s, time.Since(start), version()); err != nil {
			return err
		}
		return tx.Commit()
	}
	if _, ok := s.(*AnalyzeUsers); ok && m.eng == MySQL {
		if err := m.analyzeTable(ctx, conn, s.SQL()[0]); err != nil {
			return err
		}
	} else if err := m.execAll(ctx, conn, s.SQL()); err != nil {
		return err
	}
	m.hook("executed", i, s)
	return m.hist.record(ctx, conn, s, time.Since(start), version())
}

// analyzeTable runs MySQL's ANALYZE TABLE, which reports a failure as a
// row of its result (Msg_type error), not as an SQL error.
func (m *migrator) analyzeTable(ctx context.Context, conn *sql.Conn, stmt string) error {
	return m.watched(ctx, conn, func() error {
		rows, err := conn.QueryContext(ctx, stmt)
		if err != nil {
			return err
		}
		defer rows.Close()
		var msgs []string
		for rows.Next() {
			var table, op, typ, text sql.NullString
			if err := rows.Scan(&table, &op, &typ, &text); err != nil {
				return err
			}
			if strings.EqualFold(typ.String, "error") {
				msgs = append(msgs, text.String)
			}
		}
		if err := rows.Err(); err != nil {
			return err
		}
		if len(msgs) > 0 {
			return fmt.Errorf("%s: %s", stmt, strings.Join(msgs, "; "))
		}
		return nil
	})
}

// setPatience lifts lock_timeout for a statement whose lock waits block
// nobody (CREATE INDEX CONCURRENTLY waits for older transactions while
// reads and writes go on), and puts it back after.
func (m *migrator) setPatience(ctx context.Context, conn *sql.Conn, on bool) error {
	if m.eng != Postgres {
		return nil
	}
	q := fmt.Sprintf("SET lock_timeout = %d", max(m.lockTimeout().Milliseconds(), 1))
	if on {
		q = "SET lock_timeout = 0"
	}
	_, err := conn.ExecContext(ctx, q)
	return err
}

// execPatient runs statements of step s, without lock_timeout when the
// step's waits block nobody.
func (m *migrator) execPatient(ctx context.Context, conn *sql.Conn, s Step, stmts []string) error {
	if s.base().patient {
		if err := m.setPatience(ctx, conn, true); err != nil {
			return err
		}
		defer m.setPatience(context.WithoutCancel(ctx), conn, false)
	}
	return m.execAll(ctx, conn, stmts)
}

func (m *migrator) execAll(ctx context.Context, q querier, stmts []string) error {
	for _, st := range stmts {
		if err := m.exec(ctx, q, st); err != nil {
			return err
		}
	}
	return nil
}

func (m *migrator) progress(i int, s Step, res *StepResult) {
	line := fmt.Sprintf("[%2d/%d] %-60s %s", i+1, len(m.steps), s.ID(), res.Action)
	if res.Attempts > 1 {
		line += fmt.Sprintf(" after %d attempts", res.Attempts)
	}
	if res.Detail != "" {
		line += " (" + res.Detail + ")"
	}
	fmt.Fprintln(m.out, line)
	m.log.Debug("step", "step", s.ID(), "action", res.Action, "attempts", res.Attempts)
}

// blockerHint tells a DBA how to find what holds the lock, and what to
// run next: the command that failed, which continues where it stopped.
func (m *migrator) blockerHint() string {
	again := fmt.Sprintf("then run `passbridge migrate %s` again (or raise migrate.lock_timeout / migrate.retries): it continues where it stopped.", m.cmd)
	switch m.eng {
	case Postgres:
		return "A long transaction holds a lock on the table. Find it with:\n" +
			"  SELECT pid, usename, state, xact_start, left(query, 80) FROM pg_stat_activity\n" +
			"   WHERE pid IN (SELECT unnest(pg_blocking_pids(pid)) FROM pg_stat_activity WHERE application_name = 'passbridge migrate')\n" +
			"     OR (xact_start < now() - interval '1 minute' AND state <> 'idle');\n" + again
	case MySQL:
		return "A long transaction holds a metadata lock on the table. Find it with:\n" +
			"  SELECT * FROM information_schema.INNODB_TRX ORDER BY trx_started;  SHOW PROCESSLIST;\n" + again
	}
	return fmt.Sprintf("Another process holds the SQLite write lock; run `passbridge migrate %s` again when it is idle.", m.cmd)
}

// partialError stops at a change that exists in part, made by hand, and
// gives the statement that finishes it in the direction of the command.
func (m *migrator) partialError(env *checkEnv, s Step, detail string) error {
	stmt := ""
	if a, ok := s.(*AddUserColumns); ok {
		stmt = a.byHand(env, m.cmd == "rollback")
	}
	return fmt.Errorf("step %s: %s, so its statement would fail. Finish it by hand (an online rebuild: reads and writes go on):\n  %s;\nthen run `passbridge migrate %s` again: it finds the change made and goes on",
		s.ID(), detail, stmt, m.cmd)
}

// rebuildHint explains a MySQL ALTER the server refused to make INSTANTly
// although the catalog showed nothing against it (UsersTable.NoInstantAdd
// is what passbridge can see): it gives the one online rebuild that moves
// the users columns the way the command goes (added on apply, dropped on
// rollback; both in one ALTER, so the table is rebuilt once).
func (m *migrator) rebuildHint(ctx context.Context, conn *sql.Conn, err error, s Step) string {
	var me *mysql.MySQLError
	if !errors.As(err, &me) || (me.Number != 1845 && me.Number != 1846 && me.Number != 4092) {
		return ""
	}
	var stmt string
	if _, ok := s.(*AddUserColumn); ok && conn != nil {
		if env, err := m.env(ctx, conn); err == nil {
			var alter string
			var clauses []string
			t := env.cat.table(m.users.Name)
			for _, o := range m.steps {
				c, ok := o.(*AddUserColumn)
				if !ok || t == nil {
					continue
				}
				_, exists := t.column(env.cat.eng, c.Object())
				switch {
				case m.cmd == "rollback" && exists:
					clauses = append(clauses, c.drop)
				case m.cmd == "apply" && !exists:
					clauses = append(clauses, c.add)
				}
				alter = c.alter
			}
			if len(clauses) > 0 {
				stmt = alter + " " + strings.Join(clauses, ", ") + ", ALGORITHM=INPLACE, LOCK=NONE"
			}
		}
	}
	if stmt == "" {
		failed := s.SQL()
		if m.cmd == "rollback" {
			failed = s.Undo()
		}
		stmt = strings.Replace(strings.Join(failed, ";\n"), "ALGORITHM=INSTANT", "ALGORITHM=INPLACE, LOCK=NONE", 1)
	}
	return fmt.Sprintf("\nThe server cannot make this change without rebuilding %s, and the plan promised a metadata-only change, so passbridge stopped rather than rebuild it unannounced.\n"+
		"Either run it yourself as an online rebuild (reads and writes go on, the table is rewritten) at a quiet time:\n  %s;\n"+
		"or with pt-online-schema-change / gh-ost; then run `passbridge migrate %s` again: it finds the change made and goes on.", m.users.Name, stmt, m.cmd)
}
