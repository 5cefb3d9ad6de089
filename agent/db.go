package agent

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/passbridge/passbridge/agent/metrics"
	"github.com/passbridge/passbridge/config"
	"github.com/passbridge/passbridge/schema"
	"github.com/passbridge/passbridge/store"
)

// storeDatabase is the Database of a real deployment: the application
// database through the store package, passbridge's tables by migrate's
// names.
type storeDatabase struct {
	db    *store.DB
	names schema.Names
	q     func(string) string // quote a column name
}

// NewDatabase wraps the application database for the daemon.
func NewDatabase(db *store.DB, cfg *config.Config) Database {
	d := db.Dialect()
	return &storeDatabase{db: db, names: schema.NamesFor(cfg), q: d.Quote}
}

func (s *storeDatabase) Ping(ctx context.Context) error { return s.db.PingContext(ctx) }

func (s *storeDatabase) TryLock(ctx context.Context, name string) (func(), bool, error) {
	l, ok, err := s.db.TryLock(ctx, name)
	if err != nil || !ok {
		return nil, ok, err
	}
	return func() { _ = l.Unlock() }, true, nil
}

// runColumns are the sync_runs columns RunRecord reads, quoted (trigger
// and error are reserved words on some engines).
func (s *storeDatabase) runColumns() string {
	cols := ""
	for i, c := range []string{"id", "kind", "trigger", "dry_run", "status", "node", "started_at", "finished_at", "entries", "summary", "error"} {
		if i > 0 {
			cols += ", "
		}
		cols += s.q(c)
	}
	return cols
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

func (s *storeDatabase) ListRuns(ctx context.Context, before int64, limit int) ([]RunRecord, error) {
	q := "SELECT " + s.runColumns() + " FROM " + s.names.SyncRuns
	var args []any
	if before > 0 {
		q += " WHERE " + s.q("id") + " < ?"
		args = append(args, before)
	}
	q += fmt.Sprintf(" ORDER BY %s DESC LIMIT %d", s.q("id"), limit)
	var rows []runRow
	if err := store.Select(ctx, s.db, &rows, q, args...); err != nil {
		return nil, fmt.Errorf("list sync runs: %w", err)
	}
	out := make([]RunRecord, len(rows))
	for i, r := range rows {
		out[i] = r.record()
	}
	return out, nil
}

// LastRuns reads the newest successful run of each kind with one indexed
// query per kind (an aggregate would lose the column type on SQLite).
func (s *storeDatabase) LastRuns(ctx context.Context) (map[string]time.Time, *RunRecord, error) {
	last := map[string]time.Time{}
	for _, kind := range []string{KindFull, KindDelta} {
		var t []time.Time
		q := fmt.Sprintf("SELECT %s FROM %s WHERE %s = ? AND %s = ? AND %s = ? AND %s IS NOT NULL ORDER BY %s DESC LIMIT 1",
			s.q("finished_at"), s.names.SyncRuns, s.q("kind"), s.q("status"), s.q("dry_run"), s.q("finished_at"), s.q("finished_at"))
		if err := store.Select(ctx, s.db, &t, q, kind, "succeeded", false); err != nil {
			return nil, nil, fmt.Errorf("read last successful %s sync: %w", kind, err)
		}
		if len(t) == 1 {
			last[kind] = t[0].UTC()
		}
	}
	var rows []runRow
	q := fmt.Sprintf("SELECT %s FROM %s WHERE %s = ? ORDER BY %s DESC LIMIT 1", s.runColumns(), s.names.SyncRuns, s.q("dry_run"), s.q("id"))
	if err := store.Select(ctx, s.db, &rows, q, false); err != nil {
		return nil, nil, fmt.Errorf("read latest sync: %w", err)
	}
	if len(rows) == 0 {
		return last, nil, nil
	}
	r := rows[0].record()
	return last, &r, nil
}

func (s *storeDatabase) RunSince(ctx context.Context, since time.Time, succeededOnly bool, kinds ...string) (bool, error) {
	q := fmt.Sprintf("SELECT COUNT(*) FROM %s WHERE %s = ? AND %s >= ?", s.names.SyncRuns, s.q("dry_run"), s.q("started_at"))
	args := []any{false, since.UTC()}
	if succeededOnly {
		q += " AND " + s.q("status") + " = ?"
		args = append(args, "succeeded")
	}
	if len(kinds) > 0 {
		q += " AND " + s.q("kind") + " IN (?" + strings.Repeat(", ?", len(kinds)-1) + ")"
		for _, k := range kinds {
			args = append(args, k)
		}
	}
	var n int
	if err := store.Get(ctx, s.db, &n, q, args...); err != nil {
		return false, fmt.Errorf("read sync history: %w", err)
	}
	return n > 0, nil
}

func (s *storeDatabase) MarkAbandoned(ctx context.Context, node string) (int, error) {
	q := fmt.Sprintf("UPDATE %s SET %s = ?, %s = ?, %s = ? WHERE %s = ?", s.names.SyncRuns,
		s.q("status"), s.q("finished_at"), s.q("error"), s.q("status"))
	res, err := store.Exec(ctx, s.db, q, "failed", time.Now().UTC(),
		"abandoned: the process running this sync stopped before it finished (found by "+node+")", "running")
	if err != nil {
		return 0, fmt.Errorf("close abandoned sync runs: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, nil
	}
	return int(n), nil
}

func (s *storeDatabase) Snapshot(ctx context.Context) (metrics.Snapshot, error) {
	snap := metrics.Snapshot{Identities: map[string]int{}}
	var rows []struct {
		State string `db:"state"`
		N     int    `db:"n"`
	}
	q := fmt.Sprintf("SELECT %s AS state, COUNT(*) AS n FROM %s GROUP BY %s", s.q("state"), s.names.Identities, s.q("state"))
	if err := store.Select(ctx, s.db, &rows, q); err != nil {
		return snap, fmt.Errorf("count identities: %w", err)
	}
	for _, r := range rows {
		snap.Identities[r.State] = r.N
	}
	last, _, err := s.LastRuns(ctx)
	if err != nil {
		return snap, err
	}
	snap.LastSuccess = last
	return snap, nil
}
