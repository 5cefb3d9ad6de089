package dirsync

import (
	"cmp"
	"encoding/gob"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"
)

// Change kinds. A sync's plan is a list of changes; each identity may have
// several (renamed and disabled in the same run).
const (
	KindCreate    = "create"     // a new identity
	KindUpdate    = "update"     // username, email, display name or department changed
	KindRename    = "rename"     // the DN changed, same parent
	KindMove      = "move"       // the DN moved to another parent (OU)
	KindDisable   = "disable"    // disabled in the directory
	KindEnable    = "enable"     // enabled again
	KindDelete    = "delete"     // gone from the directory or out of scope: marked deleted, never removed
	KindRestore   = "restore"    // a deleted identity is back, with everything still attached
	KindLink      = "link"       // linked to a row of the users table
	KindUnlink    = "unlink"     // its users row is gone: unmatched again
	KindLinkState = "link_state" // still unlinked, for another reason (unmatched <-> ambiguous)
	KindProvision = "provision"  // a users row created for it (provision: create)
)

// Kinds lists the change kinds in the order summaries print them.
var Kinds = []string{KindCreate, KindUpdate, KindRename, KindMove, KindDisable, KindEnable,
	KindDelete, KindRestore, KindLink, KindUnlink, KindLinkState, KindProvision}

// Change is one planned write: what it is, for whom, in words, and the SQL
// (? placeholders, rebound for the database when run) with its arguments.
// A dry run prints the changes; a real run executes exactly the statements
// the plan holds: each change's SQL, except that consecutive creates,
// grouped when the plan is made, run as the one multi-row INSERT the plan
// built for them (their rows, with their Args, in order; on PostgreSQL the
// same rows and columns are streamed with COPY, the creates of a
// transaction in one), and that a provision whose INSERT the users table
// refuses runs its planned OnFail instead.
type Change struct {
	Kind        string `json:"kind"`
	DirectoryID string `json:"directory_id"`
	Username    string `json:"username"`
	Description string `json:"description"`
	SQL         string `json:"sql"`
	Args        []any  `json:"args"`
	// OnFail is what a provision runs when the users table refuses its
	// INSERT: the identity stays unmatched, with the reason
	// (ProvisionFailure stands for it).
	OnFail *Statement `json:"on_fail,omitempty"`

	// stmtHead and stmtRow, on the first create of a group, are the
	// multi-row INSERT the group runs as (groupSQL: the head, then the row
	// stmtRows times); stmtRows is how many creates it holds (this one and
	// the next stmtRows-1). All are zero on the other rows of a group. The
	// statement is put together only where it runs: PostgreSQL COPYs the
	// rows instead, and a first sync's groups are 1,000 rows each.
	stmtHead, stmtRow string
	stmtRows          int
}

// groupSQL is the multi-row INSERT of the group of creates that c heads.
func (c *Change) groupSQL() string {
	var b strings.Builder
	b.Grow(len(c.stmtHead) + c.stmtRows*(len(c.stmtRow)+2))
	b.WriteString(c.stmtHead)
	for i := range c.stmtRows {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(c.stmtRow)
	}
	return b.String()
}

// Statement is one planned SQL statement with its arguments.
type Statement struct {
	SQL  string `json:"sql"`
	Args []any  `json:"args"`
}

// ProvisionedKey is an argument standing for the key of the users row that
// the provision change of the same identity creates; it is known only when
// that INSERT runs.
type ProvisionedKey struct {
	DirectoryID string `json:"provisioned_key_of"`
}

func (k ProvisionedKey) String() string { return "<key of the new users row>" }

// ProvisionFailure is an argument standing for why the users table refused
// the provision of the same identity; it is known only when that INSERT
// fails.
type ProvisionFailure struct {
	DirectoryID string `json:"provision_failure_of"`
}

func (f ProvisionFailure) String() string { return "<why the users table refused the row>" }

// String renders a change on one line: kind, who, what.
func (c Change) String() string {
	return fmt.Sprintf("%-10s %s: %s", c.Kind, c.Username, c.Description)
}

func init() {
	gob.Register(time.Time{})
	gob.Register(ProvisionedKey{})
	gob.Register(ProvisionFailure{})
}

// plan is the list of changes of a run, spooled to a temporary file so
// that memory does not grow with the size of the directory (an initial
// sync of 100,000 users plans 100,000 creates). It also keeps the counts,
// and groups consecutive creates into multi-row INSERTs as they are added:
// an initial sync of 100,000 users is a few hundred statements, not
// 100,000 round trips.
type plan struct {
	changes *spool[spooled]
	counts  map[string]int
	// batch is the number of changes applied per transaction: a group
	// never spans two.
	batch int
	// pending is the group of creates being made: rows of head + row.
	pending   []Change
	head, row string
	// written counts the changes written (spooled, or handed to sink);
	// sink, once set (stream), takes every change instead of the spool.
	written int
	sink    func(Change) error
}

