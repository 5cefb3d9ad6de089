package migratebench

import (
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/passbridge/passbridge/config"
	"github.com/passbridge/passbridge/migrate"
	"github.com/passbridge/passbridge/store"
)

// The case of a DDL statement stuck behind a long transaction: an
// application's reader keeps a transaction open on the users table for
// readerTime (a report, a stuck session), four writers update random rows,
// and the migration's first change to the users table has to wait for the
// reader. A DDL statement that waits for its lock makes every writer queue
// behind it, so the longest writer stall is bounded by how long passbridge
// lets its statement wait (migrate.lock_timeout) before it gives up and
// retries.
const (
	readerRows    = 200_000
	readerTime    = 6 * time.Second
	readerWriters = 4
)

// readerResult is one run behind the reader.
type readerResult struct {
	engine, variant string
	lockTimeout     time.Duration
	retries         int
	total           time.Duration // from the reader's BEGIN to the end of the migration
	maxStall        time.Duration // the longest single UPDATE of any writer
	over            int           // UPDATEs longer than lock_timeout + 10%
	blocked         time.Duration // wall time during which a writer was in an UPDATE longer than 100 ms
	updates         int
	attempts        int // attempts of the step that waited the most
	// waits counts apply's lock waits that timed out; behindWait is the
	// longest UPDATE that began during one of them: the stall a waiting
	// DDL statement caused, told apart from the machine's own stalls (see
	// the control) in the pauses between attempts and during other steps.
	waits      int
	behindWait time.Duration
}

var (
	readerMu      sync.Mutex
	readerResults []readerResult
)

// BenchmarkMigrateBehindReader runs passbridge's apply (with the default
// lock_timeout and retries) and a naive ALTER TABLE behind an open reader
// transaction, with four writers, on PostgreSQL and MariaDB.
//
//	go test -run '^$' -bench BenchmarkMigrateBehindReader -benchtime 1x ./bench/migrate/
func BenchmarkMigrateBehindReader(b *testing.B) {
	// "none" is the control: the reader and the writers alone, to tell
	// the machine's own stalls from the migration's.
	eachCase(b, behindReader, func(b *testing.B, r readerResult) {
		b.ReportMetric(float64(r.maxStall.Microseconds())/1000, "max-stall-ms")
		b.ReportMetric(float64(r.blocked.Microseconds())/1000, "blocked-ms")
		b.ReportMetric(float64(r.over), "over-timeout")
		b.ReportMetric(float64(r.behindWait.Microseconds())/1000, "behind-wait-ms")
	}, &readerMu, &readerResults)
	readerMu.Lock()
	defer readerMu.Unlock()
	if len(readerResults) == 0 {
		return
	}
	var sb strings.Builder
	w := tabwriter.NewWriter(&sb, 2, 8, 2, ' ', 0)
	fmt.Fprintf(w, "\nengine\tmigration\tlock_timeout, retries\tlongest writer stall\tlongest stall behind a lock wait (waits)\tupdates over lock_timeout+10%%\twall time with a writer stalled > 100 ms\tupdates\tattempts\ttotal\n")
	for _, r := range readerResults {
		lt, bw := "-", "-"
		if r.variant == "passbridge" {
			lt = fmt.Sprintf("%s, %d", r.lockTimeout, r.retries)
			bw = fmt.Sprintf("%s (%d)", r.behindWait.Round(time.Millisecond), r.waits)
		}
		if r.variant == "none" {
			r.variant = "none (control: reader and writers alone)"
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%d\t%s\t%d\t%d\t%s\n", r.engine, r.variant, lt, r.maxStall.Round(time.Millisecond), bw,
			r.over, r.blocked.Round(time.Millisecond), r.updates, r.attempts, r.total.Round(10*time.Millisecond))
	}
	w.Flush()
	fmt.Print(sb.String())
	b.Log(sb.String())
}

