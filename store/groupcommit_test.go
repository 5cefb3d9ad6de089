package store

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/jmoiron/sqlx"
)

// TestGroupCommit runs many concurrent InTxShared transactions on SQLite:
// they share commits, and each member's rows are written all or none, by
// its own outcome.
func TestGroupCommit(t *testing.T) {
	ctx := context.Background()
	db := groupTable(t)
	refused := errors.New("refused")
	const workers, each = 32, 20
	members(t, workers, each, func(w, i int) error {
		v := fmt.Sprintf("w%02d-%02d", w, i)
		err := db.InTxShared(ctx, func(tx *sqlx.Tx) error {
			// Two rows a member; a refused member's first row must
			// not survive its refusal.
			for part := range 2 {
				if _, err := Exec(ctx, tx, "INSERT INTO t (v, part) VALUES (?, ?)", v, part); err != nil && part == 0 {
					return err
				}
				if i%7 == 3 {
					return refused
				}
				v += "+"
			}
			return nil
		})
		if want := error(nil); i%7 == 3 {
			want = refused
			if !errors.Is(err, want) {
				return fmt.Errorf("%s: %v, want %v", v, err, want)
			}
		} else if err != nil {
			return fmt.Errorf("%s: %w", v, err)
		}
		return nil
	})
	var n, bad int
	if err := Get(ctx, db, &n, "SELECT COUNT(*) FROM t"); err != nil {
		t.Fatal(err)
	}
	if err := Get(ctx, db, &bad, "SELECT COUNT(*) FROM t WHERE CAST(substr(v, 5, 2) AS INTEGER) % 7 = 3"); err != nil {
		t.Fatal(err)
	}
	kept := 0
	for i := range each {
		if i%7 != 3 {
			kept++
		}
	}
	if n != workers*kept*2 || bad != 0 {
		t.Errorf("%d rows (want %d), %d of refused members (want 0)", n, workers*kept*2, bad)
	}
	if c := db.group.commits; c >= workers*each {
		t.Errorf("%d commits for %d transactions: none shared", c, workers*each)
	} else {
		t.Logf("%d transactions in %d commits", workers*each, c)
	}

	// A member whose context ended before its turn is skipped.
	done, cancel := context.WithCancel(ctx)
	cancel()
	if err := db.InTxShared(done, func(tx *sqlx.Tx) error {
		_, err := Exec(ctx, tx, "INSERT INTO t (v, part) VALUES ('cancelled', 0)")
		return err
	}); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled member: %v", err)
	}

	// A member that panics panics in its own goroutine; the group goes on.
	func() {
		defer func() {
			if r := recover(); r != "member panic" {
				t.Errorf("recovered %v", r)
			}
		}()
		_ = db.InTxShared(ctx, func(tx *sqlx.Tx) error {
			if _, err := Exec(ctx, tx, "INSERT INTO t (v, part) VALUES ('panicked', 0)"); err != nil {
				return err
			}
			panic("member panic")
		})
	}()
	if err := db.InTxShared(ctx, func(tx *sqlx.Tx) error {
		_, err := Exec(ctx, tx, "INSERT INTO t (v, part) VALUES ('after', 0)")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	var left []string
	if err := Select(ctx, db, &left, "SELECT v FROM t WHERE v IN ('cancelled', 'panicked', 'after') ORDER BY v"); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(left) != "[after]" {
		t.Errorf("rows %v, want [after]", left)
	}
}

// TestGroupCommitMemberContext: a member's statements run on the shared
// transaction's context, not on the context the member passes. A member
// whose request ends halfway through its function (its context cancelled
// between two statements, or during one) neither fails on it nor
// interrupts the shared transaction (an SQLite statement interrupted in a
// transaction rolls all of it back, the other members' rows with it).
func TestGroupCommitMemberContext(t *testing.T) {
	ctx := context.Background()
	db := groupTable(t)
	const workers, each = 16, 20
	members(t, workers, each, func(w, i int) error {
		v := fmt.Sprintf("w%02d-%02d", w, i)
		mctx, cancel := context.WithCancel(ctx)
		defer cancel()
		err := db.InTxShared(mctx, func(tx *sqlx.Tx) error {
			for part := range 3 {
				if part == 1 && w%2 == 0 {
					cancel() // the member's request goes away halfway
				}
				if _, err := Exec(mctx, tx, "INSERT INTO t (v, part) VALUES (?, ?)", fmt.Sprintf("%s-%d", v, part), part); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("%s: %w", v, err)
		}
		return nil
	})
	var n int
	if err := Get(ctx, db, &n, "SELECT COUNT(*) FROM t"); err != nil {
		t.Fatal(err)
	}
	if n != workers*each*3 {
		t.Errorf("%d rows, want %d", n, workers*each*3)
	}
}

// groupTable opens an SQLite database with the table the group commit
// tests write: t (v TEXT PRIMARY KEY, part INTEGER NOT NULL).
func groupTable(t *testing.T) *DB {
	t.Helper()
	db := open(t, newConfig(t, SQLite))
	if _, err := Exec(context.Background(), db, "CREATE TABLE t (v TEXT PRIMARY KEY, part INTEGER NOT NULL)"); err != nil {
		t.Fatal(err)
	}
	return db
}

// members runs member(w, i) for i from 0 to each-1 in each of workers
// goroutines at once, and reports every error a member returns.
func members(t *testing.T, workers, each int, member func(w, i int) error) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, workers*each)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				if err := member(w, i); err != nil {
					errs <- err
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
