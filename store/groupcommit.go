package store

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/jmoiron/sqlx"
)

// Group commit, for SQLite.
//
// An SQLite database has one writer connection, so write transactions run
// one after the other, and each one's COMMIT writes its pages to the WAL
// (one write call a page): for a passkey sign-in, whose transaction is a
// handful of small statements, the commit was the larger part of its time
// on that connection. InTxShared lets the short, independent transactions
// of concurrent requests share one: whoever finds the writer free runs its
// own function and those of every request that queued meanwhile (up to
// maxGroup), each inside a SAVEPOINT, and commits once. A function that
// fails is rolled back to its savepoint alone and gets its error; the
// others commit. If the shared COMMIT fails, every member gets that error
// and nothing of any member was written. Nobody waits for a batch to fill:
// alone, a request runs at once, as a transaction of its own.
//
// The shared transaction runs on a context that no member can cancel (one
// request's client going away must not interrupt the others' statements:
// an interrupted SQLite statement rolls its whole transaction back); a
// member whose own context ended before its turn is skipped with that
// context's error. The members' statements (through Exec, Get and Select)
// run on the shared transaction's context, whatever context they pass: a
// member's request that ends halfway does not interrupt them.

// maxGroup bounds how many transactions share one commit.
const maxGroup = 64

type groupCommit struct {
	mu    sync.Mutex
	queue []*groupMember
	busy  bool // a leader is running a batch
	// commits counts shared transactions run (for the tests).
	commits int
}

type groupMember struct {
	ctx  context.Context
	fn   func(tx *sqlx.Tx) error
	done chan error    // the member's outcome (buffered)
	lead chan struct{} // closed when this member is to run the next batch
}

// memberPanic carries a member's panic back to its own goroutine.
type memberPanic struct{ v any }

func (memberPanic) Error() string { return "a transaction of the group panicked" }

// errGroupAborted ends a shared transaction in which a member panicked.
var errGroupAborted = errors.New("shared transaction aborted: a member panicked")

// InTxShared runs fn in a write transaction, as InTx does, and commits
// it; on SQLite the transaction may be shared with other callers' (group
// commit, above), which changes nothing for fn: its statements are
// written all or none, and it gets its own error. fn must be short and
// must not depend on rows another caller writes at the same time. On
// PostgreSQL and MySQL it is InTx: their concurrent transactions commit
// in parallel.
func (db *DB) InTxShared(ctx context.Context, fn func(tx *sqlx.Tx) error) error {
	g := db.group
	if g == nil {
		return db.InTx(ctx, fn)
	}
	m := &groupMember{ctx: ctx, fn: fn, done: make(chan error, 1), lead: make(chan struct{})}
	g.mu.Lock()
	g.queue = append(g.queue, m)
	if !g.busy {
		g.busy = true
		close(m.lead)
	}
	g.mu.Unlock()
	// A waiting member does not leave on its context: it may be handed the
	// lead, and the queue would stall without it. Its turn comes within
	// one batch (transactions of a few statements each).
	var err error
	select {
	case err = <-m.done:
	case <-m.lead:
		// m is at the head of the queue: a leader takes the head.
		g.mu.Lock()
		n := min(len(g.queue), maxGroup)
		batch := append([]*groupMember(nil), g.queue[:n]...)
		g.queue = append(g.queue[:0:0], g.queue[n:]...)
		g.mu.Unlock()
		db.runGroup(batch)
		g.mu.Lock()
		g.commits++
		if len(g.queue) > 0 {
			close(g.queue[0].lead)
		} else {
			g.busy = false
		}
		g.mu.Unlock()
		err = <-m.done
	}
	if p, ok := err.(memberPanic); ok {
		panic(p.v)
	}
	return err
}

// ExecShared runs one write statement: on SQLite in a shared transaction
// (InTxShared), elsewhere on its own, in autocommit (a transaction around
// one statement would only add a BEGIN and a COMMIT round trip).
func (db *DB) ExecShared(ctx context.Context, query string, args ...any) error {
	if db.group == nil {
		_, err := Exec(ctx, db, query, args...)
		return err
	}
	return db.InTxShared(ctx, func(tx *sqlx.Tx) error {
		_, err := Exec(ctx, tx, query, args...)
		return err
	})
}

// runGroup runs the members in one transaction and tells each its outcome.
func (db *DB) runGroup(batch []*groupMember) {
	live := make([]*groupMember, 0, len(batch))
	for _, m := range batch {
		if err := m.ctx.Err(); err != nil {
			m.done <- err
			continue
		}
		live = append(live, m)
	}
	if len(live) == 0 {
		return
	}
	ctx := context.WithoutCancel(live[0].ctx)
	results := make([]error, len(live))
	panicked := -1
	var pv any
	err := db.InTx(ctx, func(tx *sqlx.Tx) error {
		db.share(ctx, tx)
		if len(live) == 1 {
			// Alone: a transaction of its own, no savepoint.
			if p, err := call(live[0].fn, tx); p != nil {
				panicked, pv = 0, p
				return errGroupAborted
			} else if err != nil {
				results[0] = err
				return err
			}
			return nil
		}
		for i, m := range live {
			if _, err := Exec(ctx, tx, "SAVEPOINT passbridge_member"); err != nil {
				return fmt.Errorf("group commit: savepoint: %w", err)
			}
			p, err := call(m.fn, tx)
			if p != nil {
				panicked, pv = i, p
				return errGroupAborted
			}
			if err != nil {
				results[i] = err
				// If this fails the transaction is gone (an interrupted
				// statement rolls it back): then it fails for all.
				if _, rerr := Exec(ctx, tx, "ROLLBACK TO passbridge_member"); rerr != nil {
					return fmt.Errorf("group commit: roll back a member: %w", rerr)
				}
			}
			if _, err := Exec(ctx, tx, "RELEASE passbridge_member"); err != nil {
				return fmt.Errorf("group commit: release: %w", err)
			}
		}
		return nil
	})
	for i, m := range live {
		switch {
		case i == panicked:
			m.done <- memberPanic{pv}
		case results[i] != nil:
			m.done <- results[i]
		default:
			m.done <- err // nil: committed; else nothing of it was written
		}
	}
}

// call runs fn, turning a panic into a value.
func call(fn func(tx *sqlx.Tx) error, tx *sqlx.Tx) (p any, err error) {
	defer func() {
		if r := recover(); r != nil {
			p = r
		}
	}()
	return nil, fn(tx)
}
