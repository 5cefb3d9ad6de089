package directory

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"time"

	ber "github.com/go-asn1-ber/asn1-ber"
	"github.com/go-ldap/ldap/v3"

	"github.com/passbridge/passbridge/config"
)

// Delta mechanisms.
const (
	// MechUSN (AD): entries whose uSNChanged is above the
	// highestCommittedUSN seen last time, on the same domain controller
	// (USNs are per DC: another invocationId means a full read), and
	// tombstones through the show-deleted control.
	MechUSN = "usn"
	// MechSyncrepl (OpenLDAP and others with RFC 4533 syncprov): a
	// refreshOnly search with the cookie of the last read; deletions come
	// from the delete phase or, in the present phase, by absence.
	MechSyncrepl = "syncrepl"
	// MechTimestamp: entries whose modifyTimestamp is at or after the
	// newest one seen last time. It cannot see deletions: the next full
	// sync does.
	MechTimestamp = "timestamp"
)

// Cursor is where the next delta read resumes, stored as JSON in
// sync_state.cursor. Its fields depend on the mechanism.
type Cursor struct {
	Mechanism    string    `json:"mechanism"`
	Server       string    `json:"server"`
	Fingerprint  string    `json:"fingerprint"`
	InvocationID string    `json:"invocation_id,omitempty"`
	USN          int64     `json:"usn,omitempty"`
	Cookie       []byte    `json:"cookie,omitempty"`
	Timestamp    string    `json:"timestamp,omitempty"`
	FullAt       time.Time `json:"full_at"`
}

// Sink receives what a read finds, in this order: upserts and presents as
// they come, then gones. The sync engine's diff is one.
type Sink interface {
	// Upsert: entries in scope with all their attributes, a page at a time.
	Upsert(ctx context.Context, page []Identity) error
	// Present: IDs of entries in scope that did not change (syncrepl's
	// present phase).
	Present(ctx context.Context, ids []string) error
	// Gone: IDs deleted from the directory or gone out of scope.
	Gone(ctx context.Context, ids []string, reason string) error
	// Invalid: an entry in scope that cannot be mapped.
	Invalid(dn string, err error)
}

// ReadOutcome describes a finished read.
type ReadOutcome struct {
	Full bool
	// Complete: the upserted and present IDs are everything in scope, so
	// every other identity is gone.
	Complete bool
	// Reason says why a full read was done.
	Reason    string
	Mechanism string
	Cursor    *Cursor
	Entries   int
}

// reader reads the scope from one connection.
type reader struct {
	conn  *Conn
	cfg   config.Directory
	m     *Mapper
	scope *Scope
	log   *slog.Logger
	out   Sink
	// now is the clock (tests).
	now func() time.Time
}

func (r *reader) pageSize() int {
	if r.cfg.PageSize > 0 {
		return r.cfg.PageSize
	}
	return 1000
}

// mechanism picks the delta mechanism the server supports.
func (r *reader) mechanism(ctx context.Context) (string, error) {
	if r.cfg.Kind == "ad" {
		return MechUSN, nil
	}
	root, err := r.conn.rootDSE(ctx, "supportedControl")
	if err != nil {
		return "", err
	}
	// syncrepl reports entries by entryUUID: usable when that is the ID.
	if slices.Contains(root.GetEqualFoldAttributeValues("supportedControl"), ldap.ControlTypeSyncRequest) &&
		strings.EqualFold(r.m.IDAttribute(), "entryUUID") {
		return MechSyncrepl, nil
	}
	return MechTimestamp, nil
}

// ReadRequest is one read of the scope from a connection.
type ReadRequest struct {
	Dir    config.Directory
	Mapper *Mapper
	Scope  *Scope
	// Out receives the entries, pages and IDs as the read finds them.
	Out Sink
	Log *slog.Logger
	// Now is the clock (tests).
	Now func() time.Time
	// Prev is where the last read ended (nil: none yet); Full reads
	// everything whatever Prev says.
	Prev *Cursor
	Full bool
}

// Read reads the scope on c into req.Out (see reader.read) and says how:
// full or delta, complete or not, and the cursor the next read resumes
// from. It writes nothing anywhere but to the sink.
func (c *Conn) Read(ctx context.Context, req ReadRequest) (*ReadOutcome, error) {
	r := &reader{conn: c, cfg: req.Dir, m: req.Mapper, scope: req.Scope, log: req.Log, out: req.Out, now: req.Now}
	return r.read(ctx, req.Prev, req.Full)
}

