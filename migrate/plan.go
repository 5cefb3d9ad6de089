package migrate

import (
	"fmt"
	"strings"
	"time"

	"github.com/passbridge/passbridge/config"
	"github.com/passbridge/passbridge/schema"
)

// Bookkeeping tables: migrate's own history and the password baseline.
var (
	historyDef = schema.Table{
		Name: schema.HistoryTable, PrimaryKey: "step_id",
		Comment: "passbridge migrate: one row per applied step",
		Columns: []schema.Column{
			{Name: "step_id", Type: schema.Str, Size: 191},
			{Name: "kind", Type: schema.Str, Size: 32},
			{Name: "checksum", Type: schema.Str, Size: 64},
			{Name: "statements", Type: schema.Text},
			{Name: "applied_at", Type: schema.Time},
			{Name: "duration_ms", Type: schema.Int, Default: "0"},
			{Name: "passbridge_version", Type: schema.Str, Size: 64},
		},
	}
	baselineDef = schema.Table{
		Name: schema.BaselineTable, PrimaryKey: "chunk",
		Comment: "passbridge migrate: the password column's checksum per key range, taken before the first change",
		Columns: []schema.Column{
			{Name: "chunk", Type: schema.Int},
			{Name: "first_key", Type: schema.Text},
			{Name: "last_key", Type: schema.Text},
			{Name: "row_count", Type: schema.Int},
			{Name: "checksum", Type: schema.Str, Size: 64},
			{Name: "taken_at", Type: schema.Time},
		},
	}
	baselineRowsDef = schema.Table{
		Name: schema.BaselineRowsTable, PrimaryKey: "user_key",
		Comment: "passbridge migrate: a SHA-256 fingerprint of each row's password hash, taken before the first change",
		Columns: []schema.Column{
			{Name: "user_key", Type: schema.UserKey},
			{Name: "chunk", Type: schema.Int},
			{Name: "fingerprint", Type: schema.Str, Size: 64, Nullable: true},
		},
	}
)

// planner renders the steps for one database.
type planner struct {
	eng    Engine
	ut     config.UsersTable
	prefix string
	users  *UsersTable
	// schema is users_table.schema as configured (for SQL); users.Schema
	// is the resolved one (for the catalog).
	schema string
	bl     *baseliner

	// skipped and warnings are what buildSteps found for the plan's
	// heading: the lookup index steps left out because an existing index
	// serves the lookup, and the lookups no index can serve.
	skipped  []SkippedStep
	warnings []string
}

// buildSteps returns the whole plan in order. It fails, before anything is
// run, on a name passbridge cannot use.
func (p *planner) buildSteps() ([]Step, error) {
	var steps []Step
	if err := p.checkNames(); err != nil {
		return nil, err
	}
	if p.eng == MySQL && !strings.EqualFold(p.users.StorageEngine, "InnoDB") {
		return nil, fmt.Errorf("%s uses the %s storage engine: it has no foreign keys, no online ALTER TABLE (every change copies the table under a write lock) and no crash safety; convert it to InnoDB first (ALTER TABLE %s ENGINE=InnoDB, during a maintenance window or with pt-online-schema-change / gh-ost)",
			p.users.Qualified, p.users.StorageEngine, p.users.Qualified)
	}

	// migrate's own tables, then the baseline: before anything touches the
	// users table.
	for _, t := range []schema.Table{historyDef, baselineDef, baselineRowsDef} {
		steps = append(steps, p.createTable(t, true))
	}
	if p.bl != nil { // no password column: nothing to baseline
		steps = append(steps, p.takeBaseline())
	}

	if p.eng == MySQL && len(p.users.NoInstantAdd) > 0 {
		steps = append(steps, p.addUserColumnsOnline())
	} else {
		for _, c := range schema.UserColumns {
			steps = append(steps, p.addUserColumn(c))
		}
	}
	lookups := p.userLookupIndexes()
	steps = append(steps, lookups...)
	if len(lookups) > 0 && p.eng != SQLite {
		steps = append(steps, p.analyzeUsers(lookups))
	}

	for _, t := range schema.Tables {
		steps = append(steps, p.createTable(t, false))
	}
	for _, t := range schema.Tables {
		for _, ix := range t.Indexes {
			steps = append(steps, p.createIndex(t, ix, false))
		}
	}
	if p.eng != SQLite { // SQLite declares them in CREATE TABLE
		for _, t := range schema.Tables {
			for _, fk := range t.FKs {
				steps = append(steps, p.foreignKey(t, fk)...)
			}
		}
	}
	// Columns added to passbridge's tables since their first release:
	// last, so that no step before them changes (nor its checksum).
	for _, c := range schema.AddedColumns {
		steps = append(steps, p.addTableColumn(c))
	}
	return steps, nil
}

