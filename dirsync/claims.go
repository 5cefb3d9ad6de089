package dirsync

import (
	"bytes"
	"database/sql"
	"encoding/binary"
	"encoding/gob"
	"fmt"
	"hash/fnv"
	"slices"
	"strings"

	"github.com/passbridge/passbridge/directory"
	"github.com/passbridge/passbridge/schema"
)

// Claims: the link rule that never guesses across a run.
//
// A users row is linked to at most one identity, and never by the order in
// which the directory happens to return entries: when two or more
// identities of one run claim the same row by a match rule (a shared
// mailbox, a re-hire, a typo), none of them is linked; each is ambiguous,
// naming the others, until IT links one by hand. A row linked in an earlier
// run (or by hand) keeps its link, and a newcomer that claims it is
// ambiguous (match sees to that).
//
// Match rules run a page at a time, but two claimants of one row can be
// pages apart, or one in the read and one re-matched after it. So a link is
// decided only when the whole run is known: every candidate link is
// spooled to disk with an 8-byte hash of its row key (spooled too, a
// hashSpool); after the read the hashes tell the rows claimed more than
// once (a hash collision is told apart by the key itself), and the
// candidates are planned, linked or ambiguous, in the order they came.
type claims struct {
	spool  *spool[claim]
	hashes *hashSpool
}

// claim is one candidate link: the identity, its stored row (for one that
// is in the database already, nil for a new one) and the match result.
type claim struct {
	It  directory.Identity
	Row *claimRow
	Res linkResult
}

// claimRow is what planning a relink needs of a stored identity.
type claimRow struct {
	ID          int64
	DirectoryID string
	LinkState   string
	LinkDetail  string
}

func newClaims() (*claims, error) {
	sp, err := newCodecSpool("candidate link", &claimCodec)
	if err != nil {
		return nil, err
	}
	hs, err := newHashSpool("candidate link hash")
	if err != nil {
		sp.close()
		return nil, err
	}
	return &claims{spool: sp, hashes: hs}, nil
}

// claimCodec is how a claim is spooled: its fields in order (see record).
var claimCodec = codec[claim]{
	append: func(b []byte, c *claim) ([]byte, error) {
		it := &c.It
		for _, v := range []string{it.DirectoryID, it.DN, it.Username, it.Email, it.DisplayName, it.Department, it.DisabledReason} {
			b = appendString(b, v)
		}
		b = appendBool(b, it.Disabled)
		b = appendBool(b, c.Row != nil)
		if c.Row != nil {
			b = binary.AppendVarint(b, c.Row.ID)
			b = appendString(b, c.Row.DirectoryID)
			b = appendString(b, c.Row.LinkState)
			b = appendString(b, c.Row.LinkDetail)
		}
		for _, v := range []string{c.Res.State, c.Res.Rule, c.Res.Detail} {
			b = appendString(b, v)
		}
		return appendKey(b, c.Res.Key)
	},
	decode: func(r *record, c *claim) error {
		it := &c.It
		for _, v := range []*string{&it.DirectoryID, &it.DN, &it.Username, &it.Email, &it.DisplayName, &it.Department, &it.DisabledReason} {
			*v = r.string()
		}
		it.Disabled = r.bool()
		if r.bool() {
			c.Row = &claimRow{ID: r.varint(), DirectoryID: r.string(), LinkState: r.string(), LinkDetail: r.string()}
		}
		for _, v := range []*string{&c.Res.State, &c.Res.Rule, &c.Res.Detail} {
			*v = r.string()
		}
		var err error
		c.Res.Key, err = readKey(r)
		return err
	},
}

// Kinds of a spooled users key: the types the databases' drivers give for
// one (schema.NormKey), and any other through gob, as the spool did for all.
const (
	keyNil byte = iota
	keyInt64
	keyString
	keyUint64
	keyOther
)

func appendKey(b []byte, k any) ([]byte, error) {
	switch v := k.(type) {
	case nil:
		return append(b, keyNil), nil
	case int64:
		return binary.AppendVarint(append(b, keyInt64), v), nil
	case string:
		return appendString(append(b, keyString), v), nil
	case uint64:
		return binary.AppendUvarint(append(b, keyUint64), v), nil
	}
	var buf bytes.Buffer
	if err := gob.NewEncoder(&buf).Encode(&k); err != nil {
		return b, fmt.Errorf("users key %v (%T): %w", k, k, err)
	}
	return appendString(append(b, keyOther), buf.String()), nil
}

