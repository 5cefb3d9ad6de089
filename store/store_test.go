package store

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/passbridge/passbridge/config"
	"github.com/passbridge/passbridge/internal/testsrv"
)

func TestMain(m *testing.M) { os.Exit(testsrv.Run(m)) }

var kinds = []Kind{SQLite, Postgres, MySQL}

// newConfig makes a fresh, empty database of kind for one test.
func newConfig(t *testing.T, kind Kind) config.Database {
	t.Helper()
	return config.Database{Driver: string(kind), DSN: config.Secret(testsrv.DSN(t, string(kind))), ConnectTimeout: config.Duration(30 * time.Second)}
}

func open(t *testing.T, cfg config.Database) *DB {
	t.Helper()
	db, err := Open(context.Background(), cfg, slog.New(slog.NewTextHandler(testWriter{t}, nil)))
	if err != nil {
		t.Fatalf("open %s: %v", cfg.Driver, err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// eachDialect runs fn against a fresh database of every kind, in parallel.
func eachDialect(t *testing.T, fn func(t *testing.T, db *DB)) {
	for _, k := range kinds {
		t.Run(string(k), func(t *testing.T) {
			t.Parallel()
			fn(t, open(t, newConfig(t, k)))
		})
	}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func mustExec(t *testing.T, q Querier, query string, args ...any) sql.Result {
	t.Helper()
	res, err := Exec(context.Background(), q, query, args...)
	if err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	return res
}

func TestDialectSQL(t *testing.T) {
	pg, _ := NewDialect("postgres")
	my, _ := NewDialect("mysql")
	sl, _ := NewDialect("sqlite")
	if _, err := NewDialect("oracle"); err == nil {
		t.Error("NewDialect accepted oracle")
	}
	for _, c := range []struct {
		d    Dialect
		got  string
		want string
	}{
		{pg, pg.Quote("user"), `"user"`},
		{pg, pg.Quote(`Mixed "Case"`), `"Mixed ""Case"""`},
		{sl, sl.Quote(`a"b`), `"a""b"`},
		{my, my.Quote("user"), "`user`"},
		{my, my.Quote("a`b\"c"), "`a``b\"c`"},
		{pg, pg.QuoteQualified("public", "user"), `"public"."user"`},
		{pg, pg.Table("", "users"), `"users"`},
		{pg, pg.Quote("a.b"), `"a.b"`},
		{my, my.Table("app", "user"), "`app`.`user`"},
		{pg, pg.Rebind("a = ? AND b IN (?, ?)"), "a = $1 AND b IN ($2, $3)"},
		{my, my.Rebind("a = ? AND b = ?"), "a = ? AND b = ?"},
		{sl, sl.Rebind("a = ? AND b = ?"), "a = ? AND b = ?"},
		{my, my.VarBinary(1023), "VARBINARY(1023)"},
		{pg, pg.VarBinary(1023), "BYTEA"},
		{sl, sl.ForUpdate(), ""},
		{pg, pg.ForUpdate(), " FOR UPDATE"},
	} {
		if c.got != c.want {
			t.Errorf("%s: got %s, want %s", c.d, c.got, c.want)
		}
	}

	up, err := pg.Upsert(pg.Table("", "t"), []string{"id", "name", "n"}, []string{"id"}, []string{"name", "n"})
	if want := `INSERT INTO "t" ("id", "name", "n") VALUES (?, ?, ?) ON CONFLICT ("id") DO UPDATE SET "name" = excluded."name", "n" = excluded."n"`; err != nil || up != want {
		t.Errorf("postgres upsert:\n got %s (%v)\nwant %s", up, err, want)
	}
	up, err = my.Upsert(my.Table("", "t"), []string{"id", "name"}, []string{"id"}, []string{"name"})
	if want := "INSERT INTO `t` (`id`, `name`) VALUES (?, ?) ON DUPLICATE KEY UPDATE `name` = VALUES(`name`)"; err != nil || up != want {
		t.Errorf("mysql upsert:\n got %s (%v)\nwant %s", up, err, want)
	}
	up, err = sl.Upsert(`"t"`, []string{"id", "name"}, []string{"id"}, nil)
	if want := `INSERT INTO "t" ("id", "name") VALUES (?, ?) ON CONFLICT ("id") DO NOTHING`; err != nil || up != want {
		t.Errorf("sqlite upsert:\n got %s (%v)\nwant %s", up, err, want)
	}
	for _, bad := range [][3][]string{
		{nil, {"id"}, nil},
		{{"id"}, nil, nil},
		{{"id"}, {"other"}, nil},
		{{"id"}, {"id"}, {"missing"}},
	} {
		if _, err := pg.Upsert(`"t"`, bad[0], bad[1], bad[2]); err == nil {
			t.Errorf("Upsert(%q, %q, %q) gave no error", bad[0], bad[1], bad[2])
		}
	}

	for _, c := range []struct {
		d    Dialect
		name string
		ok   bool
	}{
		{pg, "users", true},
		{pg, strings.Repeat("x", 63), true},
		{pg, strings.Repeat("x", 64), false},
		{pg, strings.Repeat("é", 32), false}, // 64 bytes
		{my, strings.Repeat("é", 64), true},
		{my, strings.Repeat("x", 65), false},
		{my, "trailing ", false},
		{sl, strings.Repeat("x", 200), true},
		{sl, "", false},
		{pg, "a\x00b", false},
		{pg, "\xff", false},
	} {
		if err := c.d.CheckIdentifier(c.name); (err == nil) != c.ok {
			t.Errorf("%s CheckIdentifier(%q): %v, want ok %v", c.d, c.name, err, c.ok)
		}
	}
}

func TestOpenAndPing(t *testing.T) {
	eachDialect(t, func(t *testing.T, db *DB) {
		ctx := context.Background()
		if err := db.PingContext(ctx); err != nil {
			t.Fatal(err)
		}
		var one int
		if err := Get(ctx, db, &one, "SELECT ? + 0", 1); err != nil || one != 1 {
			t.Fatalf("SELECT ? + 0: %d, %v", one, err)
		}
		if db.Describe() == "" || !strings.HasPrefix(db.Describe(), string(db.Dialect().Kind())) {
			t.Errorf("Describe() = %q", db.Describe())
		}
		if db.Dialect().Kind() == Postgres {
			var app string
			if err := db.GetContext(ctx, &app, "SELECT current_setting('application_name')"); err != nil || app != "passbridge" {
				t.Errorf("application_name %q (%v), want passbridge", app, err)
			}
		}
		if db.Dialect().Kind() == SQLite {
			// The DSN defaults reached the connection.
			for pragma, want := range map[string]string{"journal_mode": "wal", "foreign_keys": "1", "busy_timeout": "5000", "synchronous": "1"} {
				var got string
				if err := db.GetContext(ctx, &got, "PRAGMA "+pragma); err != nil || got != want {
					t.Errorf("PRAGMA %s = %q (%v), want %q", pragma, got, err, want)
				}
			}
			if got := db.Stats().MaxOpenConnections; got != 1 {
				t.Errorf("SQLite pool allows %d connections, want 1", got)
			}
		} else if got := db.Stats().MaxOpenConnections; got != 10 {
			t.Errorf("pool allows %d connections, want the default 10", got)
		}
	})
}

func TestSQLiteDSNKeepsExplicitSettings(t *testing.T) {
	ctx := context.Background()
	dsn := filepath.Join(t.TempDir(), "app.db") + "?_pragma=busy_timeout(1234)&_pragma=journal_mode(DELETE)&_fk=0"
	db := open(t, config.Database{Driver: "sqlite", DSN: config.Secret(dsn), MaxOpenConns: 3})
	for pragma, want := range map[string]string{"journal_mode": "delete", "foreign_keys": "0", "busy_timeout": "1234"} {
		var got string
		if err := db.GetContext(ctx, &got, "PRAGMA "+pragma); err != nil || got != want {
			t.Errorf("PRAGMA %s = %q (%v), want %q", pragma, got, err, want)
		}
	}
	if got := db.Stats().MaxOpenConnections; got != 3 {
		t.Errorf("max_open_conns 3 gave a pool of %d", got)
	}

	// :memory: is one database only on one connection.
	mem := open(t, config.Database{Driver: "sqlite", DSN: ":memory:", MaxOpenConns: 5})
	mustExec(t, mem, "CREATE TABLE t (x INTEGER)")
	mustExec(t, mem, "INSERT INTO t VALUES (?)", 7)
	var x int
	if err := Get(ctx, mem, &x, "SELECT x FROM t"); err != nil || x != 7 {
		t.Errorf("in-memory database lost its table: %d, %v", x, err)
	}

	_, err := Open(ctx, config.Database{Driver: "sqlite", DSN: "/nonexistent-dir-passbridge/app.db"}, nil)
	if err == nil || !strings.Contains(err.Error(), "/nonexistent-dir-passbridge") {
		t.Errorf("missing directory: %v", err)
	}
}

func TestQuotedNamesRoundTrip(t *testing.T) {
	eachDialect(t, func(t *testing.T, db *DB) {
		ctx := context.Background()
		d := db.Dialect()
		ty := d.Types()

		schema := ""
		switch d.Kind() {
		case Postgres:
			schema = `Odd "Schema"`
			mustExec(t, db, "CREATE SCHEMA "+d.Quote(schema))
		case MySQL:
			if err := db.GetContext(ctx, &schema, "SELECT DATABASE()"); err != nil {
				t.Fatal(err)
			}
		case SQLite:
			schema = "main"
		}
		for _, c := range []struct{ table, col1, col2 string }{
			{"user", "order", "Key"},
			{`Mixed Case"Quote`, "we`ird\"col", "select"},
		} {
			for _, table := range []string{d.Table("", c.table), d.Table(schema, c.table+"2")} {
				mustExec(t, db, fmt.Sprintf("CREATE TABLE %s (%s %s NOT NULL PRIMARY KEY, %s %s)%s",
					table, d.Quote(c.col1), d.VarChar(100), d.Quote(c.col2), ty.Text, d.TableOptions()))
				mustExec(t, db, fmt.Sprintf("INSERT INTO %s (%s, %s) VALUES (?, ?)", table, d.Quote(c.col1), d.Quote(c.col2)), "k1", "Grüße ✓")
				var got struct {
					A string `db:"a"`
					B string `db:"b"`
				}
				q := fmt.Sprintf("SELECT %s AS a, %s AS b FROM %s WHERE %s = ?", d.QuoteQualified(c.col1), d.Quote(c.col2), table, d.Quote(c.col1))
				if err := Get(ctx, db, &got, q, "k1"); err != nil {
					t.Fatalf("%s: %v", q, err)
				}
				if got.A != "k1" || got.B != "Grüße ✓" {
					t.Errorf("%s: got %+v", table, got)
				}
			}
		}
	})
}

func TestUpsertInsertsThenUpdates(t *testing.T) {
	eachDialect(t, func(t *testing.T, db *DB) {
		ctx := context.Background()
		d := db.Dialect()
		table := d.Table("", "identities")
		mustExec(t, db, fmt.Sprintf("CREATE TABLE %s (%s %s NOT NULL PRIMARY KEY, %s %s, %s %s)%s", table,
			d.Quote("guid"), d.VarChar(64), d.Quote("name"), d.Types().Text, d.Quote("n"), d.Types().BigInt, d.TableOptions()))
		up, err := d.Upsert(table, []string{"guid", "name", "n"}, []string{"guid"}, []string{"name", "n"})
		if err != nil {
			t.Fatal(err)
		}
		type row struct {
			GUID string `db:"guid"`
			Name string `db:"name"`
			N    int64  `db:"n"`
		}
		check := func(want ...row) {
			t.Helper()
			var got []row
			if err := Select(ctx, db, &got, "SELECT "+d.Quote("guid")+", "+d.Quote("name")+", "+d.Quote("n")+" FROM "+table+" ORDER BY "+d.Quote("guid")); err != nil {
				t.Fatal(err)
			}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("rows %v, want %v", got, want)
			}
		}
		mustExec(t, db, up, "g1", "alice", 1)
		mustExec(t, db, up, "g2", "bob", 1)
		check(row{"g1", "alice", 1}, row{"g2", "bob", 1})
		mustExec(t, db, up, "g1", "alice renamed", 2)
		check(row{"g1", "alice renamed", 2}, row{"g2", "bob", 1})

		// Without update columns an existing row stays as it is.
		keep, err := d.Upsert(table, []string{"guid", "name", "n"}, []string{"guid"}, nil)
		if err != nil {
			t.Fatal(err)
		}
		mustExec(t, db, keep, "g2", "overwritten?", 9)
		mustExec(t, db, keep, "g3", "carol", 1)
		check(row{"g1", "alice renamed", 2}, row{"g2", "bob", 1}, row{"g3", "carol", 1})

		// Inside a transaction too.
		if err := db.InTx(ctx, func(tx *sqlx.Tx) error {
			_, err := Exec(ctx, tx, up, "g3", "carol 2", 3)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		check(row{"g1", "alice renamed", 2}, row{"g2", "bob", 1}, row{"g3", "carol 2", 3})
	})
}

func TestBinaryRoundTrip(t *testing.T) {
	all := make([]byte, 256)
	for i := range all {
		all[i] = byte(i)
	}
	values := [][]byte{
		all,
		{0x00},
		{0x00, 0x00, 0x41, 0x00},
		{0xff, 0xfe, 0xfd},       // not UTF-8
		{0xc3, 0x28, 0xa0, 0xa1}, // invalid UTF-8 sequences
		[]byte("A"), []byte("a"), // differ only in case
		bytes.Repeat([]byte{0x80, 0x00}, 40000), // larger than a page, than 64 KiB
	}
	eachDialect(t, func(t *testing.T, db *DB) {
		ctx := context.Background()
		d := db.Dialect()
		mustExec(t, db, fmt.Sprintf("CREATE TABLE creds (id %s, cred_id %s NOT NULL UNIQUE, pub %s NOT NULL)%s",
			d.Types().ID, d.VarBinary(1023), d.Types().Binary, d.TableOptions()))
		for i, v := range values {
			key := append([]byte{byte(i)}, v[:min(len(v), 300)]...)
			mustExec(t, db, "INSERT INTO creds (cred_id, pub) VALUES (?, ?)", key, v)
		}
		for i, v := range values {
			key := append([]byte{byte(i)}, v[:min(len(v), 300)]...)
			var got []byte
			// Looked up by the binary key: equality is byte for byte.
			if err := Get(ctx, db, &got, "SELECT pub FROM creds WHERE cred_id = ?", key); err != nil {
				t.Fatalf("value %d: %v", i, err)
			}
			if !bytes.Equal(got, v) {
				t.Errorf("value %d: got %d bytes %x..., want %d bytes %x...", i, len(got), got[:min(len(got), 8)], len(v), v[:min(len(v), 8)])
			}
		}
		var n int
		if err := Get(ctx, db, &n, "SELECT COUNT(*) FROM creds WHERE cred_id = ?", []byte{5, 'a'}); err != nil || n != 0 {
			// values[5] is "A": a case-insensitive comparison would find it.
			t.Errorf("binary key compared case-insensitively: %d rows, %v", n, err)
		}
	})
}

func TestTypesRoundTrip(t *testing.T) {
	eachDialect(t, func(t *testing.T, db *DB) {
		ctx := context.Background()
		d := db.Dialect()
		ty := d.Types()
		mustExec(t, db, fmt.Sprintf(`CREATE TABLE things (id %s, big %s, txt %s, ts %s, flag %s, doc %s, created %s NOT NULL DEFAULT %s)%s`,
			ty.ID, ty.BigInt, ty.Text, ty.Timestamp, ty.Bool, ty.JSON, ty.Timestamp, d.CurrentTimestamp(), d.TableOptions()))
		berlin, err := time.LoadLocation("Europe/Berlin")
		if err != nil {
			berlin = time.FixedZone("CET", 3600)
		}
		ts := time.Date(2031, 7, 14, 23, 59, 58, 123456789, berlin)
		long := strings.Repeat("passkeys 🔑 für alle, ", 5000) // > 64 KiB, 4-byte UTF-8
		doc := `{"groups":["it","ops"],"n":1}`
		ins := "INSERT INTO things (big, txt, ts, flag, doc) VALUES (?, ?, ?, ?, ?)"
		id1, err := d.InsertID(ctx, db, ins, "id", int64(1<<62), long, ts, true, doc)
		if err != nil {
			t.Fatal(err)
		}
		id2, err := d.InsertID(ctx, db, ins, "id", int64(-5), "", ts.Add(time.Hour), false, "{}")
		if err != nil {
			t.Fatal(err)
		}
		if id1 < 1 || id2 != id1+1 {
			t.Errorf("InsertID gave %d then %d", id1, id2)
		}
		var got struct {
			Big     int64     `db:"big"`
			Txt     string    `db:"txt"`
			TS      time.Time `db:"ts"`
			Flag    bool      `db:"flag"`
			Doc     string    `db:"doc"`
			Created time.Time `db:"created"`
		}
		if err := Get(ctx, db, &got, "SELECT big, txt, ts, flag, doc, created FROM things WHERE id = ?", id1); err != nil {
			t.Fatal(err)
		}
		if got.Big != 1<<62 || got.Txt != long || !got.Flag || got.Doc != doc || got.Created.IsZero() {
			t.Errorf("got big %d, %d chars of text, flag %v, doc %q, created %v", got.Big, len(got.Txt), got.Flag, got.Doc, got.Created)
		}
		// Microsecond precision (SQLite keeps nanoseconds).
		if want := ts.Truncate(time.Microsecond); !got.TS.Truncate(time.Microsecond).Equal(want) {
			t.Errorf("timestamp %v, want %v", got.TS, want)
		}
		// Timestamps compare in SQL as instants.
		var n int
		if err := Get(ctx, db, &n, "SELECT COUNT(*) FROM things WHERE ts > ?", ts.Add(30*time.Minute).In(time.UTC)); err != nil || n != 1 {
			t.Errorf("rows after ts+30m: %d, %v", n, err)
		}
		if err := Get(ctx, db, &n, "SELECT COUNT(*) FROM things WHERE flag = ?", false); err != nil || n != 1 {
			t.Errorf("rows with flag false: %d, %v", n, err)
		}
	})
}

func TestRebindAndNamedQueries(t *testing.T) {
	eachDialect(t, func(t *testing.T, db *DB) {
		ctx := context.Background()
		mustExec(t, db, "CREATE TABLE kv (k VARCHAR(20) NOT NULL PRIMARY KEY, v BIGINT)")
		for i := range 5 {
			mustExec(t, db, "INSERT INTO kv (k, v) VALUES (?, ?)", fmt.Sprintf("k%d", i), i*10)
		}
		var vs []int64
		if err := Select(ctx, db, &vs, "SELECT v FROM kv WHERE k IN (?, ?, ?) AND v >= ? ORDER BY v", "k1", "k3", "k4", 30); err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(vs) != "[30 40]" {
			t.Errorf("got %v", vs)
		}
		// sqlx.In expands a slice, then Rebind fits the dialect.
		q, args, err := sqlx.In("SELECT v FROM kv WHERE k IN (?) ORDER BY v", []string{"k0", "k2"})
		if err != nil {
			t.Fatal(err)
		}
		vs = nil
		if err := Select(ctx, db, &vs, q, args...); err != nil || fmt.Sprint(vs) != "[0 20]" {
			t.Errorf("sqlx.In: %v, %v", vs, err)
		}
		// Named parameters bind with the dialect's bindvars.
		if _, err := db.NamedExecContext(ctx, "UPDATE kv SET v = :v WHERE k = :k", map[string]any{"k": "k1", "v": 11}); err != nil {
			t.Fatal(err)
		}
		var v int64
		if err := Get(ctx, db, &v, "SELECT v FROM kv WHERE k = ?", "k1"); err != nil || v != 11 {
			t.Errorf("named update: %d, %v", v, err)
		}
	})
}

func TestRowsAffectedCountsMatchedRows(t *testing.T) {
	eachDialect(t, func(t *testing.T, db *DB) {
		mustExec(t, db, "CREATE TABLE kv (k VARCHAR(20) NOT NULL PRIMARY KEY, v BIGINT)")
		mustExec(t, db, "INSERT INTO kv (k, v) VALUES (?, ?)", "a", 1)
		// An update that changes nothing still found its row.
		n, err := mustExec(t, db, "UPDATE kv SET v = ? WHERE k = ?", 1, "a").RowsAffected()
		if err != nil || n != 1 {
			t.Errorf("no-op update of an existing row affected %d rows (%v), want 1", n, err)
		}
		n, err = mustExec(t, db, "UPDATE kv SET v = ? WHERE k = ?", 1, "missing").RowsAffected()
		if err != nil || n != 0 {
			t.Errorf("update of a missing row affected %d rows (%v), want 0", n, err)
		}
	})
}

func TestInTx(t *testing.T) {
	eachDialect(t, func(t *testing.T, db *DB) {
		ctx := context.Background()
		d := db.Dialect()
		mustExec(t, db, "CREATE TABLE kv (k VARCHAR(20) NOT NULL PRIMARY KEY, v BIGINT)"+d.TableOptions())
		count := func() int {
			t.Helper()
			var n int
			if err := Get(ctx, db, &n, "SELECT COUNT(*) FROM kv"); err != nil {
				t.Fatal(err)
			}
			return n
		}

		boom := errors.New("boom")
		err := db.InTx(ctx, func(tx *sqlx.Tx) error {
			if _, err := Exec(ctx, tx, "INSERT INTO kv (k, v) VALUES (?, ?)", "rolled back", 1); err != nil {
				return err
			}
			// The row is visible inside the transaction.
			var n int
			if err := Get(ctx, tx, &n, "SELECT COUNT(*) FROM kv"); err != nil || n != 1 {
				t.Errorf("inside the transaction: %d rows, %v", n, err)
			}
			return fmt.Errorf("step 2: %w", boom)
		})
		if !errors.Is(err, boom) {
			t.Errorf("InTx returned %v, want the function's error", err)
		}
		if n := count(); n != 0 {
			t.Errorf("%d rows after a failed transaction, want 0", n)
		}

		func() {
			defer func() {
				if r := recover(); r != "panic in tx" {
					t.Errorf("recovered %v, want the function's panic", r)
				}
			}()
			_ = db.InTx(ctx, func(tx *sqlx.Tx) error {
				if _, err := Exec(ctx, tx, "INSERT INTO kv (k, v) VALUES (?, ?)", "panicked", 1); err != nil {
					return err
				}
				panic("panic in tx")
			})
		}()
		// Rolled back, and the connection went back to the pool (SQLite
		// has only one).
		if n := count(); n != 0 {
			t.Errorf("%d rows after a panicking transaction, want 0", n)
		}

		if err := db.InTx(ctx, func(tx *sqlx.Tx) error {
			var ks []string
			// Row locking syntax is valid on every dialect.
			if err := Select(ctx, tx, &ks, "SELECT k FROM kv WHERE k = ?"+d.ForUpdate(), "committed"); err != nil {
				return err
			}
			_, err := Exec(ctx, tx, "INSERT INTO kv (k, v) VALUES (?, ?)", "committed", len(ks))
			return err
		}); err != nil {
			t.Fatal(err)
		}
		if n := count(); n != 1 {
			t.Errorf("%d rows after a committed transaction, want 1", n)
		}
	})
}

func TestErrorClassification(t *testing.T) {
	eachDialect(t, func(t *testing.T, db *DB) {
		mustExec(t, db, "CREATE TABLE u (id BIGINT NOT NULL PRIMARY KEY, email VARCHAR(100) NOT NULL UNIQUE)")
		mustExec(t, db, "INSERT INTO u (id, email) VALUES (?, ?)", 1, "a@example.com")
		ctx := context.Background()
		_, errKey := Exec(ctx, db, "INSERT INTO u (id, email) VALUES (?, ?)", 1, "b@example.com")
		_, errUnique := Exec(ctx, db, "INSERT INTO u (id, email) VALUES (?, ?)", 2, "a@example.com")
		_, errSyntax := Exec(ctx, db, "INSERT INTO no_such_table (id) VALUES (?)", 1)
		for _, c := range []struct {
			name            string
			err             error
			unique, retries bool
		}{
			{"duplicate primary key", errKey, true, false},
			{"duplicate unique column", errUnique, true, false},
			{"missing table", errSyntax, false, false},
			{"wrapped duplicate", fmt.Errorf("link: %w", errUnique), true, false},
			{"nil", nil, false, false},
		} {
			if c.err == nil && c.name != "nil" {
				t.Errorf("%s: no error", c.name)
				continue
			}
			if got := IsUniqueViolation(c.err); got != c.unique {
				t.Errorf("%s: IsUniqueViolation(%v) = %v", c.name, c.err, got)
			}
			if got := IsRetryable(c.err); got != c.retries {
				t.Errorf("%s: IsRetryable(%v) = %v", c.name, c.err, got)
			}
		}
	})
}

func TestNamedLockExcludesOtherHolders(t *testing.T) {
	for _, k := range kinds {
		t.Run(string(k), func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			cfg := newConfig(t, k)
			db1, db2 := open(t, cfg), open(t, cfg)

			l1, ok, err := db1.TryLock(ctx, "sync")
			if err != nil || !ok {
				t.Fatalf("first TryLock: ok %v, %v", ok, err)
			}
			defer l1.Unlock()
			for _, db := range []*DB{db2, db1} {
				if l, ok, err := db.TryLock(ctx, "sync"); err != nil || ok {
					t.Errorf("second holder got the lock: ok %v, %v", ok, err)
					if l != nil {
						l.Unlock()
					}
				}
			}
			// Another name is another lock.
			other, ok, err := db2.TryLock(ctx, "portal-cleanup")
			if err != nil || !ok {
				t.Errorf("other lock name: ok %v, %v", ok, err)
			} else {
				other.Unlock()
			}
			// Another database is another scope.
			dbOther := open(t, newConfig(t, k))
			if l, ok, err := dbOther.TryLock(ctx, "sync"); err != nil || !ok {
				t.Errorf("same name on another database: ok %v, %v", ok, err)
			} else {
				l.Unlock()
			}

			if held, err := l1.Held(ctx); err != nil || !held {
				t.Errorf("Held = %v, %v while held", held, err)
			}
			if err := l1.Unlock(); err != nil {
				t.Errorf("Unlock: %v", err)
			}
			if err := l1.Unlock(); err != nil {
				t.Errorf("second Unlock: %v", err)
			}
			if held, err := l1.Held(ctx); err != nil || held {
				t.Errorf("Held = %v, %v after Unlock", held, err)
			}
			l2, ok, err := db2.TryLock(ctx, "sync")
			if err != nil || !ok {
				t.Fatalf("TryLock after Unlock: ok %v, %v", ok, err)
			}
			defer l2.Unlock()

			// A holder whose session the server ended loses the lock and
			// notices.
			if k == SQLite {
				return
			}
			var kill string
			switch k {
			case Postgres:
				var pid int
				if err := Get(ctx, db1, &pid, "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"); err != nil {
					t.Fatal(err)
				}
				kill = fmt.Sprintf("SELECT pg_terminate_backend(%d)", pid)
			case MySQL:
				var id int64
				if err := Get(ctx, db1, &id, "SELECT IS_USED_LOCK(?)", l2.key); err != nil {
					t.Fatal(err)
				}
				kill = fmt.Sprintf("KILL %d", id)
			}
			mustExec(t, db1, kill)
			// The server ends the session asynchronously: wait for it.
			deadline := time.Now().Add(30 * time.Second)
			for {
				if held, _ := l2.Held(ctx); !held {
					break
				}
				if time.Now().After(deadline) {
					t.Fatal("Held stays true after the server ended the holding session")
				}
				time.Sleep(20 * time.Millisecond)
			}
			for {
				l3, ok, err := db1.TryLock(ctx, "sync")
				if err != nil {
					t.Fatal(err)
				}
				if ok {
					l3.Unlock()
					break
				}
				if time.Now().After(deadline) {
					t.Fatal("the lock of a killed session was never released")
				}
				time.Sleep(20 * time.Millisecond)
			}
		})
	}
}

func TestSQLiteLockFileSeenByOtherOpenFiles(t *testing.T) {
	// flock belongs to an open file: a separate open, as another process
	// would make, cannot take the lock while it is held.
	dbPath := filepath.Join(t.TempDir(), "app.db")
	db := open(t, config.Database{Driver: "sqlite", DSN: config.Secret(dbPath)})
	l, ok, err := db.TryLock(context.Background(), "sync")
	if err != nil || !ok {
		t.Fatalf("TryLock: %v %v", ok, err)
	}
	lockFile := sqliteLockPath(dbPath, "sync")
	if filepath.Dir(lockFile) != filepath.Dir(dbPath) || !strings.Contains(filepath.Base(lockFile), "sync") {
		t.Errorf("lock file %s", lockFile)
	}
	_, ok, err = flockTry(lockFile)
	if err != nil || ok {
		t.Errorf("flock of a held lock file: ok %v, %v", ok, err)
	}
	l.Unlock()
	release, ok, err := flockTry(lockFile)
	if err != nil || !ok {
		t.Fatalf("flock after Unlock: ok %v, %v", ok, err)
	}
	release()
	if p := sqliteLockPath(dbPath, "../../etc/passwd"); filepath.Dir(p) != filepath.Dir(dbPath) {
		t.Errorf("lock name escaped the database directory: %s", p)
	}
}

// TestSQLiteLockFileRemoved: Unlock removes the lock file, and taking and
// releasing the lock from many open files at once (as processes would)
// never lets two of them hold it, although each release unlinks the file
// that the others may have open: a holder whose file was unlinked under it
// must notice and take the lock again on the file now at the path.
func TestSQLiteLockFileRemoved(t *testing.T) {
	dbPath := filepath.Join(t.TempDir(), "app.db")
	db := open(t, config.Database{Driver: "sqlite", DSN: config.Secret(dbPath)})
	l, ok, err := db.TryLock(context.Background(), "migrate:main:passbridge_")
	if err != nil || !ok {
		t.Fatalf("TryLock: %v %v", ok, err)
	}
	lockFile := sqliteLockPath(dbPath, "migrate:main:passbridge_")
	if _, err := os.Stat(lockFile); err != nil {
		t.Fatalf("while held: %v", err)
	}
	if err := l.Unlock(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(lockFile); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("after Unlock the lock file is still there (%v)", err)
	}

	path := filepath.Join(t.TempDir(), "race.lock")
	var holders, taken atomic.Int64
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 1000 {
				release, ok, err := flockTry(path)
				if err != nil {
					t.Error(err)
					return
				}
				if !ok {
					continue
				}
				if n := holders.Add(1); n != 1 {
					t.Errorf("%d holders of one lock at once", n)
				}
				taken.Add(1)
				runtime.Gosched() // let the others open the file meanwhile
				holders.Add(-1)
				if err := release(); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if taken.Load() == 0 {
		t.Fatal("nobody ever got the lock")
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("after the last release the lock file is still there (%v)", err)
	}
	t.Logf("taken %d times", taken.Load())
}

func TestWithLockTimeout(t *testing.T) {
	for _, k := range kinds {
		t.Run(string(k), func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			cfg := newConfig(t, k)
			holder := open(t, cfg)
			cfg.MaxOpenConns = 1 // WithLockTimeout and the checks share one connection
			db := open(t, cfg)
			mustExec(t, holder, "CREATE TABLE t (id BIGINT NOT NULL PRIMARY KEY)"+holder.Dialect().TableOptions())
			mustExec(t, holder, "INSERT INTO t (id) VALUES (?)", 1)

			setting := map[Kind]string{
				Postgres: "SELECT current_setting('lock_timeout')",
				MySQL:    "SELECT CONCAT(@@SESSION.lock_wait_timeout, '/', @@SESSION.innodb_lock_wait_timeout)",
				SQLite:   "PRAGMA busy_timeout",
			}[k]
			var before string
			if err := db.GetContext(ctx, &before, setting); err != nil {
				t.Fatal(err)
			}

			// The holder keeps a transaction open on t.
			tx, err := holder.BeginTxx(ctx, nil)
			if err != nil {
				t.Fatal(err)
			}
			switch k {
			case Postgres:
				_, err = tx.ExecContext(ctx, "LOCK TABLE t IN ACCESS SHARE MODE")
			case MySQL:
				_, err = tx.ExecContext(ctx, "SELECT id FROM t")
			case SQLite:
				_, err = tx.ExecContext(ctx, "INSERT INTO t (id) VALUES (2)")
			}
			if err != nil {
				t.Fatal(err)
			}
			alter := "ALTER TABLE t ADD COLUMN c BIGINT"
			err = db.WithLockTimeout(ctx, 200*time.Millisecond, func(conn *sqlx.Conn) error {
				var during string
				if err := conn.GetContext(ctx, &during, setting); err != nil {
					return err
				}
				if during == before {
					t.Errorf("lock timeout setting unchanged inside WithLockTimeout: %s", during)
				}
				_, err := conn.ExecContext(ctx, alter)
				return err
			})
			if err == nil || !IsRetryable(err) {
				t.Errorf("DDL behind a held lock: %v; want a retryable lock timeout", err)
			}
			tx.Rollback()

			var after string
			if err := db.GetContext(ctx, &after, setting); err != nil {
				t.Fatal(err)
			}
			if after != before {
				t.Errorf("lock timeout setting %q after WithLockTimeout, want it restored to %q", after, before)
			}
			if err := db.WithLockTimeout(ctx, 200*time.Millisecond, func(conn *sqlx.Conn) error {
				_, err := conn.ExecContext(ctx, alter)
				return err
			}); err != nil {
				t.Errorf("DDL once the lock is free: %v", err)
			}
		})
	}
}

// closedPort is a port on 127.0.0.1 where nothing listens.
func closedPort(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	return port
}

func TestConnectGivesUpWithoutLeakingThePassword(t *testing.T) {
	const password = "Sup3r-s3cret!pw"
	port := closedPort(t)
	for _, c := range []struct {
		driver, dsn string
		want        []string
	}{
		{"postgres", fmt.Sprintf("postgres://app:%s@127.0.0.1:%d/appdb?sslmode=disable", url.QueryEscape(password), port),
			[]string{"postgres", fmt.Sprintf("127.0.0.1:%d", port), `"appdb"`, `"app"`, "gave up"}},
		{"postgres", fmt.Sprintf("host=127.0.0.1 port=%d user=app password=%s dbname=appdb sslmode=disable", port, password),
			[]string{"postgres", fmt.Sprintf("127.0.0.1:%d", port), `"appdb"`, "gave up"}},
		{"mysql", fmt.Sprintf("app:%s@tcp(127.0.0.1:%d)/appdb", password, port),
			[]string{"mysql", fmt.Sprintf("127.0.0.1:%d", port), `"appdb"`, `"app"`, "gave up"}},
	} {
		t.Run(c.driver, func(t *testing.T) {
			t.Parallel()
			var logs bytes.Buffer
			log := slog.New(slog.NewTextHandler(&logs, nil))
			cfg := config.Database{Driver: c.driver, DSN: config.Secret(c.dsn), ConnectTimeout: config.Duration(time.Second)}
			db, err := Open(context.Background(), cfg, log)
			if err == nil {
				db.Close()
				t.Fatal("Open succeeded with nothing listening")
			}
			msg := err.Error()
			for _, w := range c.want {
				if !strings.Contains(msg, w) {
					t.Errorf("error %q does not mention %s", msg, w)
				}
			}
			for _, leak := range secretForms(password) {
				if strings.Contains(msg, leak) || strings.Contains(logs.String(), leak) {
					t.Errorf("password (%q) in error %q or logs %q", leak, msg, logs.String())
				}
			}
			if !strings.Contains(logs.String(), "retrying") {
				t.Errorf("no retry was logged: %s", logs.String())
			}
		})
	}

	// Malformed DSNs: the drivers quote them in their parse errors.
	for _, c := range []struct{ driver, dsn string }{
		{"postgres", "postgres://app:" + password + "@127.0.0.1:notaport/appdb"},
		{"postgres", "host=127.0.0.1 port=x password=" + password},
		{"postgres", "postgres://app:" + password + "@[::1/appdb"},
		{"mysql", "app:" + password + "@tcp(127.0.0.1:3306/appdb"},
		{"mysql", "app:" + password + "@tcp(127.0.0.1:3306)/appdb?parseTime=maybe"},
		{"mysql", "app:" + password + "@tcp(127.0.0.1:3306)/"},
	} {
		_, err := Open(context.Background(), config.Database{Driver: c.driver, DSN: config.Secret(c.dsn), ConnectTimeout: config.Duration(time.Second)}, nil)
		if err == nil {
			t.Errorf("%s DSN %q accepted", c.driver, c.dsn)
			continue
		}
		if strings.Contains(err.Error(), password) {
			t.Errorf("password in the error for a malformed %s DSN: %v", c.driver, err)
		}
	}
}

func TestConnectDoesNotRetryRejectedCredentials(t *testing.T) {
	for _, k := range []Kind{Postgres, MySQL} {
		t.Run(string(k), func(t *testing.T) {
			t.Parallel()
			cfg := newConfig(t, k)
			var wrong string
			switch k {
			case Postgres:
				p := testsrv.Postgres(t)
				wrong = strings.Replace(cfg.DSN.Reveal(), p.AppPassword, "Wr0ng-"+p.AppPassword, 1)
			case MySQL:
				m := testsrv.MariaDB(t)
				wrong = strings.Replace(cfg.DSN.Reveal(), m.AppPassword, "Wr0ng-"+m.AppPassword, 1)
			}
			cfg.DSN = config.Secret(wrong)
			cfg.ConnectTimeout = config.Duration(time.Minute)
			_, err := Open(context.Background(), cfg, nil)
			if err == nil {
				t.Fatal("Open accepted a wrong password")
			}
			if !strings.Contains(err.Error(), "not retried after 1 attempt") {
				t.Errorf("wrong password: %v; want it not retried", err)
			}
			if strings.Contains(err.Error(), "Wr0ng-") {
				t.Errorf("the wrong password is in the error: %v", err)
			}
		})
	}
}

func TestSQLiteDSN(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct {
		dsn      string
		path     string // "" for memory
		keep     []string
		defaults bool
	}{
		{dsn: filepath.Join(dir, "a.db"), path: filepath.Join(dir, "a.db"), defaults: true},
		{dsn: "file:" + filepath.Join(dir, "b.db") + "?cache=shared&mode=rwc", path: filepath.Join(dir, "b.db"), keep: []string{"cache=shared", "mode=rwc"}, defaults: true},
		{dsn: "file://" + filepath.Join(dir, "c%20d.db"), path: filepath.Join(dir, "c d.db"), defaults: true},
		{dsn: ":memory:"},
		{dsn: "file::memory:?cache=shared", keep: []string{"cache=shared"}},
		{dsn: "file:x.db?mode=memory"},
		{dsn: filepath.Join(dir, "e.db") + "?_txlock=deferred&_time_format=datetime&_busy_timeout=10", path: filepath.Join(dir, "e.db"),
			keep: []string{"_txlock=deferred", "_time_format=datetime", "_busy_timeout=10"}},
	} {
		full, tg, err := sqliteDSN(c.dsn)
		if err != nil {
			t.Errorf("%s: %v", c.dsn, err)
			continue
		}
		if tg.sqlitePath != c.path || tg.memory != (c.path == "") {
			t.Errorf("%s: path %q memory %v, want %q", c.dsn, tg.sqlitePath, tg.memory, c.path)
		}
		q, err := url.ParseQuery(full[strings.Index(full, "?")+1:])
		if err != nil {
			t.Fatal(err)
		}
		for _, kv := range c.keep {
			k, v, _ := strings.Cut(kv, "=")
			if q.Get(k) != v {
				t.Errorf("%s: %s became %q in %s", c.dsn, kv, q.Get(k), full)
			}
		}
		if c.defaults {
			for _, want := range []string{"busy_timeout(5000)", "journal_mode(WAL)", "foreign_keys(1)"} {
				if !strings.Contains(strings.Join(q["_pragma"], " "), want) {
					t.Errorf("%s: no %s in %s", c.dsn, want, full)
				}
			}
			if q.Get("_txlock") != "immediate" || q.Get("_time_format") != "sqlite" {
				t.Errorf("%s: txlock/time format defaults missing in %s", c.dsn, full)
			}
		}
		if tg.memory && strings.Contains(full, "WAL") {
			t.Errorf("%s: WAL asked for an in-memory database: %s", c.dsn, full)
		}
	}
	if _, _, err := sqliteDSN("x.db?%zz"); err == nil {
		t.Error("a malformed query was accepted")
	}
}

func TestDatabaseTimestampsAreUTC(t *testing.T) {
	// The test servers do not run in UTC: a CURRENT_TIMESTAMP default must
	// still read back as the same instant as a time written from Go.
	eachDialect(t, func(t *testing.T, db *DB) {
		ctx := context.Background()
		d := db.Dialect()
		ty := d.Types()
		mustExec(t, db, fmt.Sprintf("CREATE TABLE ev (id %s, written %s NOT NULL, created %s NOT NULL DEFAULT %s)%s",
			ty.ID, ty.Timestamp, ty.Timestamp, d.CurrentTimestamp(), d.TableOptions()))
		id, err := d.InsertID(ctx, db, "INSERT INTO ev (written) VALUES (?)", "id", time.Now())
		if err != nil {
			t.Fatal(err)
		}
		var got struct {
			Written time.Time `db:"written"`
			Created time.Time `db:"created"`
		}
		if err := Get(ctx, db, &got, "SELECT written, created FROM ev WHERE id = ?", id); err != nil {
			t.Fatal(err)
		}
		// Not a timing assertion: a time zone mistake is off by hours.
		if diff := got.Created.Sub(got.Written).Abs(); diff > 30*time.Minute {
			t.Errorf("database default %v and written %v are %v apart: a time zone is wrong", got.Created, got.Written, diff)
		}
	})
}

// TestLiveConnAfterCut: after a network cut, the pool still holds the
// connections that were in use a moment before, and pgx hands such a one
// out again without a ping: a dedicated connection's first statement
// would fail ("driver: bad connection"). LiveConn and TryLock (which
// takes its connection through it) get one that answers.
func TestLiveConnAfterCut(t *testing.T) {
	for _, k := range []Kind{Postgres, MySQL} {
		t.Run(string(k), func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			cfg := newConfig(t, k)
			addr := ""
			if k == Postgres {
				pg := testsrv.Postgres(t)
				addr = net.JoinHostPort(pg.Host, fmt.Sprint(pg.Port))
			} else {
				m := testsrv.MariaDB(t)
				addr = net.JoinHostPort(m.Host, fmt.Sprint(m.Port))
			}
			proxy := testsrv.StartProxy(t, addr)
			cfg.DSN = config.Secret(proxy.RewriteDSN(cfg.DSN.Reveal()))
			db := open(t, cfg)
			// Four connections handed out twice a moment before the cut.
			testsrv.Churn(t, db.DB.DB, 4)
			testsrv.Churn(t, db.DB.DB, 4)
			if proxy.Cut() < 4 {
				t.Fatal("the cut found fewer than four connections")
			}
			for i := range 3 {
				c, err := db.LiveConn(ctx)
				if err != nil {
					t.Fatalf("LiveConn %d: %v", i, err)
				}
				defer c.Close()
				if _, err := c.ExecContext(ctx, "SELECT 1"); err != nil {
					t.Fatalf("LiveConn %d gave a dead connection: %v", i, err)
				}
			}
			proxy.Cut()
			l, ok, err := db.TryLock(ctx, "after-the-cut")
			if err != nil || !ok {
				t.Fatalf("TryLock after the cut: %v %v", ok, err)
			}
			l.Unlock()
		})
	}
}
