package migrate

import (
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/passbridge/passbridge/schema"
)

// WriteText prints the plan as SQL that can be pasted into psql, mysql or
// sqlite3: every statement exactly as apply runs it, each step headed by
// its risk note and its undo. Applied steps are printed commented out.
func (p *Plan) WriteText(w io.Writer, prefix string) error {
	ew := &errWriter{w: w}
	u := p.Users
	pending := len(p.Pending())
	ew.printf("-- passbridge migrate plan: %s, users table %s\n", p.Engine, u.Qualified)
	ew.printf("--   key %s (%s), %s", p.Engine.dialect().Quote(u.Key.Name), u.KeyKind, approxRows(u.Rows))
	if u.StorageEngine != "" {
		ew.printf(", %s, %s", u.StorageEngine, u.Collation)
	}
	ew.printf("\n")
	for _, ix := range u.Indexes {
		state := ""
		if !ix.Valid {
			state = " INVALID"
		}
		ew.printf("--   index %s (%s)%s%s\n", ix.Name, strings.Join(ix.Columns, ", "), map[bool]string{true: " unique", false: ""}[ix.Unique], state)
	}
	for _, fk := range u.ForeignKeys {
		if fk.Incoming {
			ew.printf("--   referenced by %s(%s) [%s]\n", fk.Table, strings.Join(fk.Columns, ", "), fk.Name)
		} else {
			ew.printf("--   references %s(%s) [%s]\n", fk.RefTable, strings.Join(fk.RefColumns, ", "), fk.Name)
		}
	}
	for _, n := range p.Notes {
		ew.printf("-- note: %s\n", n)
	}
	for _, n := range p.Warnings {
		ew.printf("-- warning: %s\n", n)
	}
	for _, s := range p.Skipped {
		ew.printf("-- skipped: %s: %s\n", s.ID, s.Reason)
	}
	ew.printf("-- %d steps: %d applied, %d pending. lock_timeout %s, %d retries, each step gives up after at most %s of lock waits and pauses.\n",
		len(p.Steps), len(p.Steps)-pending, pending, p.LockTimeout, p.Retries, p.LockDeadline)
	ew.printf("-- Locks: %s.\n", p.LockPolicy)
	ew.printf("-- The password column is never altered. `passbridge migrate apply` runs exactly this and records\n")
	ew.printf("-- each step in %s%s; steps run by hand are found and recorded by the next apply.\n\n", prefix, schema.HistoryTable)
	ew.printf("-- apply's session settings:\n")
	for _, q := range p.Session {
		ew.printf("%s;\n", q)
	}
	ew.printf("\n")
	for _, s := range p.Steps {
		writeStep(ew, p.Engine, len(p.Steps), s)
	}
	return ew.err
}

// writeStep prints one step: header, risk, undo, then its statements
// (commented out when the step is applied).
func writeStep(ew *errWriter, eng Engine, total int, s StepStatus) {
	ew.printf("-- [%d/%d] %s  (%s)\n", s.N, total, s.ID, s.State)
	if s.Detail != "" {
		ew.printf("--   %s\n", s.Detail)
	}
	if s.Drift != "" {
		ew.printf("--   drift: %s\n", s.Drift)
	}
	ew.printf("--   risk: %s\n", s.Risk)
	if len(s.Undo) > 0 {
		ew.printf("--   undo: %s;  (%s)\n", strings.Join(s.Undo, "; "), s.UndoRisk)
	} else if s.UndoRisk != "" {
		ew.printf("--   undo: %s\n", s.UndoRisk)
	}
	comment := s.State == StateApplied || s.Kind == "take-baseline"
	line := func(q string) {
		for _, l := range strings.Split(q, "\n") {
			if comment && !strings.HasPrefix(l, "--") {
				l = "-- " + l
			}
			ew.printf("%s\n", l)
		}
	}
	if s.Kind == "take-baseline" && s.State != StateApplied {
		ew.printf("--   passbridge runs this itself, chunk by chunk:\n")
	}
	switch {
	case s.Transactional && eng == SQLite:
		line("BEGIN IMMEDIATE;")
	case s.Transactional:
		line("BEGIN;")
	case eng == Postgres && s.Kind == "create-index":
		ew.printf("--   (outside a transaction)\n")
	}
	for _, q := range s.SQL {
		if strings.HasPrefix(q, "--") {
			line(q)
			continue
		}
		line(q + ";")
	}
	if s.Transactional {
		line("COMMIT;")
	}
	ew.printf("\n")
}

