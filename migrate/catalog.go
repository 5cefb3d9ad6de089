package migrate

import (
	"context"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/passbridge/passbridge/schema"
)

// catalog is a snapshot of the objects a plan is about: every relation
// whose name starts with the prefix, the users table, and their indexes and
// foreign keys. Steps decide from it whether they are applied, so that
// every step is idempotent and a killed run is finished by running again.
type catalog struct {
	eng    Engine
	schema string
	users  string
	// relations maps a relation name to its kind ("table", "view", "index",
	// "sequence", ...) for names starting with the prefix.
	relations map[string]string
	tables    map[string]*catTable
	indexes   map[string][]catIndex // by index name
	fks       map[string][]catFK    // by constraint name
}

type catTable struct {
	name string
	cols []catColumn
}

type catColumn struct {
	name     string
	typ      string
	nullable bool
}

type catIndex struct {
	name, table string
	unique      bool
	valid       bool // false: INVALID (PostgreSQL) — a killed or failed CONCURRENTLY build
	building    bool // a CREATE INDEX on it is running right now (PostgreSQL)
	analyzed    bool // has statistics (PostgreSQL pg_stats: an expression index after ANALYZE)
	cols        []string
	def         string
}

type catFK struct {
	name, table, refTable string
	cols, refCols         []string
	validated             bool
}

func (c *catalog) key(name string) string {
	if c.eng == SQLite { // SQLite names are case-insensitive
		return strings.ToLower(name)
	}
	return name
}

func (c *catalog) table(name string) *catTable { return c.tables[c.key(name)] }

func (t *catTable) column(eng Engine, name string) (catColumn, bool) {
	for _, col := range t.cols {
		if col.name == name || (eng == SQLite && strings.EqualFold(col.name, name)) {
			return col, true
		}
	}
	return catColumn{}, false
}

// index returns the index with that name on table, and whether a
// different object (another table's index) holds the name.
func (c *catalog) index(name, table string) (ix *catIndex, elsewhere string) {
	for i, x := range c.indexes[c.key(name)] {
		if c.key(x.table) == c.key(table) {
			return &c.indexes[c.key(name)][i], ""
		}
		elsewhere = x.table
	}
	return nil, elsewhere
}

func (c *catalog) fk(name, table string) *catFK {
	for i, x := range c.fks[c.key(name)] {
		if c.key(x.table) == c.key(table) {
			return &c.fks[c.key(name)][i]
		}
	}
	return nil
}

// loadCatalog reads the snapshot. users is the users table's real name (as
// Inspect found it), schema the resolved schema.
func loadCatalog(ctx context.Context, q querier, eng Engine, schema, users, prefix string) (*catalog, error) {
	c := &catalog{eng: eng, schema: schema, users: users, relations: map[string]string{},
		tables: map[string]*catTable{}, indexes: map[string][]catIndex{}, fks: map[string][]catFK{}}
	var err error
	switch eng {
	case Postgres:
		err = c.loadPostgres(ctx, q, prefix)
	case MySQL:
		err = c.loadMySQL(ctx, q, prefix)
	case SQLite:
		err = c.loadSQLite(ctx, q, prefix)
	}
	if err != nil {
		return nil, fmt.Errorf("read catalog: %w", err)
	}
	return c, nil
}

func (c *catalog) addColumn(table, name, typ string, nullable bool) {
	t := c.tables[c.key(table)]
	if t == nil {
		t = &catTable{name: table}
		c.tables[c.key(table)] = t
	}
	t.cols = append(t.cols, catColumn{name: name, typ: typ, nullable: nullable})
}

