package migrate

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"

	"github.com/passbridge/passbridge/schema"
)

// Step is one change of a plan. Each kind of change is its own type; all
// carry the exact SQL for the target engine, what it locks, how to undo it
// and whether it may run inside a transaction. Steps are data: plan prints
// them, apply runs them, and both go through the same code.
type Step interface {
	// ID names the step for the history table: stable across runs and
	// versions as long as the step means the same change.
	ID() string
	// Kind is create-table, add-column (the users table), add-columns,
	// add-table-column (passbridge's own tables), create-index,
	// add-foreign-key, validate-foreign-key or take-baseline.
	Kind() string
	// Object is the (unquoted) name of what the step creates.
	Object() string
	// SQL is the forward statements, exactly as apply runs them.
	SQL() []string
	// Undo is the statements that remove what the step made (empty when
	// dropping the table the step belongs to removes it too).
	Undo() []string
	// Risk is one line: what the step locks, for how long, and whether it
	// rewrites a table.
	Risk() string
	// UndoRisk is the same for Undo.
	UndoRisk() string
	// Transactional reports whether the step runs inside a transaction
	// (together with its history record).
	Transactional() bool
	// Checksum is the SHA-256 of SQL: the history records it, and status
	// reports drift when the plan's SQL for an applied step changes.
	Checksum() string

	base() *stepBase
	// check decides from the catalog (and history) whether the step is
	// applied, pending, half-done or blocked by a foreign object.
	check(env *checkEnv) (State, string)
}

// State is where a step stands in the database.
type State string

const (
	StatePending   State = "pending"
	StateApplied   State = "applied"
	StateInvalid   State = "invalid"   // exists but unusable: an INVALID index left by a killed build
	StateBuilding  State = "building"  // another session is building it right now
	StateCollision State = "collision" // the name is taken by something of another shape
	StatePartial   State = "partial"   // part of a step's change exists (made by hand): the rest is to be made by hand too
)

type stepBase struct {
	id, kind, object string
	sql, undo        []string
	risk, undoRisk   string
	tx, undoTx       bool
	// table is the passbridge table the step belongs to: dropping it
	// undoes the step (indexes, foreign keys).
	table string
	// bookkeeping marks migrate's own tables (history, baseline).
	bookkeeping bool
	// patient steps wait for their locks without lock_timeout: their lock
	// requests block nobody (PostgreSQL CONCURRENTLY builds and drops,
	// VALIDATE CONSTRAINT), so the application's long transactions only
	// delay them.
	patient bool
	// aliases are the history IDs under which the same change is recorded
	// when it was planned another way: the two users columns as one
	// online rebuild (add-columns) or as two INSTANT steps (add-column),
	// as the table's row format decided at the time. The step counts as
	// recorded when every alias is.
	aliases []string
}

// recorded returns the history row of the step: its own, or that of its
// aliases (then via is true).
func (b *stepBase) recorded(history map[string]HistoryEntry) (h HistoryEntry, ok, via bool) {
	if h, ok := history[b.id]; ok {
		return h, true, false
	}
	if len(b.aliases) == 0 {
		return HistoryEntry{}, false, false
	}
	for _, a := range b.aliases {
		if h, ok = history[a]; !ok {
			return HistoryEntry{}, false, false
		}
	}
	return h, true, true
}

func (b *stepBase) ID() string          { return b.id }
func (b *stepBase) Kind() string        { return b.kind }
func (b *stepBase) Object() string      { return b.object }
func (b *stepBase) SQL() []string       { return b.sql }
func (b *stepBase) Undo() []string      { return b.undo }
func (b *stepBase) Risk() string        { return b.risk }
func (b *stepBase) UndoRisk() string    { return b.undoRisk }
func (b *stepBase) Transactional() bool { return b.tx }
func (b *stepBase) base() *stepBase     { return b }

func (b *stepBase) Checksum() string {
	h := sha256.Sum256([]byte(strings.Join(b.sql, ";\n")))
	return hex.EncodeToString(h[:])
}

// checkEnv is what steps look at to decide their state.
type checkEnv struct {
	cat     *catalog
	history map[string]HistoryEntry
}