// read reads the scope: in full when full is set, when there is no usable
// cursor, or when the cursor cannot be trusted; otherwise what changed since
// prev.
func (r *reader) read(ctx context.Context, prev *Cursor, full bool) (*ReadOutcome, error) {
	mech, err := r.mechanism(ctx)
	if err != nil {
		return nil, err
	}
	reason := ""
	switch {
	case full:
		reason = "full sync requested"
	case prev == nil:
		reason = "no delta cursor yet (first sync)"
	case prev.Mechanism != mech:
		reason = fmt.Sprintf("the delta mechanism changed from %s to %s", prev.Mechanism, mech)
	case prev.Fingerprint != r.scope.Fingerprint:
		reason = "the scope changed (configuration, group or group membership) since the last sync"
	}
	if reason != "" {
		prev = nil
	}
	switch mech {
	case MechUSN:
		return r.readUSN(ctx, prev, reason)
	case MechSyncrepl:
		return r.readSyncrepl(ctx, prev, reason)
	default:
		return r.readTimestamp(ctx, prev, reason)
	}
}

// pager collects identities into pages for the sink.
type pager struct {
	r       *reader
	page    []Identity
	entries int
	ids     map[string]bool // upserted IDs, when the caller needs them
}

func (p *pager) add(ctx context.Context, e *rawEntry) error {
	p.entries++
	it, err := p.r.m.mapRaw(e)
	if err != nil {
		p.r.out.Invalid(string(e.dn), err)
		return nil
	}
	if p.r.scope.members != nil && !p.r.scope.InScope(string(e.dn)) {
		return p.r.out.Gone(ctx, []string{it.DirectoryID}, "not a member of "+p.r.cfg.Group)
	}
	if p.ids != nil {
		p.ids[it.DirectoryID] = true
	}
	p.page = append(p.page, it)
	if len(p.page) >= p.r.pageSize() {
		return p.flush(ctx)
	}
	return nil
}

func (p *pager) flush(ctx context.Context) error {
	if len(p.page) == 0 {
		return nil
	}
	err := p.r.out.Upsert(ctx, p.page)
	p.page = p.page[:0]
	return err
}

func (r *reader) search(filter string, attrs []string, controls ...ldap.Control) *ldap.SearchRequest {
	return ldap.NewSearchRequest(r.scope.BaseDN, ldap.ScopeWholeSubtree, ldap.NeverDerefAliases, 0, 0, false, filter, attrs, controls)
}

