package migrate

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/passbridge/passbridge/store"
)

// Lock waits. A DDL statement waiting for its lock is what makes an
// application stall: the application's queries queue behind the waiting
// request (PostgreSQL's lock queue, MySQL's metadata locks, which favour a
// pending exclusive request over new shared ones). So every statement of a
// migration waits at most migrate.lock_timeout for its lock, which is then
// the longest stall it can cause, gives up, and is tried again after a
// pause that leaves the application time to catch up.

// DefaultLockTimeout is what an unset migrate.lock_timeout means, as in
// config.Default (which also sets migrate.retries to 20).
const DefaultLockTimeout = 200 * time.Millisecond

// Backoff between the attempts of a step: the n-th pause is drawn from
// [d/2, d], with d doubling from max(2 × lock_timeout, minPause) up to
// maxPause. The first pause is at least as long as the stall before it.
const (
	minPause = 250 * time.Millisecond
	maxPause = 10 * time.Second
)

// lockTimeout is migrate.lock_timeout (DefaultLockTimeout when unset).
func (m *migrator) lockTimeout() time.Duration {
	if d := m.cfg.Migrate.LockTimeout.D(); d > 0 {
		return d
	}
	return DefaultLockTimeout
}

// pause is the range of the pause after the n-th failed attempt (n ≥ 1).
func (m *migrator) pause(n int) (lo, hi time.Duration) {
	d := max(2*m.lockTimeout(), minPause)
	for i := 1; i < n && d < maxPause; i++ {
		d *= 2
	}
	hi = min(d, max(maxPause, 2*m.lockTimeout()))
	return hi / 2, hi
}

// lockDeadline is the longest a step spends on lock waits and pauses
// before it stops: migrate.retries + 1 attempts of lock_timeout each and
// the longest pause between each two. The plan prints it.
func (m *migrator) lockDeadline() time.Duration {
	total := time.Duration(m.cfg.Migrate.Retries+1) * m.lockTimeout()
	for n := 1; n <= m.cfg.Migrate.Retries; n++ {
		_, hi := m.pause(n)
		total += hi
	}
	return total
}

// lockPolicy words lock_timeout, retries, the pauses and the deadline for
// the plan and the README's promise: the longest an application query
// stalls behind passbridge is lock_timeout.
func (m *migrator) lockPolicy() string {
	lo1, hi1 := m.pause(1)
	_, hiN := m.pause(max(m.cfg.Migrate.Retries, 1))
	s := fmt.Sprintf("a statement waits at most lock_timeout %s for its lock (the application's queries queue behind a waiting DDL, so that is the longest they stall), "+
		"then gives up and is tried again after a jittered pause doubling from %s-%s up to %s-%s; after %d attempts, at most %s of lock waits and pauses, the step stops (migrate.lock_timeout, migrate.retries)",
		m.lockTimeout(), lo1, hi1, hiN/2, hiN, m.cfg.Migrate.Retries+1, m.lockDeadline().Round(time.Second))
	if m.eng == MySQL {
		s += fmt.Sprintf(". MySQL counts lock_wait_timeout in whole seconds: passbridge itself ends a statement of its own that has waited %s for a lock (KILL QUERY on its own session, the statement is rolled back) and tries again; lock_wait_timeout stays as the server's bound behind that", m.lockTimeout())
	}
	return s
}

// backoff paces the retries of one step's lost lock races.
type backoff struct {
	m    *migrator
	conn *sql.Conn // the session's, to read the catalog for a hint
}

