package store

import (
	"context"
	"database/sql"
	"fmt"
	"regexp"
	"strings"
)

// Column facts, as the database's catalog reports them: the one reader of
// a table's columns per engine, for the migration (which inspects the users
// table), the sync (which reads a column's collation) and the admin layer
// (which reads the key column's type).

// Column is one column of a table as the catalog reports it.
type Column struct {
	Name      string `json:"name"`
	Type      string `json:"type"` // as the engine prints it
	Nullable  bool   `json:"nullable"`
	Default   string `json:"default,omitempty"`
	Charset   string `json:"charset,omitempty"`
	Collation string `json:"collation,omitempty"`
}

// RowsQuerier is what *sql.DB, *sql.Conn and *sql.Tx (and sqlx's, and DB)
// have in common for reading.
type RowsQuerier interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

// Columns reads the columns of table in schema ("" is the connection's
// default: PostgreSQL's search_path, MySQL's DATABASE(), SQLite's main), in
// order. A table that does not exist has no columns (and no error).
func (d Dialect) Columns(ctx context.Context, q RowsQuerier, schema, table string) ([]Column, error) {
	var rows *sql.Rows
	var err error
	switch d.kind {
	case Postgres:
		rows, err = q.QueryContext(ctx, `SELECT a.attname, format_type(a.atttypid, a.atttypmod), NOT a.attnotnull,
				coalesce(pg_get_expr(d.adbin, d.adrelid), ''), '', coalesce(co.collname, '')
			FROM pg_attribute a
			LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
			LEFT JOIN pg_collation co ON co.oid = a.attcollation AND a.attcollation <> 0
			WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum`, d.Table(schema, table))
	case MySQL:
		rows, err = q.QueryContext(ctx, `SELECT COLUMN_NAME, COLUMN_TYPE, IS_NULLABLE = 'YES', COALESCE(COLUMN_DEFAULT, ''),
				COALESCE(CHARACTER_SET_NAME, ''), COALESCE(COLLATION_NAME, '')
			FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = COALESCE(NULLIF(?, ''), DATABASE()) AND TABLE_NAME = ?
			ORDER BY ORDINAL_POSITION`, schema, table)
	default:
		if schema == "" {
			schema = "main"
		}
		rows, err = q.QueryContext(ctx, `SELECT name, type, "notnull" = 0, coalesce(dflt_value, ''), '', ''
			FROM pragma_table_info(?, ?) ORDER BY cid`, table, schema)
	}
	if err != nil {
		return nil, fmt.Errorf("read the columns of %s: %w", d.Table(schema, table), err)
	}
	defer rows.Close()
	var out []Column
	for rows.Next() {
		var c Column
		if err := rows.Scan(&c.Name, &c.Type, &c.Nullable, &c.Default, &c.Charset, &c.Collation); err != nil {
			return nil, fmt.Errorf("read the columns of %s: %w", d.Table(schema, table), err)
		}
		switch {
		case d.kind == Postgres && c.Collation == "default":
			c.Collation = ""
		case d.kind == MySQL && c.Default == "NULL":
			// MariaDB writes no default as NULL, and a 'NULL' string quoted.
			c.Default = ""
		}
		out = append(out, c)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read the columns of %s: %w", d.Table(schema, table), err)
	}
	return out, nil
}

// FindColumn returns the column called name: an exact match, except on
// SQLite and MySQL, whose column names are case-insensitive.
func (d Dialect) FindColumn(cols []Column, name string) (Column, bool) {
	for _, c := range cols {
		if c.Name == name {
			return c, true
		}
	}
	if d.kind != Postgres {
		for _, c := range cols {
			if strings.EqualFold(c.Name, name) {
				return c, true
			}
		}
	}
	return Column{}, false
}

var intWidth = regexp.MustCompile(`^(tinyint|smallint|mediumint|int|integer|bigint)\(\d+\)`)

// TypeKind is a column type as the catalog prints it, for people and for
// telling integers from text: on MySQL lower case without the integers'
// display width and ZEROFILL ("int unsigned", "varchar(64)"), on SQLite
// lower case ("(no declared type)" when there is none), on PostgreSQL as
// printed.
func (d Dialect) TypeKind(typ string) string {
	t := strings.TrimSpace(typ)
	switch d.kind {
	case MySQL:
		lt := intWidth.ReplaceAllString(strings.ToLower(t), "$1")
		return strings.TrimSpace(strings.ReplaceAll(lt, "zerofill", ""))
	case SQLite:
		if t == "" {
			return "(no declared type)"
		}
		return strings.ToLower(t)
	}
	return t
}
