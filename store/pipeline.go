package store

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/jmoiron/sqlx"
)

// Pipelined transactions, for PostgreSQL.
//
// A passkey sign-in's transaction is a handful of small writes (the
// ceremony's claim, the passkey's counter, the session, the audit entry)
// whose results nobody reads before the commit. Sent one by one, with BEGIN
// and COMMIT, that is seven round trips to the server, each a wake-up of a
// PostgreSQL backend and of the client: the profile of the sign-in showed
// the database's processes and the client's waiting as most of its cost.
// InTxPipelined sends them together: the statements fn executes are queued
// and go out, BEGIN first, with the COMMIT in one batch (one round trip),
// unless fn reads a result (RowsAffected) on the way, which sends what is
// queued at once. A statement that fails aborts the transaction: the
// statements queued behind it are not run, and nothing is committed.

// Execer is the part of a Querier that a pipelined transaction offers:
// statements, not queries. The helpers that only write (Exec) take one.
type Execer interface {
	sqlx.ExecerContext
	Rebind(query string) string
}

// InTxPipelined runs fn in a write transaction and commits it, as InTx
// does. On PostgreSQL the statements are pipelined (above): an error of a
// statement may then come back from a later call (a RowsAffected, or
// InTxPipelined itself) instead of from its Exec. On SQLite it is
// InTxShared (group commit), on MySQL InTx.
func (db *DB) InTxPipelined(ctx context.Context, fn func(q Execer) error) error {
	if db.dialect.kind != Postgres {
		// InTxShared is the group commit on SQLite, InTx elsewhere.
		return db.InTxShared(ctx, func(tx *sqlx.Tx) error { return fn(tx) })
	}
	conn, err := db.Connx(ctx)
	if err != nil {
		return fmt.Errorf("begin transaction: %w", err)
	}
	defer conn.Close()
	var txErr error
	err = conn.Raw(func(dc any) error {
		c, ok := dc.(*stdlib.Conn)
		if !ok {
			return fmt.Errorf("pipelined transaction: the connection is a %T, not pgx's", dc)
		}
		p := &pipeline{ctx: ctx, conn: c.Conn(), rebind: db.Rebind}
		txErr = p.run(fn)
		if p.broken {
			// The connection's state is unknown: database/sql drops it.
			return driver.ErrBadConn
		}
		return nil
	})
	if txErr != nil {
		return txErr
	}
	return err
}

type pipeline struct {
	ctx    context.Context
	conn   *pgx.Conn
	rebind func(string) string
	queue  []queued
	begun  bool  // BEGIN went out
	err    error // the transaction failed: every later call gets it
	broken bool  // the connection cannot be trusted with another transaction
}

type queued struct {
	query string
	args  []any
	res   *pipeResult
}

// pipeResult is the result of a queued statement, known once it was sent.
type pipeResult struct {
	p    *pipeline
	sent bool
	n    int64
	err  error
}

func (r *pipeResult) RowsAffected() (int64, error) {
	if !r.sent {
		r.p.flush(false)
	}
	if r.err != nil {
		return 0, r.err
	}
	if !r.sent {
		return 0, r.p.err
	}
	return r.n, nil
}

func (r *pipeResult) LastInsertId() (int64, error) {
	return 0, errors.New("LastInsertId is not supported by PostgreSQL: use RETURNING")
}

func (p *pipeline) Rebind(query string) string { return p.rebind(query) }

// ExecContext queues a statement; its result is known when it has been
// sent. ctx is the transaction's (the pipeline sends with the context it
// was begun with).
func (p *pipeline) ExecContext(_ context.Context, query string, args ...any) (sql.Result, error) {
	if p.err != nil {
		return nil, p.err
	}
	r := &pipeResult{p: p}
	p.queue = append(p.queue, queued{query: query, args: args, res: r})
	return r, nil
}

// run runs fn and commits, or rolls back what was sent.
func (p *pipeline) run(fn func(q Execer) error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			p.rollback()
			panic(r)
		}
	}()
	if err := fn(p); err != nil {
		p.rollback()
		return err
	}
	if err := p.flush(true); err != nil {
		p.rollback()
		return err
	}
	return nil
}

// flush sends the queued statements (and BEGIN before the first, COMMIT
// after the last if commit) in one batch and reads their results.
func (p *pipeline) flush(commit bool) error {
	if p.err != nil {
		return p.err
	}
	queue := p.queue
	p.queue = nil
	if len(queue) == 0 && !p.begun {
		return nil // nothing was written: nothing to commit
	}
	b := &pgx.Batch{}
	if !p.begun {
		b.Queue("BEGIN")
	}
	for _, q := range queue {
		b.Queue(q.query, q.args...)
	}
	if commit {
		b.Queue("COMMIT")
	}
	br := p.conn.SendBatch(p.ctx, b)
	fail := func(err error) {
		if p.err == nil {
			p.err = err
		}
	}
	if !p.begun {
		if _, err := br.Exec(); err != nil {
			fail(fmt.Errorf("begin transaction: %w", err))
		}
		p.begun = true
	}
	for _, q := range queue {
		q.res.sent = true
		if p.err != nil {
			q.res.err = p.err // not run: the transaction had failed
			continue
		}
		tag, err := br.Exec()
		if err != nil {
			q.res.err = err
			fail(err)
			continue
		}
		q.res.n = tag.RowsAffected()
	}
	if commit && p.err == nil {
		tag, err := br.Exec()
		switch {
		case err != nil && !serverAnswered(err):
			fail(fmt.Errorf("commit: %w: %w", ErrCommitUnknown, err))
			p.broken = true
		case err != nil:
			fail(fmt.Errorf("commit: %w", err))
		case tag.String() != "COMMIT":
			// A transaction that had failed answers COMMIT with ROLLBACK.
			fail(fmt.Errorf("commit: the server rolled the transaction back (%s)", tag.String()))
		default:
			p.begun = false // committed: nothing to roll back
		}
	}
	if err := br.Close(); err != nil {
		fail(err)
		if !serverAnswered(err) {
			p.broken = true
		}
	}
	return p.err
}

// rollback ends a transaction that was begun on the server and did not
// commit; a connection that cannot say ROLLBACK is not reused.
func (p *pipeline) rollback() {
	if p.err == nil {
		p.err = errors.New("transaction rolled back")
	}
	if !p.begun || p.broken {
		return
	}
	p.begun = false
	if p.conn.IsClosed() {
		p.broken = true
		return
	}
	if _, err := p.conn.Exec(context.WithoutCancel(p.ctx), "ROLLBACK"); err != nil {
		p.broken = true
	}
}
