// Package migrate changes the application database so it can hold passkeys:
// it inspects the existing users table, plans the change as data (each step
// with its SQL, its lock and its undo), applies it online and verifies that
// password hashes are untouched. The tables it creates are described in
// package schema; only cmd/, the demo and test helpers import migrate.
package migrate

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/passbridge/passbridge/config"
	"github.com/passbridge/passbridge/internal/buildinfo"
	"github.com/passbridge/passbridge/schema"
	"github.com/passbridge/passbridge/store"
)

// Options tune a run of apply or rollback. The zero value takes everything
// from the configuration.
type Options struct {
	// DryRun prints what would run and changes nothing.
	DryRun bool
	// Out receives progress lines and, on a dry run, the SQL. nil: none.
	Out io.Writer
	// Log receives structured logs. nil: none.
	Log *slog.Logger
	// Force lets rollback remove enrolled passkeys after exporting them.
	Force bool
	// ExportPath is where rollback --force writes the passkeys ("": a
	// timestamped file in the current directory).
	ExportPath string

	// chunk overrides the baseline chunk size (tests).
	chunk int
	// hook is called at points of each step (tests kill the process there).
	hook func(point string, n int, s Step)
}

// migrator holds one database's plan: the pipeline is
// inspect → plan → (print | apply | rollback | verify).
type migrator struct {
	sdb   *store.DB
	db    *sql.DB
	eng   Engine
	cfg   *config.Config
	names schema.Names
	users *UsersTable
	steps []Step
	hist  history
	bl    *baseliner // nil when users_table.password is not configured
	opts  Options
	log   *slog.Logger
	out   io.Writer
	// cmd is the command running (apply, rollback): what a failure
	// advises to run again.
	cmd string
	// watch holds the session's lock waits to lock_timeout (MySQL).
	watch *watchdog
	// skipped and warnings are the planner's, for the plan's heading.
	skipped  []SkippedStep
	warnings []string
}

func newMigrator(ctx context.Context, sdb *store.DB, cfg *config.Config, opts Options) (*migrator, error) {
	if cfg.Migrate.Prefix == "" {
		return nil, errors.New("migrate.prefix is empty")
	}
	eng, err := engineOf(sdb)
	if err != nil {
		return nil, err
	}
	db := sdb.DB.DB
	users, err := inspect(ctx, db, eng, cfg.UsersTable)
	if err != nil {
		return nil, err
	}
	m := &migrator{sdb: sdb, db: db, eng: eng, cfg: cfg, users: users, opts: opts,
		names: schema.NamesOn(eng.dialect(), cfg.UsersTable, cfg.Migrate.Prefix), log: opts.Log, out: opts.Out}
	if m.log == nil {
		m.log = slog.New(slog.DiscardHandler)
	}
	if m.out == nil {
		m.out = io.Discard
	}
	m.hist = history{eng: eng, table: m.names.History}
	p := &planner{eng: eng, ut: cfg.UsersTable, prefix: cfg.Migrate.Prefix, users: users, schema: cfg.UsersTable.Schema}
	if cfg.UsersTable.Password != "" {
		pw, _ := users.Column(cfg.UsersTable.Password)
		m.bl = newBaseliner(eng, cfg.UsersTable.Schema, users, pw, cfg.Migrate.Prefix, opts.chunk)
		p.bl = m.bl
	}
	steps, err := p.buildSteps()
	if err != nil {
		return nil, err
	}
	if m.bl == nil { // no password column: nothing to baseline
		steps = slices.DeleteFunc(steps, func(s Step) bool { return s.Kind() == "take-baseline" })
	}
	m.steps, m.skipped, m.warnings = steps, p.skipped, p.warnings
	return m, nil
}

