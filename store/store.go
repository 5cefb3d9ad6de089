// Package store is passbridge's access to the application's own database:
// an SQLite file (modernc.org/sqlite, no cgo; the embedded default),
// PostgreSQL (pgx) or MySQL/MariaDB (go-sql-driver/mysql), through sqlx.
//
// Open connects, retrying until database.connect_timeout, and returns a DB,
// an *sqlx.DB plus the Dialect of the database:
//
//	db, err := store.Open(ctx, cfg.Database, log)
//	if err != nil { ... }     // names driver, host, database; never the password
//	defer db.Close()
//	d := db.Dialect()
//
// # Writing SQL
//
// Statements use ? placeholders and go through Rebind, which makes them $1,
// $2 on PostgreSQL. The functions Exec, Get and Select rebind for you and
// take a DB, a transaction or a connection alike (Querier); the methods of
// the embedded *sqlx.DB do not rebind. sqlx named queries (:name) and
// sqlx.In work on every dialect.
//
//	err := store.Get(ctx, db, &n, "SELECT COUNT(*) FROM "+d.Table(cfg.Schema, cfg.Name)+
//		" WHERE "+d.Quote(cfg.Email)+" = ?", email)
//
// Names (tables, columns, schemas) come from configuration: they go into SQL
// only through Dialect.Quote, QuoteQualified or Table, after
// Dialect.CheckIdentifier; values are always arguments. Everything that
// differs between the databases is in this package: the Dialect
// (dialect.go) writes their SQL, column Types and VarChar/VarBinary for
// DDL, TableOptions, CurrentTimestamp, Upsert, InsertID (new ids) and
// ForUpdate (row locks); open.go connects (DSN defaults, the pool, retries,
// passwords scrubbed from messages); lock.go holds the session settings
// behind WithLockTimeout and TryLock; errors.go's IsUniqueViolation and
// IsRetryable classify errors of all three drivers.
//
// # Transactions
//
// InTx runs a function in a transaction: commit when it returns nil,
// rollback when it returns an error or panics. Inside it use the *sqlx.Tx
// only: SQLite has a single connection by default, so a query on db from
// inside the function would wait for the transaction forever. SQLite
// transactions begin IMMEDIATE (they take the write lock at once, waiting up
// to busy_timeout, so they cannot fail halfway with "database is locked");
// read-only ones (InTxOpts with ReadOnly) begin deferred. ForUpdate is empty
// on SQLite, which needs no row locks.
//
// # Locks
//
// TryLock takes a named lock that excludes every other holder of the name on
// the same database, across processes and hosts: leader election for the
// scheduled sync. On PostgreSQL it is a session advisory lock and on MySQL
// GET_LOCK (named after the database, as GET_LOCK names are server-wide),
// each held on a dedicated connection, which takes one slot of the pool, and
// released by the server if passbridge dies. SQLite is single-host: the lock
// is process-local plus an flock on a file beside the database
// (app.db.passbridge-NAME.lock), so that `passbridge sync` run by hand sees
// the daemon's lock. WithLockTimeout runs DDL on one connection whose lock
// waits are bounded (lock_timeout, lock_wait_timeout and
// innodb_lock_wait_timeout, busy_timeout), so that a migration stuck behind
// the application's long transaction fails with an IsRetryable error
// instead of queueing the application's own queries behind it.
//
// # Connections
//
// The pool holds up to database.max_open_conns connections: 10 by default
// for servers, 1 for SQLite (a file may have more: readers then run beside
// the writer; an in-memory database always has 1). SQLite DSNs get, unless
// they set them: busy_timeout 5s, journal_mode WAL (a persistent change to
// the file) with synchronous NORMAL, foreign_keys on, _txlock=immediate, times written as UTC text.
// MySQL DSNs always get parseTime=true and clientFoundRows=true
// (RowsAffected counts matched rows, as on the others) and, unless they set
// loc or time_zone, a UTC session, so that DATETIME values and
// CURRENT_TIMESTAMP defaults are UTC. PostgreSQL sessions are named
// "passbridge" in pg_stat_activity.
//
// # Times
//
// Write time.Time values, not strings, to Timestamp columns; they read back
// as time.Time on every dialect, with microsecond precision (SQLite keeps
// nanoseconds).
package store

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jmoiron/sqlx"
)

// DB is a connection pool to the application's database and its dialect.
// The embedded *sqlx.DB gives the usual query methods; they do not rebind.
type DB struct {
	*sqlx.DB
	dialect Dialect
	target  target
	log     *slog.Logger
	stmts   *stmtCache   // SQLite only: see stmtcache.go
	reader  *DB          // SQLite files only: see Reader
	group   *groupCommit // SQLite only: see InTxShared
}

// sqliteReaders is the size of an SQLite file database's reader pool.
const sqliteReaders = 4

// Reader is where reads that need no transaction may go. For an SQLite file
// it is a pool of read-only connections beside the one writer connection:
// in WAL mode readers never wait for the writer, so a passkey sign-in's
// lookups do not queue behind other sign-ins' commits. It sees what has
// been committed (not a transaction in progress, not a temporary table of
// the writer's). For the other databases, and SQLite in memory, it is db.
func (db *DB) Reader() Querier {
	if db.reader != nil {
		return db.reader
	}
	return db
}

