package store

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/passbridge/passbridge/config"
)

// TestSQLiteStatementCache: on SQLite (one connection), statements run
// through Exec, Get and Select are prepared once and reused, in and out of
// transactions (a statement first seen in a transaction is prepared when it
// ends, without waiting for the connection the transaction holds); results
// are those of the statements run as text; many goroutines mixing
// transactions and plain statements on the one connection never deadlock;
// the cache stays bounded.
func TestSQLiteStatementCache(t *testing.T) {
	ctx := context.Background()
	db := open(t, newConfig(t, SQLite))
	if db.stmts == nil {
		t.Fatal("SQLite has no statement cache")
	}
	if _, err := Exec(ctx, db, "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL)"); err != nil {
		t.Fatal(err)
	}
	insert := "INSERT INTO t (v) VALUES (?)"
	count := "SELECT COUNT(*) FROM t WHERE v = ?"
	update := "UPDATE t SET v = ? WHERE v = ?"
	cached := func(q string) bool {
		_, ok := db.stmts.stmts[q]
		return ok
	}

	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for w := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 25 {
				v := fmt.Sprintf("w%d-%d", w, i)
				if _, err := Exec(ctx, db, insert, v); err != nil {
					errs <- err
					return
				}
				err := db.InTx(ctx, func(tx *sqlx.Tx) error {
					var n int
					if err := Get(ctx, tx, &n, count, v); err != nil || n != 1 {
						return fmt.Errorf("count %s in a transaction: %d, %v", v, n, err)
					}
					_, err := Exec(ctx, tx, update, v+"!", v)
					return err
				})
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	var vs []string
	if err := Select(ctx, db, &vs, "SELECT v FROM t WHERE v LIKE ? ORDER BY id", "%!"); err != nil || len(vs) != 16*25 {
		t.Fatalf("rows updated in transactions: %d (%v), want %d", len(vs), err, 16*25)
	}
	for _, q := range []string{insert, count, update} {
		if !cached(q) {
			t.Errorf("not cached after use: %s", q)
		}
	}
	// A wrong statement is not cached and fails as it would as text.
	if _, err := Exec(ctx, db, "INSERT INTO nope (v) VALUES (?)", "x"); err == nil || cached("INSERT INTO nope (v) VALUES (?)") {
		t.Errorf("a statement on a missing table: %v (cached %v)", err, cached("INSERT INTO nope (v) VALUES (?)"))
	}
	// Bounded: varying texts fill the cache up to its size, then run as text.
	for i := range maxCachedStmts + 10 {
		var n int
		if err := Get(ctx, db, &n, fmt.Sprintf("SELECT %d", i)); err != nil || n != i {
			t.Fatalf("SELECT %d: %d %v", i, n, err)
		}
	}
	if got := len(db.stmts.stmts); got != maxCachedStmts {
		t.Errorf("%d statements cached, want the bound %d", got, maxCachedStmts)
	}
	// Other databases have none (pgx caches itself; MySQL interpolates).
	for _, k := range []Kind{Postgres, MySQL} {
		if d := open(t, config.Database{Driver: string(k), DSN: newConfig(t, k).DSN}); d.stmts != nil {
			t.Errorf("%s has a statement cache", k)
		}
	}
}

// TestSQLiteReader: an SQLite file's Reader is read-only, sees what the
// writer committed, and answers while a write transaction holds the one
// writer connection (WAL); in memory, and on the other databases, Reader is
// the DB itself.
func TestSQLiteReader(t *testing.T) {
	ctx := context.Background()
	db := open(t, newConfig(t, SQLite))
	r := db.Reader()
	if r == Querier(db) {
		t.Fatal("an SQLite file has no reader pool")
	}
	if _, err := Exec(ctx, db, "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL)"); err != nil {
		t.Fatal(err)
	}
	if _, err := Exec(ctx, db, "INSERT INTO t (v) VALUES (?)", "committed"); err != nil {
		t.Fatal(err)
	}
	if _, err := Exec(ctx, r, "INSERT INTO t (v) VALUES (?)", "through the reader"); err == nil {
		t.Fatal("the reader wrote")
	}
	err := db.InTx(ctx, func(tx *sqlx.Tx) error {
		if _, err := Exec(ctx, tx, "INSERT INTO t (v) VALUES (?)", "in progress"); err != nil {
			return err
		}
		// The writer's only connection is held here: the reader answers
		// anyway, with what is committed.
		rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		var vs []string
		if err := Select(rctx, r, &vs, "SELECT v FROM t ORDER BY id"); err != nil {
			return fmt.Errorf("read during a write transaction: %w", err)
		}
		if len(vs) != 1 || vs[0] != "committed" {
			return fmt.Errorf("the reader saw %v during the transaction, want [committed]", vs)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var n int
	if err := Get(ctx, r, &n, "SELECT COUNT(*) FROM t"); err != nil || n != 2 {
		t.Fatalf("after the commit the reader counts %d (%v), want 2", n, err)
	}
	mem := open(t, config.Database{Driver: "sqlite", DSN: ":memory:"})
	if mem.Reader() != Querier(mem) {
		t.Error("an in-memory SQLite database has a separate reader (it would be another, empty database)")
	}
}