// env reads the catalog and the history: what every state decision uses.
func (m *migrator) env(ctx context.Context, q querier) (*checkEnv, error) {
	cat, err := loadCatalog(ctx, q, m.eng, m.users.Schema, m.users.Name, m.cfg.Migrate.Prefix)
	if err != nil {
		return nil, err
	}
	hist, err := m.hist.read(ctx, q, cat.table(m.cfg.Migrate.Prefix+schema.HistoryTable) != nil)
	if err != nil {
		return nil, err
	}
	return &checkEnv{cat: cat, history: hist}, nil
}

// Plan is the whole change for one database, each step with its state.
type Plan struct {
	Engine Engine      `json:"engine"`
	Users  *UsersTable `json:"users_table"`
	// LockTimeout is migrate.lock_timeout; Retries migrate.retries.
	LockTimeout string `json:"lock_timeout"`
	Retries     int    `json:"retries"`
	// LockDeadline is the most a step spends on lock waits and the pauses
	// between its attempts before it stops; LockPolicy says it in words.
	LockDeadline string `json:"lock_deadline"`
	LockPolicy   string `json:"lock_policy"`
	// Session is what apply sets on its connection before the first step.
	Session []string `json:"session"`
	// Notes are what a DBA should know before running the plan, one line
	// each: what the catalog showed that changes how the steps run.
	Notes []string `json:"notes,omitempty"`
	// Warnings are what will be slow or wrong after the migration and
	// that passbridge cannot fix, one line each.
	Warnings []string `json:"warnings,omitempty"`
	// Skipped are the steps left out of the plan because the table
	// already has what they would add.
	Skipped []SkippedStep `json:"skipped,omitempty"`
	Steps   []StepStatus  `json:"steps"`
	// Unknown are history rows that match no step of this plan (a step of
	// another passbridge version, or another prefix's change).
	Unknown []HistoryEntry `json:"unknown_history,omitempty"`
}

// SkippedStep is a step the plan leaves out: an existing index of the
// application already serves the lookup it would index.
type SkippedStep struct {
	ID       string `json:"id"`
	Column   string `json:"column"`
	ServedBy string `json:"served_by"`
	Reason   string `json:"reason"`
}

// StepStatus is a step of a plan and where it stands.
type StepStatus struct {
	Step          Step   `json:"-"`
	N             int    `json:"n"`
	ID            string `json:"id"`
	Kind          string `json:"kind"`
	Object        string `json:"object"`
	State         State  `json:"state"`
	Detail        string `json:"detail,omitempty"`
	Risk          string `json:"risk"`
	Transactional bool   `json:"transactional"`
	// Bookkeeping marks migrate's own tables (history, baseline).
	Bookkeeping bool          `json:"bookkeeping,omitempty"`
	SQL         []string      `json:"sql"`
	Undo        []string      `json:"undo,omitempty"`
	UndoRisk    string        `json:"undo_risk,omitempty"`
	Checksum    string        `json:"checksum"`
	Recorded    *HistoryEntry `json:"recorded,omitempty"`
	// Drift says how the database differs from the plan for this step:
	// recorded but missing, or applied with other SQL.
	Drift string `json:"drift,omitempty"`
}

// Pending returns the steps that are not applied.
func (p *Plan) Pending() []Step {
	var out []Step
	for _, s := range p.Steps {
		if s.State != StateApplied {
			out = append(out, s.Step)
		}
	}
	return out
}

// Drift lists the steps whose database state differs from the history.
func (p *Plan) Drift() []StepStatus {
	var out []StepStatus
	for _, s := range p.Steps {
		if s.Drift != "" {
			out = append(out, s)
		}
	}
	return out
}

// Current reports whether the database is as the plan wants it: every
// step applied, no drift, and no history row that no step knows (what
// `status --exit-code` tells a script).
func (p *Plan) Current() bool {
	return len(p.Pending()) == 0 && len(p.Drift()) == 0 && len(p.Unknown) == 0
}

// collisions returns the error for steps blocked by foreign objects.
func (p *Plan) collisions(prefix string) error {
	var items []string
	for _, s := range p.Steps {
		if s.State == StateCollision {
			items = append(items, s.Detail)
		}
	}
	if len(items) == 0 {
		return nil
	}
	return &CollisionError{Prefix: prefix, Items: items}
}