// printStep is a dry run's output for one step.
func (m *migrator) printStep(i int, s Step, st State, detail string) {
	ew := &errWriter{w: m.out}
	writeStep(ew, m.eng, len(m.steps), StepStatus{N: i + 1, ID: s.ID(), Kind: s.Kind(), State: st, Detail: detail,
		Risk: s.Risk(), Transactional: s.Transactional(), SQL: s.SQL(), Undo: s.Undo(), UndoRisk: s.UndoRisk()})
}

type errWriter struct {
	w   io.Writer
	err error
}

func (e *errWriter) printf(format string, args ...any) {
	if e.err == nil {
		_, e.err = fmt.Fprintf(e.w, format, args...)
	}
}

// WriteStatus prints the plan as status: each step's state and when it was
// applied, then drift and history rows no step knows.
func (p *Plan) WriteStatus(w io.Writer) error {
	ew := &errWriter{w: w}
	pending := len(p.Pending())
	ew.printf("passbridge migrate status: %s, users table %s\n", p.Engine, p.Users.Qualified)
	ew.printf("  %d steps: %d applied, %d pending\n\n", len(p.Steps), len(p.Steps)-pending, pending)
	ew.printf("  %3s  %-9s  %-20s  %s\n", "#", "STATE", "APPLIED AT (UTC)", "STEP")
	for _, s := range p.Steps {
		at := "-"
		if s.Recorded != nil {
			at = s.Recorded.AppliedAt.UTC().Format("2006-01-02 15:04:05")
		}
		ew.printf("  %3d  %-9s  %-20s  %s\n", s.N, s.State, at, s.ID)
		if s.Detail != "" {
			ew.printf("  %3s  %-9s  %-20s    %s\n", "", "", "", s.Detail)
		}
	}
	drift := p.Drift()
	if len(drift) > 0 || len(p.Unknown) > 0 {
		ew.printf("\ndrift:\n")
		for _, s := range drift {
			ew.printf("  - %s: %s\n", s.ID, s.Drift)
		}
		for _, h := range p.Unknown {
			ew.printf("  - %s: in the history (applied %s, passbridge %s) but not in this plan\n", h.StepID, h.AppliedAt.UTC().Format(time.RFC3339), h.Version)
		}
	} else {
		ew.printf("\nno drift\n")
	}
	if pending > 0 {
		ew.printf("\nreview the pending steps with `passbridge migrate plan`, then run `passbridge migrate apply`\n")
	}
	return ew.err
}

// WriteText summarizes what apply or rollback did.
func (r *Report) WriteText(w io.Writer, what string) error {
	ew := &errWriter{w: w}
	counts := map[string]int{}
	var order []string
	for _, s := range r.Steps {
		if counts[s.Action] == 0 {
			order = append(order, s.Action)
		}
		counts[s.Action]++
	}
	var parts []string
	for _, a := range order {
		parts = append(parts, fmt.Sprintf("%d %s", counts[a], a))
	}
	prefix := what
	if r.DryRun {
		prefix += " --dry-run"
	}
	ew.printf("%s: %s in %s\n", prefix, strings.Join(parts, ", "), (time.Duration(r.DurationMS) * time.Millisecond).String())
	for _, s := range r.Steps {
		if s.Action == ActionFailed {
			ew.printf("stopped at %s, the steps after it not reached: run `passbridge migrate %s` again to continue from there\n", s.ID, what)
		}
	}
	if r.Export != nil {
		ew.printf("passkeys exported: %d to %s (sha256 %s)\n", r.Export.Count, r.Export.Path, r.Export.SHA256)
	}
	if pr := r.Passwords; pr != nil {
		when := "before it was dropped"
		if r.BaselineKept {
			when = "(it is still there: rollback stopped before dropping it)"
		}
		if pr.OK {
			ew.printf("password column checked against the baseline %s: %d rows unchanged, %d added since\n", when, pr.Unchanged, pr.Added)
		} else {
			ew.printf("WARNING: the password column checked against the baseline %s: %d changed and %d deleted password hashes (rollback does not touch them)\n", when, pr.Changed, pr.Deleted)
		}
	}
	return ew.err
}