// failed decides after a failed attempt: nil to try again (after sleeping
// with jitter), or the final error when err is not a lock race or
// migrate.retries retries are spent.
func (b *backoff) failed(ctx context.Context, err error, attempts int, s Step) error {
	m := b.m
	if !retryable(err) {
		return fmt.Errorf("step %s: %w%s", s.ID(), err, m.rebuildHint(ctx, b.conn, err, s))
	}
	if attempts > m.cfg.Migrate.Retries {
		return fmt.Errorf("step %s: gave up after %d attempts (lock_timeout %s each, within the plan's %s of lock waits and pauses): %w\n%s",
			s.ID(), attempts, m.lockTimeout(), m.lockDeadline().Round(time.Second), err, m.blockerHint())
	}
	lo, hi := m.pause(attempts)
	wait := lo + rand.N(hi-lo+1) // jitter: two runs never retry in step
	m.log.Warn("step waited too long for a lock; retrying", "step", s.ID(), "attempt", attempts, "retry_in_ms", wait.Milliseconds(), "err", err)
	fmt.Fprintf(m.out, "       %s: lock not granted within %s (attempt %d of %d), retrying in %s\n",
		s.ID(), m.lockTimeout(), attempts, m.cfg.Migrate.Retries+1, wait.Round(time.Millisecond))
	return sleep(ctx, wait)
}

// retry runs fn until it succeeds, fails for good, or migrate.retries
// retries of a lock timeout (or deadlock, or busy database) are spent.
func (m *migrator) retry(ctx context.Context, conn *sql.Conn, res *StepResult, s Step, fn func() error) error {
	bo := &backoff{m: m, conn: conn}
	for {
		res.Attempts++
		err := fn()
		if err == nil {
			return nil
		}
		if err := bo.failed(ctx, err, res.Attempts, s); err != nil {
			return err
		}
	}
}

// retryable reports a lost lock race: lock timeout, deadlock, serialization
// failure, SQLite busy, or a MySQL statement passbridge ended itself
// because it waited lock_timeout for its lock.
func retryable(err error) bool {
	return store.IsRetryable(err) || errors.As(err, new(*lockWaitError))
}

// lockWaitError is a statement that the watchdog ended because it had
// waited lock_timeout for a lock.
type lockWaitError struct {
	state  string
	waited time.Duration
	err    error
}

func (e *lockWaitError) Error() string {
	return fmt.Sprintf("ended after %s in %q (lock_timeout): %v", e.waited.Round(time.Millisecond), e.state, e.err)
}

func (e *lockWaitError) Unwrap() error { return e.err }

// exec runs one statement of a step. On MySQL, the session's statements
// run under the watchdog, which holds their lock waits to lock_timeout.
func (m *migrator) exec(ctx context.Context, q querier, stmt string) error {
	return m.watched(ctx, q, func() error {
		_, err := q.ExecContext(ctx, stmt)
		return err
	})
}

// watched runs fn, a statement on q, under the watchdog when q is the
// MySQL session.
func (m *migrator) watched(ctx context.Context, q querier, fn func() error) error {
	w := m.watch
	if w == nil || q != querier(w.sess) {
		return fn()
	}
	return w.run(ctx, m.lockTimeout(), fn)
}

// watchdog ends a MySQL statement of the session that has waited
// lock_timeout for a lock. MySQL's own lock_wait_timeout counts whole
// seconds (MariaDB 10.11 refuses 0.2, and ALTER TABLE ... WAIT n takes
// whole seconds too), while the stall an application feels is that wait:
// a second behind a long reader is too long. So a second connection looks
// at the session in the process list while a statement runs, and when it
// has been in a "Waiting for ... lock" state for lock_timeout (MariaDB's
// TIME_MS tells how long, to the microsecond; on MySQL the watchdog
// measures from the first time it saw the state), it sends KILL QUERY for
// the session's thread: the statement fails (1317, rolled back, as every
// DDL of InnoDB is atomic), and the step is tried again after a pause.
type watchdog struct {
	sess, mon *sql.Conn
	id        int64
	// timeMS: the process list has MariaDB's TIME_MS column.
	timeMS bool
	// poll is how often a running statement is looked at before it waits.
	poll time.Duration
}