// checkNames refuses identifiers the engine would truncate.
func (p *planner) checkNames() error {
	var long []string
	check := func(n string) {
		if len(n) > p.eng.maxIdent() {
			long = append(long, n)
		}
	}
	for _, t := range append([]schema.Table{historyDef, baselineDef, baselineRowsDef}, schema.Tables...) {
		check(p.prefix + t.Name)
		for _, ix := range t.Indexes {
			check(schema.IndexName(p.prefix, t.Name, ix.Name))
		}
		for _, fk := range t.FKs {
			check(schema.FKName(p.prefix, t.Name, fk.Column))
		}
	}
	for _, c := range schema.UserColumns {
		check(p.prefix + c.Name)
	}
	if len(long) > 0 {
		return fmt.Errorf("migrate.prefix %q makes names longer than %s allows (%d characters): %s; choose a shorter prefix",
			p.prefix, p.eng, p.eng.maxIdent(), strings.Join(long, ", "))
	}
	return nil
}

func (p *planner) q(name string) string { return p.eng.dialect().Quote(name) }

// tbl is a passbridge table's qualified name.
func (p *planner) tbl(name string) string { return p.eng.dialect().Table(p.schema, p.prefix+name) }

func (p *planner) usersQ() string { return p.eng.dialect().Table(p.schema, p.users.Name) }

func (p *planner) columnDef(t schema.Table, c schema.Column) string {
	typ := p.eng.columnType(c, p.users.KeyType)
	def := p.q(c.Name) + " " + typ
	if c.Type == schema.ID {
		switch p.eng {
		case Postgres:
			return def + " GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY"
		case MySQL:
			return def + " NOT NULL AUTO_INCREMENT"
		case SQLite:
			// The rowid; AUTOINCREMENT never reuses a deleted row's id
			// (as store.Dialect.Types.ID).
			return def + " PRIMARY KEY AUTOINCREMENT"
		}
	}
	if !c.Nullable {
		def += " NOT NULL"
	}
	if c.Default != "" {
		def += " DEFAULT " + p.eng.defaultLiteral(c)
	}
	return strings.TrimSpace(def)
}

func (p *planner) expectCols(t schema.Table) []expectCol {
	var out []expectCol
	for _, c := range t.Columns {
		out = append(out, expectCol{name: c.Name, family: p.eng.logicalFamily(c, p.users.KeyType), nullable: c.Nullable && c.Type != schema.ID})
	}
	return out
}