func behindReader(b *testing.B, eng, variant string) readerResult {
	ctx := context.Background()
	d, db := openFresh(b, eng, 16)
	defer db.Close()
	b.StopTimer()
	load(b, db, eng, readerRows)

	// The defaults, as a DBA who sets nothing gets them.
	cfg := config.Default()
	cfg.Database = d
	cfg.UsersTable = config.UsersTable{Name: "users", Key: "id", Username: "username", Email: "email", Password: "password_hash", Active: "is_active"}
	lockTimeout := cfg.Migrate.LockTimeout.D()

	stop := make(chan struct{})
	lats := make([][]sample, readerWriters)
	errs := make([]error, readerWriters)
	var wg sync.WaitGroup
	for i := range readerWriters {
		started := make(chan struct{})
		wg.Add(1)
		go func() {
			defer wg.Done()
			lats[i], errs[i] = writer(ctx, db, eng, readerRows, stop, started)
		}()
		<-started
	}
	time.Sleep(time.Second)

	// The reader: a transaction that has read the users table and stays
	// open for readerTime. passbridge's run opens it once the baseline is
	// taken (from the progress line, written before the next step
	// starts), so that the first change to the users table meets it.
	rd := &reader{db: db}
	defer rd.close()
	out := &onLine{}
	b.StartTimer()
	var merr error
	var rep *migrate.Report
	switch variant {
	case "passbridge":
		out.match, out.fn = "take-baseline", func() { rd.open(b) }
		rep, merr = migrate.Apply(ctx, db, &cfg, migrate.Options{Out: out})
		if !out.fired {
			b.Fatalf("the baseline's progress line never came:\n%s", out.buf.String())
		}
	case "none":
		rd.open(b)
		rd.wait()
	default:
		rd.open(b)
		q := "ALTER TABLE users ADD COLUMN passbridge_passkey_state varchar(16)"
		if eng == "mysql" {
			q += ", ALGORITHM=INSTANT"
		}
		_, merr = db.ExecContext(ctx, q)
	}
	end := time.Now()
	b.StopTimer()
	rd.wait()
	close(stop)
	wg.Wait()
	if merr != nil {
		b.Fatalf("%s %s migration: %v", eng, variant, merr)
	}
	for _, err := range errs {
		if err != nil {
			b.Fatalf("writer: %v", err)
		}
	}

	r := readerResult{engine: map[string]string{"postgres": "PostgreSQL 15", "mysql": "MariaDB 10.11"}[eng], variant: variant,
		lockTimeout: lockTimeout, retries: cfg.Migrate.Retries, total: end.Sub(rd.began)}
	limit := lockTimeout + lockTimeout/10
	var during []time.Duration
	var stalls []sample
	for _, lat := range lats {
		for _, s := range lat {
			if s.at.Before(end) && s.at.Add(s.d).After(rd.began) {
				during = append(during, s.d)
				if s.d > 100*time.Millisecond {
					stalls = append(stalls, s)
				}
				if s.d > limit {
					r.over++
				}
			}
		}
	}
	waits := out.waits(lockTimeout)
	r.waits = len(waits)
	for _, lat := range lats {
		for _, s := range lat {
			for _, w := range waits {
				// Only an UPDATE that began while the statement waited
				// can queue behind it: one that began before holds its
				// lock already.
				if !s.at.Before(w[0]) && s.at.Before(w[1]) {
					r.behindWait = max(r.behindWait, s.d)
				}
			}
		}
	}
	r.blocked = union(stalls)
	slices.Sort(during)
	r.updates = len(during)
	if len(during) > 0 {
		r.maxStall = during[len(during)-1]
	}
	// Where the long stalls were: after which progress line of apply.
	for _, lat := range lats {
		for _, s := range lat {
			if s.d > limit && s.at.Before(end) && s.at.Add(s.d).After(rd.began) {
				b.Logf("%s %s: an update took %s at +%s%s", eng, variant, s.d.Round(time.Millisecond), s.at.Sub(rd.began).Round(time.Millisecond), out.before(s.at))
			}
		}
	}
	if rep != nil {
		for _, s := range rep.Steps {
			if s.Attempts > r.attempts {
				r.attempts = s.Attempts
			}
			if s.Attempts > 1 {
				b.Logf("%s: step %s took %d attempts, %d ms", eng, s.ID, s.Attempts, s.DurationMS)
			}
		}
	}
	return r
}

// reader holds a transaction that has read the users table open for
// readerTime.
type reader struct {
	db    *store.DB
	conn  *sql.Conn
	began time.Time
	done  chan struct{}
}

func (r *reader) open(b *testing.B) {
	ctx := context.Background()
	conn, err := r.db.Conn(ctx)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := conn.ExecContext(ctx, "BEGIN"); err != nil {
		b.Fatal(err)
	}
	var n int
	if err := conn.QueryRowContext(ctx, "SELECT count(*) FROM users WHERE is_active").Scan(&n); err != nil {
		b.Fatal(err)
	}
	r.conn, r.began, r.done = conn, time.Now(), make(chan struct{})
	go func() {
		defer close(r.done)
		time.Sleep(readerTime - time.Since(r.began))
		conn.ExecContext(ctx, "COMMIT")
	}()
}

func (r *reader) wait() {
	if r.done != nil {
		<-r.done
	}
}

func (r *reader) close() {
	r.wait()
	if r.conn != nil {
		r.conn.Close()
	}
}

// onLine is a progress writer that calls fn, once and before the write
// returns, when a line containing match is written. It keeps every line
// with the time it came.
type onLine struct {
	match string
	fn    func()
	fired bool
	buf   bytes.Buffer
	lines []timedLine
}

type timedLine struct {
	at   time.Time
	text string
}

func (o *onLine) Write(p []byte) (int, error) {
	o.buf.Write(p)
	o.lines = append(o.lines, timedLine{time.Now(), strings.TrimSpace(string(p))})
	if !o.fired && o.match != "" && bytes.Contains(p, []byte(o.match)) {
		o.fired = true
		o.fn()
	}
	return len(p), nil
}

// waits are the intervals during which one of apply's statements waited
// for its lock and gave up: each "lock not granted within" line ends one.
// The statement began at least lock_timeout before the line, and a little
// more under load (the error's way back, the line's): the interval starts
// twice lock_timeout before the line, so that no UPDATE that queued behind
// the statement is left out (some that began just before it may count).
func (o *onLine) waits(lockTimeout time.Duration) [][2]time.Time {
	var out [][2]time.Time
	for _, l := range o.lines {
		if strings.Contains(l.text, "lock not granted within") {
			out = append(out, [2]time.Time{l.at.Add(-2 * lockTimeout), l.at})
		}
	}
	return out
}

// before is the last progress line written before t, for the log.
func (o *onLine) before(t time.Time) string {
	last := ""
	for _, l := range o.lines {
		if l.at.Before(t) {
			last = fmt.Sprintf(", %s after %q", t.Sub(l.at).Round(time.Millisecond), l.text)
		}
	}
	return last
}

// union is the wall time covered by the samples' intervals.
func union(ss []sample) time.Duration {
	slices.SortFunc(ss, func(a, b sample) int { return a.at.Compare(b.at) })
	var total time.Duration
	var end time.Time
	for _, s := range ss {
		e := s.at.Add(s.d)
		switch {
		case !e.After(end):
		case s.at.After(end):
			total += s.d
		default:
			total += e.Sub(end)
		}
		if e.After(end) {
			end = e
		}
	}
	return total
}
