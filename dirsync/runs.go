package dirsync

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/passbridge/passbridge/schema"
	"github.com/passbridge/passbridge/store"
)

// The bookkeeping of sync runs, in one place for every caller (the CLI, the
// daemon's schedules and admin API, the IT console, a manual link): the one
// lock a writing run holds, the one rule that closes runs a dead process
// left running, and the run history as the daemon and the console read it.

// LockName is the database lock every writing run holds for its whole
// length, whoever started it (`passbridge sync` on any host, a schedule
// tick, the admin API, the console), and that a manual link waits for: two
// writing runs never interleave, and no link is made by hand between a
// run's plan and its writes. Dry runs write nothing but their own history
// row and take no lock. (The name is the one the engine always used, so
// that a binary of the previous version is still excluded.)
const LockName = "passbridge-directory-sync"

// Run modes (sync_runs.kind).
const (
	ModeFull  = "full"
	ModeDelta = "delta"
)

// ErrBusy means a sync is already running, in this process or in another
// one (the database lock is held): nothing was started.
var ErrBusy = errors.New("a sync is already running")

// BusyError is the ErrBusy of a run that did not start, saying where the
// other run is.
type BusyError struct {
	// OtherReplica is set when the database lock is held by another
	// process (another replica, or `passbridge sync` by hand); otherwise
	// Running is the sync in flight in this process.
	OtherReplica bool
	Running      *Running
	// Database names the database whose lock is held, when known.
	Database string
}

func (e *BusyError) Error() string {
	if e.OtherReplica {
		msg := ErrBusy.Error() + " on another replica or process (the database sync lock is held"
		if e.Database != "" {
			msg += " on " + e.Database
		}
		return msg + "): try again when it ends"
	}
	return fmt.Sprintf("%s in this process (%s, started by %s at %s)", ErrBusy, e.Running.Kind, e.Running.Trigger, e.Running.Started.Format(time.RFC3339))
}

// Is makes errors.Is(err, ErrBusy) true.
func (e *BusyError) Is(target error) bool { return target == ErrBusy }

// Running describes the sync in flight in a process.
type Running struct {
	Kind    string    `json:"kind"`
	DryRun  bool      `json:"dry_run"`
	Trigger string    `json:"trigger"`
	Started time.Time `json:"started_at"`
}

// Lock takes LockName on db without waiting. When another run holds it,
// the error is a *BusyError (errors.Is ErrBusy).
func Lock(ctx context.Context, db *store.DB) (*store.Lock, error) {
	lock, ok, err := db.TryLock(ctx, LockName)
	if err != nil {
		return nil, fmt.Errorf("take the sync lock: %w", err)
	}
	if !ok {
		return nil, &BusyError{OtherReplica: true, Database: db.Describe()}
	}
	return lock, nil
}

// abandonedReason is what a run left running by a dead process is closed
// with.
const abandonedReason = "abandoned: the process running this sync stopped before it finished (interrupted; closed by the next run, on %s)"

// closeAbandoned is the one rule for runs left "running" by a process that
// died: the next writing run, holding LockName (so that no writing run can
// be live anywhere), marks every writing run still "running" failed. Dry
// runs hold no lock and may be live in another process: they are left
// alone.
func closeAbandoned(ctx context.Context, q store.Querier, n schema.Names, now time.Time, node string) (int64, error) {
	c := n.Column
	res, err := store.Exec(ctx, q, "UPDATE "+n.SyncRuns+" SET "+c("status")+" = ?, "+c("finished_at")+" = ?, "+c("error")+" = ? WHERE "+
		c("status")+" = ? AND "+c("dry_run")+" = ?",
		StatusFailed, now, fmt.Sprintf(abandonedReason, node), StatusRunning, false)
	if err != nil {
		return 0, fmt.Errorf("close abandoned sync runs in %s: %w", n.SyncRuns, err)
	}
	closed, err := res.RowsAffected()
	if err != nil {
		return 0, nil
	}
	return closed, nil
}

// RunRecord is one row of the sync history (sync_runs).
type RunRecord struct {
	ID         int64           `json:"id"`
	Kind       string          `json:"kind"`
	Trigger    string          `json:"trigger"`
	DryRun     bool            `json:"dry_run"`
	Status     string          `json:"status"`
	Node       string          `json:"node,omitempty"`
	StartedAt  time.Time       `json:"started_at"`
	FinishedAt *time.Time      `json:"finished_at,omitempty"`
	Entries    int64           `json:"entries"`
	Summary    json.RawMessage `json:"summary,omitempty"`
	Error      string          `json:"error,omitempty"`
}

// SyncResponse is how a run started by a person ended, as the admin API
// (POST /api/v1/sync) and the console report it.
type SyncResponse struct {
	Status  string `json:"status"` // succeeded | failed | refused | aborted
	Summary any    `json:"summary,omitempty"`
	Error   string `json:"error,omitempty"`
}

// ScheduleEntry is one schedule with its next run times.
type ScheduleEntry struct {
	Kind      string     `json:"kind"`
	ConfigKey string     `json:"config_key"`
	Spec      string     `json:"spec"`
	Enabled   bool       `json:"enabled"`
	Next      *time.Time `json:"next,omitempty"`
	Following *time.Time `json:"following,omitempty"`
	// RetryAt is set while a failed scheduled run waits for its retry.
	RetryAt      *time.Time `json:"retry_at,omitempty"`
	RetryAttempt int        `json:"retry_attempt,omitempty"`
}