func (p *planner) createTable(t schema.Table, bookkeeping bool) Step {
	name := p.prefix + t.Name
	var lines []string
	hasID := false
	for _, c := range t.Columns {
		lines = append(lines, "    "+p.columnDef(t, c))
		hasID = hasID || c.Type == schema.ID
	}
	if !hasID {
		lines = append(lines, "    PRIMARY KEY ("+p.q(t.PrimaryKey)+")")
	} else if p.eng == MySQL {
		lines = append(lines, "    PRIMARY KEY ("+p.q(t.PrimaryKey)+")")
	}
	if p.eng == SQLite {
		for _, fk := range t.FKs {
			lines = append(lines, "    "+p.fkClause(fk))
		}
	}
	stmt := "CREATE TABLE " + p.tbl(t.Name) + " (\n" + strings.Join(lines, ",\n") + "\n)"
	stmts := []string{}
	switch p.eng {
	case MySQL:
		// store.Dialect.TableOptions: keys compare byte for byte, as on
		// the other engines.
		stmt += p.eng.dialect().TableOptions() + " COMMENT=" + p.eng.dialect().Literal(t.Comment)
		stmts = append(stmts, stmt)
	case Postgres:
		stmts = append(stmts, stmt, "COMMENT ON TABLE "+p.tbl(t.Name)+" IS "+p.eng.dialect().Literal(t.Comment))
	default:
		stmts = append(stmts, stmt)
	}

	risk := "new empty table: locks nothing that exists"
	undoRisk := "drops the table and its rows"
	hasUserFK := false
	for _, fk := range t.FKs {
		hasUserFK = hasUserFK || fk.Users
	}
	switch {
	case p.eng == SQLite && hasUserFK:
		risk = "new empty table with its foreign keys: one short write transaction"
	case p.eng == SQLite:
		risk = "new empty table: one short write transaction"
	}
	if hasUserFK && p.eng == Postgres {
		undoRisk += fmt.Sprintf("; also takes a brief ACCESS EXCLUSIVE lock on %s to remove the foreign key's triggers (bounded by lock_timeout)", p.users.Name)
	}
	if hasUserFK && p.eng == MySQL {
		undoRisk += fmt.Sprintf("; also takes a brief metadata lock on %s (bounded by lock_timeout)", p.users.Name)
	}
	s := &CreateTable{Table: t, expect: p.expectCols(t), later: map[string]bool{}}
	for _, c := range schema.AddedColumns {
		if c.Table == t.Name {
			s.later[strings.ToLower(c.Column.Name)] = true
		}
	}
	s.stepBase = stepBase{
		id: "create-table " + name, kind: "create-table", object: name,
		sql: stmts, undo: []string{"DROP TABLE " + p.tbl(t.Name)},
		risk: risk, undoRisk: undoRisk,
		tx: p.eng != MySQL, undoTx: p.eng != MySQL, bookkeeping: bookkeeping,
	}
	return s
}

// fkClause is a FOREIGN KEY clause for SQLite's CREATE TABLE. SQLite only
// references tables of the same database, by unqualified name.
func (p *planner) fkClause(fk schema.ForeignKey) string {
	ref, refCol := p.q(p.prefix+fk.Table), p.q("id")
	if fk.Users {
		ref, refCol = p.q(p.users.Name), p.q(p.users.Key.Name)
	}
	s := "FOREIGN KEY (" + p.q(fk.Column) + ") REFERENCES " + ref + " (" + refCol + ")"
	if fk.OnDelete != "" {
		s += " ON DELETE " + fk.OnDelete
	}
	return s
}

func (p *planner) addUserColumn(c schema.UserColumn) Step {
	name := p.prefix + c.Name
	col := schema.Column{Name: name, Type: c.Type, Size: c.Size, Nullable: true}
	typ := p.eng.columnType(col, p.users.KeyType)
	users := p.usersQ()
	s := &AddUserColumn{Column: c, users: p.users.Name, family: p.eng.family(typ)}
	var stmts []string
	var risk, undoRisk string
	undo := "ALTER TABLE " + users + " DROP COLUMN " + p.q(name)
	switch p.eng {
	case Postgres:
		stmts = []string{
			"ALTER TABLE " + users + " ADD COLUMN " + p.q(name) + " " + typ,
			"COMMENT ON COLUMN " + users + "." + p.q(name) + " IS " + p.eng.dialect().Literal(c.Comment),
		}
		risk = fmt.Sprintf("ACCESS EXCLUSIVE lock on %s for a catalog update only (nullable, no default: no rewrite, no scan), bounded by lock_timeout", p.users.Name)
		undoRisk = fmt.Sprintf("ACCESS EXCLUSIVE lock on %s for a catalog update only (the column's space is reclaimed by later updates), bounded by lock_timeout", p.users.Name)
	case MySQL:
		stmts = []string{"ALTER TABLE " + users + " " + p.addColumnClause(c) + ", ALGORITHM=INSTANT"}
		risk = fmt.Sprintf("ALGORITHM=INSTANT: a metadata-only change, brief exclusive metadata lock on %s bounded by lock_timeout; fails rather than copying the table if INSTANT is impossible", p.users.Name)
		if len(p.users.NoInstantDrop) > 0 {
			undo += ", ALGORITHM=INPLACE, LOCK=NONE"
			undoRisk = fmt.Sprintf("INSTANT is impossible here (%s): rebuilds %s online, reads and writes go on; %s",
				strings.Join(p.users.NoInstantDrop, ", "), p.users.Name, p.rebuildCost())
		} else {
			undo += ", ALGORITHM=INSTANT"
			undoRisk = fmt.Sprintf("ALGORITHM=INSTANT: brief exclusive metadata lock on %s bounded by lock_timeout; fails rather than copying the table if INSTANT is impossible", p.users.Name)
		}
	case SQLite:
		stmts = []string{"ALTER TABLE " + users + " ADD COLUMN " + p.q(name) + " " + typ}
		risk = "SQLite: a schema-only change (no rewrite), one short write transaction"
		undoRisk = fmt.Sprintf("SQLite rewrites %s to drop a column: the database is write-locked while it runs (seconds per million rows)", p.users.Name)
	}
	s.stepBase = stepBase{
		id: "add-column " + p.users.Name + "." + name, kind: "add-column", object: name,
		sql: stmts, undo: []string{undo}, risk: risk, undoRisk: undoRisk,
		tx: p.eng != MySQL, undoTx: p.eng != MySQL,
	}
	if p.eng == MySQL {
		s.aliases = []string{p.addUserColumnsID()}
		s.add, s.drop, s.alter = p.addColumnClause(c), "DROP COLUMN "+p.q(name), "ALTER TABLE "+users
	}
	return s
}