// maxParams bounds the placeholders of one multi-row INSERT (SQLite's
// limit is 32766, PostgreSQL's and MySQL's 65535).
const maxParams = 30000

func newPlan(batch int) (*plan, error) {
	sp, err := newSpool[spooled]("change")
	if err != nil {
		return nil, err
	}
	return &plan{changes: sp, counts: map[string]int{}, batch: max(batch, 1)}, nil
}

// spooled is a change as the plan file holds it: its arguments typed,
// since gob writes an interface value with its type's name and decodes it
// through a registry, which made encoding and decoding the plan the largest
// cost of a big sync after the directory and the database themselves.
type spooled struct {
	Kind, DirectoryID, Username, Description, SQL string
	Args                                          []spooledArg
	OnFailSQL                                     string
	OnFailArgs                                    []spooledArg
	StmtHead, StmtRow                             string
	StmtRows                                      int
}

// spooledArg is one argument: K says which field holds it; X holds types
// other than the usual ones, as before (an interface value).
type spooledArg struct {
	K uint8
	S string
	I int64
	B bool
	T time.Time
	X any
}

// Kinds of spooled arguments (0: nil).
const (
	argNil uint8 = iota
	argString
	argInt64
	argBool
	argTime
	argProvisioned
	argProvisionFailure
	argOther
)

func toSpooled(c Change) spooled {
	sp := spooled{Kind: c.Kind, DirectoryID: c.DirectoryID, Username: c.Username, Description: c.Description, SQL: c.SQL,
		Args: spoolArgs(c.Args), StmtHead: c.stmtHead, StmtRow: c.stmtRow, StmtRows: c.stmtRows}
	if c.OnFail != nil {
		sp.OnFailSQL, sp.OnFailArgs = c.OnFail.SQL, spoolArgs(c.OnFail.Args)
	}
	return sp
}

func spoolArgs(args []any) []spooledArg {
	if args == nil {
		return nil
	}
	out := make([]spooledArg, len(args))
	for i, a := range args {
		switch v := a.(type) {
		case nil:
		case string:
			out[i] = spooledArg{K: argString, S: v}
		case int64:
			out[i] = spooledArg{K: argInt64, I: v}
		case bool:
			out[i] = spooledArg{K: argBool, B: v}
		case time.Time:
			out[i] = spooledArg{K: argTime, T: v}
		case ProvisionedKey:
			out[i] = spooledArg{K: argProvisioned, S: v.DirectoryID}
		case ProvisionFailure:
			out[i] = spooledArg{K: argProvisionFailure, S: v.DirectoryID}
		default:
			out[i] = spooledArg{K: argOther, X: v}
		}
	}
	return out
}

func (sp *spooled) change() (Change, error) {
	c := Change{Kind: sp.Kind, DirectoryID: sp.DirectoryID, Username: sp.Username, Description: sp.Description, SQL: sp.SQL,
		stmtHead: sp.StmtHead, stmtRow: sp.StmtRow, stmtRows: sp.StmtRows}
	var err error
	if c.Args, err = unspoolArgs(sp.Args); err != nil {
		return c, err
	}
	if sp.OnFailSQL != "" {
		c.OnFail = &Statement{SQL: sp.OnFailSQL}
		if c.OnFail.Args, err = unspoolArgs(sp.OnFailArgs); err != nil {
			return c, fmt.Errorf("on failure: %w", err)
		}
	}
	return c, nil
}

func unspoolArgs(args []spooledArg) ([]any, error) {
	if args == nil {
		return nil, nil
	}
	out := make([]any, len(args))
	for i, a := range args {
		switch a.K {
		case argNil:
		case argString:
			out[i] = a.S
		case argInt64:
			out[i] = a.I
		case argBool:
			out[i] = a.B
		case argTime:
			out[i] = a.T
		case argProvisioned:
			out[i] = ProvisionedKey{DirectoryID: a.S}
		case argProvisionFailure:
			out[i] = ProvisionFailure{DirectoryID: a.S}
		case argOther:
			out[i] = a.X
		default:
			return nil, fmt.Errorf("argument %d of kind %d", i+1, a.K)
		}
	}
	return out, nil
}

// n is the number of changes in the plan.
func (p *plan) n() int { return p.written + len(p.pending) }

func (p *plan) add(c Change) error {
	if err := p.flush(); err != nil {
		return err
	}
	p.counts[c.Kind]++
	return p.write(c)
}

func (p *plan) write(c Change) error {
	p.written++
	if p.sink != nil {
		return p.sink(c)
	}
	sp := toSpooled(c)
	return p.changes.add(&sp)
}

// stream hands fn every change planned so far, in order, and then every
// change planned after, as it is planned (its group of creates whole),
// instead of spooling them: the same changes in the same order as each
// would give once the plan is complete. The plan cannot be read again.
func (p *plan) stream(fn func(Change) error) error {
	if err := p.each(fn); err != nil {
		return err
	}
	p.sink = fn
	return nil
}

