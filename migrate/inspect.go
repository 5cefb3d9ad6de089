package migrate

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strings"

	"github.com/passbridge/passbridge/config"
	"github.com/passbridge/passbridge/schema"
	"github.com/passbridge/passbridge/store"
)

// UsersTable is what Inspect found about the application's existing users
// table: enough to plan foreign keys that match its key, to know which
// lookups are already indexed and to warn about its size.
type UsersTable struct {
	Engine Engine `json:"engine"`
	// Schema is the schema (PostgreSQL), database (MySQL) or attached
	// database (SQLite) the table was found in.
	Schema string `json:"schema"`
	Name   string `json:"name"`
	// Qualified is the quoted, schema-qualified name used in SQL.
	Qualified string       `json:"qualified"`
	Columns   []ColumnInfo `json:"columns"`
	// PrimaryKey lists the primary key's columns in order.
	PrimaryKey []string `json:"primary_key"`
	// Key is the configured key column (users_table.key).
	Key ColumnInfo `json:"key"`
	// KeyType is the exact type a column referencing Key must have
	// ("integer", "bigint unsigned", "uuid", "varchar(64) CHARACTER SET
	// utf8mb4 COLLATE utf8mb4_unicode_520_ci", ...).
	KeyType string `json:"key_type"`
	// KeyKind is KeyType without charset details, for people.
	KeyKind     string      `json:"key_kind"`
	Indexes     []IndexInfo `json:"indexes"`
	ForeignKeys []FKInfo    `json:"foreign_keys"`
	// Rows is the approximate row count (PostgreSQL reltuples, MySQL
	// TABLE_ROWS, SQLite an exact count); -1 when the engine does not know
	// yet (a table never analyzed).
	Rows int64 `json:"rows"`
	// StorageEngine, Collation and RowFormat are MySQL's table options.
	StorageEngine string `json:"storage_engine,omitempty"`
	Collation     string `json:"collation,omitempty"`
	RowFormat     string `json:"row_format,omitempty"`
	// SizeBytes is the table's data and indexes as the catalog estimates
	// them (MySQL DATA_LENGTH + INDEX_LENGTH; PostgreSQL
	// pg_total_relation_size); 0 on SQLite.
	SizeBytes int64 `json:"size_bytes,omitempty"`
	// ServerVersion is the server's VERSION() (MySQL, MariaDB).
	ServerVersion string `json:"server_version,omitempty"`
	// NoInstantAdd lists why MySQL cannot add a column to this table with
	// ALGORITHM=INSTANT (a compressed row format, a full-text index, too
	// many row versions, an old server); NoInstantDrop the same for
	// dropping one. Empty: INSTANT works.
	NoInstantAdd  []string `json:"no_instant_add,omitempty"`
	NoInstantDrop []string `json:"no_instant_drop,omitempty"`
	// SQLMode is the sql_mode passbridge's MySQL session starts with (the
	// server's global one unless the DSN sets another).
	SQLMode string `json:"sql_mode,omitempty"`
	// ZeroDateDefaults are the columns whose default is a zero date
	// ('0000-00-00 00:00:00', or a zero month or day), which an ALTER
	// TABLE under NO_ZERO_DATE / NO_ZERO_IN_DATE refuses to carry over.
	ZeroDateDefaults []string `json:"zero_date_defaults,omitempty"`
}

// ColumnInfo is one column of the users table as the catalog reports it
// (store's reader of column facts, shared with the rest of passbridge).
type ColumnInfo = store.Column

// IndexInfo is one index of the users table.
type IndexInfo struct {
	Name    string `json:"name"`
	Unique  bool   `json:"unique"`
	Primary bool   `json:"primary"`
	Valid   bool   `json:"valid"`   // false: an INVALID PostgreSQL index (a failed CONCURRENTLY build)
	Partial bool   `json:"partial"` // has a WHERE clause
	// Columns are the key columns; an expression is given as its SQL.
	Columns []string `json:"columns"`
	// Definition is the engine's own rendering (PostgreSQL, SQLite).
	Definition string `json:"definition,omitempty"`
	// Type is MySQL's INDEX_TYPE when it is not BTREE (FULLTEXT, SPATIAL,
	// HASH): such an index serves no equality lookup.
	Type string `json:"type,omitempty"`
}