// addTableColumn adds a column to one of passbridge's tables
// (schema.AddedColumns): nullable, no default, a catalog change only.
func (p *planner) addTableColumn(c schema.AddedColumn) Step {
	table, tq := p.prefix+c.Table, p.tbl(c.Table)
	col := c.Column
	col.Nullable = true
	typ := p.eng.columnType(col, p.users.KeyType)
	s := &AddTableColumn{Added: c, family: p.eng.family(typ)}
	var stmts []string
	var risk, undoRisk string
	undo := "ALTER TABLE " + tq + " DROP COLUMN " + p.q(col.Name)
	switch p.eng {
	case Postgres:
		stmts = []string{
			"ALTER TABLE " + tq + " ADD COLUMN " + p.q(col.Name) + " " + typ,
			"COMMENT ON COLUMN " + tq + "." + p.q(col.Name) + " IS " + p.eng.dialect().Literal(c.Comment),
		}
		risk = fmt.Sprintf("ACCESS EXCLUSIVE lock on %s for a catalog update only (nullable, no default: no rewrite, no scan), bounded by lock_timeout", table)
		undoRisk = fmt.Sprintf("ACCESS EXCLUSIVE lock on %s for a catalog update only, bounded by lock_timeout", table)
	case MySQL:
		stmts = []string{"ALTER TABLE " + tq + " ADD COLUMN " + p.q(col.Name) + " " + typ + " NULL COMMENT " + p.eng.dialect().Literal(c.Comment) + ", ALGORITHM=INSTANT"}
		undo += ", ALGORITHM=INPLACE, LOCK=NONE"
		risk = fmt.Sprintf("ALGORITHM=INSTANT: a metadata-only change, brief exclusive metadata lock on %s bounded by lock_timeout; fails rather than copying the table if INSTANT is impossible", table)
		undoRisk = fmt.Sprintf("rebuilds %s online (INPLACE, LOCK=NONE): reads and writes go on", table)
	case SQLite:
		stmts = []string{"ALTER TABLE " + tq + " ADD COLUMN " + p.q(col.Name) + " " + typ}
		risk = "SQLite: a schema-only change (no rewrite), one short write transaction"
		undoRisk = fmt.Sprintf("SQLite rewrites %s to drop a column: the database is write-locked while it runs", table)
	}
	s.stepBase = stepBase{
		id: "add-column " + table + "." + col.Name, kind: "add-table-column", object: table + "." + col.Name,
		sql: stmts, undo: []string{undo}, risk: risk, undoRisk: undoRisk,
		tx: p.eng != MySQL, undoTx: p.eng != MySQL,
		// Dropping the table (rollback, later in reverse order) drops it.
		table: table,
	}
	return s
}

