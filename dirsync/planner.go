package dirsync

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/passbridge/passbridge/directory"
	"github.com/passbridge/passbridge/schema"
	"github.com/passbridge/passbridge/store"
)

// planner is the diff: it receives what the directory says (it is the
// reader's sink), compares it with the current state (the identities and
// users rows in the database, read a page at a time through state), and
// spools the changes. It writes nothing and holds no connection.
type planner struct {
	s *Syncer
	// state is what the diff reads (nil: the database, see cur).
	state state
	plan  *plan
	runID int64
	now   time.Time
	log   *slog.Logger

	// seen: what this run has seen of the directory, and how (seenUpsert,
	// seenPresent, seenGone): bits per stored row, a hash per new one.
	seen *seen
	// claims: the candidate links of the run, decided once it is read.
	claims *claims
	// createHead and createRow are the INSERT of a new identity (head +
	// one row of VALUES), built once per run; the plan groups creates into
	// multi-row INSERTs of them. createSQL is the two together, each
	// create's statement (one string for the run, not one per create).
	createHead, createRow, createSQL string
	createParams                     int
	// nowArg and runArg are now and runID as arguments, boxed once: a
	// create has three of the one and one of the other, and each boxing
	// was an allocation.
	nowArg, runArg any

	upserted, presents int
	invalidCount       int
	deletes, disables  int
	linked             int
	unmatched          int
	ambiguous          int
	issues             []LinkIssue
}

// newPlanner starts the diff of run runID over cur (nil: the database).
func (s *Syncer) newPlanner(runID int64, cur state) (*planner, error) {
	p := &planner{s: s, state: cur, runID: runID, now: s.now().UTC(), log: s.log, seen: newSeen()}
	p.nowArg, p.runArg = p.now, p.runID
	var err error
	if p.plan, err = newPlan(s.batchSize()); err != nil {
		return nil, err
	}
	if p.claims, err = newClaims(); err != nil {
		p.plan.close()
		return nil, err
	}
	return p, nil
}

// close removes the plan's and the candidates' spools.
func (p *planner) close() {
	p.plan.close()
	p.claims.close()
}

// LinkIssue is an identity left unlinked: unmatched or ambiguous.
type LinkIssue struct {
	DirectoryID string `json:"directory_id"`
	Username    string `json:"username"`
	State       string `json:"state"`
	Detail      string `json:"detail"`
}

func compareIssues(a, b LinkIssue) int {
	return cmp.Or(cmp.Compare(a.State, b.State), cmp.Compare(a.Username, b.Username), cmp.Compare(a.DirectoryID, b.DirectoryID))
}

// maxIssues bounds the link issues kept in a summary; `passbridge users
// list --link unmatched` lists them all.
const maxIssues = 50

func (p *planner) add(c Change) error {
	if c.Kind == KindDisable {
		p.disables++
	}
	return p.plan.add(c)
}

func (p *planner) Invalid(dn string, err error) {
	p.invalidCount++
	if p.invalidCount <= 20 {
		p.log.Warn("directory entry skipped", "dn", dn, "err", err)
	} else if p.invalidCount == 21 {
		p.log.Warn("more directory entries skipped; see the run summary for the count")
	}
}

// directory.Sink ---------------------------------------------------------

// How an ID was seen in this run.
const (
	seenUpsert uint8 = 1 << iota
	seenPresent
	seenGone
)

func (p *planner) Present(ctx context.Context, ids []string) error {
	t0 := time.Now()
	cur, err := p.cur().identities(ctx, ids)
	p.s.addDBTime(time.Since(t0))
	if err != nil {
		return err
	}
	for _, row := range cur {
		p.seen.mark(row.ID, seenPresent)
	}
	p.presents += len(ids)
	return nil
}