// FKInfo is a foreign key from or to the users table.
type FKInfo struct {
	Name       string   `json:"name"`
	Table      string   `json:"table"` // the referencing table
	Columns    []string `json:"columns"`
	RefTable   string   `json:"ref_table"`
	RefColumns []string `json:"ref_columns"`
	// Incoming is true for a key in another table that references the
	// users table (django_otp's device table, an ERP's audit log...).
	Incoming bool `json:"incoming"`
}

// Column returns the named column (exact, case-sensitive match except on
// SQLite, whose names are case-insensitive).
func (u *UsersTable) Column(name string) (ColumnInfo, bool) {
	for _, c := range u.Columns {
		if c.Name == name || (u.Engine == SQLite && strings.EqualFold(c.Name, name)) {
			return c, true
		}
	}
	return ColumnInfo{}, false
}

// querier is what *sql.DB, *sql.Conn and *sql.Tx have in common.
type querier interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

func inspect(ctx context.Context, q querier, eng Engine, ut config.UsersTable) (*UsersTable, error) {
	if ut.Name == "" || ut.Key == "" {
		return nil, errors.New("users_table.name and users_table.key are required")
	}
	u := &UsersTable{Engine: eng, Name: ut.Name}
	var err error
	switch eng {
	case Postgres:
		err = inspectPostgres(ctx, q, ut, u)
	case MySQL:
		err = inspectMySQL(ctx, q, ut, u)
	case SQLite:
		err = inspectSQLite(ctx, q, ut, u)
	default:
		err = fmt.Errorf("unknown engine %q", eng)
	}
	if err != nil {
		return nil, err
	}
	u.Qualified = eng.dialect().Table(ut.Schema, u.Name)
	if err := u.checkConfigured(ut); err != nil {
		return nil, err
	}
	if err := u.resolveKey(ut.Key); err != nil {
		return nil, err
	}
	return u, nil
}

// checkConfigured reports every configured column the table lacks, with a
// hint when only the case differs (quoted mixed-case names are common in
// ORMs that quote, such as SQLAlchemy and Prisma).
func (u *UsersTable) checkConfigured(ut config.UsersTable) error {
	var bad []string
	for _, f := range []struct{ key, name string }{
		{"key", ut.Key}, {"username", ut.Username}, {"email", ut.Email}, {"display_name", ut.DisplayName},
		{"password", ut.Password}, {"active", ut.Active}, {"totp", ut.TOTP},
	} {
		if f.name == "" {
			continue
		}
		if _, ok := u.Column(f.name); ok {
			continue
		}
		msg := fmt.Sprintf("users_table.%s: column %q not found in %s", f.key, f.name, u.Qualified)
		for _, c := range u.Columns {
			if strings.EqualFold(c.Name, f.name) {
				msg += fmt.Sprintf(" (names are case-sensitive: did you mean %q?)", c.Name)
			}
		}
		bad = append(bad, msg)
	}
	if len(bad) > 0 {
		var names []string
		for _, c := range u.Columns {
			names = append(names, c.Name)
		}
		return fmt.Errorf("%s\n  the table has: %s", strings.Join(bad, "\n"), strings.Join(names, ", "))
	}
	return nil
}

// resolveKey finds the key column, checks that a foreign key can reference
// it (primary key or a single-column unique index) and derives KeyType.
func (u *UsersTable) resolveKey(key string) error {
	c, _ := u.Column(key)
	u.Key = c
	referenceable := len(u.PrimaryKey) == 1 && (u.PrimaryKey[0] == c.Name || (u.Engine == SQLite && strings.EqualFold(u.PrimaryKey[0], c.Name)))
	for _, ix := range u.Indexes {
		if ix.Unique && ix.Valid && !ix.Partial && ix.Type == "" && len(ix.Columns) == 1 && ix.Columns[0] == c.Name {
			referenceable = true
		}
	}
	if !referenceable {
		return fmt.Errorf("users_table.key: column %q of %s is neither the primary key nor covered by a single-column unique index, so passbridge's tables cannot reference it with a foreign key (primary key: %v)", c.Name, u.Qualified, u.PrimaryKey)
	}
	t := strings.TrimSpace(c.Type)
	switch u.Engine {
	case Postgres:
		u.KeyType, u.KeyKind = t, t
		if c.Collation != "" {
			// Keep the key's collation: the baseline walks keys in the
			// users table's order and compares them in its own table.
			u.KeyType += " COLLATE " + Postgres.dialect().Quote(c.Collation)
		}
	case MySQL:
		lt := MySQL.dialect().TypeKind(t)
		u.KeyKind = lt
		switch {
		case strings.Contains(lt, "text") || strings.Contains(lt, "blob"):
			return fmt.Errorf("users_table.key: %s.%s is %s, which MySQL cannot reference with a foreign key", u.Qualified, c.Name, t)
		case strings.HasPrefix(lt, "varchar") || strings.HasPrefix(lt, "char") || strings.HasPrefix(lt, "enum"):
			// A foreign key between string columns needs the same
			// character set and collation on both sides.
			u.KeyType = lt
			if c.Charset != "" {
				u.KeyType += " CHARACTER SET " + c.Charset
			}
			if c.Collation != "" {
				u.KeyType += " COLLATE " + c.Collation
			}
		default:
			u.KeyType = lt
		}
	case SQLite:
		u.KeyType, u.KeyKind = t, SQLite.dialect().TypeKind(t)
	}
	return nil
}