// addColumnClause is a users column's ADD COLUMN clause on MySQL.
func (p *planner) addColumnClause(c schema.UserColumn) string {
	col := schema.Column{Name: p.prefix + c.Name, Type: c.Type, Size: c.Size, Nullable: true}
	return "ADD COLUMN " + p.q(col.Name) + " " + p.eng.columnType(col, p.users.KeyType) + " NULL COMMENT " + p.eng.dialect().Literal(c.Comment)
}

func (p *planner) addUserColumnsID() string {
	var names []string
	for _, c := range schema.UserColumns {
		names = append(names, p.prefix+c.Name)
	}
	return "add-columns " + p.users.Name + "." + strings.Join(names, ",")
}

// addUserColumnsOnline adds both users columns in one online rebuild
// (MySQL ALGORITHM=INPLACE, LOCK=NONE), for a table on which INSTANT is
// impossible: one rebuild instead of one per column.
func (p *planner) addUserColumnsOnline() Step {
	s := &AddUserColumns{Columns: schema.UserColumns, users: p.users.Name,
		alter: "ALTER TABLE " + p.usersQ(), online: ", ALGORITHM=INPLACE, LOCK=NONE"}
	var ids []string
	for _, c := range schema.UserColumns {
		name := p.prefix + c.Name
		col := schema.Column{Name: name, Type: c.Type, Size: c.Size, Nullable: true}
		s.names = append(s.names, name)
		s.families = append(s.families, p.eng.family(p.eng.columnType(col, p.users.KeyType)))
		s.adds = append(s.adds, p.addColumnClause(c))
		s.drops = append(s.drops, "DROP COLUMN "+p.q(name))
		ids = append(ids, "add-column "+p.users.Name+"."+name)
	}
	why := strings.Join(p.users.NoInstantAdd, ", ")
	s.stepBase = stepBase{
		id: p.addUserColumnsID(), kind: "add-columns", object: strings.Join(s.names, ", "),
		sql:  []string{s.alter + " " + strings.Join(s.adds, ", ") + s.online},
		undo: []string{s.alter + " " + strings.Join(s.drops, ", ") + s.online},
		risk: fmt.Sprintf("INSTANT is impossible here (%s), so both columns are added in one ALTER with ALGORITHM=INPLACE, LOCK=NONE: "+
			"%s is rebuilt online, reads and writes go on, brief exclusive metadata locks at start and end bounded by lock_timeout; %s",
			why, p.users.Name, p.rebuildCost()),
		undoRisk: fmt.Sprintf("both columns dropped in one ALTER with ALGORITHM=INPLACE, LOCK=NONE: %s is rebuilt online again; %s", p.users.Name, p.rebuildCost()),
		aliases:  ids,
	}
	return s
}

// rebuildCost words what an online rebuild of the users table costs: its
// size, a rough duration, and the server resources it needs.
func (p *planner) rebuildCost() string {
	u := p.users
	mib := float64(u.SizeBytes) / (1 << 20)
	// About 20 MiB/s for a compressed table with its indexes on a busy
	// 2-core server (bench/README.md), several times faster uncompressed
	// on real hardware: an order of magnitude, not a promise.
	secs := max(mib/20, 1)
	return fmt.Sprintf("%s, %.0f MiB of data and indexes: roughly %s at 20 MiB/s; needs free disk for a copy of the table, and the writes made meanwhile must fit innodb_online_alter_log_max_size",
		approxRows(u.Rows), mib, (time.Duration(secs) * time.Second).String())
}

