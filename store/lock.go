package store

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"database/sql/driver"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/fnv"
	"math"
	"path/filepath"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/jmoiron/sqlx"
)

// Lock is a named lock held by this process (see DB.TryLock).
type Lock struct {
	name string

	mu       sync.Mutex
	released bool

	// PostgreSQL, MySQL: the server holds key for the session of conn.
	dialect Dialect
	conn    *sql.Conn
	key     any

	// SQLite: undoes the process-local entry and the file lock.
	release func() error
}

// TryLock takes the lock called name on this database without waiting. It
// returns ok false when another holder (another process, another DB, or
// this DB) has it. The lock lasts until Unlock, or until the connection
// holding it ends: call Held now and then (each scheduled run) to notice a
// lost lock, which also keeps the connection from idling out on the server.
func (db *DB) TryLock(ctx context.Context, name string) (lock *Lock, ok bool, err error) {
	if name == "" {
		return nil, false, errors.New("lock name is empty")
	}
	if db.dialect.kind == SQLite {
		release, ok, err := sqliteTryLock(db, name)
		if err != nil || !ok {
			return nil, false, err
		}
		return &Lock{name: name, dialect: db.dialect, release: release}, true, nil
	}

	conn, err := db.LiveConn(ctx)
	if err != nil {
		return nil, false, fmt.Errorf("lock %q: get a connection: %w", name, err)
	}
	l, ok, err := db.tryLockOn(ctx, conn, name)
	switch {
	case err != nil:
		discard(conn)
	case !ok:
		conn.Close()
	}
	return l, ok, err
}

// TryLockOn is TryLock on a connection the caller holds (from LiveConn):
// the server keeps the lock for that session, so it lasts as long as the
// session does, a statement the server still runs after its client is
// gone included. Unlock releases it and closes conn. When ok is false,
// conn stays the caller's. On SQLite, conn plays no part.
func (db *DB) TryLockOn(ctx context.Context, conn *sql.Conn, name string) (lock *Lock, ok bool, err error) {
	if name == "" {
		return nil, false, errors.New("lock name is empty")
	}
	if db.dialect.kind == SQLite {
		return db.TryLock(ctx, name)
	}
	return db.tryLockOn(ctx, conn, name)
}

func (db *DB) tryLockOn(ctx context.Context, conn *sql.Conn, name string) (*Lock, bool, error) {
	key, err := db.dialect.lockKey(ctx, conn, name)
	if err != nil {
		return nil, false, fmt.Errorf("lock %q: %w", name, err)
	}
	var got sql.NullBool
	if err := conn.QueryRowContext(ctx, db.dialect.tryLockSQL(), key).Scan(&got); err != nil {
		return nil, false, fmt.Errorf("lock %q: %w", name, err)
	}
	if !got.Valid {
		// MySQL's GET_LOCK answers NULL on an error (such as the
		// session being killed) rather than "held elsewhere".
		return nil, false, fmt.Errorf("lock %q: the server could not take the lock", name)
	}
	if !got.Bool {
		return nil, false, nil
	}
	return &Lock{name: name, dialect: db.dialect, conn: conn, key: key}, true, nil
}

// LiveConn is a dedicated connection of the pool that answers a ping. A
// pooled connection whose server went away (a cut network, a failover, a
// restart) is not always noticed when it is handed out: pgx pings an idle
// connection only after a second, and database/sql retries a bad
// connection for statements on the pool but not for a Conn, whose first
// statement would then fail. So each candidate is pinged, and a dead one
// closed and the next tried, up to the pool's size (then a new one).
func (db *DB) LiveConn(ctx context.Context) (*sql.Conn, error) {
	tries := max(db.Stats().MaxOpenConnections, 10) + 1
	var last error
	for range tries {
		conn, err := db.Conn(ctx)
		if err != nil {
			return nil, err
		}
		if last = conn.PingContext(ctx); last == nil {
			return conn, nil
		}
		discard(conn)
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
	}
	return nil, fmt.Errorf("no connection of the pool answers: %w", last)
}