func readKey(r *record) (any, error) {
	switch kind := r.byte(); kind {
	case keyNil:
		return nil, nil
	case keyInt64:
		return r.varint(), nil
	case keyString:
		return r.string(), nil
	case keyUint64:
		return r.uvarint(), nil
	case keyOther:
		var k any
		if err := gob.NewDecoder(strings.NewReader(r.string())).Decode(&k); err != nil && r.err == nil {
			return nil, fmt.Errorf("users key: %w", err)
		}
		return k, nil
	default:
		if r.err == nil {
			return nil, fmt.Errorf("users key of kind %d", kind)
		}
		return nil, nil
	}
}

func claimHash(key string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(key))
	return h.Sum64()
}

// add records a candidate: row is the stored identity, nil for a new one.
func (c *claims) add(it directory.Identity, row *identityRow, res linkResult) error {
	cl := claim{It: it, Res: res}
	if row != nil {
		cl.Row = &claimRow{ID: row.ID, DirectoryID: row.DirectoryID, LinkState: row.LinkState, LinkDetail: row.LinkDetail.String}
	}
	if err := c.hashes.add(claimHash(schema.KeyString(res.Key))); err != nil {
		return fmt.Errorf("spool a candidate link's hash: %w", err)
	}
	return c.spool.add(&cl)
}

func (c *claims) close() {
	if c != nil {
		c.spool.close()
		c.hashes.close()
	}
}

// claimant is an identity that claims a row, as the others' detail names it.
type claimant struct{ directoryID, username string }

// resolve plans every candidate: linked when it is the only one of the run
// to claim its row, ambiguous (naming the others) when it is not.
func (c *claims) resolve(p *planner) error {
	// The rows claimed more than once, by hash: a few passes over the
	// spooled hashes, in memory that does not grow with the run.
	dup, err := c.hashes.dups()
	if err != nil {
		return fmt.Errorf("find the rows claimed more than once: %w", err)
	}
	// Who claims those rows (few: the conflicts).
	claimants := map[string][]claimant{}
	if len(dup) > 0 {
		err := c.spool.each(func(cl *claim) error {
			k := schema.KeyString(cl.Res.Key)
			if dup[claimHash(k)] {
				claimants[k] = append(claimants[k], claimant{cl.It.DirectoryID, cl.It.Username})
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	return c.spool.each(func(cl *claim) error {
		res := cl.Res
		if all := claimants[schema.KeyString(res.Key)]; len(all) > 1 {
			res = contested(res, cl.It.DirectoryID, all)
		}
		if cl.Row == nil {
			return p.create(cl.It, res)
		}
		row := &identityRow{ID: cl.Row.ID, DirectoryID: cl.Row.DirectoryID, LinkState: cl.Row.LinkState,
			LinkDetail: sql.NullString{String: cl.Row.LinkDetail, Valid: cl.Row.LinkDetail != ""}}
		return p.relink(row, cl.It, res)
	})
}

// contested is the result of a candidate whose row other identities of the
// run claim too: ambiguous, naming them (at most five, then how many more).
func contested(res linkResult, self string, all []claimant) linkResult {
	var others []string
	for _, o := range all {
		if o.directoryID != self {
			others = append(others, fmt.Sprintf("%s (%s)", o.username, o.directoryID))
		}
	}
	slices.Sort(others)
	n := len(others)
	if n > 5 {
		others = append(others[:5], fmt.Sprintf("and %d more", n-5))
	}
	return linkResult{State: schema.LinkAmbiguous, Rule: res.Rule,
		Detail: fmt.Sprintf("%s; but %s of this run %s that row too (%s), so none is linked: link one by hand",
			res.Detail, plural(n, "another identity", "other identities"), verb(n, "claims", "claim"), strings.Join(others, ", "))}
}

// verb is one when n is 1, else many.
func verb(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// plural is one when n is 1, else n and many.
func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return fmt.Sprintf("%d %s", n, many)
}