// CreateTable creates one of passbridge's tables (or migrate's own
// bookkeeping tables), with its primary key and, on SQLite, its foreign
// keys.
type CreateTable struct {
	stepBase
	Table schema.Table
	// expected column families and nullability, for the shape check.
	expect []expectCol
	// later are the columns (lower case) that add-column steps at the end
	// of the plan add to the table (schema.AddedColumns): present or not,
	// they are passbridge's.
	later map[string]bool
}

type expectCol struct {
	name     string
	family   string
	nullable bool
}

func (s *CreateTable) check(env *checkEnv) (State, string) {
	c := env.cat
	kind, exists := c.relations[c.key(s.object)]
	t := c.table(s.object)
	if !exists && t == nil {
		return StatePending, ""
	}
	if t == nil || (exists && kind != "table") {
		return StateCollision, fmt.Sprintf("%s exists as a %s, not as passbridge's table", s.object, kind)
	}
	var diffs []string
	seen := map[string]bool{}
	for _, want := range s.expect {
		got, ok := t.column(c.eng, want.name)
		if !ok {
			diffs = append(diffs, fmt.Sprintf("column %s is missing", want.name))
			continue
		}
		seen[strings.ToLower(got.name)] = true
		if f := c.eng.family(got.typ); f != want.family {
			diffs = append(diffs, fmt.Sprintf("column %s is %s, expected a %s type", want.name, got.typ, want.family))
		}
		if got.nullable != want.nullable && !(c.eng == SQLite && want.name == s.Table.PrimaryKey) {
			diffs = append(diffs, fmt.Sprintf("column %s is %s, expected %s", want.name, nullWord(got.nullable), nullWord(want.nullable)))
		}
	}
	for _, got := range t.cols {
		if !seen[strings.ToLower(got.name)] && !s.later[strings.ToLower(got.name)] {
			diffs = append(diffs, fmt.Sprintf("column %s is not passbridge's", got.name))
		}
	}
	if len(diffs) > 0 {
		return StateCollision, fmt.Sprintf("table %s exists with another shape: %s", s.object, strings.Join(diffs, "; "))
	}
	return StateApplied, ""
}

func nullWord(nullable bool) string {
	if nullable {
		return "NULL"
	}
	return "NOT NULL"
}

// AddUserColumn adds one nullable column without a default to the existing
// users table: a catalog-only change on every engine.
type AddUserColumn struct {
	stepBase
	Column schema.UserColumn
	users  string
	family string
	// add and drop are the column's ADD COLUMN and DROP COLUMN clauses,
	// alter "ALTER TABLE users" (MySQL: for the rebuild a failure advises).
	add, drop, alter string
}

func (s *AddUserColumn) check(env *checkEnv) (State, string) {
	t := env.cat.table(s.users)
	if t == nil {
		return StateCollision, fmt.Sprintf("the users table %s is gone", s.users)
	}
	return nullableColumn(env.cat.eng, t, s.users, s.object, s.family)
}

// nullableColumn is the state of a step that adds a nullable column of a
// type family to table t: pending while the column is not there, applied
// when it is there with that shape, a collision with another.
func nullableColumn(eng Engine, t *catTable, table, name, family string) (State, string) {
	got, ok := t.column(eng, name)
	if !ok {
		return StatePending, ""
	}
	if f := eng.family(got.typ); f != family || !got.nullable {
		return StateCollision, fmt.Sprintf("column %s.%s already exists as %s %s, not as passbridge's nullable %s column",
			table, got.name, got.typ, nullWord(got.nullable), family)
	}
	return StateApplied, ""
}

// AddTableColumn adds a column to one of passbridge's own tables after
// its first release (schema.AddedColumns): nullable, no default, so a
// catalog change only. A step of its own at the end of the plan, so that
// the table's CREATE TABLE (and the checksum existing installs recorded
// for it) stays as it was.
type AddTableColumn struct {
	stepBase
	Added  schema.AddedColumn
	family string
}

func (s *AddTableColumn) check(env *checkEnv) (State, string) {
	t := env.cat.table(s.table)
	if t == nil {
		return StatePending, "" // its table comes earlier in the plan
	}
	return nullableColumn(env.cat.eng, t, s.table, s.Added.Column.Name, s.family)
}