// notFound builds the "table not found" error with close matches.
func notFound(eng Engine, ut config.UsersTable, where string, candidates []string) error {
	msg := fmt.Sprintf("users_table.name: table %s not found in %s", eng.dialect().Table(ut.Schema, ut.Name), where)
	var close []string
	for _, c := range candidates {
		if strings.EqualFold(c, ut.Name) {
			close = append(close, fmt.Sprintf("%q", c))
		}
	}
	if len(close) > 0 {
		msg += " (names are case-sensitive: did you mean " + strings.Join(close, " or ") + "?)"
	}
	if ut.Schema == "" && eng != SQLite {
		msg += "; set users_table.schema if the table lives in another schema"
	}
	return errors.New(msg)
}

func inspectPostgres(ctx context.Context, q querier, ut config.UsersTable, u *UsersTable) error {
	var oid int64
	var schema string
	err := q.QueryRowContext(ctx, `SELECT c.oid, n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE c.oid = to_regclass($1) AND c.relkind IN ('r', 'p')`, Postgres.dialect().Table(ut.Schema, ut.Name)).Scan(&oid, &schema)
	if errors.Is(err, sql.ErrNoRows) {
		var cands []string
		rows, qerr := q.QueryContext(ctx, `SELECT relname FROM pg_class WHERE relkind IN ('r','p') AND lower(relname) = lower($1)`, ut.Name)
		if qerr == nil {
			for rows.Next() {
				var s string
				if rows.Scan(&s) == nil {
					cands = append(cands, s)
				}
			}
			rows.Close()
		}
		where := "the search_path"
		if ut.Schema != "" {
			where = "schema " + ut.Schema
		}
		return notFound(Postgres, ut, where, cands)
	}
	if err != nil {
		return fmt.Errorf("find users table: %w", err)
	}
	u.Schema = schema
	if ut.Schema == "" {
		// Unqualified, passbridge's tables would go to current_schema():
		// they must live beside the users table, where the catalog checks
		// look for them.
		var cur sql.NullString
		if err := q.QueryRowContext(ctx, `SELECT current_schema()`).Scan(&cur); err != nil {
			return fmt.Errorf("current schema: %w", err)
		}
		if cur.String != schema {
			return fmt.Errorf("users_table.schema: the users table %s was found in schema %q through the search_path, but new tables would be created in %q; set users_table.schema: %s",
				Postgres.dialect().Quote(ut.Name), schema, cur.String, schema)
		}
	}

	cols, err := Postgres.dialect().Columns(ctx, q, ut.Schema, ut.Name)
	if err != nil {
		return err
	}
	u.Columns = cols

	rows, err := q.QueryContext(ctx, `SELECT i.relname, x.indisunique, x.indisprimary, x.indisvalid AND x.indisready,
			x.indpred IS NOT NULL, pg_get_indexdef(x.indexrelid),
			array_to_string(ARRAY(SELECT pg_get_indexdef(x.indexrelid, k + 1, true) FROM generate_subscripts(x.indkey, 1) k
				WHERE k < x.indnkeyatts ORDER BY k), chr(31))
		FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid
		WHERE x.indrelid = $1 ORDER BY i.relname`, oid)
	if err != nil {
		return fmt.Errorf("read indexes: %w", err)
	}
	for rows.Next() {
		var ix IndexInfo
		var cols string
		if err := rows.Scan(&ix.Name, &ix.Unique, &ix.Primary, &ix.Valid, &ix.Partial, &ix.Definition, &cols); err != nil {
			rows.Close()
			return err
		}
		for _, c := range strings.Split(cols, "\x1f") {
			ix.Columns = append(ix.Columns, unquotePG(c))
		}
		if ix.Primary {
			u.PrimaryKey = ix.Columns
		}
		u.Indexes = append(u.Indexes, ix)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read indexes: %w", err)
	}

	rows, err = q.QueryContext(ctx, `SELECT con.conname, con.conrelid::regclass::text, con.confrelid::regclass::text,
			con.confrelid = $1,
			array_to_string(ARRAY(SELECT a.attname FROM unnest(con.conkey) WITH ORDINALITY k(n, o)
				JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.n ORDER BY k.o), chr(31)),
			array_to_string(ARRAY(SELECT a.attname FROM unnest(con.confkey) WITH ORDINALITY k(n, o)
				JOIN pg_attribute a ON a.attrelid = con.confrelid AND a.attnum = k.n ORDER BY k.o), chr(31))
		FROM pg_constraint con WHERE con.contype = 'f' AND (con.conrelid = $1 OR con.confrelid = $1) ORDER BY con.conname`, oid)
	if err != nil {
		return fmt.Errorf("read foreign keys: %w", err)
	}
	for rows.Next() {
		var fk FKInfo
		var cols, refCols string
		if err := rows.Scan(&fk.Name, &fk.Table, &fk.RefTable, &fk.Incoming, &cols, &refCols); err != nil {
			rows.Close()
			return err
		}
		fk.Columns, fk.RefColumns = strings.Split(cols, "\x1f"), strings.Split(refCols, "\x1f")
		u.ForeignKeys = append(u.ForeignKeys, fk)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read foreign keys: %w", err)
	}

	var tuples float64
	if err := q.QueryRowContext(ctx, `SELECT reltuples, pg_total_relation_size(oid) FROM pg_class WHERE oid = $1`, oid).Scan(&tuples, &u.SizeBytes); err != nil {
		return fmt.Errorf("read row estimate: %w", err)
	}
	u.Rows = int64(tuples) // -1 on PostgreSQL 14+ for a table never vacuumed or analyzed
	return nil
}

