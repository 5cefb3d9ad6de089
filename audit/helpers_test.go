package audit

import (
	"context"
	"os"
	"testing"

	"github.com/passbridge/passbridge/config"
	"github.com/passbridge/passbridge/internal/testdb"
	"github.com/passbridge/passbridge/internal/testsrv"
	"github.com/passbridge/passbridge/schema"
	"github.com/passbridge/passbridge/store"
)

func TestMain(m *testing.M) { os.Exit(testsrv.Run(m)) }

var drivers = []string{"sqlite", "postgres", "mysql"}

// env is a database with passbridge's tables, for one test.
type env struct {
	cfg *config.Config
	db  *store.DB
	n   schema.Names
}

// newEnv opens a fresh database of the driver with a tiny application users
// table and passbridge's tables.
func newEnv(t *testing.T, driver string) *env {
	t.Helper()
	db, cfg := testdb.Open(t, driver)
	return &env{cfg: cfg, db: db, n: schema.NamesFor(cfg)}
}

// record writes events and returns their ids, in order.
func (e *env) record(t *testing.T, evs ...Event) []int64 {
	t.Helper()
	ctx := context.Background()
	var ids []int64
	for _, ev := range evs {
		if err := Record(ctx, e.db, e.n, ev); err != nil {
			t.Fatalf("record %+v: %v", ev, err)
		}
		var id int64
		if err := store.Get(ctx, e.db, &id, "SELECT MAX("+e.n.Column("id")+") FROM "+e.n.Audit); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	return ids
}

// query returns the events f selects.
func (e *env) query(t *testing.T, f Filter) []Event {
	t.Helper()
	var out []Event
	if err := Query(context.Background(), e.db, e.cfg, f, func(ev Event) error { out = append(out, ev); return nil }); err != nil {
		t.Fatalf("query %+v: %v", f, err)
	}
	return out
}

func names(evs []Event) []string {
	out := make([]string, len(evs))
	for i, e := range evs {
		out[i] = e.Event
	}
	return out
}

func ptr[T any](v T) *T { return &v }

// forEachDriver runs fn as a subtest on each database.
func forEachDriver(t *testing.T, fn func(t *testing.T, e *env)) {
	for _, d := range drivers {
		t.Run(d, func(t *testing.T) { fn(t, newEnv(t, d)) })
	}
}