// AddUserColumns adds the users columns in one ALTER TABLE that rebuilds
// the table online (MySQL ALGORITHM=INPLACE, LOCK=NONE), for a table on
// which INSTANT is impossible (UsersTable.NoInstantAdd): one rebuild for
// both columns rather than one each.
type AddUserColumns struct {
	stepBase
	Columns []schema.UserColumn
	users   string
	// names and families of the columns, in order; adds and drops their
	// ADD COLUMN and DROP COLUMN clauses; alter is "ALTER TABLE users"
	// and online the ALGORITHM clause.
	names, families []string
	adds, drops     []string
	alter, online   string
}

// byHand is the statement that finishes a half-made change in the
// direction of the command: on apply, adding the columns still missing;
// on rollback, dropping those that exist.
func (s *AddUserColumns) byHand(env *checkEnv, rollback bool) string {
	var clauses []string
	t := env.cat.table(s.users)
	for i, name := range s.names {
		_, exists := t.column(env.cat.eng, name)
		switch {
		case rollback && exists:
			clauses = append(clauses, s.drops[i])
		case !rollback && !exists:
			clauses = append(clauses, s.adds[i])
		}
	}
	return s.alter + " " + strings.Join(clauses, ", ") + s.online
}

func (s *AddUserColumns) check(env *checkEnv) (State, string) {
	t := env.cat.table(s.users)
	if t == nil {
		return StateCollision, fmt.Sprintf("the users table %s is gone", s.users)
	}
	var have, missing, bad []string
	for i, name := range s.names {
		got, ok := t.column(env.cat.eng, name)
		switch {
		case !ok:
			missing = append(missing, name)
		case env.cat.eng.family(got.typ) != s.families[i] || !got.nullable:
			bad = append(bad, fmt.Sprintf("column %s.%s already exists as %s %s, not as passbridge's nullable %s column",
				s.users, name, got.typ, nullWord(got.nullable), s.families[i]))
		default:
			have = append(have, name)
		}
	}
	switch {
	case len(bad) > 0:
		return StateCollision, strings.Join(bad, "; ")
	case len(missing) == 0:
		return StateApplied, ""
	case len(have) > 0:
		// Half of it made by hand (one column at a time): this step's
		// ALTER would fail on the column that exists.
		return StatePartial, fmt.Sprintf("%s exists but %s does not", strings.Join(have, ", "), strings.Join(missing, ", "))
	}
	return StatePending, ""
}

// CreateIndex builds a secondary index: online on PostgreSQL (CONCURRENTLY,
// outside a transaction) and MySQL (INPLACE, LOCK=NONE).
type CreateIndex struct {
	stepBase
	// On is the (unquoted) table the index is on.
	On     string
	Unique bool
	// Keys are the key terms: column names or expressions such as
	// lower("email").
	Keys []string
	// OnUsers is true for a lookup index on the application's users table.
	OnUsers bool
}

func (s *CreateIndex) check(env *checkEnv) (State, string) {
	ix, elsewhere := env.cat.index(s.object, s.On)
	if ix == nil {
		if elsewhere != "" {
			return StateCollision, fmt.Sprintf("index name %s is already used on table %s", s.object, elsewhere)
		}
		if kind, ok := env.cat.relations[env.cat.key(s.object)]; ok && kind != "index" {
			return StateCollision, fmt.Sprintf("%s exists as a %s", s.object, kind)
		}
		return StatePending, ""
	}
	if ix.building {
		return StateBuilding, fmt.Sprintf("index %s is being built by another session", s.object)
	}
	if !ix.valid {
		return StateInvalid, fmt.Sprintf("index %s is INVALID (a CREATE INDEX CONCURRENTLY was interrupted): apply drops and rebuilds it", s.object)
	}
	want := make([]string, len(s.Keys))
	for i, k := range s.Keys {
		want[i] = normTerm(k)
	}
	got := make([]string, len(ix.cols))
	for i, k := range ix.cols {
		got[i] = normTerm(k)
	}
	if ix.unique != s.Unique || !slices.Equal(want, got) {
		return StateCollision, fmt.Sprintf("index %s exists on (%s), expected %s(%s)", s.object, strings.Join(ix.cols, ", "),
			map[bool]string{true: "UNIQUE ", false: ""}[s.Unique], strings.Join(s.Keys, ", "))
	}
	return StateApplied, ""
}