// unquotePG undoes pg_get_indexdef's quoting of a plain column name;
// expressions are kept as they are.
func unquotePG(s string) string {
	if len(s) >= 2 && s[0] == '"' && s[len(s)-1] == '"' && !strings.Contains(s[1:len(s)-1], `"`+`(`) {
		inner := s[1 : len(s)-1]
		if !strings.Contains(strings.ReplaceAll(inner, `""`, ""), `"`) {
			return strings.ReplaceAll(inner, `""`, `"`)
		}
	}
	return s
}

func inspectMySQL(ctx context.Context, q querier, ut config.UsersTable, u *UsersTable) error {
	schema := ut.Schema
	if schema == "" {
		var cur sql.NullString
		if err := q.QueryRowContext(ctx, `SELECT DATABASE()`).Scan(&cur); err != nil {
			return fmt.Errorf("current database: %w", err)
		}
		if !cur.Valid || cur.String == "" {
			return errors.New("users_table.schema is empty and the DSN selects no database: name the database in database.dsn (user:pass@tcp(host)/dbname) or in users_table.schema")
		}
		schema = cur.String
	}
	u.Schema = schema

	var rowsEst, size sql.NullInt64
	var engine, collation, rowFormat, options sql.NullString
	var name string
	err := q.QueryRowContext(ctx, `SELECT TABLE_NAME, ENGINE, TABLE_ROWS, TABLE_COLLATION, ROW_FORMAT, CREATE_OPTIONS,
			COALESCE(DATA_LENGTH, 0) + COALESCE(INDEX_LENGTH, 0)
		FROM information_schema.TABLES
		WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? AND TABLE_TYPE = 'BASE TABLE'`, schema, ut.Name).Scan(&name, &engine, &rowsEst, &collation, &rowFormat, &options, &size)
	if errors.Is(err, sql.ErrNoRows) {
		var cands []string
		rows, qerr := q.QueryContext(ctx, `SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND lower(TABLE_NAME) = lower(?)`, schema, ut.Name)
		if qerr == nil {
			for rows.Next() {
				var s string
				if rows.Scan(&s) == nil {
					cands = append(cands, s)
				}
			}
			rows.Close()
		}
		return notFound(MySQL, ut, "database "+schema, cands)
	}
	if err != nil {
		return fmt.Errorf("find users table: %w", err)
	}
	u.Name = name
	u.StorageEngine, u.Collation, u.RowFormat = engine.String, collation.String, rowFormat.String
	u.SizeBytes = size.Int64
	u.Rows = rowsEst.Int64
	if !rowsEst.Valid {
		u.Rows = -1
	}
	if strings.Contains(strings.ToLower(options.String), "row_format=compressed") {
		// ROW_FORMAT reports what the table has; CREATE_OPTIONS what it
		// was declared with (they differ when innodb_file_per_table was
		// off): either one compressed blocks INSTANT.
		u.RowFormat = "Compressed"
	}
	if err := q.QueryRowContext(ctx, `SELECT VERSION(), @@SESSION.sql_mode`).Scan(&u.ServerVersion, &u.SQLMode); err != nil {
		return fmt.Errorf("read the server version and sql_mode: %w", err)
	}

	cols, err := MySQL.dialect().Columns(ctx, q, schema, name)
	if err != nil {
		return err
	}
	u.Columns = cols
	for _, c := range cols {
		if zeroDate(c.Default) {
			u.ZeroDateDefaults = append(u.ZeroDateDefaults, c.Name)
		}
	}

	rows, err := q.QueryContext(ctx, `SELECT INDEX_NAME, NON_UNIQUE = 0, COALESCE(COLUMN_NAME, ''), COALESCE(SUB_PART, 0), COALESCE(INDEX_TYPE, '')
		FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? ORDER BY INDEX_NAME, SEQ_IN_INDEX`, schema, name)
	if err != nil {
		return fmt.Errorf("read indexes: %w", err)
	}
	byName := map[string]*IndexInfo{}
	var order []string
	for rows.Next() {
		var ixName, col, typ string
		var unique bool
		var sub int
		if err := rows.Scan(&ixName, &unique, &col, &sub, &typ); err != nil {
			rows.Close()
			return err
		}
		ix, ok := byName[ixName]
		if !ok {
			ix = &IndexInfo{Name: ixName, Unique: unique, Primary: ixName == "PRIMARY", Valid: true}
			if !strings.EqualFold(typ, "BTREE") && typ != "" {
				ix.Type = strings.ToUpper(typ)
			}
			byName[ixName] = ix
			order = append(order, ixName)
		}
		if col == "" {
			col = "(expression)"
		}
		if sub > 0 {
			col = fmt.Sprintf("%s(%d)", col, sub)
			ix.Partial = true // a prefix index cannot back a unique key lookup on the whole value
		}
		ix.Columns = append(ix.Columns, col)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read indexes: %w", err)
	}
	for _, n := range order {
		ix := byName[n]
		if ix.Primary {
			u.PrimaryKey = ix.Columns
		}
		u.Indexes = append(u.Indexes, *ix)
	}

	rows, err = q.QueryContext(ctx, `SELECT CONSTRAINT_NAME, TABLE_NAME, COLUMN_NAME, REFERENCED_TABLE_NAME, REFERENCED_COLUMN_NAME,
			REFERENCED_TABLE_NAME = ? AND REFERENCED_TABLE_SCHEMA = ?
		FROM information_schema.KEY_COLUMN_USAGE
		WHERE REFERENCED_TABLE_NAME IS NOT NULL AND
			((TABLE_SCHEMA = ? AND TABLE_NAME = ?) OR (REFERENCED_TABLE_SCHEMA = ? AND REFERENCED_TABLE_NAME = ?))
		ORDER BY TABLE_NAME, CONSTRAINT_NAME, ORDINAL_POSITION`, name, schema, schema, name, schema, name)
	if err != nil {
		return fmt.Errorf("read foreign keys: %w", err)
	}
	fks := map[string]*FKInfo{}
	var fkOrder []string
	for rows.Next() {
		var cn, tn, col, rt, rc string
		var incoming bool
		if err := rows.Scan(&cn, &tn, &col, &rt, &rc, &incoming); err != nil {
			rows.Close()
			return err
		}
		k := tn + "." + cn
		fk, ok := fks[k]
		if !ok {
			fk = &FKInfo{Name: cn, Table: tn, RefTable: rt, Incoming: incoming && tn != name}
			fks[k] = fk
			fkOrder = append(fkOrder, k)
		}
		fk.Columns = append(fk.Columns, col)
		fk.RefColumns = append(fk.RefColumns, rc)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read foreign keys: %w", err)
	}
	for _, k := range fkOrder {
		u.ForeignKeys = append(u.ForeignKeys, *fks[k])
	}
	return u.instantBlockers(ctx, q)
}

