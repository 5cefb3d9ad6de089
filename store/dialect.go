package store

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/jmoiron/sqlx"
)

// This package is the only place that knows how the three databases
// differ: dialect.go writes their SQL (placeholders, quoting, literals,
// types, upserts), open.go connects (DSNs, pools, redaction), errors.go
// classifies their errors and lock.go holds their locks. Everything else in
// passbridge writes SQL through a Dialect.

// Kind is a database family, the value of database.driver.
type Kind string

const (
	SQLite   Kind = "sqlite"
	Postgres Kind = "postgres"
	MySQL    Kind = "mysql" // MySQL and MariaDB
)

// Dialect writes the SQL that differs between the databases: placeholders,
// identifier quoting, column types, upserts, row locks. The zero Dialect is
// not usable; get one from NewDialect or DB.Dialect.
type Dialect struct {
	kind Kind
}

// NewDialect returns the dialect of a database.driver value.
func NewDialect(driver string) (Dialect, error) {
	switch k := Kind(driver); k {
	case SQLite, Postgres, MySQL:
		return Dialect{kind: k}, nil
	}
	return Dialect{}, fmt.Errorf("unknown database driver %q (expected sqlite, postgres or mysql)", driver)
}

// Kind is the database family.
func (d Dialect) Kind() Kind { return d.kind }

func (d Dialect) String() string { return string(d.kind) }

// DriverName is the database/sql driver: "sqlite" (modernc.org/sqlite, no
// cgo), "pgx" (github.com/jackc/pgx/v5/stdlib) or "mysql"
// (github.com/go-sql-driver/mysql).
func (d Dialect) DriverName() string {
	switch d.kind {
	case Postgres:
		return "pgx"
	case MySQL:
		return "mysql"
	default:
		return "sqlite"
	}
}

func init() {
	// sqlx knows "sqlite3" (mattn) but not modernc's "sqlite": without this,
	// Rebind and named queries would leave the placeholders alone, which
	// happens to work for "?" but not for :name.
	sqlx.BindDriver("sqlite", sqlx.QUESTION)
}

// BindType is the sqlx bindvar type: sqlx.DOLLAR for PostgreSQL,
// sqlx.QUESTION otherwise.
func (d Dialect) BindType() int { return sqlx.BindType(d.DriverName()) }

// Rebind turns the ? placeholders of query into the dialect's ($1, $2 ... on
// PostgreSQL). Every ? is a placeholder, also inside string literals: pass
// such values as arguments.
func (d Dialect) Rebind(query string) string { return sqlx.Rebind(d.BindType(), query) }

// Quote quotes one identifier (a table, column, schema or index name) so
// that any name works: reserved words such as user or order, mixed case,
// spaces, and quote characters, which are doubled. It does not split on
// dots: use QuoteQualified for schema.table.
func (d Dialect) Quote(name string) string {
	if d.kind == MySQL {
		return "`" + strings.ReplaceAll(name, "`", "``") + "`"
	}
	return `"` + strings.ReplaceAll(name, `"`, `""`) + `"`
}

// QuoteQualified quotes each part and joins them with dots
// ("schema"."table", "t"."column"). Empty parts are left out, so
// QuoteQualified(cfg.Schema, cfg.Name) works without a schema.
func (d Dialect) QuoteQualified(parts ...string) string {
	quoted := make([]string, 0, len(parts))
	for _, p := range parts {
		if p != "" {
			quoted = append(quoted, d.Quote(p))
		}
	}
	return strings.Join(quoted, ".")
}

// Table is the quoted name of a table in schema ("" for the connection's
// default schema). On MySQL the schema is the database; on SQLite it is an
// attached database such as "main".
func (d Dialect) Table(schema, name string) string { return d.QuoteQualified(schema, name) }

