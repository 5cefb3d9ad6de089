package enroll

import (
	"context"
	"strings"
	"time"

	"github.com/passbridge/passbridge/config"
	"github.com/passbridge/passbridge/schema"
	"github.com/passbridge/passbridge/signin"
	"github.com/passbridge/passbridge/store"
)

// data is the portal's access to passbridge's tables in the application
// database. Every statement uses ? placeholders through the store helpers;
// names come from schema.NamesFor, quoted and qualified.
type data struct {
	core *signin.Core
	db   *store.DB
	n    schema.Names
	d    store.Dialect
	now  func() time.Time
}

func newData(core *signin.Core, db *store.DB, cfg *config.Config) *data {
	return &data{core: core, db: db, n: schema.NamesFor(cfg), d: db.Dialect(), now: core.Now}
}

func (s *data) q(name string) string { return s.d.Quote(name) }

// cols quotes a list of column names for a SELECT, optionally prefixed by
// a table alias.
func (s *data) cols(alias string, names ...string) string {
	out := make([]string, len(names))
	for i, c := range names {
		out[i] = s.q(c)
		if alias != "" {
			out[i] = alias + "." + out[i]
		}
	}
	return strings.Join(out, ", ")
}

// The secrets of cookies, links and ceremonies are the sign-in core's.
var (
	newSecret   = signin.NewSecret
	hashSecret  = signin.HashSecret
	validSecret = signin.ValidSecret
)

// identity is a stored directory identity; credential a stored passkey
// (the sign-in core's types).
type (
	identity   = signin.Identity
	credential = signin.Credential
)

func (s *data) identityWhere(ctx context.Context, where string, args ...any) (*identity, error) {
	return s.core.IdentityWhere(ctx, where, args...)
}

// identityByDirectoryID finds the identity the sync stored for a directory
// entry; nil when the sync has not seen it.
func (s *data) identityByDirectoryID(ctx context.Context, id string) (*identity, error) {
	return s.core.IdentityByDirectoryID(ctx, id)
}

func (s *data) identityByID(ctx context.Context, id int64) (*identity, error) {
	return s.core.IdentityByID(ctx, id)
}

// activeCredentials are the passkeys of a users row that are not revoked.
func (s *data) activeCredentials(ctx context.Context, userKey any) ([]*credential, error) {
	return s.core.ActiveCredentials(ctx, userKey)
}

// setPasskeyState keeps users.<prefix>passkey_state right for the
// application; it runs inside the transaction that changed the passkeys.
func (s *data) setPasskeyState(ctx context.Context, tx store.Querier, userKey any) error {
	return s.core.SetPasskeyState(ctx, tx, userKey)
}

// clip cuts s to at most n bytes on a rune boundary.
func clip(s string, n int) string { return signin.Clip(s, n) }