func (p *planner) Upsert(ctx context.Context, page []directory.Identity) error {
	ids := make([]string, 0, len(page))
	for _, it := range page {
		ids = append(ids, it.DirectoryID)
	}
	t0 := time.Now()
	cur, err := p.cur().identities(ctx, ids)
	p.s.addDBTime(time.Since(t0))
	if err != nil {
		return err
	}
	// The page is the diff's own (the pipe hands over a copy): the entries
	// kept are filtered in place, and those that want a link are named by
	// their index, not copied again (a first sync allocated a page's
	// identities three times over).
	keep := page[:0]
	for _, it := range page {
		first := true
		if row := cur[it.DirectoryID]; row != nil {
			first = !p.seen.has(row.ID, seenUpsert)
			p.seen.mark(row.ID, seenUpsert)
		} else {
			first = p.seen.addFresh(it.DirectoryID)
		}
		if !first {
			p.Invalid(it.DN, fmt.Errorf("%s %s is also the ID of another entry in scope: the stable ID attribute must be unique", p.s.mapper.IDAttribute(), it.DirectoryID))
			continue
		}
		keep = append(keep, it)
	}
	p.upserted += len(keep)
	toLink := make([]linkInput, 0, len(keep))
	linkRows := make([]*identityRow, 0, len(keep)) // nil for a new identity
	linkIdentities := make([]int, 0, len(keep))    // in keep
	for i := range keep {
		it := &keep[i]
		row := cur[it.DirectoryID]
		if row != nil {
			if err := p.diff(row, *it); err != nil {
				return err
			}
			if row.LinkState == schema.LinkManual || row.UserKey != nil {
				continue
			}
		}
		toLink = append(toLink, linkInput{DirectoryID: it.DirectoryID, Username: it.Username, Email: it.Email})
		linkRows = append(linkRows, row)
		linkIdentities = append(linkIdentities, i)
	}
	results, err := p.match(ctx, toLink)
	if err != nil {
		return err
	}
	for i, res := range results {
		if err := p.decide(keep[linkIdentities[i]], linkRows[i], res); err != nil {
			return err
		}
	}
	return nil
}

func (p *planner) Gone(ctx context.Context, ids []string, reason string) error {
	t0 := time.Now()
	cur, err := p.cur().identities(context.WithoutCancel(ctx), ids)
	p.s.addDBTime(time.Since(t0))
	if err != nil {
		return err
	}
	for _, id := range ids {
		row := cur[id]
		// An ID upserted or reported present in this read is in scope;
		// one not stored has nothing to delete.
		if row == nil || p.seen.has(row.ID, seenUpsert|seenPresent|seenGone) {
			continue
		}
		p.seen.mark(row.ID, seenGone)
		if row.State != schema.StateDeleted {
			if err := p.markDeleted(row, reason); err != nil {
				return err
			}
		}
	}
	return nil
}

// decide plans an identity that wants a link (row is nil for a new one): a
// candidate link waits for the end of the run (see claims), anything else is
// planned now.
func (p *planner) decide(it directory.Identity, row *identityRow, res linkResult) error {
	switch {
	case res.State == schema.LinkLinked:
		return p.claims.add(it, row, res)
	case row == nil:
		return p.create(it, res)
	}
	return p.relink(row, it, res)
}

// changes ----------------------------------------------------------------

// createColumns are the columns a create writes, in the order of its
// arguments (the INSERT's, and the COPY's on PostgreSQL).
var createColumns = []string{"directory_id", "dn", "username", "email", "display_name", "department", "state", "state_reason",
	"state_changed_at", "user_key", "link_state", "link_detail", "seen_run_id", "first_seen_at", "last_seen_at", "updated_at", "mapped_hash"}

// mappedHash is the fingerprint of what the sync writes of a directory
// entry: the fields it maps (DN, username, email, display name,
// department, whether and why it is disabled). It is stored with the
// identity (identities.mapped_hash) by every change that writes them, and
// the diff compares it first: an entry whose fingerprint is the stored one
// plans nothing, so it costs no write. 128 bits of SHA-256 (two different
// values of one identity never collide by chance, nor on purpose), each
// field prefixed by its length so that no two field lists hash alike.
func mappedHash(it directory.Identity) string {
	h := sha256.New()
	var n [4]byte
	field := func(v string) {
		binary.BigEndian.PutUint32(n[:], uint32(len(v)))
		h.Write(n[:])
		h.Write([]byte(v))
	}
	field("v1")
	for _, v := range []string{it.DN, it.Username, it.Email, it.DisplayName, it.Department} {
		field(v)
	}
	if it.Disabled {
		field("disabled")
		field(it.DisabledReason)
	} else {
		field("active")
	}
	var sum [sha256.Size]byte
	return hex.EncodeToString(h.Sum(sum[:0])[:16])
}

func (p *planner) q(name string) string { return p.s.n.Dialect.Quote(name) }