// newWatchdog sets a watchdog on the session conn, on a connection of
// its own from db.
func newWatchdog(ctx context.Context, db *store.DB, sess *sql.Conn) (*watchdog, error) {
	w := &watchdog{sess: sess, poll: 20 * time.Millisecond}
	if err := sess.QueryRowContext(ctx, "SELECT CONNECTION_ID()").Scan(&w.id); err != nil {
		return nil, fmt.Errorf("read the session's connection id: %w", err)
	}
	mon, err := db.LiveConn(ctx)
	if err != nil {
		return nil, fmt.Errorf("get a connection for the lock-wait watchdog: %w", err)
	}
	w.mon = mon
	var state sql.NullString
	var ms sql.NullFloat64
	if err := mon.QueryRowContext(ctx, "SELECT STATE, TIME_MS FROM information_schema.PROCESSLIST WHERE ID = ?", w.id).Scan(&state, &ms); err == nil {
		w.timeMS = true
	} else if err := mon.QueryRowContext(ctx, "SELECT STATE FROM information_schema.PROCESSLIST WHERE ID = ?", w.id).Scan(&state); err != nil {
		w.close()
		return nil, fmt.Errorf("the lock-wait watchdog cannot read the process list: %w", err)
	}
	return w, nil
}

func (w *watchdog) close() {
	if w.mon != nil {
		w.mon.Close()
	}
}

// waiting reports a process-list state of a statement queued for a lock
// (metadata, table, flush, backup or global read lock).
func waiting(state string) bool {
	s := strings.ToLower(state)
	return strings.HasPrefix(s, "waiting for") && (strings.Contains(s, "lock") || strings.Contains(s, "flush"))
}

// run runs fn, a statement on the session, while watching it.
func (w *watchdog) run(ctx context.Context, timeout time.Duration, fn func() error) error {
	done := make(chan struct{})
	killed := make(chan *lockWaitError, 1)
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		killed <- w.watch(ctx, done, timeout)
	}()
	err := fn()
	close(done)
	<-stopped
	kill := <-killed
	if kill == nil {
		return err
	}
	if err == nil {
		// The statement finished as the KILL went out. A KILL QUERY that
		// finds its thread idle does nothing; absorb it anyway, so that
		// it can never end the session's next statement.
		var me *mysql.MySQLError
		if _, derr := w.sess.ExecContext(ctx, "DO 0"); derr != nil && !(errors.As(derr, &me) && me.Number == 1317) {
			return derr
		}
		return nil
	}
	kill.err = err
	return kill
}

// watch looks at the session until done, and ends its statement once it
// has waited timeout for a lock; it returns what it ended (nil: nothing).
func (w *watchdog) watch(ctx context.Context, done <-chan struct{}, timeout time.Duration) *lockWaitError {
	var since time.Time // when the state was first seen waiting (MySQL)
	var last string
	next := w.poll / 2
	for {
		t := time.NewTimer(next)
		select {
		case <-done:
			t.Stop()
			return nil
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		var state sql.NullString
		var ms sql.NullFloat64
		var err error
		if w.timeMS {
			err = w.mon.QueryRowContext(ctx, "SELECT STATE, TIME_MS FROM information_schema.PROCESSLIST WHERE ID = ?", w.id).Scan(&state, &ms)
		} else {
			err = w.mon.QueryRowContext(ctx, "SELECT STATE FROM information_schema.PROCESSLIST WHERE ID = ?", w.id).Scan(&state)
		}
		if err != nil {
			// Cannot look: the server's lock_wait_timeout still bounds
			// the wait, in whole seconds.
			return nil
		}
		if !waiting(state.String) {
			since, last, next = time.Time{}, "", w.poll
			continue
		}
		if state.String != last || since.IsZero() {
			since, last = time.Now(), state.String
		}
		waited := time.Since(since)
		if w.timeMS {
			waited = time.Duration(ms.Float64 * float64(time.Millisecond))
		}
		if waited < timeout {
			next = max(timeout-waited, time.Millisecond)
			continue
		}
		select {
		case <-done: // finished meanwhile: nothing to end
			return nil
		default:
		}
		if _, err := w.mon.ExecContext(ctx, fmt.Sprintf("KILL QUERY %d", w.id)); err != nil {
			return nil
		}
		return &lockWaitError{state: state.String, waited: waited}
	}
}
