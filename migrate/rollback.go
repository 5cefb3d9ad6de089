package migrate

import (
	"context"
	"database/sql"
	"fmt"
	"slices"
	"time"

	"github.com/passbridge/passbridge/schema"
)

// PasskeysEnrolledError refuses a rollback that would delete enrolled
// passkeys.
type PasskeysEnrolledError struct {
	Count int64
	Table string
}

func (e *PasskeysEnrolledError) Error() string {
	return fmt.Sprintf("rollback refused: %d passkeys are enrolled in %s and rollback would delete them.\n"+
		"Run `passbridge migrate rollback --force` to export them to a JSON file first (--export FILE picks the file), then remove passbridge's objects.", e.Count, e.Table)
}

// rollback removes what passbridge added, newest first: each step's undo,
// or nothing when dropping its table removes it. Objects that exist with
// another shape are not passbridge's and are left alone. Like apply, it
// checks the catalog before each step, so a killed rollback is finished by
// running it again.
func (m *migrator) rollback(ctx context.Context) (*Report, error) {
	start := time.Now()
	m.cmd = "rollback"
	rep := &Report{DryRun: m.opts.DryRun}
	err := m.session(ctx, func(conn *sql.Conn) error {
		env, err := m.env(ctx, conn)
		if err != nil {
			return err
		}
		credTable := m.cfg.Migrate.Prefix + "credentials"
		if env.cat.table(credTable) != nil {
			var n int64
			if err := conn.QueryRowContext(ctx, "SELECT count(*) FROM "+m.names.Credentials).Scan(&n); err != nil {
				return fmt.Errorf("count passkeys: %w", err)
			}
			if n > 0 && !m.opts.Force {
				return &PasskeysEnrolledError{Count: n, Table: credTable}
			}
			if n > 0 && m.opts.DryRun {
				fmt.Fprintf(m.out, "-- would export %d passkeys to %s before removing anything\n", n, exportPathOrDefault(m.opts.ExportPath))
			}
			if n > 0 && !m.opts.DryRun {
				info, err := m.exportCredentials(ctx, conn, m.opts.ExportPath)
				if err != nil {
					return fmt.Errorf("export passkeys (nothing was removed): %w", err)
				}
				rep.Export = info
				fmt.Fprintf(m.out, "exported %d passkeys to %s\n", info.Count, info.Path)
				m.log.Info("passkeys exported before rollback", "count", info.Count, "path", info.Path)
			}
		}
		// Last look at the password column before the baseline goes.
		if m.bl != nil && !m.opts.DryRun {
			if h, ok := env.history[m.baselineStepID()]; ok && h.StepID != "" && env.cat.table(m.cfg.Migrate.Prefix+schema.BaselineRowsTable) != nil {
				pr, err := m.verifyPasswords(ctx, conn)
				if err != nil {
					return fmt.Errorf("check passwords before rollback: %w", err)
				}
				rep.Passwords = pr
				if !pr.OK {
					m.log.Warn("password hashes differ from the baseline (see the report); rollback does not touch them", "changed", pr.Changed, "deleted", pr.Deleted)
				}
			}
		}
		if m.opts.DryRun {
			fmt.Fprintf(m.out, "-- passbridge migrate rollback --dry-run: %s %s\n", m.eng, m.users.Qualified)
			m.printSessionSQL()
		}
		for i := len(m.steps) - 1; i >= 0; i-- {
			res, err := m.undoStep(ctx, conn, i, m.steps[i])
			if err != nil {
				rest := slices.Clone(m.steps[:i])
				slices.Reverse(rest)
				rep.stopped(res, m.steps[i], rest)
				return err
			}
			rep.Steps = append(rep.Steps, *res)
		}
		return nil
	})
	rep.DurationMS = time.Since(start).Milliseconds()
	if rep.Passwords != nil {
		// What the summary may say of the baseline: true of the database
		// afterwards, whether rollback got that far or not.
		rep.BaselineKept = m.baselineKept(context.WithoutCancel(ctx))
	}
	return rep, err
}

