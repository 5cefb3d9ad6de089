package agent

import (
	"context"
	"fmt"
	"time"

	"github.com/passbridge/passbridge/agent/metrics"
	"github.com/passbridge/passbridge/audit"
	"github.com/passbridge/passbridge/config"
	"github.com/passbridge/passbridge/dirsync"
	"github.com/passbridge/passbridge/ratelimit"
	"github.com/passbridge/passbridge/schema"
	"github.com/passbridge/passbridge/store"
)

// storeDatabase is the Database of a real deployment: the application
// database through the store package, passbridge's tables by migrate's
// names.
type storeDatabase struct {
	db     *store.DB
	names  schema.Names
	q      func(string) string // quote a column name
	limits *ratelimit.Limiter
}

// NewDatabase wraps the application database for the daemon.
func NewDatabase(db *store.DB, cfg *config.Config) Database {
	d := db.Dialect()
	n := schema.NamesFor(cfg)
	return &storeDatabase{db: db, names: n, q: d.Quote, limits: ratelimit.New(db, n)}
}

func (s *storeDatabase) RateLimits() *ratelimit.Limiter { return s.limits }

func (s *storeDatabase) Audit(ctx context.Context, e audit.Event) error {
	return audit.Record(ctx, s.db, s.names, e)
}

func (s *storeDatabase) Ping(ctx context.Context) error { return s.db.PingContext(ctx) }

func (s *storeDatabase) TryLock(ctx context.Context, name string) (func(), bool, error) {
	l, ok, err := s.db.TryLock(ctx, name)
	if err != nil || !ok {
		return nil, ok, err
	}
	return func() { _ = l.Unlock() }, true, nil
}

// The run history is dirsync's (the one reader of sync_runs).

func (s *storeDatabase) ListRuns(ctx context.Context, before int64, limit int) ([]dirsync.RunRecord, error) {
	return dirsync.ListRuns(ctx, s.db, s.names, before, limit)
}

func (s *storeDatabase) LastRuns(ctx context.Context) (map[string]time.Time, *dirsync.RunRecord, error) {
	return dirsync.LastRuns(ctx, s.db, s.names)
}

func (s *storeDatabase) RunSince(ctx context.Context, since time.Time, succeededOnly bool, kinds ...string) (bool, error) {
	return dirsync.RunSince(ctx, s.db, s.names, since, succeededOnly, kinds...)
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
