package store

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
)

// TestCopyFrom: rows COPYed in a bulk transaction are in the table once
// it commits, with their types (NULLs, timestamps); they go with a
// rollback; a constraint fails the COPY as it fails an INSERT; and outside
// PostgreSQL, or in a transaction not begun by InBulkTx, CopyFrom writes
// nothing and says so.
func TestCopyFrom(t *testing.T) {
	eachDialect(t, func(t *testing.T, db *DB) {
		ctx := context.Background()
		d := db.Dialect()
		mustExec(t, db, "CREATE TABLE bulk (k VARCHAR(20) NOT NULL PRIMARY KEY, v BIGINT, at "+d.Types().Timestamp+")"+d.TableOptions())
		at := time.Date(2026, 12, 7, 15, 4, 5, 0, time.UTC)
		rows := [][]any{{"a", int64(1), at}, {"b", nil, nil}}
		cols := []string{"k", "v", "at"}
		count := func() int {
			t.Helper()
			var n int
			if err := Get(ctx, db, &n, "SELECT COUNT(*) FROM bulk"); err != nil {
				t.Fatal(err)
			}
			return n
		}

		var copied bool
		err := db.InBulkTx(ctx, func(tx *sqlx.Tx) error {
			var err error
			copied, err = CopyFrom(ctx, tx, "", "bulk", cols, rows)
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		if want := d.Kind() == Postgres; copied != want {
			t.Fatalf("CopyFrom copied=%v on %s, want %v", copied, d.Kind(), want)
		}
		if !copied {
			if n := count(); n != 0 {
				t.Fatalf("CopyFrom said it wrote nothing, and %d rows are there", n)
			}
			// Not a bulk transaction: nothing either.
			err := db.InTx(ctx, func(tx *sqlx.Tx) error {
				ok, err := CopyFrom(ctx, tx, "", "bulk", cols, rows)
				if ok || err != nil {
					t.Errorf("CopyFrom in InTx: %v, %v", ok, err)
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			return
		}
		var got []struct {
			K  string     `db:"k"`
			V  *int64     `db:"v"`
			At *time.Time `db:"at"`
		}
		if err := Select(ctx, db, &got, "SELECT k, v, at FROM bulk ORDER BY k"); err != nil {
			t.Fatal(err)
		}
		if len(got) != 2 || got[0].K != "a" || got[0].V == nil || *got[0].V != 1 || got[0].At == nil || !got[0].At.Equal(at) ||
			got[1].K != "b" || got[1].V != nil || got[1].At != nil {
			t.Fatalf("copied rows: %+v", got)
		}

		boom := errors.New("boom")
		err = db.InBulkTx(ctx, func(tx *sqlx.Tx) error {
			if _, err := CopyFrom(ctx, tx, "", "bulk", cols, [][]any{{"c", int64(3), at}}); err != nil {
				return err
			}
			return boom
		})
		if !errors.Is(err, boom) || count() != 2 {
			t.Fatalf("a rolled back COPY: %v, %d rows, want 2", err, count())
		}
		err = db.InBulkTx(ctx, func(tx *sqlx.Tx) error {
			_, err := CopyFrom(ctx, tx, "", "bulk", cols, [][]any{{"d", int64(4), at}, {"a", int64(5), at}})
			return err
		})
		if err == nil || count() != 2 {
			t.Fatalf("a COPY of a duplicate key: %v, %d rows, want an error and 2", err, count())
		}
		// The connections went back to the pool: the next transaction runs.
		if err := db.InBulkTx(ctx, func(tx *sqlx.Tx) error { _, err := Exec(ctx, tx, "DELETE FROM bulk"); return err }); err != nil || count() != 0 {
			t.Fatalf("after the COPYs: %v, %d rows", err, count())
		}
	})
}