// baselineKept reports whether the baseline tables still exist.
func (m *migrator) baselineKept(ctx context.Context) bool {
	env, err := m.env(ctx, m.db)
	if err != nil {
		return true // unknown: never claim it is gone
	}
	return env.cat.table(m.cfg.Migrate.Prefix+schema.BaselineRowsTable) != nil || env.cat.table(m.cfg.Migrate.Prefix+schema.BaselineTable) != nil
}

func (m *migrator) baselineStepID() string {
	for _, s := range m.steps {
		if s.Kind() == "take-baseline" {
			return s.ID()
		}
	}
	return ""
}

func (m *migrator) undoStep(ctx context.Context, conn *sql.Conn, i int, s Step) (*StepResult, error) {
	res := &StepResult{ID: s.ID(), Kind: s.Kind(), Object: s.Object()}
	start := time.Now()
	defer func() { res.DurationMS = time.Since(start).Milliseconds() }()
	histTable := m.cfg.Migrate.Prefix + schema.HistoryTable
	for {
		env, err := m.env(ctx, conn)
		if err != nil {
			return res, err
		}
		_, recorded, _ := s.base().recorded(env.history)
		forget := func(q querier) error {
			if !recorded || m.opts.DryRun || s.Object() == histTable {
				return nil
			}
			for _, id := range append([]string{s.ID()}, s.base().aliases...) {
				if _, ok := env.history[id]; ok {
					if err := m.hist.forget(ctx, q, id); err != nil {
						return err
					}
				}
			}
			return nil
		}
		st, detail := s.check(env)
		// An index or foreign key of a passbridge table goes with the
		// table, which comes later in reverse order.
		ownerGoes := s.base().table != "" && env.cat.table(s.base().table) != nil
		switch {
		case st == StateCollision:
			res.Action, res.Detail = ActionLeft, detail
			m.log.Warn("rollback leaves an object that is not passbridge's", "step", s.ID(), "detail", detail)
		case st == StatePartial && m.opts.DryRun:
			res.Action, res.Detail = ActionWouldRm, detail
		case st == StatePartial:
			return res, m.partialError(env, s, detail)
		case st == StateBuilding:
			if m.opts.DryRun {
				res.Action = ActionWouldRm
				break
			}
			if err := sleep(ctx, 2*time.Second); err != nil {
				return res, err
			}
			continue
		case st == StatePending:
			res.Action = ActionAbsent
			if err := forget(conn); err != nil {
				return res, err
			}
		case s.Kind() == "analyze":
			res.Action = ActionNothing
			if err := forget(conn); err != nil {
				return res, err
			}
		case ownerGoes || len(s.Undo()) == 0:
			res.Action = ActionWithDrop
			if m.opts.DryRun {
				break
			}
			if err := forget(conn); err != nil {
				return res, err
			}
		default:
			if m.opts.DryRun {
				res.Action = ActionWouldRm
				m.printUndo(i, s)
				break
			}
			err := m.retry(ctx, conn, res, s, func() error {
				m.hook("before-undo", i, s)
				if s.base().undoTx {
					tx, err := conn.BeginTx(ctx, nil)
					if err != nil {
						return err
					}
					defer tx.Rollback()
					if err := m.execAll(ctx, tx, s.Undo()); err != nil {
						return err
					}
					if err := forget(tx); err != nil {
						return err
					}
					return tx.Commit()
				}
				if err := m.execPatient(ctx, conn, s, s.Undo()); err != nil {
					return err
				}
				return forget(conn)
			})
			if err != nil {
				return res, err
			}
			res.Action = ActionRemoved
		}
		fmt.Fprintf(m.out, "[%2d/%d] %-60s %s\n", i+1, len(m.steps), "undo "+s.ID(), res.Action)
		return res, nil
	}
}

func (m *migrator) printUndo(i int, s Step) {
	ew := &errWriter{w: m.out}
	ew.printf("-- [%d/%d] undo %s\n--   risk: %s\n", i+1, len(m.steps), s.ID(), s.UndoRisk())
	if s.base().undoTx {
		ew.printf("BEGIN;\n")
	}
	for _, q := range s.Undo() {
		ew.printf("%s;\n", q)
	}
	if s.base().undoTx {
		ew.printf("COMMIT;\n")
	}
	ew.printf("\n")
}
