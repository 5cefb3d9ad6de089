package identity

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/passbridge/passbridge/config"
	"github.com/passbridge/passbridge/dirsync"
	"github.com/passbridge/passbridge/schema"
	"github.com/passbridge/passbridge/store"
)

// Errors of the IT console's link actions, for errors.Is.
var (
	ErrNoIdentity     = errors.New("no such identity")
	ErrBadUserKey     = errors.New("not a valid users key")
	ErrNoUsersRow     = errors.New("no such users row")
	ErrUsersRowTaken  = errors.New("the users row is linked to another identity")
	ErrNotManualLink  = errors.New("not linked by hand")
	ErrActivePasskeys = errors.New("active passkeys on the users row")
	ErrSyncRunning    = dirsync.ErrBusy // a sync holds the lock (dirsync.LockName)
)

// manualLockWait is how long a link action waits for a sync in progress.
var manualLockWait = 15 * time.Second

// LinkManually links an identity (typically unmatched or ambiguous) to the
// users row whose users_table.key is userKey, for an IT admin (actor): the
// link state becomes manual, which later syncs keep whatever the match
// rules would say. The row must exist and must not be linked to another
// identity that is still in the directory (active or disabled); a deleted
// identity that still holds it (an account recreated under a new ID) lets
// it go, and is left unmatched. An identity that already has another row
// may only leave it when no active passkey is on that row. It runs in one
// transaction, under the sync's lock, so that no sync links the row to
// someone else meanwhile.
func LinkManually(ctx context.Context, db *store.DB, cfg *config.Config, identityID int64, userKey string, actor string) (*IdentityInfo, error) {
	actor = strings.TrimSpace(actor)
	if actor == "" {
		return nil, errors.New("link by hand: who links it? the actor is empty")
	}
	key, err := usersKeyArg(ctx, db, cfg, userKey)
	if err != nil {
		return nil, fmt.Errorf("link identity %d by hand: %w", identityID, err)
	}
	n := schema.NamesFor(cfg)
	q := n.Dialect.Quote
	lock, err := lockForLink(ctx, db)
	if err != nil {
		return nil, fmt.Errorf("link identity %d by hand: %w", identityID, err)
	}
	defer lock.Unlock()

	var out IdentityInfo
	err = db.InTx(ctx, func(tx *sqlx.Tx) error {
		it, err := identityForUpdate(ctx, tx, n, identityID)
		if err != nil {
			return err
		}
		if it.State == schema.StateDeleted {
			return fmt.Errorf("identity %d (%s, %s) is deleted from the directory (%s): it cannot be linked", it.ID, it.Username, it.DirectoryID, it.StateReason.String)
		}
		// The row, by the key as the table has it.
		var k any
		err = tx.QueryRowxContext(ctx, tx.Rebind("SELECT "+n.UserKey+" FROM "+n.Users+" WHERE "+n.UserKey+" = ?"), key).Scan(&k)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("no row of %s has %s = %s: %w", n.Users, cfg.UsersTable.Key, strings.TrimSpace(userKey), ErrNoUsersRow)
		}
		if err != nil {
			return fmt.Errorf("look up users row %s in %s: %w", strings.TrimSpace(userKey), n.Users, err)
		}
		k = schema.NormKey(k)
		now := time.Now().UTC()
		detail := "linked by " + actor + " at " + now.Format(time.RFC3339)

		// Other identities on the row.
		var owners []struct {
			ID          int64  `db:"id"`
			DirectoryID string `db:"directory_id"`
			Username    string `db:"username"`
			State       string `db:"state"`
			LinkState   string `db:"link_state"`
		}
		err = store.Select(ctx, tx, &owners, "SELECT "+q("id")+", "+q("directory_id")+", "+q("username")+", "+q("state")+", "+q("link_state")+
			" FROM "+n.Identities+" WHERE "+q("user_key")+" = ? AND "+q("id")+" <> ? ORDER BY "+q("id"), k, it.ID)
		if err != nil {
			return fmt.Errorf("read the identities linked to users row %s: %w", schema.KeyString(k), err)
		}
		for _, o := range owners {
			if o.State != schema.StateDeleted {
				return fmt.Errorf("users row %s is already linked to identity %d (%s, %s, %s, link %s): unlink that one first: %w",
					schema.KeyString(k), o.ID, o.Username, o.DirectoryID, o.State, o.LinkState, ErrUsersRowTaken)
			}
		}
		for _, o := range owners {
			_, err := store.Exec(ctx, tx, "UPDATE "+n.Identities+" SET "+q("user_key")+" = NULL, "+q("link_state")+" = ?, "+q("link_detail")+" = ?, "+
				q("updated_at")+" = ? WHERE "+q("id")+" = ?",
				schema.LinkUnmatched, fmt.Sprintf("its users row %s was linked by hand to identity %d (%s) by %s at %s", schema.KeyString(k), it.ID, it.Username, actor, now.Format(time.RFC3339)),
				now, o.ID)
			if err != nil {
				return fmt.Errorf("release users row %s from deleted identity %d: %w", schema.KeyString(k), o.ID, err)
			}
			detail += fmt.Sprintf("; the row was taken from deleted identity %d (%s, %s)", o.ID, o.Username, o.DirectoryID)
		}

		// Leaving another row: not with its passkeys still usable.
		if old := schema.NormKey(it.UserKey); old != nil && schema.KeyString(old) != schema.KeyString(k) {
			if err := noActivePasskeys(ctx, tx, n, old, it); err != nil {
				return err
			}
			detail += "; before: users row " + schema.KeyString(old) + " (" + it.LinkState + ")"
		}
		_, err = store.Exec(ctx, tx, "UPDATE "+n.Identities+" SET "+q("user_key")+" = ?, "+q("link_state")+" = ?, "+q("link_detail")+" = ?, "+
			q("updated_at")+" = ? WHERE "+q("id")+" = ?", k, schema.LinkManual, detail, now, it.ID)
		if err != nil {
			return fmt.Errorf("link identity %d to users row %s: %w", it.ID, schema.KeyString(k), err)
		}
		if err := store.Get(ctx, tx, it, infoSelect(n)+" WHERE "+q("id")+" = ?", it.ID); err != nil {
			return fmt.Errorf("read identity %d back: %w", it.ID, err)
		}
		out = it.info()
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("link identity %d by hand to users row %s: %w", identityID, strings.TrimSpace(userKey), err)
	}
	return &out, nil
}