func (c *catalog) loadPostgres(ctx context.Context, q querier, prefix string) error {
	rows, err := q.QueryContext(ctx, `SELECT c.relname, CASE c.relkind WHEN 'r' THEN 'table' WHEN 'p' THEN 'table' WHEN 'v' THEN 'view'
			WHEN 'm' THEN 'materialized view' WHEN 'i' THEN 'index' WHEN 'I' THEN 'index' WHEN 'S' THEN 'sequence'
			WHEN 'f' THEN 'foreign table' ELSE 'relation' END
		FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE n.nspname = $1 AND starts_with(c.relname, $2)`, c.schema, prefix)
	if err != nil {
		return err
	}
	for rows.Next() {
		var name, kind string
		if err := rows.Scan(&name, &kind); err != nil {
			rows.Close()
			return err
		}
		c.relations[name] = kind
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}

	rows, err = q.QueryContext(ctx, `SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod), NOT a.attnotnull
		FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
		WHERE n.nspname = $1 AND c.relkind IN ('r', 'p') AND (starts_with(c.relname, $2) OR c.relname = $3)
		ORDER BY c.relname, a.attnum`, c.schema, prefix, c.users)
	if err != nil {
		return err
	}
	for rows.Next() {
		var t, col, typ string
		var nullable bool
		if err := rows.Scan(&t, &col, &typ, &nullable); err != nil {
			rows.Close()
			return err
		}
		c.addColumn(t, col, typ, nullable)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}

	rows, err = q.QueryContext(ctx, `SELECT i.relname, t.relname, x.indisunique, x.indisvalid AND x.indisready,
			EXISTS (SELECT 1 FROM pg_stat_progress_create_index p
				WHERE p.index_relid = x.indexrelid AND p.datid = (SELECT oid FROM pg_database WHERE datname = current_database())),
			pg_get_indexdef(x.indexrelid),
			array_to_string(ARRAY(SELECT pg_get_indexdef(x.indexrelid, k + 1, true) FROM generate_subscripts(x.indkey, 1) k
				WHERE k < x.indnkeyatts ORDER BY k), chr(31)),
			EXISTS (SELECT 1 FROM pg_stats s WHERE s.schemaname = n.nspname AND s.tablename = i.relname)
		FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_class t ON t.oid = x.indrelid
		JOIN pg_namespace n ON n.oid = i.relnamespace
		WHERE n.nspname = $1 AND (starts_with(i.relname, $2) OR starts_with(t.relname, $2) OR t.relname = $3)`, c.schema, prefix, c.users)
	if err != nil {
		return err
	}
	for rows.Next() {
		var ix catIndex
		var cols string
		if err := rows.Scan(&ix.name, &ix.table, &ix.unique, &ix.valid, &ix.building, &ix.def, &cols, &ix.analyzed); err != nil {
			rows.Close()
			return err
		}
		for _, col := range strings.Split(cols, "\x1f") {
			ix.cols = append(ix.cols, unquotePG(col))
		}
		c.indexes[ix.name] = append(c.indexes[ix.name], ix)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}

	rows, err = q.QueryContext(ctx, `SELECT con.conname, t.relname, rt.relname, con.convalidated,
			array_to_string(ARRAY(SELECT a.attname FROM unnest(con.conkey) WITH ORDINALITY k(n, o)
				JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.n ORDER BY k.o), chr(31)),
			array_to_string(ARRAY(SELECT a.attname FROM unnest(con.confkey) WITH ORDINALITY k(n, o)
				JOIN pg_attribute a ON a.attrelid = con.confrelid AND a.attnum = k.n ORDER BY k.o), chr(31))
		FROM pg_constraint con JOIN pg_class t ON t.oid = con.conrelid JOIN pg_namespace n ON n.oid = t.relnamespace
		JOIN pg_class rt ON rt.oid = con.confrelid
		WHERE n.nspname = $1 AND con.contype = 'f' AND starts_with(con.conname, $2)`, c.schema, prefix)
	if err != nil {
		return err
	}
	for rows.Next() {
		var fk catFK
		var cols, refCols string
		if err := rows.Scan(&fk.name, &fk.table, &fk.refTable, &fk.validated, &cols, &refCols); err != nil {
			rows.Close()
			return err
		}
		fk.cols, fk.refCols = strings.Split(cols, "\x1f"), strings.Split(refCols, "\x1f")
		c.fks[fk.name] = append(c.fks[fk.name], fk)
	}
	rows.Close()
	return rows.Err()
}