// instantBlockers fills NoInstantAdd and NoInstantDrop with what MariaDB
// and MySQL document as ruling out ALGORITHM=INSTANT for adding or
// dropping a column: a compressed row format, a full-text index, a server
// too old (MariaDB before 10.3 and 10.4, MySQL before 8.0.12 and 8.0.29)
// and, on MySQL 8.0.29+, a table whose 64 instant row versions are used up.
func (u *UsersTable) instantBlockers(ctx context.Context, q querier) error {
	var add, drop []string
	if strings.EqualFold(u.RowFormat, "compressed") {
		r := "ROW_FORMAT=COMPRESSED"
		add, drop = append(add, r), append(drop, r)
	}
	for _, ix := range u.Indexes {
		if ix.Type == "FULLTEXT" {
			r := "a FULLTEXT index (" + ix.Name + ")"
			add, drop = append(add, r), append(drop, r)
			break
		}
	}
	maria := strings.Contains(strings.ToLower(u.ServerVersion), "mariadb")
	major, minor, patch := serverVersion(u.ServerVersion)
	older := func(a, b, c int) bool {
		return major < a || (major == a && (minor < b || (minor == b && patch < c)))
	}
	switch {
	case maria && older(10, 3, 0):
		add = append(add, "MariaDB "+u.ServerVersion+" (INSTANT ADD COLUMN needs 10.3)")
	case !maria && older(8, 0, 12):
		add = append(add, "MySQL "+u.ServerVersion+" (INSTANT ADD COLUMN needs 8.0.12)")
	}
	switch {
	case maria && older(10, 4, 0):
		drop = append(drop, "MariaDB "+u.ServerVersion+" (INSTANT DROP COLUMN needs 10.4)")
	case !maria && older(8, 0, 29):
		drop = append(drop, "MySQL "+u.ServerVersion+" (INSTANT DROP COLUMN needs 8.0.29)")
	}
	if maria {
		// MariaDB 10.6.9+: a DBA can forbid instant changes server-wide
		// (never), or allow only adding a last column (add_last).
		var allowed sql.NullString
		if err := q.QueryRowContext(ctx, `SELECT @@GLOBAL.innodb_instant_alter_column_allowed`).Scan(&allowed); err == nil {
			switch strings.ToLower(allowed.String) {
			case "never":
				r := "innodb_instant_alter_column_allowed=never"
				add, drop = append(add, r), append(drop, r)
			case "add_last":
				drop = append(drop, "innodb_instant_alter_column_allowed=add_last")
			}
		}
	}
	if !maria && !older(8, 0, 29) {
		// Each INSTANT change adds a row version; at 64 MySQL refuses
		// INSTANT until the table is rebuilt. Two are needed here.
		var versions sql.NullInt64
		err := q.QueryRowContext(ctx, `SELECT TOTAL_ROW_VERSIONS FROM information_schema.INNODB_TABLES WHERE NAME = ?`, u.Schema+"/"+u.Name).Scan(&versions)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("read the row versions of %s: %w", u.Name, err)
		}
		if versions.Int64+int64(len(schema.UserColumns)) > 64 {
			r := fmt.Sprintf("%d of MySQL's 64 instant row versions used", versions.Int64)
			add, drop = append(add, r), append(drop, r)
		}
	}
	u.NoInstantAdd, u.NoInstantDrop = add, drop
	return nil
}