// CollisionError stops a plan whose names are taken by objects of another
// shape: passbridge never alters or drops what it did not create.
type CollisionError struct {
	Prefix string
	Items  []string
}

func (e *CollisionError) Error() string {
	return fmt.Sprintf("passbridge cannot create its objects: these names are taken by something that is not passbridge's:\n  - %s\nNothing was changed. Remedy: set migrate.prefix (now %q) to a prefix that no existing table, column or index uses, for example\n    migrate:\n      prefix: pbx_\n(or PASSBRIDGE_MIGRATE_PREFIX=pbx_), then run plan again.",
		strings.Join(e.Items, "\n  - "), e.Prefix)
}

// plan reads the catalog and states every step.
func (m *migrator) plan(ctx context.Context, q querier) (*Plan, error) {
	env, err := m.env(ctx, q)
	if err != nil {
		return nil, err
	}
	p := &Plan{Engine: m.eng, Users: m.users, LockTimeout: m.lockTimeout().String(), Retries: m.cfg.Migrate.Retries,
		LockDeadline: m.lockDeadline().Round(time.Second).String(), LockPolicy: m.lockPolicy(), Session: m.sessionSQL(), Notes: m.notes(),
		Warnings: m.warnings, Skipped: m.skipped}
	known := map[string]bool{}
	for i, s := range m.steps {
		st, detail := s.check(env)
		ss := StepStatus{Step: s, N: i + 1, ID: s.ID(), Kind: s.Kind(), Object: s.Object(), State: st, Detail: detail,
			Risk: s.Risk(), Transactional: s.Transactional(), Bookkeeping: s.base().bookkeeping, SQL: s.SQL(), Undo: s.Undo(), UndoRisk: s.UndoRisk(), Checksum: s.Checksum()}
		if h, ok, via := s.base().recorded(env.history); ok {
			ss.Recorded = &h
			switch {
			case st == StatePending || st == StatePartial:
				ss.Drift = "recorded as applied but missing from the database"
			case st == StateInvalid:
				ss.Drift = "recorded as applied but INVALID in the database"
			case via:
				// Made as the other form of the same change (see
				// stepBase.aliases): its SQL is not this step's.
			case h.Checksum != s.Checksum():
				ss.Drift = "applied with different SQL (checksum " + short(h.Checksum) + ", this plan " + short(s.Checksum()) + ")"
			}
			for _, a := range s.base().aliases {
				known[a] = true
			}
		}
		known[s.ID()] = true
		p.Steps = append(p.Steps, ss)
	}
	for id, h := range env.history {
		if !known[id] {
			p.Unknown = append(p.Unknown, h)
		}
	}
	sort.Slice(p.Unknown, func(i, j int) bool { return p.Unknown[i].StepID < p.Unknown[j].StepID })
	return p, nil
}

// notes are the plan's lines for a DBA about what the catalog showed.
func (m *migrator) notes() []string {
	var out []string
	u := m.users
	if m.eng == MySQL && len(u.NoInstantAdd) > 0 {
		out = append(out, fmt.Sprintf("ALGORITHM=INSTANT is impossible on %s (%s): the two columns are added in one online rebuild (add-columns)",
			u.Name, strings.Join(u.NoInstantAdd, ", ")))
	}
	if _, removed, ok := u.ddlSQLMode(); ok {
		out = append(out, fmt.Sprintf("sql_mode has %s and %s has zero-date defaults (%s): MySQL re-validates them on every ALTER TABLE of it and refuses (Error 1067, Invalid default value), "+
			"so apply's own session runs without %s (the SET SESSION sql_mode below); the application's sessions keep their mode",
			strings.Join(removed, ","), u.Name, strings.Join(u.ZeroDateDefaults, ", "), strings.Join(removed, ",")))
	}
	return out
}

func short(sum string) string {
	if len(sum) > 12 {
		return sum[:12]
	}
	return sum
}

func version() string { return buildinfo.Get().Version }

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