func (c *catalog) loadMySQL(ctx context.Context, q querier, prefix string) error {
	n := utf8.RuneCountInString(prefix)
	// information_schema compares case-insensitively; exact names are
	// checked in Go.
	ours := func(name string) bool { return strings.HasPrefix(name, prefix) || name == c.users }

	rows, err := q.QueryContext(ctx, `SELECT TABLE_NAME, TABLE_TYPE FROM information_schema.TABLES
		WHERE TABLE_SCHEMA = ? AND LEFT(TABLE_NAME, ?) = ?`, c.schema, n, prefix)
	if err != nil {
		return err
	}
	for rows.Next() {
		var name, kind string
		if err := rows.Scan(&name, &kind); err != nil {
			rows.Close()
			return err
		}
		if !strings.HasPrefix(name, prefix) {
			continue
		}
		if kind == "BASE TABLE" {
			kind = "table"
		}
		c.relations[name] = strings.ToLower(kind)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}

	rows, err = q.QueryContext(ctx, `SELECT TABLE_NAME, COLUMN_NAME, COLUMN_TYPE, IS_NULLABLE = 'YES' FROM information_schema.COLUMNS
		WHERE TABLE_SCHEMA = ? AND (LEFT(TABLE_NAME, ?) = ? OR TABLE_NAME = ?) ORDER BY TABLE_NAME, ORDINAL_POSITION`, c.schema, n, prefix, c.users)
	if err != nil {
		return err
	}
	for rows.Next() {
		var t, col, typ string
		var nullable bool
		if err := rows.Scan(&t, &col, &typ, &nullable); err != nil {
			rows.Close()
			return err
		}
		if ours(t) {
			c.addColumn(t, col, typ, nullable)
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}

	rows, err = q.QueryContext(ctx, `SELECT TABLE_NAME, INDEX_NAME, NON_UNIQUE = 0, COALESCE(COLUMN_NAME, '(expression)'), COALESCE(SUB_PART, 0)
		FROM information_schema.STATISTICS
		WHERE TABLE_SCHEMA = ? AND (LEFT(TABLE_NAME, ?) = ? OR TABLE_NAME = ? OR LEFT(INDEX_NAME, ?) = ?)
		ORDER BY TABLE_NAME, INDEX_NAME, SEQ_IN_INDEX`, c.schema, n, prefix, c.users, n, prefix)
	if err != nil {
		return err
	}
	for rows.Next() {
		var t, name, col string
		var unique bool
		var sub int
		if err := rows.Scan(&t, &name, &unique, &col, &sub); err != nil {
			rows.Close()
			return err
		}
		if !ours(t) && !strings.HasPrefix(name, prefix) {
			continue
		}
		if sub > 0 {
			col = fmt.Sprintf("%s(%d)", col, sub)
		}
		list := c.indexes[name]
		if len(list) > 0 && list[len(list)-1].table == t {
			list[len(list)-1].cols = append(list[len(list)-1].cols, col)
			continue
		}
		c.indexes[name] = append(list, catIndex{name: name, table: t, unique: unique, valid: true, cols: []string{col}})
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}

	rows, err = q.QueryContext(ctx, `SELECT k.CONSTRAINT_NAME, k.TABLE_NAME, k.REFERENCED_TABLE_NAME, k.COLUMN_NAME, k.REFERENCED_COLUMN_NAME
		FROM information_schema.KEY_COLUMN_USAGE k
		WHERE k.TABLE_SCHEMA = ? AND k.REFERENCED_TABLE_NAME IS NOT NULL AND LEFT(k.CONSTRAINT_NAME, ?) = ?
		ORDER BY k.TABLE_NAME, k.CONSTRAINT_NAME, k.ORDINAL_POSITION`, c.schema, n, prefix)
	if err != nil {
		return err
	}
	for rows.Next() {
		var name, t, rt, col, rcol string
		if err := rows.Scan(&name, &t, &rt, &col, &rcol); err != nil {
			rows.Close()
			return err
		}
		if !strings.HasPrefix(name, prefix) {
			continue
		}
		list := c.fks[name]
		if len(list) > 0 && list[len(list)-1].table == t {
			list[len(list)-1].cols = append(list[len(list)-1].cols, col)
			list[len(list)-1].refCols = append(list[len(list)-1].refCols, rcol)
			continue
		}
		c.fks[name] = append(list, catFK{name: name, table: t, refTable: rt, cols: []string{col}, refCols: []string{rcol}, validated: true})
	}
	rows.Close()
	return rows.Err()
}

func (c *catalog) loadSQLite(ctx context.Context, q querier, prefix string) error {
	master := SQLite.dialect().Quote(c.schema) + ".sqlite_master"
	rows, err := q.QueryContext(ctx, `SELECT type, name, tbl_name, coalesce(sql, '') FROM `+master+`
		WHERE substr(name, 1, ?) = ? COLLATE NOCASE OR tbl_name = ? COLLATE NOCASE OR substr(tbl_name, 1, ?) = ? COLLATE NOCASE`,
		utf8.RuneCountInString(prefix), prefix, c.users, utf8.RuneCountInString(prefix), prefix)
	if err != nil {
		return err
	}
	type entry struct{ typ, name, table, sql string }
	var entries []entry
	for rows.Next() {
		var e entry
		if err := rows.Scan(&e.typ, &e.name, &e.table, &e.sql); err != nil {
			rows.Close()
			return err
		}
		entries = append(entries, e)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	hasPrefix := func(s string) bool { return len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix) }
	for _, e := range entries {
		if hasPrefix(e.name) {
			c.relations[strings.ToLower(e.name)] = e.typ
		}
		switch e.typ {
		case "table":
			cols, _, err := sqliteColumns(ctx, q, c.schema, e.name)
			if err != nil {
				return err
			}
			for _, col := range cols {
				c.addColumn(e.name, col.Name, col.Type, col.Nullable)
			}
			fks, err := sqliteFKs(ctx, q, c.schema, e.name)
			if err != nil {
				return err
			}
			// SQLite's foreign keys have no names: passbridge's are
			// declared in CREATE TABLE and named here the way the
			// planner names them.
			for _, fk := range fks {
				if len(fk.Columns) == 1 && hasPrefix(e.name) {
					fk.Name = schema.FKName("", e.name, fk.Columns[0])
				}
				c.fks[c.key(fk.Name)] = append(c.fks[c.key(fk.Name)], catFK{name: fk.Name, table: e.name, refTable: fk.RefTable, cols: fk.Columns, refCols: fk.RefColumns, validated: true})
			}
		case "index":
			var unique bool
			err := q.QueryRowContext(ctx, `SELECT "unique" FROM pragma_index_list(?, ?) WHERE name = ?`, e.table, c.schema, e.name).Scan(&unique)
			if err != nil {
				return fmt.Errorf("index %s: %w", e.name, err)
			}
			cols, err := sqliteIndexColumns(ctx, q, c.schema, e.name, e.sql)
			if err != nil {
				return err
			}
			k := c.key(e.name)
			c.indexes[k] = append(c.indexes[k], catIndex{name: e.name, table: e.table, unique: unique, valid: true, cols: cols, def: e.sql})
		}
	}
	return nil
}