// Name is the lock's name.
func (l *Lock) Name() string { return l.name }

// Held reports whether the lock is still held: false after Unlock, or when
// the server ended the session that held it (restart, failover, killed
// connection), in which case another process may have it now.
func (l *Lock) Held(ctx context.Context) (bool, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.released {
		return false, nil
	}
	if l.conn == nil {
		return true, nil
	}
	held, err := l.dialect.heldLock(ctx, l.conn, l.key)
	if err != nil {
		return false, fmt.Errorf("lock %q: check: %w", l.name, err)
	}
	return held, nil
}

// Unlock releases the lock. It is safe to call more than once and on every
// path (defer lock.Unlock()). On a server, the dedicated connection is then
// closed rather than returned to the pool, so that the lock cannot stay
// behind on a pooled session even if the release statement failed.
func (l *Lock) Unlock() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.released {
		return nil
	}
	l.released = true
	if l.release != nil {
		return l.release()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var released sql.NullBool
	err := l.conn.QueryRowContext(ctx, l.dialect.unlockSQL(), l.key).Scan(&released)
	discard(l.conn)
	if err != nil {
		return fmt.Errorf("unlock %q: %w (the connection was closed, which releases it)", l.name, err)
	}
	return nil
}

// discard closes conn without returning it to the pool: the server ends
// the session and every lock it held.
func discard(conn *sql.Conn) {
	_ = conn.Raw(func(any) error { return driver.ErrBadConn })
	conn.Close()
}

// SQLite locks: SQLite has no sessions to hold a lock, and it is
// single-host. The lock is a process-wide table entry (which also covers
// :memory: databases) plus, for a file, an exclusive flock on a file beside
// it, which another passbridge process on the host sees, and which the
// kernel releases if this process dies.

var sqliteLocks = struct {
	sync.Mutex
	held map[string]bool
}{held: map[string]bool{}}

func sqliteTryLock(db *DB, name string) (release func() error, ok bool, err error) {
	id := db.target.sqlitePath
	if db.target.memory {
		id = fmt.Sprintf("memory:%p", db)
	}
	key := id + "\x00" + name
	sqliteLocks.Lock()
	defer sqliteLocks.Unlock()
	if sqliteLocks.held[key] {
		return nil, false, nil
	}
	unflock := func() error { return nil }
	if !db.target.memory {
		path := sqliteLockPath(db.target.sqlitePath, name)
		unflock, ok, err = flockTry(path)
		if err != nil {
			return nil, false, fmt.Errorf("lock %q: %w", name, err)
		}
		if !ok {
			return nil, false, nil
		}
	}
	sqliteLocks.held[key] = true
	return func() error {
		sqliteLocks.Lock()
		delete(sqliteLocks.held, key)
		sqliteLocks.Unlock()
		return unflock()
	}, true, nil
}

// sqliteLockPath is the lock file of name beside the database file:
// app.db.passbridge-sync.lock. Names that are not plain become a hash.
func sqliteLockPath(dbPath, name string) string {
	plain := len(name) <= 64 && strings.IndexFunc(name, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.')
	}) < 0 && name != "." && name != ".."
	if !plain {
		h := fnv.New64a()
		h.Write([]byte(name))
		name = fmt.Sprintf("%016x", h.Sum64())
	}
	return filepath.Join(filepath.Dir(dbPath), filepath.Base(dbPath)+".passbridge-"+name+".lock")
}

// Lock waits (WithLockTimeout).