// Unlink undoes a manual link: the identity becomes unmatched, without a
// users row, and the next sync links it by directory.match again. Only a
// manual link can be undone (the others follow the directory and the users
// table), and not while passkeys on its row are active: they would stay
// usable for that row with nobody in passbridge to see them.
func Unlink(ctx context.Context, db *store.DB, cfg *config.Config, identityID int64, actor string) error {
	actor = strings.TrimSpace(actor)
	if actor == "" {
		return errors.New("unlink: who unlinks it? the actor is empty")
	}
	n := schema.NamesFor(cfg)
	q := n.Dialect.Quote
	lock, err := lockForLink(ctx, db)
	if err != nil {
		return fmt.Errorf("unlink identity %d: %w", identityID, err)
	}
	defer lock.Unlock()
	err = db.InTx(ctx, func(tx *sqlx.Tx) error {
		it, err := identityForUpdate(ctx, tx, n, identityID)
		if err != nil {
			return err
		}
		if it.LinkState != schema.LinkManual {
			return fmt.Errorf("identity %d (%s) is %s, not linked by hand: only a manual link can be undone (%s): %w",
				it.ID, it.Username, it.LinkState, it.LinkDetail.String, ErrNotManualLink)
		}
		now := time.Now().UTC()
		detail := "manual link removed by " + actor + " at " + now.Format(time.RFC3339)
		if old := schema.NormKey(it.UserKey); old != nil {
			if err := noActivePasskeys(ctx, tx, n, old, it); err != nil {
				return err
			}
			detail += " (was users row " + schema.KeyString(old) + ")"
		}
		detail += "; the next sync links it by directory.match"
		_, err = store.Exec(ctx, tx, "UPDATE "+n.Identities+" SET "+q("user_key")+" = NULL, "+q("link_state")+" = ?, "+q("link_detail")+" = ?, "+
			q("updated_at")+" = ? WHERE "+q("id")+" = ?", schema.LinkUnmatched, detail, now, it.ID)
		if err != nil {
			return fmt.Errorf("unlink identity %d: %w", it.ID, err)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("unlink identity %d: %w", identityID, err)
	}
	return nil
}

// IdentityByID returns one stored identity by its id (identities.id), with
// its users row and passkeys, as FindIdentities does.
func IdentityByID(ctx context.Context, db *store.DB, cfg *config.Config, id int64) (*IdentityDetail, error) {
	n := schema.NamesFor(cfg)
	var r infoRow
	err := store.Get(ctx, db, &r, infoSelect(n)+" WHERE "+n.Dialect.Quote("id")+" = ?", id)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("identity %d: %w", id, ErrNoIdentity)
	}
	if err != nil {
		return nil, fmt.Errorf("read identity %d: %w", id, err)
	}
	d := &IdentityDetail{IdentityInfo: r.info(), Passkeys: []Passkey{}}
	if key := schema.NormKey(r.UserKey); key != nil {
		if d.Row, err = linkedRow(ctx, db, n, key); err != nil {
			return nil, err
		}
		if d.Passkeys, err = passkeys(ctx, db, n, key, r.ID); err != nil {
			return nil, err
		}
	}
	return d, nil
}

// identityForUpdate reads an identity in a transaction, locking its row.
func identityForUpdate(ctx context.Context, tx *sqlx.Tx, n schema.Names, id int64) (*infoRow, error) {
	var r infoRow
	err := store.Get(ctx, tx, &r, infoSelect(n)+" WHERE "+n.Dialect.Quote("id")+" = ?"+n.Dialect.ForUpdate(), id)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("identity %d: %w", id, ErrNoIdentity)
	}
	if err != nil {
		return nil, fmt.Errorf("read identity %d: %w", id, err)
	}
	r.UserKey = schema.NormKey(r.UserKey)
	return &r, nil
}