func (p *planner) create(it directory.Identity, res linkResult) error {
	n := p.s.n
	state, reason := schema.StateActive, ""
	var changedAt any
	if it.Disabled {
		state, reason, changedAt = schema.StateDisabled, it.DisabledReason, p.nowArg
	}
	if p.createHead == "" {
		quoted := make([]string, len(createColumns))
		for i, c := range createColumns {
			quoted[i] = p.q(c)
		}
		p.createHead = "INSERT INTO " + n.Identities + " (" + strings.Join(quoted, ", ") + ") VALUES "
		p.createRow = "(" + placeholders(len(createColumns)) + ")"
		p.createSQL = p.createHead + p.createRow
		p.createParams = len(createColumns)
	}
	var key any
	if res.State == schema.LinkLinked {
		key = res.Key
	}
	// One concatenation (a first sync describes a million creates).
	because := ""
	if it.Disabled {
		because = ": " + reason
	}
	desc := "new identity " + it.DN + " (" + state + ")" + because + "; " + res.State + ": " + res.Detail
	if res.State == schema.LinkLinked {
		p.linked++
	}
	err := p.plan.addRow(Change{
		Kind: KindCreate, DirectoryID: it.DirectoryID, Username: it.Username, Description: desc,
		SQL: p.createSQL,
		Args: []any{it.DirectoryID, it.DN, it.Username, nullString(it.Email), nullString(it.DisplayName), nullString(it.Department),
			state, nullString(reason), changedAt, key, res.State, nullString(res.Detail), p.runArg, p.nowArg, p.nowArg, p.nowArg, mappedHash(it)},
	}, p.createHead, p.createRow, p.createParams)
	if err != nil {
		return err
	}
	if res.State != schema.LinkLinked {
		return p.unlinked(it.DirectoryID, it.Username, it.Email, it.DisplayName, !it.Disabled, res)
	}
	return nil
}

// unlinked records an identity left without a row and, with provision:
// create, plans the row.
func (p *planner) unlinked(id, username, email, displayName string, active bool, res linkResult) error {
	if res.State == schema.LinkUnmatched && active && p.s.cfg.Directory.Provision == "create" {
		return p.provision(id, username, email, displayName)
	}
	switch res.State {
	case schema.LinkUnmatched:
		p.unmatched++
	case schema.LinkAmbiguous:
		p.ambiguous++
	}
	// The first maxIssues by state and username, not by the directory's
	// order: the same state lists the same identities.
	p.issues = append(p.issues, LinkIssue{DirectoryID: id, Username: username, State: res.State, Detail: res.Detail})
	slices.SortFunc(p.issues, compareIssues)
	p.issues = p.issues[:min(len(p.issues), maxIssues)]
	return nil
}