// userLookupIndexes plans a case-insensitive lookup index on the users
// table's email and username columns, which directory sync and the portal
// match on, unless an existing index already serves that lookup.
func (p *planner) userLookupIndexes() []Step {
	var steps []Step
	warned := map[string]bool{}
	for _, role := range []struct{ role, col string }{{"email", p.ut.Email}, {"username", p.ut.Username}} {
		if role.col == "" {
			continue
		}
		col, _ := p.users.Column(role.col)
		if w := p.caseSensitiveLookup(col); w != "" && !warned[col.Name] {
			warned[col.Name] = true
			p.warnings = append(p.warnings, w)
		}
		if role.col == p.users.Key.Name {
			continue
		}
		name := schema.IndexName(p.prefix, "user", role.role)
		if ix := p.lookupServed(col, name); ix != nil {
			p.skipped = append(p.skipped, SkippedStep{ID: "create-index " + name, Column: col.Name, ServedBy: ix.Name,
				Reason: fmt.Sprintf("the existing index %s (%s) already serves case-insensitive lookups on %s.%s", ix.Name, strings.Join(ix.Columns, ", "), p.users.Name, col.Name)})
			continue
		}
		key := p.q(col.Name)
		switch p.eng {
		case Postgres, SQLite:
			key = "lower(" + key + ")"
		case MySQL:
			if t := strings.ToLower(col.Type); strings.Contains(t, "text") || strings.Contains(t, "blob") {
				key += "(191)"
			}
		}
		ix := schema.Index{Name: role.role, Columns: []string{key}}
		steps = append(steps, p.indexStep(p.users.Name, "user", ix, true, false))
	}
	return steps
}

// lookupServed returns the existing valid index that has the lookup as
// its first key, or nil: lower(col) on PostgreSQL and SQLite (or a NOCASE
// column on SQLite), the column itself on MySQL, whose usual collations
// are case-insensitive.
func (p *planner) lookupServed(col ColumnInfo, ours string) *IndexInfo {
	for i := range p.users.Indexes {
		ix := &p.users.Indexes[i]
		// passbridge's own index serves it too, but must stay in the plan
		// (for status, verify and rollback).
		if ix.Name == ours || !ix.Valid || ix.Partial || ix.Type != "" || len(ix.Columns) == 0 {
			continue
		}
		first := normTerm(ix.Columns[0])
		switch p.eng {
		case Postgres, SQLite:
			if first == normTerm("lower("+col.Name+")") {
				return ix
			}
			if p.eng == SQLite && strings.EqualFold(ix.Columns[0], col.Name) && strings.Contains(strings.ToLower(ix.Definition), "nocase") {
				return ix
			}
		case MySQL:
			if first == normTerm(col.Name) && (strings.HasSuffix(strings.ToLower(col.Collation), "_ci") || col.Collation == "") {
				return ix
			}
		}
	}
	return nil
}

// caseSensitiveLookup is the plan's warning for a column that directory
// sync matches on without regard to case but that compares with case on
// MySQL (a _bin or _cs collation, or a binary string): sync then asks for
// LOWER(col), which no index on the column serves, and MariaDB indexes no
// expression, so those matches scan the table. "" when lookups on col are
// indexed (PostgreSQL and SQLite index lower(col)).
func (p *planner) caseSensitiveLookup(col ColumnInfo) string {
	if p.eng != MySQL || strings.HasSuffix(strings.ToLower(col.Collation), "_ci") {
		return ""
	}
	how := "the case-sensitive collation " + col.Collation
	if col.Collation == "" {
		how = "no collation (" + col.Type + ": bytes, compared with case)"
	}
	return fmt.Sprintf("%s.%s has %s: directory sync matches on it without regard to case (LOWER(%s)), which no index on it serves, so those matches scan the table (%s) on every sync; an index on it serves exact matches only. "+
		"A case-insensitive collation on the column (if the application allows it) makes them index lookups",
		p.users.Name, col.Name, how, col.Name, approxRows(p.users.Rows))
}

func (p *planner) createIndex(t schema.Table, ix schema.Index, bookkeeping bool) Step {
	keys := make([]string, len(ix.Columns))
	for i, c := range ix.Columns {
		keys[i] = p.q(c)
	}
	ix.Columns = keys
	return p.indexStep(p.prefix+t.Name, t.Name, ix, false, bookkeeping)
}

