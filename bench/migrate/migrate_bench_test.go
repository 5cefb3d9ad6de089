// Package migratebench measures what `passbridge migrate apply` costs a live
// application: a 1,000,000-row users table on PostgreSQL and on MariaDB, a
// writer updating random rows in a tight loop during the migration, and the
// same change made naively, side by side in the same run. Run it with
//
//	make bench    (or: go test -run '^$' -bench . -benchtime 1x ./bench/migrate/)
//
// Figures and how to read them: bench/README.md.
package migratebench

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/passbridge/passbridge/config"
	"github.com/passbridge/passbridge/internal/testsrv"
	"github.com/passbridge/passbridge/migrate"
	"github.com/passbridge/passbridge/store"
)

func TestMain(m *testing.M) { os.Exit(testsrv.Run(m)) }

// rows is the size of the users table.
const rows = 1_000_000

// controlTime is how long the control run measures the writer alone.
const controlTime = 30 * time.Second

// result is one migration under load.
type result struct {
	engine, variant string
	total           time.Duration // the migration's wall time
	maxStall        time.Duration // the longest single UPDATE of the writer
	p99             time.Duration
	updates         int // updates the writer completed during the migration
	over200ms       int // updates that took longer than 200 ms
}

var (
	resultsMu sync.Mutex
	results   []result
)

// BenchmarkMigrateUnderLoad runs passbridge's apply and a naive migration
// of the same change on each engine, each on a fresh 1M-row table with a
// concurrent writer, and prints the figures side by side.
func BenchmarkMigrateUnderLoad(b *testing.B) {
	// "none" is the control: the same writer for the same time with no
	// migration, to tell the machine's own noise from the migration's.
	eachCase(b, runOnce, func(b *testing.B, r result) {
		b.ReportMetric(float64(r.maxStall.Microseconds())/1000, "max-stall-ms")
		b.ReportMetric(float64(r.p99.Microseconds())/1000, "p99-ms")
		b.ReportMetric(r.total.Seconds(), "apply-s")
		b.ReportMetric(float64(r.updates), "updates")
	}, &resultsMu, &results)
	printResults(b)
}

// eachCase runs a sub-benchmark per engine and migration (passbridge's
// apply, the naive change, none: the control), each iteration one run,
// reports its figures and keeps its result for the table.
func eachCase[R any](b *testing.B, run func(b *testing.B, eng, variant string) R, report func(b *testing.B, r R), mu *sync.Mutex, keep *[]R) {
	for _, eng := range []string{"postgres", "mysql"} {
		for _, variant := range []string{"passbridge", "naive", "none"} {
			b.Run(eng+"/"+variant, func(b *testing.B) {
				for i := 0; i < b.N; i++ {
					r := run(b, eng, variant)
					report(b, r)
					mu.Lock()
					*keep = append(*keep, r)
					mu.Unlock()
				}
			})
		}
	}
}

func printResults(b *testing.B) {
	resultsMu.Lock()
	defer resultsMu.Unlock()
	if len(results) == 0 {
		return
	}
	var sb strings.Builder
	w := tabwriter.NewWriter(&sb, 2, 8, 2, ' ', 0)
	fmt.Fprintf(w, "\nengine\tmigration\ttotal time\tlongest writer stall\twriter p99\tupdates during migration\tupdates over 200 ms\n")
	for _, r := range results {
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%d\t%d\n", r.engine, r.variant, r.total.Round(10*time.Millisecond),
			r.maxStall.Round(time.Millisecond), r.p99.Round(100*time.Microsecond), r.updates, r.over200ms)
	}
	w.Flush()
	fmt.Print(sb.String())
	b.Log(sb.String())
}

// openFresh makes a fresh database on the engine's test server (MariaDB
// tuned for a large table) and opens it with a pool of conns.
func openFresh(b *testing.B, eng string, conns int) (config.Database, *store.DB) {
	d := config.Database{Driver: eng, ConnectTimeout: config.Duration(time.Minute), MaxOpenConns: conns}
	switch eng {
	case "postgres":
		d.DSN = config.Secret(testsrv.Postgres(b).NewDatabase(b))
	default:
		m := testsrv.MariaDB(b)
		tuneMariaDB(b, m)
		d.DSN = config.Secret(m.NewDatabase(b))
	}
	db, err := store.Open(context.Background(), d, nil)
	if err != nil {
		b.Fatal(err)
	}
	return d, db
}