// ddlSQLMode is the sql_mode under which MySQL's ALTER TABLE accepts the
// table's existing zero-date defaults: SQLMode without NO_ZERO_DATE and
// NO_ZERO_IN_DATE (and TRADITIONAL, which would bring them back), every
// other flag kept. ok is false when the session's mode needs no change.
func (u *UsersTable) ddlSQLMode() (mode string, removed []string, ok bool) {
	if len(u.ZeroDateDefaults) == 0 {
		return "", nil, false
	}
	var keep []string
	for _, f := range strings.Split(u.SQLMode, ",") {
		switch strings.ToUpper(strings.TrimSpace(f)) {
		case "NO_ZERO_DATE", "NO_ZERO_IN_DATE", "TRADITIONAL":
			removed = append(removed, f)
		case "":
		default:
			keep = append(keep, f)
		}
	}
	if len(removed) == 0 {
		return "", nil, false
	}
	return strings.Join(keep, ","), removed, true
}

// serverVersion reads the leading major.minor.patch of VERSION().
func serverVersion(v string) (major, minor, patch int) {
	fmt.Sscanf(v, "%d.%d.%d", &major, &minor, &patch)
	return
}

var zeroDateRE = regexp.MustCompile(`^'?(\d{4})-(\d{2})-(\d{2})`)

