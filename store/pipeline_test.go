package store

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
)

// TestInTxPipelined: on every database, a pipelined transaction commits
// all of its statements or none: a failing statement (a duplicate key)
// takes the statements before and after it back, as does fn's own error
// (before anything was sent, and after a RowsAffected sent part of it) and
// a panic; a RowsAffected read on the way has the count; a cancelled
// context is an error. Of many concurrent transactions inserting one key,
// exactly one commits. After each failure the pool still works (on
// PostgreSQL, a connection left in a failed transaction would fail the
// next one).
func TestInTxPipelined(t *testing.T) {
	eachDialect(t, func(t *testing.T, db *DB) {
		ctx := context.Background()
		if _, err := Exec(ctx, db, "CREATE TABLE pl (k VARCHAR(64) PRIMARY KEY, v INTEGER NOT NULL)"); err != nil {
			t.Fatal(err)
		}
		count := func() int {
			t.Helper()
			var n int
			if err := Get(ctx, db, &n, "SELECT COUNT(*) FROM pl"); err != nil {
				t.Fatal(err)
			}
			return n
		}
		insert := func(q Execer, k string, v int) error {
			_, err := Exec(ctx, q, "INSERT INTO pl (k, v) VALUES (?, ?)", k, v)
			return err
		}

		// All of it commits.
		err := db.InTxPipelined(ctx, func(q Execer) error {
			for i := range 5 {
				if err := insert(q, fmt.Sprintf("a%d", i), i); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil || count() != 5 {
			t.Fatalf("five inserts: err %v, %d rows", err, count())
		}

		// A duplicate in the middle: nothing of it.
		err = db.InTxPipelined(ctx, func(q Execer) error {
			for _, k := range []string{"b0", "a2", "b1"} {
				if err := insert(q, k, 0); err != nil {
					return err
				}
			}
			return nil
		})
		if !IsUniqueViolation(err) {
			t.Errorf("duplicate in the middle: err %v, want a unique violation", err)
		}
		if n := count(); n != 5 {
			t.Errorf("after the failed transaction: %d rows, want 5", n)
		}

		// A count read on the way, then fn refuses: nothing of it.
		refused := errors.New("refused")
		err = db.InTxPipelined(ctx, func(q Execer) error {
			if err := insert(q, "c0", 0); err != nil {
				return err
			}
			res, err := Exec(ctx, q, "UPDATE pl SET v = v + 1 WHERE v >= ?", 3)
			if err != nil {
				return err
			}
			if n, err := res.RowsAffected(); err != nil || n != 2 {
				t.Errorf("rows affected on the way: %d, %v, want 2", n, err)
			}
			return refused
		})
		if !errors.Is(err, refused) {
			t.Errorf("refused after a count: err %v", err)
		}
		var v int
		if err := Get(ctx, db, &v, "SELECT v FROM pl WHERE k = ?", "a4"); err != nil || v != 4 {
			t.Errorf("a4 = %d (%v) after the rolled-back update, want 4", v, err)
		}
		if n := count(); n != 5 {
			t.Errorf("after the refusal: %d rows, want 5", n)
		}

		// Refused before anything was sent.
		if err := db.InTxPipelined(ctx, func(q Execer) error { insert(q, "d0", 0); return refused }); !errors.Is(err, refused) {
			t.Errorf("refused at once: %v", err)
		}
		// A panic goes on up, and rolls back.
		func() {
			defer func() {
				if recover() == nil {
					t.Error("the panic did not reach the caller")
				}
			}()
			db.InTxPipelined(ctx, func(q Execer) error {
				insert(q, "e0", 0)
				if _, err := Exec(ctx, q, "UPDATE pl SET v = 0"); err != nil {
					return err
				}
				panic("boom")
			})
		}()
		// A cancelled context.
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		if err := db.InTxPipelined(cctx, func(q Execer) error { return insert(q, "f0", 0) }); err == nil {
			t.Error("a cancelled context committed")
		}
		if n := count(); n != 5 {
			t.Errorf("after refusals, a panic and a cancel: %d rows, want 5", n)
		}

		// Many transactions claim one key at once: one commits.
		var wg sync.WaitGroup
		var won, lost atomic.Int32
		for i := range 24 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				err := db.InTxPipelined(ctx, func(q Execer) error {
					if err := insert(q, "claim", i); err != nil {
						return err
					}
					return insert(q, fmt.Sprintf("by%02d", i), i)
				})
				switch {
				case err == nil:
					won.Add(1)
				case IsUniqueViolation(err):
					lost.Add(1)
				default:
					t.Errorf("claim %d: %v", i, err)
				}
			}()
		}
		wg.Wait()
		if won.Load() != 1 || lost.Load() != 23 {
			t.Errorf("%d claims won, %d lost, want 1 and 23", won.Load(), lost.Load())
		}
		if n := count(); n != 7 {
			t.Errorf("%d rows after the claims, want 7 (the claim and its winner's row)", n)
		}
	})
}
