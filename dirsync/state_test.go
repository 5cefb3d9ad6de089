package dirsync

import (
	"context"
	"database/sql"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/passbridge/passbridge/config"
	"github.com/passbridge/passbridge/directory"
	"github.com/passbridge/passbridge/schema"
)

// memState is a current state held in memory: the diff reads it as it
// reads the database.
type memState struct {
	n         schema.Names
	stored    []*identityRow // by id
	users     []memUser
	protected map[string]bool // users_table.never_link
	page      int
}

type memUser struct {
	key             int64
	username, email string
}

func (m *memState) identitiesByID(ids []string) map[string]*identityRow {
	out := map[string]*identityRow{}
	for _, r := range m.stored {
		if slices.Contains(ids, r.DirectoryID) {
			c := *r
			out[r.DirectoryID] = &c
		}
	}
	return out
}

func (m *memState) identities(_ context.Context, ids []string) (map[string]*identityRow, error) {
	return m.identitiesByID(ids), nil
}

func (m *memState) eachIdentity(_ context.Context, f identityFilter, fn func([]*identityRow) error) error {
	var page []*identityRow
	for _, r := range m.stored {
		if f.notDeleted && r.State == schema.StateDeleted || f.unlinked && (r.LinkState == schema.LinkManual || r.UserKey != nil) {
			continue
		}
		c := *r
		page = append(page, &c)
		if len(page) == m.page {
			if err := fn(page); err != nil {
				return err
			}
			page = nil
		}
	}
	if len(page) > 0 {
		return fn(page)
	}
	return nil
}

func (m *memState) eachIdentityID(ctx context.Context, f identityFilter, fn func([]int64) error) error {
	return m.eachIdentity(ctx, f, func(rows []*identityRow) error {
		ids := make([]int64, len(rows))
		for i, r := range rows {
			ids[i] = r.ID
		}
		return fn(ids)
	})
}

func (m *memState) identitiesByRowID(_ context.Context, ids []int64) ([]*identityRow, error) {
	var out []*identityRow
	for _, r := range m.stored {
		if slices.Contains(ids, r.ID) {
			c := *r
			out = append(out, &c)
		}
	}
	return out, nil
}

func (m *memState) usersBy(_ context.Context, col string, values []string) (map[string][]any, error) {
	out := map[string][]any{}
	for _, u := range m.users {
		v := u.email
		if col == m.n.UserUsername {
			v = u.username
		}
		if lv := strings.ToLower(v); slices.Contains(values, lv) {
			out[lv] = append(out[lv], u.key)
		}
	}
	return out, nil
}

func (m *memState) keyOwners(_ context.Context, keys []any) (map[string]string, error) {
	out := map[string]string{}
	for _, r := range m.stored {
		if r.UserKey != nil && slices.Contains(keys, r.UserKey) {
			out[schema.KeyString(r.UserKey)] = r.DirectoryID
		}
	}
	return out, nil
}

func (m *memState) neverLinked(_ context.Context, keys []any) (map[string]bool, error) {
	out := map[string]bool{}
	for _, k := range keys {
		if m.protected[schema.KeyString(k)] {
			out[schema.KeyString(k)] = true
		}
	}
	return out, nil
}

// TestDiffInMemory runs the diff (a directory read, the match rules, the
// deletion of what the read no longer has, the candidate links) over a
// state held in memory, with no database and no directory: the planner
// reads the current state only through state, a page at a time.
func TestDiffInMemory(t *testing.T) {
	cfg := baseConfig(t, config.Database{Driver: "sqlite"}, "openldap")
	cfg.Directory.Match = []string{"email"}
	n := schema.NamesFor(cfg)
	at := time.Date(2026, 12, 7, 9, 0, 0, 0, time.UTC)
	s := &Syncer{cfg: cfg, n: n, mapper: directory.NewMapper(cfg.Directory), log: slog.New(slog.DiscardHandler),
		BatchSize: 1000, now: func() time.Time { return at }}
	str := func(v string) sql.NullString { return sql.NullString{String: v, Valid: v != ""} }
	mem := &memState{n: n, page: 1,
		stored: []*identityRow{
			{ID: 1, DirectoryID: "alice", DN: "uid=alice,ou=a,dc=corp", Username: "alice", Email: str("alice@corp"), DisplayName: str("Alice"),
				State: schema.StateActive, UserKey: int64(1), LinkState: schema.LinkLinked},
			{ID: 2, DirectoryID: "bob", DN: "uid=bob,ou=a,dc=corp", Username: "bob", Email: str("bob@corp"),
				State: schema.StateActive, LinkState: schema.LinkUnmatched, LinkDetail: str("no users row matches by email")},
			{ID: 3, DirectoryID: "carol", DN: "uid=carol,ou=a,dc=corp", Username: "carol", Email: str("carol@corp"),
				State: schema.StateActive, UserKey: int64(9), LinkState: schema.LinkLinked},
		},
		users: []memUser{{1, "alice", "alice@corp"}, {2, "bob", "BOB@corp"}, {3, "dave", "dave@corp"}},
	}
	p, err := s.newPlanner(7, mem)
	if err != nil {
		t.Fatal(err)
	}
	defer p.close()
	ctx := context.Background()
	page := []directory.Identity{
		{DirectoryID: "alice", DN: "uid=alice,ou=b,dc=corp", Username: "alice", Email: "alice@corp", DisplayName: "Alice Liddell"},
		{DirectoryID: "bob", DN: "uid=bob,ou=a,dc=corp", Username: "bob", Email: "bob@corp"},
		{DirectoryID: "dave", DN: "uid=dave,ou=a,dc=corp", Username: "dave", Email: "dave@corp"},
		{DirectoryID: "erin", DN: "uid=erin,ou=a,dc=corp", Username: "erin", Email: "erin@corp"},
	}
	if err := p.Upsert(ctx, page); err != nil {
		t.Fatal(err)
	}
	if err := s.finishPlan(ctx, p, &directory.ReadOutcome{Full: true, Complete: true}, &directory.Scope{}); err != nil {
		t.Fatal(err)
	}
	if err := p.claims.resolve(p); err != nil {
		t.Fatal(err)
	}
	got := map[string][]string{}
	err = p.plan.each(func(c Change) error {
		got[c.DirectoryID] = append(got[c.DirectoryID], c.Kind)
		if c.SQL == "" || c.Kind != KindCreate && c.stmtRows != 0 {
			t.Errorf("change %+v", c)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][]string{
		"alice": {KindMove, KindUpdate}, // another OU, another display name
		"bob":   {KindLink},             // its row appeared (email, case-insensitively)
		"dave":  {KindCreate},           // new, linked
		"erin":  {KindCreate},           // new, unmatched
		"carol": {KindDelete},           // not in the complete read
	}
	for id, kinds := range want {
		if !slices.Equal(got[id], kinds) {
			t.Errorf("%s: %v, want %v (all: %v)", id, got[id], kinds, got)
		}
	}
	if len(got) != len(want) || p.linked != 2 || p.unmatched != 1 || p.deletes != 1 {
		t.Fatalf("changes %v; linked %d unmatched %d deletes %d", got, p.linked, p.unmatched, p.deletes)
	}
}