// Schedule is the daemon's schedules as GET /api/v1/schedule and the
// console show them.
type Schedule struct {
	Now       time.Time       `json:"now"`
	Node      string          `json:"node"`
	Schedules []ScheduleEntry `json:"schedules"`
	Running   *Running        `json:"sync_running,omitempty"`
}

// runColumns are the sync_runs columns RunRecord reads, quoted (trigger
// and error are reserved words on some engines).
func runColumns(n schema.Names) string {
	cols := []string{"id", "kind", "trigger", "dry_run", "status", "node", "started_at", "finished_at", "entries", "summary", "error"}
	for i, c := range cols {
		cols[i] = n.Column(c)
	}
	return strings.Join(cols, ", ")
}

type runRow struct {
	ID         int64          `db:"id"`
	Kind       string         `db:"kind"`
	Trigger    string         `db:"trigger"`
	DryRun     bool           `db:"dry_run"`
	Status     string         `db:"status"`
	Node       sql.NullString `db:"node"`
	StartedAt  time.Time      `db:"started_at"`
	FinishedAt sql.NullTime   `db:"finished_at"`
	Entries    int64          `db:"entries"`
	Summary    sql.NullString `db:"summary"`
	Error      sql.NullString `db:"error"`
}

func (r runRow) record() RunRecord {
	out := RunRecord{ID: r.ID, Kind: r.Kind, Trigger: r.Trigger, DryRun: r.DryRun, Status: r.Status,
		Node: r.Node.String, StartedAt: r.StartedAt.UTC(), Entries: r.Entries, Error: r.Error.String}
	if r.FinishedAt.Valid {
		t := r.FinishedAt.Time.UTC()
		out.FinishedAt = &t
	}
	if r.Summary.Valid && json.Valid([]byte(r.Summary.String)) {
		out.Summary = json.RawMessage(r.Summary.String)
	}
	return out
}

// ListRuns returns up to limit runs older than run id before (0: the
// newest), newest first.
func ListRuns(ctx context.Context, q store.Querier, n schema.Names, before int64, limit int) ([]RunRecord, error) {
	query := "SELECT " + runColumns(n) + " FROM " + n.SyncRuns
	var args []any
	if before > 0 {
		query += " WHERE " + n.Column("id") + " < ?"
		args = append(args, before)
	}
	query += fmt.Sprintf(" ORDER BY %s DESC LIMIT %d", n.Column("id"), limit)
	var rows []runRow
	if err := store.Select(ctx, q, &rows, query, args...); err != nil {
		return nil, fmt.Errorf("list sync runs: %w", err)
	}
	out := make([]RunRecord, len(rows))
	for i, r := range rows {
		out[i] = r.record()
	}
	return out, nil
}

// LastRuns reads the finish time of the newest successful writing run of
// each mode, with one indexed query per mode (an aggregate would lose the
// column type on SQLite), and the newest writing run whatever its status.
func LastRuns(ctx context.Context, q store.Querier, n schema.Names) (map[string]time.Time, *RunRecord, error) {
	c := n.Column
	last := map[string]time.Time{}
	for _, kind := range []string{ModeFull, ModeDelta} {
		var t []time.Time
		query := fmt.Sprintf("SELECT %s FROM %s WHERE %s = ? AND %s = ? AND %s = ? AND %s IS NOT NULL ORDER BY %s DESC LIMIT 1",
			c("finished_at"), n.SyncRuns, c("kind"), c("status"), c("dry_run"), c("finished_at"), c("finished_at"))
		if err := store.Select(ctx, q, &t, query, kind, StatusSucceeded, false); err != nil {
			return nil, nil, fmt.Errorf("read last successful %s sync: %w", kind, err)
		}
		if len(t) == 1 {
			last[kind] = t[0].UTC()
		}
	}
	var rows []runRow
	query := fmt.Sprintf("SELECT %s FROM %s WHERE %s = ? ORDER BY %s DESC LIMIT 1", runColumns(n), n.SyncRuns, c("dry_run"), c("id"))
	if err := store.Select(ctx, q, &rows, query, false); err != nil {
		return nil, nil, fmt.Errorf("read latest sync: %w", err)
	}
	if len(rows) == 0 {
		return last, nil, nil
	}
	r := rows[0].record()
	return last, &r, nil
}

// RunSince reports whether a writing run of one of the modes started at or
// after since (succeededOnly: that also succeeded).
func RunSince(ctx context.Context, q store.Querier, n schema.Names, since time.Time, succeededOnly bool, modes ...string) (bool, error) {
	c := n.Column
	query := fmt.Sprintf("SELECT COUNT(*) FROM %s WHERE %s = ? AND %s >= ?", n.SyncRuns, c("dry_run"), c("started_at"))
	args := []any{false, since.UTC()}
	if succeededOnly {
		query += " AND " + c("status") + " = ?"
		args = append(args, StatusSucceeded)
	}
	if len(modes) > 0 {
		query += " AND " + c("kind") + " IN (" + placeholders(len(modes)) + ")"
		for _, k := range modes {
			args = append(args, k)
		}
	}
	var count int
	if err := store.Get(ctx, q, &count, query, args...); err != nil {
		return false, fmt.Errorf("read sync history: %w", err)
	}
	return count > 0, nil
}