// addRow adds a create whose SQL is head+row (one row of an INSERT ...
// VALUES): consecutive ones of the same head and row are one group, and
// run as one statement with a row each. A group ends where a transaction
// of the apply ends (every batch changes) and below maxParams
// placeholders.
func (p *plan) addRow(c Change, head, row string, params int) error {
	if len(p.pending) > 0 && (head != p.head || row != p.row || (len(p.pending)+1)*max(params, 1) > maxParams) {
		if err := p.flush(); err != nil {
			return err
		}
	}
	p.head, p.row = head, row
	p.counts[c.Kind]++
	p.pending = append(p.pending, c)
	if p.n()%p.batch == 0 {
		return p.flush()
	}
	return nil
}

// flush writes the pending group: its first create carries the group's
// statement. The changes are written by value, so the group's array is
// the next group's.
func (p *plan) flush() error {
	if len(p.pending) == 0 {
		return nil
	}
	group := p.pending
	group[0].stmtHead, group[0].stmtRow, group[0].stmtRows = p.head, p.row, len(group)
	for _, c := range group {
		if err := p.write(c); err != nil {
			return err
		}
	}
	clear(group)
	p.pending = group[:0]
	return nil
}

// each calls fn for every change, in order.
func (p *plan) each(fn func(Change) error) error {
	if p.sink != nil {
		return fmt.Errorf("the plan was streamed: it cannot be read again")
	}
	if err := p.flush(); err != nil {
		return err
	}
	return p.changes.each(func(sp *spooled) error {
		c, err := sp.change()
		if err != nil {
			return fmt.Errorf("read back a change: %w", err)
		}
		return fn(c)
	})
}

func (p *plan) close() {
	if p != nil {
		p.changes.close()
	}
}

// CompareChanges orders changes as a person reads them: by kind (in the
// order of Kinds), then username, then directory ID, then what they do. A
// real run applies them in the plan's own order (a provision before its
// link); this is the order they are printed in, so that two dry runs of one
// state print the same text.
func CompareChanges(a, b Change) int {
	return cmp.Or(
		cmp.Compare(kindRank(a.Kind), kindRank(b.Kind)),
		cmp.Compare(a.Kind, b.Kind),
		cmp.Compare(a.Username, b.Username),
		cmp.Compare(a.DirectoryID, b.DirectoryID),
		cmp.Compare(a.Description, b.Description),
	)
}

// kindRank is the place of a kind in Kinds (unknown kinds last).
func kindRank(k string) int {
	if i := slices.Index(Kinds, k); i >= 0 {
		return i
	}
	return len(Kinds)
}

// Counts maps a change kind to how many changes of it a run planned.
type Counts map[string]int

// String prints the non-zero counts in the order of Kinds.
func (c Counts) String() string {
	var parts []string
	for _, k := range Kinds {
		if c[k] > 0 {
			parts = append(parts, fmt.Sprintf("%s=%d", k, c[k]))
		}
	}
	var other []string
	for k, n := range c {
		if n > 0 && !isKnownKind(k) {
			other = append(other, fmt.Sprintf("%s=%d", k, n))
		}
	}
	sort.Strings(other)
	parts = append(parts, other...)
	if len(parts) == 0 {
		return "no changes"
	}
	return strings.Join(parts, " ")
}

func isKnownKind(k string) bool {
	for _, x := range Kinds {
		if x == k {
			return true
		}
	}
	return false
}

// RefusedError is returned when a run stops before writing anything
// because it would disable or delete too many identities.
type RefusedError struct {
	Would    int    // identities the run would mark deleted or disabled
	Active   int    // active identities before the run
	Limit    string // directory.max_deletions
	Allowed  int    // the most the limit allows out of Active
	Detail   string // what the directory returned, when that is the cause
	Deletes  int
	Disables int
}

func (e *RefusedError) Error() string {
	pct := 100.0
	if e.Active > 0 {
		pct = float64(e.Would) * 100 / float64(e.Active)
	}
	msg := fmt.Sprintf("refused: this run would mark %d identities deleted or disabled (%d deleted, %d disabled) out of %d active (%.1f%%), over directory.max_deletions %s (at most %d); nothing was written",
		e.Would, e.Deletes, e.Disables, e.Active, pct, e.Limit, e.Allowed)
	if e.Detail != "" {
		msg += ". " + e.Detail
	}
	return msg + ". If this is intended, run once with a higher limit, e.g. PASSBRIDGE_DIRECTORY_MAX_DELETIONS=100% passbridge sync --full"
}

// ErrRefused matches every RefusedError with errors.Is.
var ErrRefused = errors.New("refused by the deletion guard")

func (e *RefusedError) Is(target error) bool { return target == ErrRefused }
