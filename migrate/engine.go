package migrate

import (
	"fmt"
	"strings"

	"github.com/passbridge/passbridge/schema"
	"github.com/passbridge/passbridge/store"
)

// Engine is a database engine family; the planner renders SQL per engine.
type Engine string

const (
	SQLite   Engine = "sqlite"
	Postgres Engine = "postgres"
	MySQL    Engine = "mysql" // MySQL 8 and MariaDB 10.6+
)

// engineFor maps a config driver name to an Engine.
func engineFor(driver string) (Engine, error) {
	switch strings.ToLower(driver) {
	case "sqlite", "sqlite3":
		return SQLite, nil
	case "postgres", "postgresql", "pgx":
		return Postgres, nil
	case "mysql", "mariadb":
		return MySQL, nil
	}
	return "", fmt.Errorf("database driver %q: expected sqlite, postgres or mysql", driver)
}

// maxIdent is the longest identifier the engine keeps (PostgreSQL silently
// truncates longer ones, which would break the catalog checks).
func (e Engine) maxIdent() int {
	switch e {
	case Postgres:
		return 63
	case MySQL:
		return 64
	}
	return 1 << 20
}

// columnType renders a logical type for a passbridge-owned column. keyType is
// the users table key's exact type (for UserKey).
func (e Engine) columnType(c schema.Column, keyType string) string {
	switch c.Type {
	case schema.ID:
		if e == SQLite {
			return "INTEGER"
		}
		return "bigint"
	case schema.UserKey:
		return keyType
	case schema.Ref, schema.Int:
		if e == SQLite {
			return "INTEGER"
		}
		return "bigint"
	case schema.Bool:
		switch e {
		case Postgres:
			return "boolean"
		case MySQL:
			return "tinyint(1)"
		}
		return "BOOLEAN"
	case schema.Time:
		// The same types as store.Dialect.Types: modernc.org/sqlite reads
		// a column declared TIMESTAMP back as time.Time.
		switch e {
		case Postgres:
			return "timestamptz"
		case MySQL:
			return "datetime(6)"
		}
		return "TIMESTAMP"
	case schema.Str:
		if e == SQLite {
			return "TEXT"
		}
		return fmt.Sprintf("varchar(%d)", c.Size)
	case schema.Text:
		switch e {
		case MySQL:
			return "longtext"
		case SQLite:
			return "TEXT"
		}
		return "text"
	case schema.Bytes:
		switch e {
		case Postgres:
			return "bytea"
		case MySQL:
			return fmt.Sprintf("varbinary(%d)", c.Size)
		}
		return "BLOB"
	case schema.Blob:
		switch e {
		case Postgres:
			return "bytea"
		case MySQL:
			return "longblob"
		}
		return "BLOB"
	}
	panic(fmt.Sprintf("migrate: unknown column type %d", c.Type)) // schema.go is code, not input
}

// defaultLiteral renders Column.Default for the engine (booleans are
// written 0/1 in schema.go and need true/false on PostgreSQL).
func (e Engine) defaultLiteral(c schema.Column) string {
	if c.Type == schema.Bool && e == Postgres {
		switch c.Default {
		case "0":
			return "false"
		case "1":
			return "true"
		}
	}
	return c.Default
}

// family is the comparable kind of a column type as a catalog reports it,
// so a table found in the database can be compared with the one planned.
func (e Engine) family(rawType string) string {
	t := strings.ToLower(strings.TrimSpace(castType(rawType)))
	switch e {
	case Postgres:
		switch {
		case t == "integer" || t == "bigint" || t == "smallint":
			return "int"
		case t == "boolean":
			return "bool"
		case strings.HasPrefix(t, "timestamp"):
			return "time"
		case strings.HasPrefix(t, "character") || t == "text" || t == "citext" || strings.HasPrefix(t, "varchar"):
			return "str"
		case t == "bytea":
			return "bytes"
		case t == "uuid":
			return "uuid"
		}
	case MySQL:
		base := t
		if i := strings.IndexAny(base, "( "); i >= 0 {
			base = base[:i]
		}
		switch base {
		case "tinyint", "smallint", "mediumint", "int", "integer", "bigint":
			return "int"
		case "datetime", "timestamp":
			return "time"
		case "varchar", "char", "text", "tinytext", "mediumtext", "longtext":
			return "str"
		case "varbinary", "binary", "blob", "tinyblob", "mediumblob", "longblob":
			return "bytes"
		}
	case SQLite:
		// SQLite's affinity rules (section 3.1 of the datatype docs), plus
		// DATETIME which the drivers treat as a time.
		switch {
		case strings.Contains(t, "int"):
			return "int"
		case strings.Contains(t, "bool"):
			return "bool"
		case strings.Contains(t, "date") || strings.Contains(t, "time"):
			return "time"
		case strings.Contains(t, "char") || strings.Contains(t, "clob") || strings.Contains(t, "text"):
			return "str"
		case strings.Contains(t, "blob") || t == "":
			return "bytes"
		}
	}
	return t
}

// logicalFamily is family() for a planned column.
func (e Engine) logicalFamily(c schema.Column, keyType string) string {
	switch c.Type {
	case schema.Bool:
		if e == MySQL {
			return "int" // BOOLEAN is tinyint(1)
		}
		return "bool"
	case schema.UserKey:
		return e.family(keyType)
	}
	return e.family(e.columnType(c, keyType))
}

// dialect is store's dialect of the engine: the one place that quotes
// names, rebinds placeholders and renders literals for every package.
func (e Engine) dialect() store.Dialect {
	d, _ := store.NewDialect(string(e))
	return d
}