// zeroDate reports a default such as '0000-00-00 00:00:00' or
// '2020-00-15', which NO_ZERO_DATE and NO_ZERO_IN_DATE reject.
func zeroDate(def string) bool {
	m := zeroDateRE.FindStringSubmatch(def)
	return m != nil && (m[1] == "0000" || m[2] == "00" || m[3] == "00")
}

func inspectSQLite(ctx context.Context, q querier, ut config.UsersTable, u *UsersTable) error {
	schema := ut.Schema
	if schema == "" {
		schema = "main"
	}
	u.Schema = schema
	master := SQLite.dialect().Quote(schema) + ".sqlite_master"
	var name string
	err := q.QueryRowContext(ctx, `SELECT name FROM `+master+` WHERE type = 'table' AND name = ? COLLATE NOCASE`, ut.Name).Scan(&name)
	if errors.Is(err, sql.ErrNoRows) {
		return notFound(SQLite, ut, "database "+schema, nil)
	}
	if err != nil {
		return fmt.Errorf("find users table: %w", err)
	}
	u.Name = name

	cols, pk, err := sqliteColumns(ctx, q, schema, name)
	if err != nil {
		return err
	}
	u.Columns, u.PrimaryKey = cols, pk

	rows, err := q.QueryContext(ctx, `SELECT il.name, il."unique", il.origin, il.partial, coalesce(m.sql, '')
		FROM pragma_index_list(?, ?) il LEFT JOIN `+master+` m ON m.type = 'index' AND m.name = il.name ORDER BY il.name`, name, schema)
	if err != nil {
		return fmt.Errorf("read indexes: %w", err)
	}
	var idx []IndexInfo
	for rows.Next() {
		var ix IndexInfo
		var origin string
		if err := rows.Scan(&ix.Name, &ix.Unique, &origin, &ix.Partial, &ix.Definition); err != nil {
			rows.Close()
			return err
		}
		ix.Primary, ix.Valid = origin == "pk", true
		idx = append(idx, ix)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read indexes: %w", err)
	}
	for i := range idx {
		cols, err := sqliteIndexColumns(ctx, q, schema, idx[i].Name, idx[i].Definition)
		if err != nil {
			return err
		}
		idx[i].Columns = cols
	}
	u.Indexes = idx
	// An INTEGER PRIMARY KEY is the rowid: no index is listed for it.
	if len(pk) > 0 {
		found := false
		for _, ix := range idx {
			if ix.Primary {
				found = true
			}
		}
		if !found {
			u.Indexes = append(u.Indexes, IndexInfo{Name: "(rowid)", Unique: true, Primary: true, Valid: true, Columns: pk})
		}
	}

	// Outgoing keys, then every table's keys that point at the users table.
	tables, err := sqliteTables(ctx, q, schema)
	if err != nil {
		return err
	}
	for _, t := range tables {
		fks, err := sqliteFKs(ctx, q, schema, t)
		if err != nil {
			return err
		}
		for _, fk := range fks {
			switch {
			case strings.EqualFold(t, name):
				u.ForeignKeys = append(u.ForeignKeys, fk)
			case strings.EqualFold(fk.RefTable, name):
				fk.Incoming = true
				u.ForeignKeys = append(u.ForeignKeys, fk)
			}
		}
	}
	if err := q.QueryRowContext(ctx, `SELECT count(*) FROM `+SQLite.dialect().Table(schema, name)).Scan(&u.Rows); err != nil {
		return fmt.Errorf("count rows: %w", err)
	}
	return nil
}