// diff plans the changes of an identity that is already stored. Its
// stored fingerprint (mappedHash) comes first: the same fingerprint means
// the same fields, and nothing to write. Otherwise the fields are compared
// one by one, and the identity's last change also stores the new
// fingerprint: the batches of a run commit in order, so once it is stored,
// every change before it is too (a run that stops between two of them
// leaves the old fingerprint, and the next run plans the rest). A
// fingerprint not stored yet (an identity not written since the column
// came) compares field by field; its next change stores it.
func (p *planner) diff(row *identityRow, it directory.Identity) error {
	n := p.s.n
	hash := mappedHash(it)
	if row.MappedHash.Valid && row.MappedHash.String == hash && row.State != schema.StateDeleted {
		return nil
	}
	wantState, reason := schema.StateActive, ""
	if it.Disabled {
		wantState, reason = schema.StateDisabled, it.DisabledReason
	}
	// changes: each an UPDATE of the row's SET clause and arguments; the
	// WHERE (and the fingerprint, on the last) are added below.
	var changes []Change
	update := func(kind, desc string, set []string, args ...any) {
		changes = append(changes, Change{Kind: kind, DirectoryID: it.DirectoryID, Username: it.Username, Description: desc,
			SQL: "UPDATE " + n.Identities + " SET " + strings.Join(set, " = ?, ") + " = ?", Args: args})
	}
	stateSet := []string{p.q("state"), p.q("state_reason"), p.q("state_changed_at"), p.q("updated_at"), p.q("last_seen_at"), p.q("seen_run_id")}
	stateArgs := []any{wantState, nullString(reason), p.now, p.now, p.now, p.runID}
	switch {
	case row.State == schema.StateDeleted:
		desc := "back in the directory (was deleted: " + row.StateReason.String + "), " + wantState
		if row.UserKey != nil {
			desc += "; still linked to users row " + schema.KeyString(row.UserKey)
		}
		update(KindRestore, desc, stateSet, stateArgs...)
	case row.State == schema.StateActive && it.Disabled:
		update(KindDisable, reason, stateSet, stateArgs...)
	case row.State == schema.StateDisabled && !it.Disabled:
		update(KindEnable, "enabled again in the directory", stateSet, stateArgs...)
	}

	if row.DN != it.DN {
		kind, desc := KindRename, fmt.Sprintf("%s -> %s", row.DN, it.DN)
		if directory.ParentDN(row.DN) != directory.ParentDN(it.DN) {
			kind = KindMove
		}
		update(kind, desc, []string{p.q("dn"), p.q("updated_at"), p.q("last_seen_at"), p.q("seen_run_id")}, it.DN, p.now, p.now, p.runID)
	}

	var what []string
	cmp := func(label, old, new string) {
		if old != new {
			what = append(what, fmt.Sprintf("%s %q -> %q", label, old, new))
		}
	}
	cmp("username", row.Username, it.Username)
	cmp("email", row.Email.String, it.Email)
	cmp("display name", row.DisplayName.String, it.DisplayName)
	cmp("department", row.Department.String, it.Department)
	// A disabled identity whose reason changed (now also expired, say).
	if row.State == schema.StateDisabled && it.Disabled && row.StateReason.String != reason {
		what = append(what, fmt.Sprintf("disabled because %q", reason))
	}
	if len(what) > 0 {
		set := []string{p.q("username"), p.q("email"), p.q("display_name"), p.q("department"), p.q("updated_at"), p.q("last_seen_at"), p.q("seen_run_id")}
		args := []any{it.Username, nullString(it.Email), nullString(it.DisplayName), nullString(it.Department), p.now, p.now, p.runID}
		if it.Disabled {
			set = append(set, p.q("state_reason"))
			args = append(args, nullString(reason))
		}
		update(KindUpdate, strings.Join(what, "; "), set, args...)
	}
	for i, c := range changes {
		if i == len(changes)-1 {
			c.SQL += ", " + p.q("mapped_hash") + " = ?"
			c.Args = append(c.Args, hash)
		}
		c.SQL += " WHERE " + p.q("id") + " = ?"
		c.Args = append(c.Args, row.ID)
		if err := p.add(c); err != nil {
			return err
		}
	}
	return nil
}

// relink plans the link changes of a stored identity that has no users
// row (never linked, ambiguous, or its row was deleted).
func (p *planner) relink(row *identityRow, it directory.Identity, res linkResult) error {
	username, active := it.Username, !it.Disabled
	n := p.s.n
	switch {
	case res.State == schema.LinkLinked:
		p.linked++
		return p.add(Change{Kind: KindLink, DirectoryID: row.DirectoryID, Username: username, Description: res.Detail,
			SQL: "UPDATE " + n.Identities + " SET " + p.q("user_key") + " = ?, " + p.q("link_state") + " = ?, " + p.q("link_detail") + " = ?, " +
				p.q("updated_at") + " = ? WHERE " + p.q("id") + " = ? AND " + p.q("link_state") + " <> ? AND " + p.q("user_key") + " IS NULL",
			Args: []any{res.Key, schema.LinkLinked, res.Detail, p.now, row.ID, schema.LinkManual}})
	case row.LinkState == schema.LinkLinked || row.LinkState == schema.LinkCreated:
		// Its users row was deleted (the foreign key set user_key NULL).
		err := p.add(Change{Kind: KindUnlink, DirectoryID: row.DirectoryID, Username: username,
			Description: "its users row was deleted; " + res.State + ": " + res.Detail,
			SQL: "UPDATE " + n.Identities + " SET " + p.q("link_state") + " = ?, " + p.q("link_detail") + " = ?, " + p.q("updated_at") + " = ? WHERE " +
				p.q("id") + " = ? AND " + p.q("link_state") + " <> ? AND " + p.q("user_key") + " IS NULL",
			Args: []any{res.State, res.Detail, p.now, row.ID, schema.LinkManual}})
		if err != nil {
			return err
		}
	case row.LinkState != res.State || row.LinkDetail.String != res.Detail:
		// Still unlinked, for another reason: the state or only why (the
		// identity that now holds the row, say).
		desc := row.LinkState + " -> " + res.State + ": " + res.Detail
		if row.LinkState == res.State {
			desc = "still " + res.State + ": " + res.Detail
		}
		err := p.add(Change{Kind: KindLinkState, DirectoryID: row.DirectoryID, Username: username,
			Description: desc,
			SQL: "UPDATE " + n.Identities + " SET " + p.q("link_state") + " = ?, " + p.q("link_detail") + " = ?, " + p.q("updated_at") + " = ? WHERE " +
				p.q("id") + " = ? AND " + p.q("link_state") + " <> ? AND " + p.q("user_key") + " IS NULL",
			Args: []any{res.State, res.Detail, p.now, row.ID, schema.LinkManual}})
		if err != nil {
			return err
		}
	}
	return p.unlinked(row.DirectoryID, username, it.Email, it.DisplayName, active, res)
}

