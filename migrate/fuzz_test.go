package migrate

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/passbridge/passbridge/config"
	"github.com/passbridge/passbridge/store"
)

// FuzzInspectSQLite builds a users table of odd shape on SQLite from the
// fuzz input (table and column names with quotes, spaces, brackets and
// non-ASCII; any declared types; the key as a column or table primary key,
// a unique index or nothing; an index on any expression SQLite accepts),
// then runs Inspect, plans and applies the migration. Properties: no
// panic; a refusal is a clear error (never a bare SQL syntax error of
// passbridge's own making); a table whose key is its primary key is always
// inspected, with the names exactly as declared; a plan that is made
// applies and verifies (the generated SQL quotes every name right; bit 2
// of mode asks for that, most seeds do).
func FuzzInspectSQLite(f *testing.F) {
	for _, s := range []struct {
		table, cols, types string
		key, mode          uint8
		index              string
	}{
		{"users", "id,username,password_hash", "INTEGER,TEXT,TEXT", 0, 4, ""},
		{"User", "ID,Name,pw", "integer,varchar(255),varchar(255)", 0, 5, "lower(Name)"},
		{`we"ird`, `i"d,us er,pa'ss`, "BIGINT,,BLOB", 0, 4, `"us er" COLLATE NOCASE`},
		{"[brackets]", "[id],`tick`,--pw", "TEXT,TEXT,TEXT", 0, 5, "substr(`tick`, 1, 3), [id]"},
		{"ünïcødé", "ключ,名前,密码", "UUID,TEXT,TEXT", 0, 4, ""},
		{"t", "a,b,c", "INT,INT,INT", 1, 6, "a + b, (c * 2)"},
		{"t", "a,b,c", "INT,INT,INT", 0, 3, ""},
		{"users", "id,username,password_hash", "DECIMAL(10, 2),TEXT,TEXT", 0, 0, "')', \"(\""},
		{"select", "from,where,order", "\"quoted type\",TEXT,TEXT", 0, 4, `"where" || ')'`},
		{"t t", "id,passbridge_passkey_state,x", "INTEGER,INT,TEXT", 0, 0, ""},
		{"users", "id,ID,x", "INTEGER,TEXT,TEXT", 0, 0, ""},
		{"users", "id", "INTEGER", 0, 4, ""},
		{"users", "id,u,p", "INTEGER,TEXT,TEXT", 0, 0, "CASE WHEN u = ',' THEN 1 ELSE 2 END, p"},
	} {
		f.Add(s.table, s.cols, s.types, s.key, s.mode, s.index)
	}
	ctx := context.Background()
	f.Fuzz(func(t *testing.T, table, colList, typeList string, key, mode uint8, index string) {
		cols := strings.Split(colList, ",")
		types := strings.Split(typeList, ",")
		if !plainName(table) || len(cols) > 6 || len(index) > 200 || len(typeList) > 200 || strings.ContainsRune(index+typeList, 0) {
			return
		}
		seen := map[string]bool{}
		for _, c := range cols {
			if !plainName(c) || seen[strings.ToLower(c)] {
				return // SQLite refuses duplicate names; empty names are not columns
			}
			seen[strings.ToLower(c)] = true
		}
		k := int(key) % len(cols)
		q := SQLite.dialect().Quote
		var defs []string
		for i, c := range cols {
			d := q(c)
			if i < len(types) {
				d += " " + types[i]
			}
			if mode%4 == 0 && i == k {
				d += " PRIMARY KEY"
			}
			defs = append(defs, d)
		}
		if mode%4 == 1 {
			defs = append(defs, "PRIMARY KEY ("+q(cols[k])+")")
		}
		d := config.Database{Driver: "sqlite", DSN: config.Secret(filepath.Join(t.TempDir(), "app.db")), ConnectTimeout: config.Duration(10 * time.Second)}
		db, err := store.Open(ctx, d, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		if _, err := db.ExecContext(ctx, "CREATE TABLE "+q(table)+" ("+strings.Join(defs, ", ")+")"); err != nil {
			return // SQLite refused the table: not a schema anyone has
		}
		if mode%4 == 2 {
			if _, err := db.ExecContext(ctx, "CREATE UNIQUE INDEX "+q("ux_"+cols[k])+" ON "+q(table)+" ("+q(cols[k])+")"); err != nil {
				t.Fatal(err)
			}
		}
		if index != "" {
			// An index on whatever SQLite takes: expressions, collations,
			// quotes and parentheses inside literals.
			_, _ = db.ExecContext(ctx, "CREATE INDEX "+q("ix_fuzz")+" ON "+q(table)+" ("+index+")")
		}
		ut := config.UsersTable{Name: table, Key: cols[k]}
		if len(cols) > 1 {
			ut.Username = cols[(k+1)%len(cols)]
		}
		if len(cols) > 2 {
			ut.Password = cols[(k+2)%len(cols)]
		}
		u, err := Inspect(ctx, db, ut)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "users_table.") {
				t.Fatalf("unclear error: %v", err)
			}
			if mode%4 <= 1 {
				t.Fatalf("a table whose key %q is its primary key was refused: %v", cols[k], err)
			}
			return
		}
		if u.Name != table || u.Key.Name != cols[k] || len(u.Columns) != len(cols) {
			t.Fatalf("inspected %q key %q with %d columns; declared %q key %q with %d", u.Name, u.Key.Name, len(u.Columns), table, cols[k], len(cols))
		}
		for i, c := range u.Columns {
			if c.Name != cols[i] {
				t.Fatalf("column %d is %q, declared %q", i, c.Name, cols[i])
			}
		}
		for _, ix := range u.Indexes {
			for _, c := range ix.Columns {
				if c == "" {
					t.Fatalf("index %s has an empty column: %+v", ix.Name, ix)
				}
			}
		}
		cfg := testConfig(d, ut)
		p, err := NewPlan(ctx, db, cfg)
		if err != nil {
			var ce *CollisionError
			if errors.As(err, &ce) || strings.HasPrefix(err.Error(), "users_table.") || strings.Contains(err.Error(), "migrate.prefix") {
				return // a name passbridge needs is taken, and it says so
			}
			t.Fatalf("plan: %v", err)
		}
		if len(p.Steps) == 0 {
			t.Fatal("a plan with no steps on a fresh database")
		}
		if mode&4 == 0 {
			// Applying is the slow part (SQLite under the fuzzer's
			// coverage instrumentation): the fuzzer chooses when.
			return
		}
		if _, err := Apply(ctx, db, cfg, Options{}); err != nil {
			t.Fatalf("apply: %v", err)
		}
		if _, err := Verify(ctx, db, cfg); err != nil {
			t.Fatalf("verify: %v", err)
		}
	})
}

// plainName is a name a DBA could give a table or column: non-empty,
// valid UTF-8, no NUL, at most 64 bytes, not SQLite's own prefix.
func plainName(s string) bool {
	return s != "" && len(s) <= 64 && utf8.ValidString(s) && !strings.ContainsRune(s, 0) &&
		!strings.HasPrefix(strings.ToLower(s), "sqlite_") && strings.TrimSpace(s) == s
}
