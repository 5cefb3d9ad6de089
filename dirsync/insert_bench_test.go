package dirsync

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/jmoiron/sqlx"

	"github.com/passbridge/passbridge/internal/testdir"
	"github.com/passbridge/passbridge/internal/testsrv"
	"github.com/passbridge/passbridge/schema"
	"github.com/passbridge/passbridge/store"
)

// BenchmarkInsertIdentities compares ways to write the creates of a first
// sync: 100,000 identities (each linked to a users row, as 95 % are) in
// transactions of 1,000, on each database of PASSBRIDGE_BENCH_SYNC_DRIVERS
// (all three by default). On PostgreSQL, "staged" measures what a sync
// that stages its creates while it reads would pay: the COPYs into an
// unindexed table (stage-rows/s), then one INSERT ... SELECT into the
// identities (merge-rows/s, the part left after the read).
//
//	PASSBRIDGE_TEST_REQUIRE_SERVERS=1 go test -run '^$' -bench InsertIdentities -benchtime 1x ./dirsync/
func BenchmarkInsertIdentities(b *testing.B) {
	const rows = 100_000
	drivers := []string{"sqlite", "postgres", "mysql"}
	if v := os.Getenv("PASSBRIDGE_BENCH_SYNC_DRIVERS"); v != "" {
		drivers = strings.Split(v, ",")
	}
	for _, driver := range drivers {
		ways := []string{"values", "prepared"}
		if driver == "postgres" {
			ways = append(ways, "unnest", "copy", "staged")
		}
		for _, way := range ways {
			b.Run(driver+"/"+way, func(b *testing.B) {
				dc, db := database(b, driver)
				fillUsers(b, db, rows)
				cfg := baseConfig(b, dc, "openldap")
				testdir.Migrate(b, db, cfg, nil)
				n := schema.NamesFor(cfg)
				for b.Loop() {
					t0 := time.Now()
					insertIdentities(b, db, n, way, rows)
					b.ReportMetric(float64(rows)/time.Since(t0).Seconds(), "rows/s")
				}
			})
		}
	}
}

var identityCols = []string{"directory_id", "dn", "username", "email", "display_name", "department", "state", "state_reason",
	"state_changed_at", "user_key", "link_state", "link_detail", "seen_run_id", "first_seen_at", "last_seen_at", "updated_at"}