func sqliteColumns(ctx context.Context, q querier, schema, table string) ([]ColumnInfo, []string, error) {
	cols, err := SQLite.dialect().Columns(ctx, q, schema, table)
	if err != nil {
		return nil, nil, err
	}
	rows, err := q.QueryContext(ctx, `SELECT name FROM pragma_table_info(?, ?) WHERE pk > 0 ORDER BY pk`, table, schema)
	if err != nil {
		return nil, nil, fmt.Errorf("read the primary key of %s: %w", table, err)
	}
	defer rows.Close()
	var pk []string
	for rows.Next() {
		var name string
		if err := rows.Scan(&name); err != nil {
			return nil, nil, err
		}
		pk = append(pk, name)
	}
	return cols, pk, rows.Err()
}

func sqliteIndexColumns(ctx context.Context, q querier, schema, index, def string) ([]string, error) {
	rows, err := q.QueryContext(ctx, `SELECT cid, coalesce(name, '') FROM pragma_index_xinfo(?, ?) WHERE "key" = 1 ORDER BY seqno`, index, schema)
	if err != nil {
		return nil, fmt.Errorf("read index %s: %w", index, err)
	}
	defer rows.Close()
	var cols []string
	exprs := sqliteIndexExprs(def)
	n := 0
	for rows.Next() {
		var cid int
		var name string
		if err := rows.Scan(&cid, &name); err != nil {
			return nil, err
		}
		if cid == -2 { // an expression: take it from the CREATE INDEX text
			name = "(expression)"
			if n < len(exprs) {
				name = exprs[n]
			}
		}
		cols = append(cols, name)
		n++
	}
	return cols, rows.Err()
}

// sqliteIndexExprs splits the key list of a CREATE INDEX statement into its
// top-level terms.
func sqliteIndexExprs(def string) []string {
	open := strings.Index(def, "(")
	if open < 0 {
		return nil
	}
	var terms []string
	depth, start := 0, open+1
	inQuote := rune(0)
	for i, r := range def[open:] {
		i += open
		switch {
		case inQuote != 0:
			if r == inQuote {
				inQuote = 0
			}
		case r == '"' || r == '\'' || r == '`' || r == '[':
			inQuote = r
			if r == '[' {
				inQuote = ']'
			}
		case r == '(':
			depth++
		case r == ')':
			depth--
			if depth == 0 {
				terms = append(terms, strings.TrimSpace(def[start:i]))
				return terms
			}
		case r == ',' && depth == 1:
			terms = append(terms, strings.TrimSpace(def[start:i]))
			start = i + 1
		}
	}
	return terms
}

func sqliteTables(ctx context.Context, q querier, schema string) ([]string, error) {
	rows, err := q.QueryContext(ctx, `SELECT name FROM `+SQLite.dialect().Quote(schema)+`.sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite\_%' ESCAPE '\' ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("list tables: %w", err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, rows.Err()
}

func sqliteFKs(ctx context.Context, q querier, schema, table string) ([]FKInfo, error) {
	rows, err := q.QueryContext(ctx, `SELECT id, "table", "from", coalesce("to", '') FROM pragma_foreign_key_list(?, ?) ORDER BY id, seq`, table, schema)
	if err != nil {
		return nil, fmt.Errorf("read foreign keys of %s: %w", table, err)
	}
	defer rows.Close()
	byID := map[int]*FKInfo{}
	var ids []int
	for rows.Next() {
		var id int
		var ref, from, to string
		if err := rows.Scan(&id, &ref, &from, &to); err != nil {
			return nil, err
		}
		fk, ok := byID[id]
		if !ok {
			fk = &FKInfo{Name: fmt.Sprintf("%s#%d", table, id), Table: table, RefTable: ref}
			byID[id] = fk
			ids = append(ids, id)
		}
		fk.Columns = append(fk.Columns, from)
		fk.RefColumns = append(fk.RefColumns, to)
	}
	sort.Ints(ids)
	var out []FKInfo
	for _, id := range ids {
		out = append(out, *byID[id])
	}
	return out, rows.Err()
}
