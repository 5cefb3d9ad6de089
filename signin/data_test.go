package signin

import (
	"context"
	"testing"
	"time"

	"github.com/passbridge/passbridge/config"
	"github.com/passbridge/passbridge/internal/testdb"
	"github.com/passbridge/passbridge/store"
)

// TestCredentialWithIdentity: the sign-in's one read finds a passkey with
// the identity it was enrolled by, even when another identity is linked to
// the same users row; with the first identity linked to its users row when
// its own is gone (a directory account deleted and created again); with no
// identity when none has its users row; and nothing for an unknown
// credential ID. On SQLite, PostgreSQL and MariaDB.
func TestCredentialWithIdentity(t *testing.T) {
	eachDatabase(t, func(t *testing.T, db *store.DB, cfg *config.Config) {
		c := newCore(t, cfg, db)
		ctx := context.Background()
		now := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
		exec := func(q string, args ...any) {
			t.Helper()
			if _, err := store.Exec(ctx, db, q, args...); err != nil {
				t.Fatalf("%s: %v", q, err)
			}
		}
		for _, u := range []struct {
			id   int64
			name string
		}{{1, "ann"}, {2, "bob"}} {
			exec("INSERT INTO "+c.n.Users+" ("+c.Cols("", "id", "username")+") VALUES (?, ?)", u.id, u.name)
		}
		identity := func(id int64, dir, username string, userKey any) {
			exec("INSERT INTO "+c.n.Identities+" ("+c.Cols("", "id", "directory_id", "dn", "username", "user_key", "link_state", "first_seen_at", "last_seen_at", "updated_at")+
				") VALUES (?, ?, ?, ?, ?, 'linked', ?, ?, ?)", id, dir, "uid="+username+",dc=example", username, userKey, now, now, now)
		}
		identity(10, "g-ann-old", "ann.old", 1)
		identity(11, "g-ann", "ann", 1)
		identity(12, "g-ann-2", "ann2", 1)
		passkey := func(id int64, credID string, userKey any, identityID any) {
			exec("INSERT INTO "+c.n.Credentials+" ("+c.Cols("", "id", "user_key", "identity_id", "credential_id", "public_key", "user_handle", "name", "created_at")+
				") VALUES (?, ?, ?, ?, ?, ?, ?, ?)", id, userKey, identityID, []byte(credID), []byte("cose"), []byte("handle"), "key", now)
		}
		passkey(100, "cred-own", 1, 11)
		passkey(101, "cred-orphan", 1, 12)
		passkey(102, "cred-nobody", 2, nil)

		check := func(credID string, wantPasskey int64, wantIdentity int64) {
			t.Helper()
			cr, it, err := c.CredentialWithIdentity(ctx, []byte(credID))
			if err != nil {
				t.Fatalf("%s: %v", credID, err)
			}
			switch {
			case wantPasskey == 0 && cr != nil:
				t.Errorf("%s: found passkey %d, want none", credID, cr.ID)
			case wantPasskey != 0 && (cr == nil || cr.ID != wantPasskey):
				t.Errorf("%s: passkey %+v, want %d", credID, cr, wantPasskey)
			case wantIdentity == 0 && it != nil:
				t.Errorf("%s: identity %d (%s), want none", credID, it.ID, it.Username)
			case wantIdentity != 0 && (it == nil || it.ID != wantIdentity):
				t.Errorf("%s: identity %+v, want %d", credID, it, wantIdentity)
			}
			if it != nil && (it.Username == "" || it.DirectoryID == "" || it.UserKey == nil) {
				t.Errorf("%s: identity read incompletely: %+v", credID, it)
			}
		}
		check("cred-own", 100, 11)
		check("cred-nobody", 102, 0)
		check("unknown", 0, 0)
		// The identity it was enrolled by is deleted: its identity_id
		// becomes NULL, and the first identity of its users row is its.
		exec("DELETE FROM "+c.n.Identities+" WHERE "+c.q("id")+" = ?", 12)
		check("cred-orphan", 101, 10)
	})
}

// eachDatabase runs fn on a fresh database of every kind with passbridge's
// tables, and a configuration whose relying party is set.
func eachDatabase(t *testing.T, fn func(t *testing.T, db *store.DB, cfg *config.Config)) {
	for _, driver := range []string{"sqlite", "postgres", "mysql"} {
		t.Run(driver, func(t *testing.T) {
			db, cfg := testdb.Open(t, driver)
			cfg.Portal.RPID, cfg.Portal.Origins = "localhost", []string{"https://localhost:8443"}
			fn(t, db, cfg)
		})
	}
}

// newCore is the sign-in core of cfg on db.
func newCore(t *testing.T, cfg *config.Config, db *store.DB) *Core {
	t.Helper()
	c, err := New(cfg, db, Options{})
	if err != nil {
		t.Fatal(err)
	}
	return c
}