// Querier is what a DB, an *sqlx.DB, an *sqlx.Tx and an *sqlx.Conn have in
// common: the helpers below work inside and outside transactions.
type Querier interface {
	sqlx.QueryerContext
	Execer
}

// Dialect is the SQL dialect of the database.
func (db *DB) Dialect() Dialect { return db.dialect }

// Describe names the database for logs and messages: driver, host or file,
// database and user, never the password.
func (db *DB) Describe() string { return db.target.desc }

// Close closes the pool.
func (db *DB) Close() error {
	if db.reader != nil {
		db.reader.Close()
	}
	db.stmts.close()
	return db.DB.Close()
}

// InTx runs fn in a transaction and commits it when fn returns nil. It rolls
// back when fn returns an error (which it returns) or panics (and then
// panics again). Inside fn, use tx only.
func (db *DB) InTx(ctx context.Context, fn func(tx *sqlx.Tx) error) error {
	return db.InTxOpts(ctx, nil, fn)
}

// InTxOpts is InTx with transaction options (isolation level, read only).
func (db *DB) InTxOpts(ctx context.Context, opts *sql.TxOptions, fn func(tx *sqlx.Tx) error) (err error) {
	tx, err := db.BeginTxx(ctx, opts)
	if err != nil {
		return fmt.Errorf("begin transaction: %w", err)
	}
	return db.runTx(ctx, tx, fn)
}

// runTx runs fn in tx, just begun, and commits or rolls back as InTx says.
func (db *DB) runTx(ctx context.Context, tx *sqlx.Tx, fn func(tx *sqlx.Tx) error) (err error) {
	defer db.beginCaching(ctx, tx)() // runs after the rollback below
	committed := false
	defer func() {
		if committed {
			return
		}
		// Reached on error and on panic alike; a panic goes on up.
		if rbErr := tx.Rollback(); rbErr != nil && !errors.Is(rbErr, sql.ErrTxDone) && err != nil {
			err = errors.Join(err, fmt.Errorf("roll back: %w", rbErr))
		}
	}()
	if err := fn(tx); err != nil {
		return err
	}
	committed = true
	if err := tx.Commit(); err != nil {
		if db.dialect.kind != SQLite && !serverAnswered(err) && !errors.Is(err, sql.ErrTxDone) {
			// The COMMIT went out and no answer came back.
			return fmt.Errorf("commit: %w: %w", ErrCommitUnknown, err)
		}
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// WithLockTimeout runs fn on one dedicated connection on which waiting for
// a lock (a table lock for DDL, a row lock) fails after timeout with an
// error for which IsRetryable is true: PostgreSQL lock_timeout, MySQL
// lock_wait_timeout and innodb_lock_wait_timeout (whole seconds, at least
// 1), SQLite busy_timeout. The settings are undone before the connection
// goes back to the pool. fn must use conn only (it may begin transactions
// on it).
func (db *DB) WithLockTimeout(ctx context.Context, timeout time.Duration, fn func(conn *sqlx.Conn) error) (err error) {
	conn, err := db.Connx(ctx)
	if err != nil {
		return fmt.Errorf("get a connection: %w", err)
	}
	defer conn.Close()
	set, reset, err := db.dialect.lockTimeoutSQL(ctx, conn, timeout)
	if err != nil {
		return fmt.Errorf("read lock timeout: %w", err)
	}
	defer func() {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		for _, q := range reset {
			if _, rErr := conn.ExecContext(rctx, q); rErr != nil {
				// Never hand a connection with a short lock timeout to
				// the next user of the pool.
				_ = conn.Raw(func(any) error { return driver.ErrBadConn })
				db.log.Warn("could not restore the lock timeout; connection discarded", "err", rErr)
				return
			}
		}
	}()
	for _, q := range set {
		if _, err := conn.ExecContext(ctx, q); err != nil {
			return fmt.Errorf("set lock timeout (%s): %w", q, err)
		}
	}
	return fn(conn)
}

// Exec runs a statement with ? placeholders on q (a DB, transaction or
// connection), rebinding it for the dialect.
func Exec(ctx context.Context, q Execer, query string, args ...any) (sql.Result, error) {
	query = q.Rebind(query)
	st, ctx := statementFor(ctx, q, query)
	if st != nil {
		return st.ExecContext(ctx, args...)
	}
	return q.ExecContext(ctx, query, args...)
}

// Get scans the one row of a query with ? placeholders into dest (a scalar
// or a struct with db tags); sql.ErrNoRows when there is none.
func Get(ctx context.Context, q Querier, dest any, query string, args ...any) error {
	query = q.Rebind(query)
	st, ctx := statementFor(ctx, q, query)
	if st != nil {
		return st.GetContext(ctx, dest, args...)
	}
	return sqlx.GetContext(ctx, q, dest, query, args...)
}

// Select scans every row of a query with ? placeholders into dest, a
// pointer to a slice.
func Select(ctx context.Context, q Querier, dest any, query string, args ...any) error {
	query = q.Rebind(query)
	st, ctx := statementFor(ctx, q, query)
	if st != nil {
		return st.SelectContext(ctx, dest, args...)
	}
	return sqlx.SelectContext(ctx, q, dest, query, args...)
}