// indexStep renders one index. table is the real table name; nameBase is
// the middle of the index name (<prefix><nameBase>_<index>).
func (p *planner) indexStep(table, nameBase string, ix schema.Index, onUsers, bookkeeping bool) Step {
	name := schema.IndexName(p.prefix, nameBase, ix.Name)
	tq := p.eng.dialect().Table(p.schema, table)
	unique := ""
	if ix.Unique {
		unique = "UNIQUE "
	}
	cols := strings.Join(ix.Columns, ", ")
	var stmt, undo, risk, undoRisk string
	tx := false
	rows := "it"
	if onUsers {
		rows = fmt.Sprintf("%s (%s)", table, approxRows(p.users.Rows))
	}
	patient := false
	switch {
	case p.eng == Postgres && bookkeeping:
		// migrate's own table, which nothing else reads or writes: a
		// plain build in a transaction is enough.
		stmt = "CREATE " + unique + "INDEX " + p.q(name) + " ON " + tq + " (" + cols + ")"
		undo = "DROP INDEX " + p.eng.dialect().Table(p.schema, name)
		risk = "SHARE lock on passbridge's own bookkeeping table only"
		undoRisk = "ACCESS EXCLUSIVE on passbridge's own bookkeeping table only"
		tx = true
	case p.eng == Postgres:
		stmt = "CREATE " + unique + "INDEX CONCURRENTLY " + p.q(name) + " ON " + tq + " (" + cols + ")"
		undo = "DROP INDEX CONCURRENTLY " + p.eng.dialect().Table(p.schema, name)
		risk = fmt.Sprintf("CONCURRENTLY, outside a transaction: SHARE UPDATE EXCLUSIVE on %s, which lets reads and writes go on; scans %s twice and waits, without blocking them, for transactions that started before it (so no lock_timeout); an interrupted build leaves an INVALID index that the next apply drops and rebuilds", table, rows)
		undoRisk = "DROP INDEX CONCURRENTLY: does not block reads or writes"
		patient = true
	case p.eng == MySQL:
		stmt = "ALTER TABLE " + tq + " ADD " + unique + "INDEX " + p.q(name) + " (" + cols + "), ALGORITHM=INPLACE, LOCK=NONE"
		undo = "ALTER TABLE " + tq + " DROP INDEX " + p.q(name) + ", ALGORITHM=INPLACE, LOCK=NONE"
		risk = fmt.Sprintf("ALGORITHM=INPLACE, LOCK=NONE: reads and writes go on while InnoDB builds the index from %s; brief exclusive metadata locks at start and end, bounded by lock_timeout", rows)
		undoRisk = "INPLACE, LOCK=NONE: a metadata-only change"
		tx = false
	default: // SQLite
		stmt = "CREATE " + unique + "INDEX " + p.eng.dialect().Table(p.schema, name) + " ON " + p.q(table) + " (" + cols + ")"
		undo = "DROP INDEX " + p.eng.dialect().Table(p.schema, name)
		risk = "SQLite: one write transaction; writers wait while the index builds"
		if onUsers {
			risk = fmt.Sprintf("SQLite: one write transaction; writers wait while the index builds from %s (well under a second per 100,000 rows)", rows)
		}
		undoRisk = "SQLite: one short write transaction"
		tx = true
	}
	s := &CreateIndex{On: table, Unique: ix.Unique, Keys: ix.Columns, OnUsers: onUsers}
	s.stepBase = stepBase{
		id: "create-index " + name, kind: "create-index", object: name,
		sql: []string{stmt}, undo: []string{undo}, risk: risk, undoRisk: undoRisk,
		tx: tx, undoTx: tx, bookkeeping: bookkeeping, patient: patient,
	}
	if !onUsers {
		s.table = table
	}
	return s
}

// approxRows words the catalog's row estimate.
func approxRows(n int64) string {
	if n < 0 {
		return "row count not estimated yet: never analyzed"
	}
	return fmt.Sprintf("about %d rows", n)
}

