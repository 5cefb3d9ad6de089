package store

import (
	"context"
	"sync"

	"github.com/jmoiron/sqlx"
)

// Prepared statements, cached, for SQLite.
//
// modernc.org/sqlite parses every statement it is given anew, and an SQLite
// database has one writer connection: parsing was a large part of a passkey
// sign-in's time on that connection, for statements that are the same text
// every time. Exec, Get and Select on a DB, or on a transaction begun by
// InTx, run a statement seen before through its prepared form
// (database/sql keeps it prepared per connection and reuses it in
// transactions on that connection). PostgreSQL needs none of this (pgx
// caches prepared statements per connection itself), nor MySQL (passbridge
// runs it with interpolateParams: one round trip a statement, no prepare).
//
// With one connection, preparing on the DB needs that connection: a
// statement first seen inside a transaction (which holds it) is prepared
// when the transaction ends, and nothing waits for a connection while
// holding the cache's lock.

// maxCachedStmts bounds the cache: statements whose text varies (an IN list
// per chunk size, a multi-row INSERT per batch size) fill it once and the
// rest run unprepared, as before.
const maxCachedStmts = 512

type stmtCache struct {
	mu    sync.Mutex
	stmts map[string]*sqlx.Stmt
}

func newStmtCache() *stmtCache { return &stmtCache{stmts: map[string]*sqlx.Stmt{}} }

// txOwners maps an open transaction begun by InTx to its DB (only for a
// database that caches statements) and the statements it missed.
var txOwners sync.Map // *sqlx.Tx -> *txCache

type txCache struct {
	db     *DB
	missed []string
	// shared, set for a group commit's transaction (InTxShared), is the
	// context every statement in it runs with, whatever context the
	// member passes: see statementFor.
	shared context.Context
}

func (c *stmtCache) lookup(query string) (*sqlx.Stmt, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	st, ok := c.stmts[query]
	return st, ok || len(c.stmts) >= maxCachedStmts
}

// prepare makes query's prepared form (once) and returns it; nil when it
// cannot be prepared (it then runs as text, and its error surfaces there).
func (db *DB) prepare(ctx context.Context, query string) *sqlx.Stmt {
	c := db.stmts
	if st, done := c.lookup(query); done {
		return st
	}
	st, err := db.PreparexContext(ctx, query) // may wait for the connection: not under the lock
	if err != nil {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if have, ok := c.stmts[query]; ok {
		st.Close()
		return have
	}
	if len(c.stmts) >= maxCachedStmts {
		st.Close()
		return nil
	}
	c.stmts[query] = st
	return st
}

// statementFor returns the prepared statement to run query on q (nil to
// run it as text) and the context to run it with: ctx, except in a group
// commit's shared transaction, whose statements run on the transaction's
// own context. No member may cancel a statement there: an SQLite statement
// interrupted inside a transaction rolls the whole transaction back, the
// other members' statements with it. (And a context that cannot be
// cancelled spares modernc.org/sqlite the goroutine it starts for every
// statement to watch one that can.)
func statementFor(ctx context.Context, q Execer, query string) (*sqlx.Stmt, context.Context) {
	switch q := q.(type) {
	case *DB:
		if q.stmts != nil {
			return q.prepare(ctx, query), ctx
		}
	case *sqlx.Tx:
		v, ok := txOwners.Load(q)
		if !ok {
			return nil, ctx
		}
		tc := v.(*txCache)
		if tc.shared != nil {
			ctx = tc.shared
		}
		st, done := tc.db.stmts.lookup(query)
		if st != nil {
			return q.StmtxContext(ctx, st), ctx
		}
		if !done {
			tc.missed = append(tc.missed, query) // one goroutine per transaction
		}
	}
	return nil, ctx
}

// share makes tx, begun by InTx on ctx, a group commit's shared
// transaction: its statements run on ctx (statementFor).
func (db *DB) share(ctx context.Context, tx *sqlx.Tx) {
	if v, ok := txOwners.Load(tx); ok {
		v.(*txCache).shared = ctx
	}
}

// beginCaching registers tx as db's, when db caches statements; the
// returned func, called when tx has ended, prepares what it missed.
func (db *DB) beginCaching(ctx context.Context, tx *sqlx.Tx) func() {
	if db.stmts == nil {
		return func() {}
	}
	tc := &txCache{db: db}
	txOwners.Store(tx, tc)
	return func() {
		txOwners.Delete(tx)
		for _, q := range tc.missed {
			db.prepare(context.WithoutCancel(ctx), q)
		}
	}
}

func (c *stmtCache) close() {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, st := range c.stmts {
		st.Close()
	}
	c.stmts = map[string]*sqlx.Stmt{}
}