func insertIdentities(b *testing.B, db *store.DB, n schema.Names, way string, rows int) {
	ctx := context.Background()
	q := n.Dialect.Quote
	quoted := make([]string, len(identityCols))
	for i, c := range identityCols {
		quoted[i] = q(c)
	}
	head := "INSERT INTO " + n.Identities + " (" + strings.Join(quoted, ", ") + ") "
	now := time.Now().UTC()
	// The users table has rows-rows/20 rows (keys 1 and up): the other
	// identities stay unmatched.
	linked := rows - rows/20
	row := func(i int) []any {
		uid := testsrv.SeedUID(i)
		var key any
		state := schema.LinkUnmatched
		if i <= linked {
			key, state = int64(i), schema.LinkLinked
		}
		return []any{fmt.Sprintf("%08x-0000-4000-8000-%012x", i, i), "uid=" + uid + ",ou=people,dc=corp,dc=example", uid, uid + "@corp.example",
			"Seed User " + uid, nil, schema.StateActive, nil, nil, key, state, "email " + uid + "@corp.example matches users row", int64(1), now, now, now}
	}
	i := 0
	next := func() int { i++; return i }
	if way == "staged" {
		// COPY into an unindexed table of the same columns (as a sync
		// could while it reads), then one INSERT ... SELECT into the
		// identities (what would be left after the read): each timed.
		stage := `"pb_stage"`
		mustExec := func(q string) {
			if _, err := db.ExecContext(ctx, q); err != nil {
				b.Fatal(err)
			}
		}
		mustExec("DROP TABLE IF EXISTS " + stage)
		mustExec("CREATE UNLOGGED TABLE " + stage + " AS SELECT " + strings.Join(quoted, ", ") + " FROM " + n.Identities + " WHERE false")
		t0 := time.Now()
		for done := 0; done < rows; done += 1000 {
			var src [][]any
			for range 1000 {
				src = append(src, row(next()))
			}
			conn, err := db.Conn(ctx)
			if err != nil {
				b.Fatal(err)
			}
			err = conn.Raw(func(dc any) error {
				_, err := dc.(*stdlib.Conn).Conn().CopyFrom(ctx, pgx.Identifier{"pb_stage"}, identityCols, pgx.CopyFromRows(src))
				return err
			})
			conn.Close()
			if err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(rows)/time.Since(t0).Seconds(), "stage-rows/s")
		t1 := time.Now()
		mustExec(head + "SELECT " + strings.Join(quoted, ", ") + " FROM " + stage)
		b.ReportMetric(float64(rows)/time.Since(t1).Seconds(), "merge-rows/s")
		mustExec("DROP TABLE " + stage)
		return
	}
	if way == "copy" {
		for done := 0; done < rows; done += 1000 {
			conn, err := db.Conn(ctx)
			if err != nil {
				b.Fatal(err)
			}
			tx, err := conn.BeginTx(ctx, nil)
			if err != nil {
				b.Fatal(err)
			}
			var src [][]any
			for range 1000 {
				src = append(src, row(next()))
			}
			err = conn.Raw(func(dc any) error {
				_, err := dc.(*stdlib.Conn).Conn().CopyFrom(ctx, pgx.Identifier{strings.Trim(n.Identities, `"`)}, identityCols, pgx.CopyFromRows(src))
				return err
			})
			if err != nil {
				b.Fatal(err)
			}
			if err := tx.Commit(); err != nil {
				b.Fatal(err)
			}
			conn.Close()
		}
		return
	}
	for done := 0; done < rows; done += 1000 {
		err := db.InTx(ctx, func(tx *sqlx.Tx) error {
			switch way {
			case "values":
				var sb strings.Builder
				sb.WriteString(head + "VALUES ")
				var args []any
				for j := range 1000 {
					if j > 0 {
						sb.WriteString(", ")
					}
					sb.WriteString("(" + placeholders(len(identityCols)) + ")")
					args = append(args, row(next())...)
				}
				_, err := tx.ExecContext(ctx, tx.Rebind(sb.String()), args...)
				return err
			case "prepared":
				st, err := tx.PreparexContext(ctx, tx.Rebind(head+"VALUES ("+placeholders(len(identityCols))+")"))
				if err != nil {
					return err
				}
				defer st.Close()
				for range 1000 {
					if _, err := st.ExecContext(ctx, row(next())...); err != nil {
						return err
					}
				}
				return nil
			default: // unnest
				cols := make([][]*string, len(identityCols))
				for range 1000 {
					for c, v := range row(next()) {
						var s *string
						switch v := v.(type) {
						case string:
							s = &v
						case int64:
							t := fmt.Sprint(v)
							s = &t
						case time.Time:
							t := v.Format(time.RFC3339Nano)
							s = &t
						}
						cols[c] = append(cols[c], s)
					}
				}
				sel := make([]string, len(identityCols))
				args := make([]any, len(identityCols))
				types := map[string]string{"state_changed_at": "timestamptz", "first_seen_at": "timestamptz", "last_seen_at": "timestamptz",
					"updated_at": "timestamptz", "user_key": "bigint", "seen_run_id": "bigint"}
				for c, name := range identityCols {
					sel[c] = "CAST(u.c" + fmt.Sprint(c) + " AS " + cmpOr(types[name], "text") + ")"
					args[c] = cols[c]
				}
				var from []string
				var as []string
				for c := range identityCols {
					from = append(from, "CAST(? AS text[])")
					as = append(as, "c"+fmt.Sprint(c))
				}
				_, err := tx.ExecContext(ctx, tx.Rebind(head+"SELECT "+strings.Join(sel, ", ")+" FROM unnest("+strings.Join(from, ", ")+") AS u("+strings.Join(as, ", ")+")"), args...)
				return err
			}
		})
		if err != nil {
			b.Fatal(err)
		}
	}
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}