func (p *planner) foreignKey(t schema.Table, fk schema.ForeignKey) []Step {
	name := schema.FKName(p.prefix, t.Name, fk.Column)
	child := p.tbl(t.Name)
	ref, refCol, refName := p.tbl(fk.Table), "id", p.prefix+fk.Table
	if fk.Users {
		ref, refCol, refName = p.usersQ(), p.users.Key.Name, p.users.Name
	}
	clause := "ALTER TABLE " + child + " ADD CONSTRAINT " + p.q(name) + " FOREIGN KEY (" + p.q(fk.Column) + ") REFERENCES " + ref + " (" + p.q(refCol) + ")"
	if fk.OnDelete != "" {
		clause += " ON DELETE " + fk.OnDelete
	}
	add := &AddForeignKey{Column: fk.Column, RefTable: refName, RefColumn: refCol, OnDelete: fk.OnDelete}
	add.stepBase = stepBase{
		id: "add-foreign-key " + name, kind: "add-foreign-key", object: name, table: p.prefix + t.Name,
		tx: p.eng == Postgres, undoTx: p.eng == Postgres,
	}
	switch p.eng {
	case Postgres:
		add.sql = []string{clause + " NOT VALID"}
		add.undo = []string{"ALTER TABLE " + child + " DROP CONSTRAINT " + p.q(name)}
		add.risk = fmt.Sprintf("NOT VALID: SHARE ROW EXCLUSIVE on %s and %s only for the catalog update (no scan), bounded by lock_timeout", p.prefix+t.Name, refName)
		add.undoRisk = fmt.Sprintf("SHARE ROW EXCLUSIVE on %s and %s for a catalog update, bounded by lock_timeout", p.prefix+t.Name, refName)
		val := &ValidateForeignKey{}
		val.stepBase = stepBase{
			id: "validate-foreign-key " + name, kind: "validate-foreign-key", object: name, table: p.prefix + t.Name,
			sql:      []string{"ALTER TABLE " + child + " VALIDATE CONSTRAINT " + p.q(name)},
			risk:     fmt.Sprintf("SHARE UPDATE EXCLUSIVE on %s (just created, so nearly empty) and ROW SHARE on %s: reads and writes go on", p.prefix+t.Name, refName),
			undoRisk: "nothing to undo: the constraint goes with its add-foreign-key step",
			tx:       true, undoTx: true, patient: true,
		}
		return []Step{add, val}
	default: // MySQL
		add.sql = []string{clause}
		add.undo = []string{"ALTER TABLE " + child + " DROP FOREIGN KEY " + p.q(name)}
		add.risk = fmt.Sprintf("copies %s (just created, so empty) to check its rows, holding a metadata lock on %s that makes its writers wait meanwhile (milliseconds); bounded by lock_timeout", p.prefix+t.Name, refName)
		add.undoRisk = fmt.Sprintf("a metadata lock on %s that makes its writers wait for a few milliseconds; bounded by lock_timeout", refName)
		return []Step{add}
	}
}

// analyzeUsers gathers the users table's statistics after its lookup
// indexes are built (see AnalyzeUsers).
func (p *planner) analyzeUsers(lookups []Step) Step {
	s := &AnalyzeUsers{users: p.users.Name}
	for _, l := range lookups {
		s.indexes = append(s.indexes, l.Object())
	}
	stmt, risk := "ANALYZE "+p.usersQ(), ""
	switch p.eng {
	case Postgres:
		risk = fmt.Sprintf("reads a sample of %s (300 x default_statistics_target rows) so that the planner has statistics for the lookup indexes' expressions; "+
			"SHARE UPDATE EXCLUSIVE on %s: reads and writes go on; bounded by lock_timeout", p.users.Name, p.users.Name)
	case MySQL:
		stmt = "ANALYZE TABLE " + p.usersQ()
		risk = fmt.Sprintf("InnoDB re-samples the index statistics of %s (innodb_stats_persistent_sample_pages per index); reads and writes go on; a brief metadata lock bounded by lock_timeout", p.users.Name)
	}
	s.stepBase = stepBase{
		id: "analyze " + p.users.Name, kind: "analyze", object: p.users.Name,
		sql: []string{stmt}, risk: risk, undoRisk: "nothing to undo: statistics only",
		tx: p.eng == Postgres,
	}
	return s
}

func (p *planner) takeBaseline() Step {
	s := &TakeBaseline{bl: p.bl}
	s.stepBase = stepBase{
		id: "take-baseline " + p.users.Name + "." + p.ut.Password, kind: "take-baseline", object: p.prefix + schema.BaselineTable,
		sql:  p.bl.describe(),
		risk: fmt.Sprintf("reads %s in key order, %d rows per short read-only statement (no locks beyond a plain SELECT), pausing between chunks; writes only to %s and %s", p.users.Name, p.bl.chunk, p.prefix+schema.BaselineTable, p.prefix+schema.BaselineRowsTable),
		undo: nil, undoRisk: "removed with the baseline tables",
		tx: false, bookkeeping: true,
	}
	return s
}