// Literal renders a string constant for DDL, where no placeholder can
// stand (COMMENT ON ... IS '...'): single quotes doubled, and on MySQL,
// whose strings treat the backslash as an escape, backslashes doubled too.
// Values in queries are arguments, never literals.
func (d Dialect) Literal(s string) string {
	s = strings.ReplaceAll(s, "'", "''")
	if d.kind == MySQL {
		s = strings.ReplaceAll(s, `\`, `\\`)
	}
	return "'" + s + "'"
}

// CheckIdentifier reports a name that the database would reject or, worse,
// silently change: empty, holding a NUL byte or invalid UTF-8, longer than
// PostgreSQL's 63 bytes (PostgreSQL truncates longer names) or MySQL's 64
// characters, or ending in a space on MySQL.
func (d Dialect) CheckIdentifier(name string) error {
	switch {
	case name == "":
		return errors.New("empty name")
	case strings.ContainsRune(name, 0):
		return fmt.Errorf("name %q holds a NUL byte", name)
	case !utf8.ValidString(name):
		return fmt.Errorf("name %q is not valid UTF-8", name)
	}
	switch d.kind {
	case Postgres:
		if len(name) > 63 {
			return fmt.Errorf("name %q is %d bytes long: PostgreSQL allows 63 and would silently truncate it", name, len(name))
		}
	case MySQL:
		if n := utf8.RuneCountInString(name); n > 64 {
			return fmt.Errorf("name %q is %d characters long: MySQL allows 64", name, n)
		}
		if strings.HasSuffix(name, " ") {
			return fmt.Errorf("name %q ends with a space, which MySQL does not allow", name)
		}
	}
	return nil
}

// Types are the column types of one dialect, for CREATE TABLE and ALTER
// TABLE ... ADD COLUMN.
type Types struct {
	// ID is a whole column definition: a 64-bit integer primary key that
	// the database numbers (GENERATED BY DEFAULT AS IDENTITY,
	// AUTO_INCREMENT, SQLite's INTEGER PRIMARY KEY AUTOINCREMENT, which
	// never reuses the id of a deleted row). Read new ids with InsertID.
	ID string
	// BigInt is a 64-bit integer.
	BigInt string
	// Text is unbounded text (MySQL: LONGTEXT, which cannot be indexed
	// without a prefix: use VarChar for keys).
	Text string
	// Binary is unbounded binary data: any bytes, including 0x00 and
	// invalid UTF-8 (bytea, LONGBLOB, BLOB). Use VarBinary for keys.
	Binary string
	// Timestamp is a point in time with microsecond precision
	// (timestamptz, MySQL DATETIME(6) holding UTC, which the driver
	// writes and reads as UTC; SQLite text that modernc.org/sqlite parses
	// back into time.Time, keeping nanoseconds). Write time.Time values,
	// not strings; truncate them to microseconds (or coarser) where a
	// value read back must equal the one written on every dialect.
	Timestamp string
	// Bool is a boolean (MySQL: TINYINT(1); scan it into bool).
	Bool string
	// JSON is JSON kept as text: the application validates it.
	JSON string
}

// Types returns the dialect's column types.
func (d Dialect) Types() Types {
	switch d.kind {
	case Postgres:
		return Types{
			ID:        "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY",
			BigInt:    "BIGINT",
			Text:      "TEXT",
			Binary:    "BYTEA",
			Timestamp: "TIMESTAMPTZ",
			Bool:      "BOOLEAN",
			JSON:      "TEXT",
		}
	case MySQL:
		return Types{
			ID:        "BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY",
			BigInt:    "BIGINT",
			Text:      "LONGTEXT",
			Binary:    "LONGBLOB",
			Timestamp: "DATETIME(6)",
			Bool:      "BOOLEAN",
			JSON:      "LONGTEXT",
		}
	default:
		return Types{
			ID:     "INTEGER PRIMARY KEY AUTOINCREMENT",
			BigInt: "BIGINT",
			Text:   "TEXT",
			Binary: "BLOB",
			// modernc.org/sqlite turns TIMESTAMP columns back into
			// time.Time; the name matters.
			Timestamp: "TIMESTAMP",
			Bool:      "BOOLEAN",
			JSON:      "TEXT",
		}
	}
}

// VarChar is text of at most n characters that can be indexed (MySQL
// cannot index LONGTEXT; its index keys hold at most 3072 bytes, so 768
// utf8mb4 characters). SQLite does not enforce the length.
func (d Dialect) VarChar(n int) string {
	if n <= 0 {
		return d.Types().Text
	}
	return fmt.Sprintf("VARCHAR(%d)", n)
}

// VarBinary is binary data of at most n bytes that can be indexed, such as
// a WebAuthn credential ID (at most 1023 bytes). Only MySQL enforces n.
func (d Dialect) VarBinary(n int) string {
	switch {
	case n <= 0:
		return d.Types().Binary
	case d.kind == MySQL:
		return fmt.Sprintf("VARBINARY(%d)", n)
	default:
		return d.Types().Binary
	}
}

// CurrentTimestamp is the SQL default for a Timestamp column that records
// when the row was written (MySQL needs the precision of DATETIME(6)).
func (d Dialect) CurrentTimestamp() string {
	if d.kind == MySQL {
		return "CURRENT_TIMESTAMP(6)"
	}
	return "CURRENT_TIMESTAMP"
}

// TableOptions ends a CREATE TABLE of a table passbridge owns: on MySQL,
// InnoDB (transactions, row locks) and utf8mb4 with a binary collation, so
// that keys compare byte for byte as on the other databases whatever the
// server's defaults. Empty elsewhere.
func (d Dialect) TableOptions() string {
	if d.kind == MySQL {
		return " ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin"
	}
	return ""
}

// ForUpdate is appended to a SELECT inside a transaction to lock the rows it
// reads until the transaction ends (" FOR UPDATE"). SQLite has no row locks
// and needs none: a write transaction (BEGIN IMMEDIATE, see Open) already
// excludes every other writer, so it is empty there.
func (d Dialect) ForUpdate() string {
	if d.kind == SQLite {
		return ""
	}
	return " FOR UPDATE"
}

// Upsert builds an INSERT of columns into table (already quoted, from Table)
// that, when a row with the same conflict columns exists, updates the
// update columns instead (to the values the INSERT would have written). With
// no update columns an existing row is left alone. The statement has one ?
// placeholder per column, in order; run it through Rebind, or through
// Exec, which rebinds.
//
// conflict must name a primary key or unique index, exactly. MySQL ignores
// it and reacts to any unique key of the table; its affected-rows count is
// 1 for an insert and 2 for an update, and 1 again for an existing row left
// alone (passbridge connects with clientFoundRows): there the count cannot
// tell an insert from a duplicate.
func (d Dialect) Upsert(table string, columns, conflict, update []string) (string, error) {
	if table == "" || len(columns) == 0 || len(conflict) == 0 {
		return "", errors.New("upsert needs a table, columns and conflict columns")
	}
	in := make(map[string]bool, len(columns))
	for _, c := range columns {
		in[c] = true
	}
	for _, c := range append(append([]string{}, conflict...), update...) {
		if !in[c] {
			return "", fmt.Errorf("upsert: column %q is not among the inserted columns %q", c, columns)
		}
	}
	quoted := make([]string, len(columns))
	for i, c := range columns {
		quoted[i] = d.Quote(c)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "INSERT INTO %s (%s) VALUES (%s)", table, strings.Join(quoted, ", "),
		strings.TrimSuffix(strings.Repeat("?, ", len(columns)), ", "))
	sets := make([]string, len(update))
	switch d.kind {
	case MySQL:
		// VALUES(col) works on MariaDB and MySQL; the "AS new" row alias
		// of MySQL 8.0.19 does not exist in MariaDB.
		for i, c := range update {
			sets[i] = fmt.Sprintf("%s = VALUES(%s)", d.Quote(c), d.Quote(c))
		}
		if len(sets) == 0 {
			// A no-op update rather than INSERT IGNORE, which would also
			// swallow errors that are not duplicates.
			sets = []string{fmt.Sprintf("%s = %s", d.Quote(conflict[0]), d.Quote(conflict[0]))}
		}
		fmt.Fprintf(&b, " ON DUPLICATE KEY UPDATE %s", strings.Join(sets, ", "))
	default:
		qc := make([]string, len(conflict))
		for i, c := range conflict {
			qc[i] = d.Quote(c)
		}
		fmt.Fprintf(&b, " ON CONFLICT (%s) DO ", strings.Join(qc, ", "))
		if len(update) == 0 {
			b.WriteString("NOTHING")
			break
		}
		for i, c := range update {
			sets[i] = fmt.Sprintf("%s = excluded.%s", d.Quote(c), d.Quote(c))
		}
		fmt.Fprintf(&b, "UPDATE SET %s", strings.Join(sets, ", "))
	}
	return b.String(), nil
}

// InsertID runs an INSERT (with ? placeholders) into a table whose key is
// an ID column and returns the new row's id: RETURNING on PostgreSQL, whose
// driver has no LastInsertId, LastInsertId elsewhere.
func (d Dialect) InsertID(ctx context.Context, q Querier, query, idColumn string, args ...any) (int64, error) {
	if d.kind == Postgres {
		var id int64
		err := q.QueryRowxContext(ctx, q.Rebind(query+" RETURNING "+d.Quote(idColumn)), args...).Scan(&id)
		return id, err
	}
	res, err := q.ExecContext(ctx, q.Rebind(query), args...)
	if err != nil {
		return 0, err
	}
	return res.LastInsertId()
}