// noActivePasskeys refuses to take an identity off a users row that has
// passkeys nobody revoked: they would still sign in to that row.
func noActivePasskeys(ctx context.Context, tx *sqlx.Tx, n schema.Names, key any, it *infoRow) error {
	q := n.Dialect.Quote
	var count int
	if err := store.Get(ctx, tx, &count, "SELECT COUNT(*) FROM "+n.Credentials+" WHERE "+q("user_key")+" = ? AND "+q("revoked_at")+" IS NULL", key); err != nil {
		return fmt.Errorf("count the passkeys of users row %s: %w", schema.KeyString(key), err)
	}
	if count > 0 {
		return fmt.Errorf("identity %d (%s) is linked to users row %s, which has %d active passkey(s): revoke them first, or they keep signing in to that row: %w",
			it.ID, it.Username, schema.KeyString(key), count, ErrActivePasskeys)
	}
	return nil
}

// lockForLink takes the sync's lock, waiting a little for a run in
// progress: a run plans its links before it writes them, and must not link
// a row that an admin links by hand in between.
func lockForLink(ctx context.Context, db *store.DB) (*store.Lock, error) {
	deadline := time.Now().Add(manualLockWait)
	for {
		lock, err := dirsync.Lock(ctx, db)
		if err == nil {
			return lock, nil
		}
		if !errors.Is(err, dirsync.ErrBusy) {
			return nil, err
		}
		if !time.Now().Before(deadline) {
			return nil, fmt.Errorf("a directory sync is running against %s (lock %s) and did not end within %s: try again when it ends: %w",
				db.Describe(), dirsync.LockName, manualLockWait, ErrSyncRunning)
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("wait for the directory sync in progress: %w", ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

var uuidText = regexp.MustCompile(`^(?i)\{?[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}\}?$`)

// usersKeyArg turns a users key typed by a person into a query argument
// of the key column's kind: integer columns take integers (a string would
// compare as a number on MySQL, through a double, and not at all on
// PostgreSQL), the others the text as given.
func usersKeyArg(ctx context.Context, db *store.DB, cfg *config.Config, s string) (any, error) {
	s = strings.TrimSpace(s)
	col := cfg.UsersTable.Key
	if s == "" {
		return nil, fmt.Errorf("which users row? the key (users_table.key %s) is empty: %w", col, ErrBadUserKey)
	}
	// The key column's type from the catalog: one query, not a whole
	// inspection of the users table per link.
	d := db.Dialect()
	cols, err := d.Columns(ctx, db, cfg.UsersTable.Schema, cfg.UsersTable.Name)
	if err != nil {
		return nil, fmt.Errorf("read the type of users_table.key: %w", err)
	}
	c, ok := d.FindColumn(cols, col)
	if !ok {
		return nil, fmt.Errorf("read the type of users_table.key: column %q not found in %s", col, d.Table(cfg.UsersTable.Schema, cfg.UsersTable.Name))
	}
	keyKind := d.TypeKind(c.Type)
	kind := strings.ToLower(keyKind)
	switch {
	case intKeyType(d.Kind(), kind):
		if v, err := strconv.ParseInt(s, 10, 64); err == nil {
			return v, nil
		}
		if strings.Contains(kind, "unsigned") {
			if v, err := strconv.ParseUint(s, 10, 64); err == nil {
				return v, nil
			}
		}
		return nil, fmt.Errorf("users key %q: users_table.key %s is an integer column (%s), and %q is not a whole number: %w", s, col, keyKind, s, ErrBadUserKey)
	case d.Kind() == store.Postgres && kind == "uuid":
		if !uuidText.MatchString(s) {
			return nil, fmt.Errorf("users key %q: users_table.key %s is a uuid column, and %q is not a UUID: %w", s, col, s, ErrBadUserKey)
		}
	}
	return s, nil
}

// intKeyType reports whether a key column type (store's TypeKind, in
// lower case) holds integers.
func intKeyType(k store.Kind, kind string) bool {
	if k == store.SQLite {
		return strings.Contains(kind, "int") // SQLite's INTEGER affinity rule
	}
	base := kind
	if i := strings.IndexAny(base, "( "); i >= 0 {
		base = base[:i]
	}
	switch base {
	case "smallint", "integer", "int", "bigint", "tinyint", "mediumint", "int2", "int4", "int8", "serial", "bigserial", "smallserial":
		return true
	}
	return false
}