// readUSN is AD's full and delta read.
func (r *reader) readUSN(ctx context.Context, prev *Cursor, reason string) (*ReadOutcome, error) {
	root, err := r.conn.rootDSE(ctx, "highestCommittedUSN", "dsServiceName", "defaultNamingContext")
	if err != nil {
		return nil, err
	}
	usn, err := strconv.ParseInt(root.GetAttributeValue("highestCommittedUSN"), 10, 64)
	if err != nil {
		return nil, fmt.Errorf("%s: the root DSE has no usable highestCommittedUSN (%q): is this Active Directory? (directory.kind: ad)", r.conn.URL, root.GetAttributeValue("highestCommittedUSN"))
	}
	dsa := root.GetAttributeValue("dsServiceName")
	nc := root.GetAttributeValue("defaultNamingContext")
	ntds, err := r.conn.readEntry(ctx, dsa, "", []string{"invocationId"})
	if err != nil {
		return nil, fmt.Errorf("read the invocationId of %s: %w", dsa, err)
	}
	if ntds == nil || len(ntds.GetRawAttributeValue("invocationId")) != 16 {
		return nil, fmt.Errorf("%s: cannot read the invocationId of %q: the service account needs read access to the domain controller's NTDS Settings", r.conn.URL, dsa)
	}
	inv, _ := GUIDString(ntds.GetRawAttributeValue("invocationId"))
	if prev != nil && prev.InvocationID != inv {
		reason = fmt.Sprintf("connected to another domain controller or a restored one (invocationId %s, was %s): USNs are per DC", inv, prev.InvocationID)
		prev = nil
	}
	if prev != nil && prev.USN > usn {
		reason = fmt.Sprintf("the domain controller's highestCommittedUSN (%d) is below the cursor (%d)", usn, prev.USN)
		prev = nil
	}
	cursor := &Cursor{Mechanism: MechUSN, Server: r.conn.URL, Fingerprint: r.scope.Fingerprint, InvocationID: inv, USN: usn}
	out := &ReadOutcome{Mechanism: MechUSN, Cursor: cursor}
	p := &pager{r: r}
	if prev == nil {
		out.Full, out.Complete, out.Reason = true, true, reason
		cursor.FullAt = r.now().UTC()
		err := r.conn.pagedRaw(ctx, r.search(r.scope.Filter, r.m.Attributes()), r.pageSize(), func(page []*rawEntry) error {
			for _, e := range page {
				if err := p.add(ctx, e); err != nil {
					return err
				}
			}
			return nil
		})
		if err == nil {
			err = p.flush(ctx)
		}
		out.Entries = p.entries
		return out, err
	}
	cursor.FullAt = prev.FullAt
	changed := fmt.Sprintf("(uSNChanged>=%d)", prev.USN+1)
	if nc == "" {
		nc = r.scope.BaseDN
	}
	// First the changed users anywhere in the domain, deleted ones
	// included; then the changed users in scope. A changed user not in
	// scope was deleted or left the scope. Reading in this order, a user
	// who moves in or out between the two searches ends up right.
	type cand struct{ deleted bool }
	cands := map[string]cand{}
	idAttr := r.m.IDAttribute()
	all := ldap.NewSearchRequest(nc, ldap.ScopeWholeSubtree, ldap.NeverDerefAliases, 0, 0, false,
		"(&(objectClass=user)"+changed+")", []string{idAttr, "isDeleted"}, []ldap.Control{ldap.NewControlMicrosoftShowDeleted()})
	isDeleted := []byte("isDeleted")
	err = r.conn.pagedRaw(ctx, all, r.pageSize(), func(page []*rawEntry) error {
		for _, e := range page {
			id, err := r.m.rawID(e)
			if err != nil {
				continue // not an identity we could know
			}
			cands[id] = cand{deleted: strings.EqualFold(string(e.first(isDeleted)), "TRUE")}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read changed and deleted users: %w", err)
	}
	p.ids = map[string]bool{}
	err = r.conn.pagedRaw(ctx, r.search("(&"+r.scope.Filter+changed+")", r.m.Attributes()), r.pageSize(), func(page []*rawEntry) error {
		for _, e := range page {
			if err := p.add(ctx, e); err != nil {
				return err
			}
		}
		return nil
	})
	if err == nil {
		err = p.flush(ctx)
	}
	if err != nil {
		return nil, err
	}
	var deleted, left []string
	for id, c := range cands {
		if p.ids[id] {
			continue
		}
		if c.deleted {
			deleted = append(deleted, id)
		} else {
			left = append(left, id)
		}
	}
	slices.Sort(deleted)
	slices.Sort(left)
	if len(deleted) > 0 {
		if err := r.out.Gone(ctx, deleted, "deleted in the directory"); err != nil {
			return nil, err
		}
	}
	if len(left) > 0 {
		if err := r.out.Gone(ctx, left, "no longer in scope (moved out of base_dn, or no longer matching user_filter)"); err != nil {
			return nil, err
		}
	}
	out.Entries = p.entries + len(deleted) + len(left)
	return out, nil
}

// readSyncrepl reads with an RFC 4533 refreshOnly search: without a cookie
// it returns everything in scope, with one only what changed.
func (r *reader) readSyncrepl(ctx context.Context, prev *Cursor, reason string) (*ReadOutcome, error) {
	out, err := r.syncrepl(ctx, prev, reason)
	if err != nil && prev != nil && ldap.IsErrorAnyOf(err, ldap.LDAPResultSyncRefreshRequired, ldap.LDAPResultUnwillingToPerform) {
		// The provider cannot serve this cookie: too old, its session log
		// was lost, or it crashed before saving the state the cookie names
		// ("consumer state is newer than provider"). Read everything.
		r.log.Info("the directory refused the delta cookie: reading everything", "err", err)
		return r.syncrepl(ctx, nil, "the directory refused the delta cookie ("+err.Error()+")")
	}
	return out, err
}

func (r *reader) syncrepl(ctx context.Context, prev *Cursor, reason string) (*ReadOutcome, error) {
	var cookie []byte
	if prev != nil {
		cookie = prev.Cookie
	}
	out := &ReadOutcome{Mechanism: MechSyncrepl, Full: prev == nil, Reason: reason}
	cursor := &Cursor{Mechanism: MechSyncrepl, Server: r.conn.URL, Fingerprint: r.scope.Fingerprint}
	if prev == nil {
		cursor.FullAt = r.now().UTC()
	} else {
		cursor.FullAt = prev.FullAt
	}
	p := &pager{r: r}
	var present, deleted []string
	var done *ldap.ControlSyncDone
	flushIDs := func(ids *[]string, fn func(context.Context, []string) error) error {
		if len(*ids) == 0 {
			return nil
		}
		err := fn(ctx, *ids)
		*ids = (*ids)[:0]
		return err
	}
	req := r.search(r.scope.Filter, r.m.Attributes(), ldap.NewControlSyncRequest(ldap.SyncRequestModeRefreshOnly, cookie, false))
	idle := r.cfg.Timeout.D()
	if idle <= 0 {
		idle = time.Minute
	}
	err := r.conn.stream(ctx, req, idle, true, func(res result) error {
		if res.raw != nil {
			st, _ := ldap.FindControl(res.controls, ldap.ControlTypeSyncState).(*ldap.ControlSyncState)
			if st == nil {
				return fmt.Errorf("syncrepl: entry %q came without a sync state control", res.raw.dn)
			}
			id := st.EntryUUID.String()
			switch st.State {
			case ldap.SyncStatePresent:
				p.entries++
				present = append(present, id)
				if len(present) >= r.pageSize() {
					return flushIDs(&present, r.out.Present)
				}
				return nil
			case ldap.SyncStateDelete:
				p.entries++
				deleted = append(deleted, id)
				return nil
			default:
				return p.add(ctx, res.raw)
			}
		}
		if info, ok := ldap.FindControl(res.controls, ldap.ControlTypeSyncInfo).(*ldap.ControlSyncInfo); ok {
			if info.SyncIdSet != nil {
				for _, u := range info.SyncIdSet.SyncUUIDs {
					p.entries++
					if info.SyncIdSet.RefreshDeletes {
						deleted = append(deleted, u.String())
					} else {
						present = append(present, u.String())
					}
				}
				if len(present) >= r.pageSize() {
					return flushIDs(&present, r.out.Present)
				}
			}
			return nil
		}
		if d, ok := ldap.FindControl(res.controls, ldap.ControlTypeSyncDone).(*ldap.ControlSyncDone); ok {
			done = d
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if done == nil {
		return nil, fmt.Errorf("syncrepl on %s: the refresh ended without a sync done control (cookie): is the syncprov overlay configured for %s?", r.conn.URL, r.scope.BaseDN)
	}
	if err := p.flush(ctx); err != nil {
		return nil, err
	}
	if err := flushIDs(&present, r.out.Present); err != nil {
		return nil, err
	}
	if len(deleted) > 0 {
		if err := r.out.Gone(ctx, deleted, "deleted in the directory or out of scope"); err != nil {
			return nil, err
		}
	}
	cursor.Cookie = done.Cookie
	if len(cursor.Cookie) == 0 && prev != nil {
		cursor.Cookie = prev.Cookie // nothing changed: the provider may omit it
	}
	if len(cursor.Cookie) == 0 {
		return nil, fmt.Errorf("syncrepl on %s: the provider returned no cookie: delta syncs would not be possible", r.conn.URL)
	}
	// Without a cookie everything is sent; with one, refreshDeletes=FALSE
	// means the provider ran the present phase: what was neither sent nor
	// reported present is gone (RFC 4533 3.3.1).
	out.Complete = prev == nil || !done.RefreshDeletes
	out.Cursor = cursor
	out.Entries = p.entries
	return out, nil
}

// readTimestamp reads entries changed at or after the newest
// modifyTimestamp seen (a full read the first time). It cannot see
// deletions.
func (r *reader) readTimestamp(ctx context.Context, prev *Cursor, reason string) (*ReadOutcome, error) {
	out := &ReadOutcome{Mechanism: MechTimestamp, Full: prev == nil, Complete: prev == nil, Reason: reason}
	cursor := &Cursor{Mechanism: MechTimestamp, Server: r.conn.URL, Fingerprint: r.scope.Fingerprint}
	filter := r.scope.Filter
	if prev != nil {
		cursor.FullAt = prev.FullAt
		cursor.Timestamp = prev.Timestamp
		filter = "(&" + filter + "(modifyTimestamp>=" + ldap.EscapeFilter(prev.Timestamp) + "))"
	} else {
		cursor.FullAt = r.now().UTC()
	}
	attrs := append(r.m.Attributes(), "modifyTimestamp", "createTimestamp")
	p := &pager{r: r}
	stamps := [][]byte{[]byte("modifyTimestamp"), []byte("createTimestamp")}
	err := r.conn.pagedRaw(ctx, r.search(filter, attrs), r.pageSize(), func(page []*rawEntry) error {
		for _, e := range page {
			for _, a := range stamps {
				if ts := string(e.first(a)); ts != "" && compareGeneralizedTime(ts, cursor.Timestamp) > 0 {
					cursor.Timestamp = ts
				}
			}
			if err := p.add(ctx, e); err != nil {
				return err
			}
		}
		return nil
	})
	if err == nil {
		err = p.flush(ctx)
	}
	if err != nil {
		return nil, err
	}
	if cursor.Timestamp == "" {
		cursor.Timestamp = r.now().UTC().Format("20060102150405Z")
	}
	out.Cursor = cursor
	out.Entries = p.entries
	return out, nil
}

// compareGeneralizedTime compares two GeneralizedTime values; an
// unparsable value sorts first.
func compareGeneralizedTime(a, b string) int {
	ta, ea := ber.ParseGeneralizedTime([]byte(a))
	tb, eb := ber.ParseGeneralizedTime([]byte(b))
	switch {
	case ea != nil && eb != nil:
		return 0
	case ea != nil:
		return -1
	case eb != nil:
		return 1
	}
	return ta.Compare(tb)
}