func runOnce(b *testing.B, eng, variant string) result {
	ctx := context.Background()
	d, db := openFresh(b, eng, 8)
	defer db.Close()
	b.StopTimer()
	start := time.Now()
	load(b, db, eng, rows)
	b.Logf("%s: loaded %d rows in %s", eng, rows, time.Since(start).Round(time.Millisecond))

	cfg := config.Default()
	cfg.Database = d
	cfg.UsersTable = config.UsersTable{Name: "users", Key: "id", Username: "username", Email: "email", Password: "password_hash", Active: "is_active"}

	// The writer: one application connection updating random rows as fast
	// as it can, each UPDATE timed.
	stop := make(chan struct{})
	var lat []sample
	var werr error
	started := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		lat, werr = writer(ctx, db, eng, rows, stop, started)
	}()
	<-started
	time.Sleep(time.Second) // the writer is in its loop before the migration starts

	b.StartTimer()
	t0 := time.Now()
	var merr error
	var rep *migrate.Report
	switch variant {
	case "passbridge":
		rep, merr = migrate.Apply(ctx, db, &cfg, migrate.Options{})
	case "naive":
		merr = naive(ctx, db, eng, &cfg)
	default:
		time.Sleep(controlTime)
	}
	total := time.Since(t0)
	b.StopTimer()
	close(stop)
	wg.Wait()
	if merr != nil {
		b.Fatalf("%s %s migration: %v", eng, variant, merr)
	}
	if werr != nil {
		b.Fatalf("writer: %v", werr)
	}
	if variant == "passbridge" {
		v, err := migrate.Verify(ctx, db, &cfg)
		if err != nil {
			b.Fatal(err)
		}
		if !v.OK {
			b.Fatalf("verify after the benchmark apply failed: %+v", v)
		}
	}
	r := result{engine: map[string]string{"postgres": "PostgreSQL 15", "mysql": "MariaDB 10.11"}[eng], variant: variant, total: total}
	if variant == "none" {
		r.variant = "none (control: writer alone)"
	}
	// The updates that overlapped the migration count.
	var during []time.Duration
	end := t0.Add(total)
	for _, s := range lat {
		if s.at.Before(end) && s.at.Add(s.d).After(t0) {
			during = append(during, s.d)
		}
	}
	slices.Sort(during)
	r.updates = len(during)
	if len(during) > 0 {
		r.maxStall = during[len(during)-1]
		r.p99 = during[len(during)*99/100]
	}
	for _, l := range during {
		if l > 200*time.Millisecond {
			r.over200ms++
		}
	}
	if rep != nil {
		// Where the time went, and which step each long update overlapped.
		at := t0
		type span struct {
			id       string
			from, to time.Time
		}
		var spans []span
		for _, s := range rep.Steps {
			d := time.Duration(s.DurationMS) * time.Millisecond
			spans = append(spans, span{s.ID, at, at.Add(d)})
			if d > 500*time.Millisecond {
				b.Logf("%s: step %s took %s", eng, s.ID, d)
			}
			at = at.Add(d)
		}
		for _, s := range lat {
			if s.d > 100*time.Millisecond && s.at.Before(end) && s.at.Add(s.d).After(t0) {
				step := "between steps"
				for _, sp := range spans {
					if s.at.Before(sp.to) && s.at.Add(s.d).After(sp.from) {
						step = sp.id
					}
				}
				b.Logf("%s: an update took %s at +%s, during %s", eng, s.d.Round(time.Millisecond), s.at.Sub(t0).Round(time.Millisecond), step)
			}
		}
	}
	return r
}

