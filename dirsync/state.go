package dirsync

import "context"

// state is what the diff reads of the current state, a page at a time:
// the stored identities and the users rows the match rules look for. In a
// run it is the database (dbState); the diff itself holds no connection,
// so it runs as well over any other state (memState in the tests), and a
// pipeline that keeps a page in memory can give it its own.
type state interface {
	// identities returns the stored identities with these directory IDs.
	identities(ctx context.Context, ids []string) (map[string]*identityRow, error)
	// eachIdentity calls fn with every stored identity that f selects, a
	// page at a time, by id.
	eachIdentity(ctx context.Context, f identityFilter, fn func(rows []*identityRow) error) error
	// eachIdentityID is eachIdentity with the row IDs only.
	eachIdentityID(ctx context.Context, f identityFilter, fn func(ids []int64) error) error
	// identitiesByRowID returns the stored identities with these row IDs,
	// by id.
	identitiesByRowID(ctx context.Context, ids []int64) ([]*identityRow, error)
	// usersBy returns the keys of the users rows whose column (the
	// quoted users_table.email or .username) equals one of the lower-case
	// values, case-insensitively, by lower-case value, keys sorted.
	usersBy(ctx context.Context, col string, values []string) (map[string][]any, error)
	// keyOwners returns which identity (directory ID) each of the users
	// keys is linked to.
	keyOwners(ctx context.Context, keys []any) (map[string]string, error)
	// neverLinked returns which of the keys users_table.never_link holds.
	neverLinked(ctx context.Context, keys []any) (map[string]bool, error)
}

// identityFilter selects stored identities: those not marked deleted,
// and of them those without a users row that were not linked by hand.
type identityFilter struct {
	notDeleted bool
	unlinked   bool
}

// dbState is the state in the application's database.
type dbState struct{ s *Syncer }

// cur is the state the diff reads: the database unless the planner was
// given another.
func (p *planner) cur() state {
	if p.state != nil {
		return p.state
	}
	return dbState{p.s}
}

func (p *planner) usersBy(ctx context.Context, col string, values []string) (map[string][]any, error) {
	return p.cur().usersBy(ctx, col, values)
}

func (p *planner) keyOwners(ctx context.Context, keys []any) (map[string]string, error) {
	return p.cur().keyOwners(ctx, keys)
}

func (p *planner) neverLinked(ctx context.Context, keys []any) (map[string]bool, error) {
	return p.cur().neverLinked(ctx, keys)
}