// normTerm makes an index key term comparable across the ways catalogs
// print it: lower("Email") and lower(("Email")::text) are the same key.
func normTerm(s string) string {
	s = strings.ToLower(s)
	for _, cast := range []string{"::text", "::character varying", "::varchar", "::citext"} {
		s = strings.ReplaceAll(s, cast, "")
	}
	return strings.Map(func(r rune) rune {
		switch r {
		case '"', '`', ' ', '(', ')', '[', ']':
			return -1
		}
		return r
	}, s)
}

// AddForeignKey adds a foreign key from a passbridge table. On PostgreSQL it
// is added NOT VALID (no scan while the lock is held); ValidateForeignKey
// checks the rows afterwards under a weaker lock.
type AddForeignKey struct {
	stepBase
	Column, RefTable, RefColumn, OnDelete string
}

func (s *AddForeignKey) check(env *checkEnv) (State, string) {
	fk := env.cat.fk(s.object, s.table)
	if fk == nil {
		if list := env.cat.fks[env.cat.key(s.object)]; len(list) > 0 {
			return StateCollision, fmt.Sprintf("constraint name %s is already used on table %s", s.object, list[0].table)
		}
		return StatePending, ""
	}
	if !slices.Equal(fk.cols, []string{s.Column}) || !strings.EqualFold(fk.refTable, s.RefTable) || !slices.Equal(fk.refCols, []string{s.RefColumn}) {
		return StateCollision, fmt.Sprintf("constraint %s exists as %s(%s) -> %s(%s)", s.object, fk.table,
			strings.Join(fk.cols, ","), fk.refTable, strings.Join(fk.refCols, ","))
	}
	return StateApplied, ""
}

// ValidateForeignKey checks the existing rows against a NOT VALID foreign
// key (PostgreSQL only).
type ValidateForeignKey struct {
	stepBase
}

func (s *ValidateForeignKey) check(env *checkEnv) (State, string) {
	fk := env.cat.fk(s.object, s.table)
	if fk == nil || !fk.validated {
		return StatePending, ""
	}
	return StateApplied, ""
}

// AnalyzeUsers gathers the users table's statistics once its lookup
// indexes exist: PostgreSQL estimates a lookup on lower(email) from the
// statistics of the expression index, which only ANALYZE makes (before,
// it guesses a large part of the table and may scan it); MySQL re-samples
// the index statistics. A step of its own, recorded in the history, so
// that the index steps' SQL (and the checksums that existing installs
// recorded) stay as they were.
type AnalyzeUsers struct {
	stepBase
	users string
	// indexes are passbridge's lookup indexes on users (PostgreSQL: found
	// applied when each has statistics).
	indexes []string
}

func (s *AnalyzeUsers) check(env *checkEnv) (State, string) {
	if _, ok, _ := s.recorded(env.history); ok {
		return StateApplied, ""
	}
	if env.cat.eng != Postgres {
		return StatePending, "" // nothing in MySQL's catalog says ANALYZE ran
	}
	for _, name := range s.indexes {
		ix, _ := env.cat.index(name, s.users)
		if ix == nil || !ix.analyzed {
			return StatePending, ""
		}
	}
	return StateApplied, ""
}

// TakeBaseline records the password column's baseline (row count, a
// checksum per key range, a fingerprint per row) before anything touches
// the users table, so that verify can prove the hashes are unchanged.
type TakeBaseline struct {
	stepBase
	bl *baseliner
}

// Checksum does not depend on the chunk size, which only paces the work.
func (s *TakeBaseline) Checksum() string {
	b := *s.bl
	b.chunk = defaultChunk
	h := sha256.Sum256([]byte(strings.Join(b.describe(), ";\n")))
	return hex.EncodeToString(h[:])
}

func (s *TakeBaseline) check(env *checkEnv) (State, string) {
	if _, ok, _ := s.recorded(env.history); ok {
		return StateApplied, ""
	}
	return StatePending, ""
}