// tuneMariaDB gives the shared test server a buffer pool and redo log
// that fit a 1M-row table, as a production server would have (the test
// defaults are sized for small tests).
func tuneMariaDB(b *testing.B, m *testsrv.MDB) {
	admin, err := store.Open(context.Background(), config.Database{Driver: "mysql", DSN: config.Secret(m.DSN("mysql")), ConnectTimeout: config.Duration(time.Minute)}, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer admin.Close()
	for _, q := range []string{"SET GLOBAL innodb_buffer_pool_size = 1073741824", "SET GLOBAL innodb_log_file_size = 536870912"} {
		if _, err := admin.ExecContext(context.Background(), q); err != nil {
			b.Logf("%s: %v (continuing with the server's setting)", q, err)
		}
	}
	var pool, redo int64
	if err := admin.QueryRowContext(context.Background(), "SELECT @@innodb_buffer_pool_size, @@innodb_log_file_size").Scan(&pool, &redo); err == nil {
		b.Logf("MariaDB: innodb_buffer_pool_size %d MiB, innodb_log_file_size %d MiB", pool>>20, redo>>20)
	}
}

// load creates a users table like an application's with n rows, filled in
// the database itself (generate_series / the sequence engine), not row by
// row.
func load(b *testing.B, db *store.DB, eng string, rows int) {
	ctx := context.Background()
	var stmts []string
	if eng == "postgres" {
		stmts = []string{
			`CREATE TABLE users (
				id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
				username varchar(150) NOT NULL UNIQUE,
				email varchar(254) NOT NULL,
				password_hash varchar(128) NOT NULL,
				first_name varchar(150) NOT NULL DEFAULT '',
				last_name varchar(150) NOT NULL DEFAULT '',
				is_active boolean NOT NULL DEFAULT true,
				last_login timestamptz,
				date_joined timestamptz NOT NULL DEFAULT now())`,
			`INSERT INTO users (id, username, email, password_hash, first_name, last_name, date_joined)
				SELECT g, 'user' || g, 'User' || g || '@corp.example',
					'pbkdf2_sha256$870000$' || substr(md5(g::text), 1, 22) || '$' || encode(sha256(g::text::bytea), 'base64'),
					'First' || g, 'Last' || g, now() - (g || ' minutes')::interval
				FROM generate_series(1, ` + fmt.Sprint(rows) + `) g`,
			`SELECT setval(pg_get_serial_sequence('users', 'id'), ` + fmt.Sprint(rows) + `)`,
			`VACUUM ANALYZE users`,
		}
	} else {
		stmts = []string{
			"CREATE TABLE users (" +
				"id bigint unsigned NOT NULL AUTO_INCREMENT PRIMARY KEY, " +
				"username varchar(150) NOT NULL UNIQUE, " +
				"email varchar(254) NOT NULL, " +
				"password_hash varchar(128) NOT NULL, " +
				"first_name varchar(150) NOT NULL DEFAULT '', " +
				"last_name varchar(150) NOT NULL DEFAULT '', " +
				"is_active tinyint(1) NOT NULL DEFAULT 1, " +
				"last_login datetime(6) NULL, " +
				"date_joined datetime(6) NOT NULL" +
				") ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci",
			"INSERT INTO users (id, username, email, password_hash, first_name, last_name, date_joined) " +
				"SELECT seq, CONCAT('user', seq), CONCAT('User', seq, '@corp.example'), " +
				"CONCAT('$P$B', LEFT(SHA2(seq, 256), 30)), CONCAT('First', seq), CONCAT('Last', seq), NOW(6) - INTERVAL seq MINUTE " +
				"FROM seq_1_to_" + fmt.Sprint(rows),
			"ANALYZE TABLE users",
		}
	}
	for _, q := range stmts {
		if _, err := db.ExecContext(ctx, q); err != nil {
			b.Fatalf("load: %v\n%s", err, q)
		}
	}
}

// sample is one UPDATE: when it started and how long it took.
type sample struct {
	at time.Time
	d  time.Duration
}

// writer updates random rows of a table of n rows until stop.
func writer(ctx context.Context, db *store.DB, eng string, rows int, stop <-chan struct{}, started chan<- struct{}) ([]sample, error) {
	conn, err := db.Conn(ctx)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	q := "UPDATE users SET last_login = now() WHERE id = $1"
	if eng != "postgres" {
		q = "UPDATE users SET last_login = NOW(6) WHERE id = ?"
	}
	out := make([]sample, 0, 1<<20)
	close(started)
	for {
		select {
		case <-stop:
			return out, nil
		default:
		}
		id := 1 + rand.IntN(rows)
		t := time.Now()
		if _, err := conn.ExecContext(ctx, q, id); err != nil {
			return out, err
		}
		out = append(out, sample{t, time.Since(t)})
	}
}

// naive makes the same change the way it is often done: the users
// columns with a volatile default that rewrites the table (PostgreSQL) or
// ALGORITHM=COPY (MariaDB), indexes built with a plain CREATE INDEX /
// LOCK=SHARED, foreign keys validated while the lock is held. passbridge's
// own tables are created from passbridge's plan, minus the online clauses.
func naive(ctx context.Context, db *store.DB, eng string, cfg *config.Config) error {
	p, err := migrate.NewPlan(ctx, db, cfg)
	if err != nil {
		return err
	}
	var stmts []string
	if eng == "postgres" {
		stmts = append(stmts, `ALTER TABLE users ADD COLUMN passbridge_passkey_state varchar(16),
			ADD COLUMN passbridge_password_policy varchar(32),
			ADD COLUMN passbridge_migrated_at timestamptz DEFAULT clock_timestamp()`,
			`CREATE INDEX passbridge_user_email ON users (lower(email))`,
			`CREATE INDEX passbridge_user_username ON users (lower(username))`)
	} else {
		stmts = append(stmts, "ALTER TABLE users ADD COLUMN passbridge_passkey_state varchar(16), ADD COLUMN passbridge_password_policy varchar(32), ALGORITHM=COPY",
			"ALTER TABLE users ADD INDEX passbridge_user_email (email), LOCK=SHARED",
			"ALTER TABLE users ADD INDEX passbridge_user_username (username), LOCK=SHARED")
	}
	for _, s := range p.Steps {
		if s.Bookkeeping || s.Kind == "add-column" || s.Kind == "validate-foreign-key" || (s.Kind == "create-index" && strings.Contains(s.Object, "_user_")) {
			continue
		}
		for _, q := range s.SQL {
			q = strings.Replace(q, " CONCURRENTLY", "", 1)
			q = strings.TrimSuffix(q, " NOT VALID")
			q = strings.Replace(q, ", ALGORITHM=INPLACE, LOCK=NONE", "", 1)
			stmts = append(stmts, q)
		}
	}
	for _, q := range stmts {
		if _, err := db.ExecContext(ctx, q); err != nil {
			return fmt.Errorf("%s: %w", q, err)
		}
	}
	return nil
}