// provision plans a users row for an unmatched identity, then its link.
// Only the columns the configuration names are written; the new row's key
// is known when the INSERT runs (RETURNING, or LastInsertId on MySQL).
func (p *planner) provision(id, username, email, displayName string) error {
	n := p.s.n
	var cols []string
	var args []any
	var what []string
	addCol := func(col, label string, v any) {
		if col != "" {
			cols = append(cols, col)
			args = append(args, v)
			what = append(what, fmt.Sprintf("%s=%v", label, v))
		}
	}
	addCol(n.UserUsername, "username", username)
	addCol(n.UserEmail, "email", nullString(email))
	addCol(n.UserDisplayName, "display_name", nullString(displayName))
	addCol(n.UserActive, "active", true)
	q := "INSERT INTO " + n.Users + " (" + strings.Join(cols, ", ") + ") VALUES (" + placeholders(len(cols)) + ")"
	if p.s.n.Dialect.Kind() != store.MySQL {
		q += " RETURNING " + n.UserKey
	}
	// Should the users table refuse the row (a NOT NULL column passbridge
	// does not fill, a duplicate username), the identity stays unmatched
	// with the reason, and the rest of the run goes on.
	onFail := &Statement{
		SQL: "UPDATE " + n.Identities + " SET " + p.q("link_state") + " = ?, " + p.q("link_detail") + " = ? WHERE " +
			p.q("directory_id") + " = ? AND " + p.q("user_key") + " IS NULL AND " + p.q("link_state") + " <> ?",
		Args: []any{schema.LinkUnmatched, ProvisionFailure{DirectoryID: id}, id, schema.LinkManual},
	}
	if err := p.add(Change{Kind: KindProvision, DirectoryID: id, Username: username,
		Description: "no users row matched: create one (" + strings.Join(what, ", ") + ")", SQL: q, Args: args, OnFail: onFail}); err != nil {
		return err
	}
	p.linked++
	return p.add(Change{Kind: KindLink, DirectoryID: id, Username: username, Description: "linked to the users row created for it",
		SQL: "UPDATE " + n.Identities + " SET " + p.q("user_key") + " = ?, " + p.q("link_state") + " = ?, " + p.q("link_detail") + " = ?, " +
			p.q("updated_at") + " = ? WHERE " + p.q("directory_id") + " = ? AND " + p.q("link_state") + " <> ? AND " + p.q("user_key") + " IS NULL",
		Args: []any{ProvisionedKey{DirectoryID: id}, schema.LinkCreated, "created by provision: create", p.now, id, schema.LinkManual}})
}

func (p *planner) markDeleted(row *identityRow, reason string) error {
	n := p.s.n
	if row.State == schema.StateActive {
		// The deletion guard counts the active identities a run takes
		// away; marking an already disabled one deleted takes nobody's
		// access (it counted once, when it was disabled).
		p.deletes++
	}
	desc := reason
	if row.UserKey != nil {
		desc += "; stays linked to users row " + schema.KeyString(row.UserKey) + " for a restore"
	}
	return p.add(Change{Kind: KindDelete, DirectoryID: row.DirectoryID, Username: row.Username, Description: desc,
		SQL: "UPDATE " + n.Identities + " SET " + p.q("state") + " = ?, " + p.q("state_reason") + " = ?, " + p.q("state_changed_at") + " = ?, " +
			p.q("updated_at") + " = ? WHERE " + p.q("id") + " = ? AND " + p.q("state") + " <> ?",
		Args: []any{schema.StateDeleted, directory.Clip(reason, directory.MaxNameLen), p.now, p.now, row.ID, schema.StateDeleted}})
}