// lockTimeoutSQL returns the statements that make DDL and row locks on one
// connection wait at most timeout, and those that undo them. It reads the
// current values where the database has no RESET.
func (d Dialect) lockTimeoutSQL(ctx context.Context, conn *sqlx.Conn, timeout time.Duration) (set, reset []string, err error) {
	ms := max(timeout.Milliseconds(), 1) // 0 would mean "wait forever"
	switch d.kind {
	case Postgres:
		return []string{fmt.Sprintf("SET lock_timeout = %d", ms)}, []string{"RESET lock_timeout"}, nil
	case MySQL:
		// Whole seconds, at least 1. lock_wait_timeout covers metadata
		// locks (DDL), innodb_lock_wait_timeout row locks.
		secs := int64(math.Ceil(timeout.Seconds()))
		secs = max(secs, 1)
		var mdl, row int64
		if err := conn.QueryRowxContext(ctx, "SELECT @@SESSION.lock_wait_timeout, @@SESSION.innodb_lock_wait_timeout").Scan(&mdl, &row); err != nil {
			return nil, nil, err
		}
		return []string{
				fmt.Sprintf("SET SESSION lock_wait_timeout = %d", secs),
				fmt.Sprintf("SET SESSION innodb_lock_wait_timeout = %d", secs),
			}, []string{
				fmt.Sprintf("SET SESSION lock_wait_timeout = %d", mdl),
				fmt.Sprintf("SET SESSION innodb_lock_wait_timeout = %d", row),
			}, nil
	default:
		var prev int64
		if err := conn.QueryRowxContext(ctx, "PRAGMA busy_timeout").Scan(&prev); err != nil {
			return nil, nil, err
		}
		return []string{fmt.Sprintf("PRAGMA busy_timeout = %d", ms)}, []string{fmt.Sprintf("PRAGMA busy_timeout = %d", prev)}, nil
	}
}

// Named locks. PostgreSQL and MySQL hold them in a session, so they live on
// one dedicated connection; SQLite has no such thing (see sqliteTryLock).

// lockKey is what the server locks for name: a 64-bit hash on PostgreSQL,
// whose advisory locks belong to the current database; on MySQL, whose
// GET_LOCK names are server-wide and at most 64 characters, a name that
// includes the database, so that two applications' databases on one server
// do not exclude each other.
func (d Dialect) lockKey(ctx context.Context, conn *sql.Conn, name string) (any, error) {
	switch d.kind {
	case Postgres:
		h := fnv.New64a()
		h.Write([]byte("passbridge:" + name))
		return int64(h.Sum64()), nil
	case MySQL:
		var dbName sql.NullString
		if err := conn.QueryRowContext(ctx, "SELECT DATABASE()").Scan(&dbName); err != nil {
			return nil, err
		}
		key := "passbridge:" + dbName.String + ":" + name
		if utf8.RuneCountInString(key) > 64 {
			sum := sha256.Sum256([]byte(dbName.String + "\x00" + name))
			key = "passbridge:" + hex.EncodeToString(sum[:])[:48]
		}
		return key, nil
	}
	return nil, fmt.Errorf("%s has no server-side named locks", d.kind)
}

func (d Dialect) tryLockSQL() string {
	if d.kind == Postgres {
		return "SELECT pg_try_advisory_lock($1)"
	}
	return "SELECT GET_LOCK(?, 0)" // 1 acquired, 0 held elsewhere, NULL error
}

func (d Dialect) unlockSQL() string {
	if d.kind == Postgres {
		return "SELECT pg_advisory_unlock($1)"
	}
	return "SELECT RELEASE_LOCK(?)"
}

// heldLock reports whether this connection still holds key.
func (d Dialect) heldLock(ctx context.Context, conn *sql.Conn, key any) (bool, error) {
	var held sql.NullBool
	var err error
	if d.kind == Postgres {
		k := uint64(key.(int64))
		// A bigint advisory key shows as classid (high half), objid (low
		// half) and objsubid 1.
		err = conn.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory'
			AND pid = pg_backend_pid() AND granted AND objsubid = 1
			AND classid::bigint = $1 AND objid::bigint = $2)`, int64(k>>32), int64(k&0xffffffff)).Scan(&held)
	} else {
		err = conn.QueryRowContext(ctx, "SELECT IS_USED_LOCK(?) = CONNECTION_ID()", key).Scan(&held)
	}
	return held.Valid && held.Bool, err
}
