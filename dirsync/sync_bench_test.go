package dirsync

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"github.com/passbridge/passbridge/internal/testdir"
	"github.com/passbridge/passbridge/internal/testsrv"
	"github.com/passbridge/passbridge/store"
)

// BenchmarkFullSync runs a whole sync in process, so that `go test
// -cpuprofile` sees all of it (bench/directory measures the real binary
// against ldapsearch):
//
//	PASSBRIDGE_TEST_REQUIRE_SERVERS=1 go test -run '^$' -bench FullSync -benchtime 1x \
//	    -cpuprofile /tmp/sync.prof ./dirsync/ && go tool pprof -top /tmp/sync.prof
//
// A slapd seeded with PASSBRIDGE_BENCH_SYNC_USERS users (100,000 by
// default), a users table with a row for each but every 20th, and for each
// database of PASSBRIDGE_BENCH_SYNC_DRIVERS (sqlite by default; a comma-
// separated list) the first full sync ("first") then one with nothing
// changed ("unchanged"), each measured once.
func BenchmarkFullSync(b *testing.B) {
	users := 100_000
	if v := os.Getenv("PASSBRIDGE_BENCH_SYNC_USERS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			b.Fatalf("PASSBRIDGE_BENCH_SYNC_USERS=%q: want a positive number", v)
		}
		users = n
	}
	drivers := []string{"sqlite"}
	if v := os.Getenv("PASSBRIDGE_BENCH_SYNC_DRIVERS"); v != "" {
		drivers = strings.Split(v, ",")
	}
	srv := testsrv.StartSlapd(b, testsrv.SlapdOptions{Users: users})
	for _, driver := range drivers {
		b.Run(driver, func(b *testing.B) {
			dc, db := database(b, driver)
			fillUsers(b, db, users)
			cfg := baseConfig(b, dc, "openldap")
			slapdConfig(srv, cfg, srv.PeopleDN)
			testdir.Migrate(b, db, cfg, nil)
			s, err := NewSyncer(cfg, db, slog.New(slog.DiscardHandler))
			if err != nil {
				b.Fatal(err)
			}
			for _, step := range []struct {
				name  string
				check func(*Summary) error
			}{
				{"first", func(sum *Summary) error {
					if sum.Changes[KindCreate] != users {
						return fmt.Errorf("changes %s, want %d creates", sum.Changes, users)
					}
					return nil
				}},
				{"unchanged", func(sum *Summary) error {
					if sum.Changes.String() != "no changes" {
						return fmt.Errorf("changes %s, want none", sum.Changes)
					}
					return nil
				}},
			} {
				b.Run(step.name, func(b *testing.B) {
					for b.Loop() {
						// What the run allocates and how many collections
						// it costs: the same for every run of one build,
						// unlike its time on a shared machine.
						var m0, m1 runtime.MemStats
						runtime.ReadMemStats(&m0)
						sum, err := s.Run(context.Background(), RunOptions{Full: true, Trigger: "bench"})
						runtime.ReadMemStats(&m1)
						if err != nil {
							b.Fatal(err)
						}
						if err := step.check(sum); err != nil {
							b.Fatal(err)
						}
						b.ReportMetric(float64(sum.LDAPMillis)/1000, "ldap-s")
						b.ReportMetric(float64(sum.DBMillis)/1000, "db-s")
						b.ReportMetric(float64(m1.TotalAlloc-m0.TotalAlloc)/(1<<20), "alloc-MiB")
						b.ReportMetric(float64(m1.NumGC-m0.NumGC), "gc")
					}
				})
			}
		})
	}
}

// fillUsers gives every seeded user but each 20th a row of the users
// table, each 11th without an email.
func fillUsers(b *testing.B, db *store.DB, users int) {
	ctx := context.Background()
	d := db.Dialect()
	q := d.Quote
	head := "INSERT INTO " + d.Table("", "users") + " (" + q("username") + ", " + q("email") + ", " + q("password_hash") + ", " + q("is_active") + ") VALUES "
	var rows []string
	var args []any
	flush := func() {
		if len(rows) == 0 {
			return
		}
		if _, err := db.ExecContext(ctx, db.Rebind(head+strings.Join(rows, ", ")), args...); err != nil {
			b.Fatal(err)
		}
		rows, args = rows[:0], args[:0]
	}
	for i := 1; i <= users; i++ {
		if i%20 == 0 {
			continue
		}
		uid := testsrv.SeedUID(i)
		var email any
		if i%11 != 0 {
			email = uid + "@corp.example"
		}
		rows = append(rows, "(?, ?, ?, ?)")
		args = append(args, uid, email, "$2y$10$legacy."+uid, true)
		if len(rows) == 500 {
			flush()
		}
	}
	flush()
}
