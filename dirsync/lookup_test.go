package dirsync

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/passbridge/passbridge/internal/testdir"
	"github.com/passbridge/passbridge/schema"
)

// TestIdentityLookupProbesTheIndex: the diff looks every page of the
// directory up by directory ID. On PostgreSQL an IN list on an identities
// table that has never been ANALYZEd (a fresh install after its first full
// sync: autovacuum has not come by yet) was estimated at most of the table
// and run as a sequential scan, once per page of 1,000: a full sync that
// grows with the square of the directory (57 ms a page at 100,000 users).
// The lookup must probe the directory_id index whatever the statistics.
func TestIdentityLookupProbesTheIndex(t *testing.T) {
	dc, db := database(t, "postgres")
	cfg := baseConfig(t, dc, "openldap")
	testdir.Migrate(t, db, cfg, nil)
	n := schema.NamesFor(cfg)
	ctx := context.Background()
	const stored = 20_000
	now := time.Now().UTC()
	id := func(i int) string { return fmt.Sprintf("%08x-0000-4000-8000-%012x", i, i) }
	for start := 1; start <= stored; start += 1000 {
		var rows []string
		var args []any
		for i := start; i < start+1000; i++ {
			rows = append(rows, "(?, ?, ?, ?, ?, ?)")
			args = append(args, id(i), fmt.Sprintf("uid=u%d,ou=people,dc=corp,dc=example", i), fmt.Sprintf("u%d", i), now, now, now)
		}
		q := "INSERT INTO " + n.Identities + " (directory_id, dn, username, first_seen_at, last_seen_at, updated_at) VALUES " + strings.Join(rows, ", ")
		if _, err := db.ExecContext(ctx, db.Rebind(q), args...); err != nil {
			t.Fatal(err)
		}
	}
	s := &Syncer{cfg: cfg, db: db, n: n, log: slog.New(slog.DiscardHandler)}
	ids := make([]string, 1000)
	for j := range ids {
		ids[j] = id(5000 + j*3)
	}
	q, args := dbState{s}.byDirectoryID(ids)
	var plan []string
	if err := db.SelectContext(ctx, &plan, db.Rebind("EXPLAIN "+q), args...); err != nil {
		t.Fatal(err)
	}
	for i, l := range plan {
		plan[i] = l[:min(len(l), 160)] // the IN list's values are of no interest
	}
	text := strings.Join(plan, "\n")
	if strings.Contains(text, "Seq Scan on "+strings.Trim(n.Identities, `"`)) || !strings.Contains(text, "Index") {
		t.Fatalf("the lookup of 1,000 directory IDs among %d unanalyzed identities does not probe the index:\n%s", stored, text)
	}
	got, err := dbState{s}.identities(ctx, append(ids, id(stored+5)))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(ids) {
		t.Fatalf("found %d of %d stored identities", len(got), len(ids))
	}
	for _, want := range ids {
		if r := got[want]; r == nil || r.DirectoryID != want || r.State != schema.StateActive {
			t.Fatalf("identity %s: %+v", want, r)
		}
	}
}
