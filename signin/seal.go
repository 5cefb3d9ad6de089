package signin

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/go-webauthn/webauthn/webauthn"

	"github.com/passbridge/passbridge/store"
)

// Sealed ceremonies.
//
// A sign-in's begin writes nothing: its go-webauthn SessionData (whole, as
// JSON), its kind and its expiry travel to the browser sealed with
// AES-256-GCM under a key that every replica reads from
// passbridge_ceremony_keys, and come back with the response. Only the
// finish writes: it claims the ceremony by inserting its row (keyed by the
// SHA-256 of the sealed value, as a stored ceremony is), which exactly one
// transaction on any replica can do, so a response is still accepted once
// and the row is kept with its result as before. A sealed ceremony that is
// never finished leaves no row: the adoption figures count registrations
// only, and registrations stay stored at begin (their abandonment is a
// figure). The sign-in's begin was a write transaction of its own on a
// path where every write queues for SQLite's one writer.
//
// The key is made by the first replica that needs one. Deleting the rows
// of passbridge_ceremony_keys rotates it: sign-ins begun under the old key
// are told to try again, within sealKeyTTL on every replica.

// sealPrefix starts every sealed ceremony: a stored ceremony's ID (43
// base64url characters, NewSecret) never contains a dot.
const sealPrefix = "s1."

// sealKeyTTL is how long a replica keeps the keys it read.
const sealKeyTTL = time.Minute

// sealedCeremony is what a sealed ceremony holds.
type sealedCeremony struct {
	Kind    string               `json:"k"`
	Session webauthn.SessionData `json:"s"`
	Created time.Time            `json:"c"`
	Expires time.Time            `json:"e"`
}

// sealKeys reads, creates and caches the ceremony keys.
type sealKeys struct {
	mu       sync.Mutex
	keys     map[string]cipher.AEAD
	newest   string
	cachedAt time.Time
}

func (c *Core) sealKeysTable() string { return c.n.Table("ceremony_keys") }

// sealKey returns the AEAD of key id ("" for the newest, created when
// there is none), reading the table when the cache is stale or lacks it.
func (c *Core) sealKey(ctx context.Context, id string) (string, cipher.AEAD, error) {
	k := &c.seal
	k.mu.Lock()
	defer k.mu.Unlock()
	now := c.now()
	fresh := now.Sub(k.cachedAt) < sealKeyTTL && !now.Before(k.cachedAt)
	if fresh {
		if id == "" && k.newest != "" {
			return k.newest, k.keys[k.newest], nil
		}
		if a, ok := k.keys[id]; ok && id != "" {
			return id, a, nil
		}
	}
	if err := c.readSealKeys(ctx); err != nil {
		return "", nil, err
	}
	if id == "" && k.newest == "" {
		if err := c.createSealKey(ctx); err != nil {
			return "", nil, err
		}
		if err := c.readSealKeys(ctx); err != nil {
			return "", nil, err
		}
	}
	if id == "" {
		id = k.newest
	}
	a, ok := k.keys[id]
	if !ok {
		return "", nil, errUnknownSealKey
	}
	return id, a, nil
}

var errUnknownSealKey = errors.New("unknown ceremony key")

// readSealKeys loads every key into the cache (k.mu held).
func (c *Core) readSealKeys(ctx context.Context) error {
	var rows []struct {
		ID      string    `db:"id"`
		Secret  string    `db:"secret"`
		Created time.Time `db:"created_at"`
	}
	// The newest last, the ID breaking ties so that every replica agrees.
	err := store.Select(ctx, c.db.Reader(), &rows, "SELECT "+c.Cols("", "id", "secret", "created_at")+" FROM "+c.sealKeysTable()+
		" ORDER BY "+c.q("created_at")+", "+c.q("id"))
	if err != nil {
		return fmt.Errorf("read the ceremony keys: %w", err)
	}
	keys := make(map[string]cipher.AEAD, len(rows))
	newest := ""
	for _, r := range rows {
		secret, err := hex.DecodeString(r.Secret)
		if err != nil || len(secret) != 32 {
			return fmt.Errorf("ceremony key %s: not 32 bytes of hex", r.ID)
		}
		a, err := newAEAD(secret)
		if err != nil {
			return fmt.Errorf("ceremony key %s: %w", r.ID, err)
		}
		keys[r.ID], newest = a, r.ID
	}
	c.seal.keys, c.seal.newest, c.seal.cachedAt = keys, newest, c.now()
	return nil
}

// createSealKey stores a new random key. Two replicas that create one at
// once store two: both open what either sealed.
func (c *Core) createSealKey(ctx context.Context) error {
	secret := make([]byte, 32)
	id := make([]byte, 16)
	rand.Read(secret)
	rand.Read(id)
	err := c.db.ExecShared(ctx, "INSERT INTO "+c.sealKeysTable()+" ("+c.Cols("", "id", "secret", "created_at")+") VALUES (?, ?, ?)",
		hex.EncodeToString(id), hex.EncodeToString(secret), c.now())
	if err != nil {
		return fmt.Errorf("create a ceremony key: %w", err)
	}
	return nil
}

func newAEAD(key []byte) (cipher.AEAD, error) {
	b, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(b)
}

// sealCeremony seals a ceremony of kind: the value the browser keeps.
func (c *Core) sealCeremony(ctx context.Context, kind string, sd *webauthn.SessionData) (string, error) {
	now := c.now()
	plain, err := json.Marshal(sealedCeremony{Kind: kind, Session: *sd, Created: now, Expires: now.Add(c.cfg.Portal.CeremonyTimeout.D())})
	if err != nil {
		return "", fmt.Errorf("encode ceremony: %w", err)
	}
	id, aead, err := c.sealKey(ctx, "")
	if err != nil {
		return "", err
	}
	nonce := make([]byte, aead.NonceSize(), aead.NonceSize()+len(plain)+aead.Overhead())
	rand.Read(nonce)
	// The key ID is authenticated too: a value cannot be moved to another key.
	sealed := aead.Seal(nonce, nonce, plain, []byte(sealPrefix+id))
	return sealPrefix + id + "." + base64.RawURLEncoding.EncodeToString(sealed), nil
}

// maxSealed bounds what is opened: a sealed ceremony is a few hundred bytes.
const maxSealed = 4096

// ValidCeremony reports whether s looks like a ceremony ID that begin
// handed out, stored (ValidSecret) or sealed, so that garbage never reaches
// the database.
func ValidCeremony(s string) bool {
	if strings.HasPrefix(s, sealPrefix) {
		return len(s) <= maxSealed
	}
	return ValidSecret(s)
}

// openCeremony opens a sealed ceremony of kind that may still be finished.
// Anything else (garbage, another key, another kind, expired) is
// ErrCeremonyGone; only a database error is an error of its own.
func (c *Core) openCeremony(ctx context.Context, value, kind string) (*Ceremony, error) {
	rest, ok := strings.CutPrefix(value, sealPrefix)
	if !ok || len(value) > maxSealed {
		return nil, ErrCeremonyGone
	}
	id, body, ok := strings.Cut(rest, ".")
	if !ok || len(id) != 32 {
		return nil, ErrCeremonyGone
	}
	sealed, err := base64.RawURLEncoding.Strict().DecodeString(body)
	if err != nil {
		return nil, ErrCeremonyGone
	}
	_, aead, err := c.sealKey(ctx, id)
	if errors.Is(err, errUnknownSealKey) {
		return nil, ErrCeremonyGone
	}
	if err != nil {
		return nil, err
	}
	if len(sealed) < aead.NonceSize()+aead.Overhead() {
		return nil, ErrCeremonyGone
	}
	plain, err := aead.Open(nil, sealed[:aead.NonceSize()], sealed[aead.NonceSize():], []byte(sealPrefix+id))
	if err != nil {
		return nil, ErrCeremonyGone
	}
	var sc sealedCeremony
	if err := json.Unmarshal(plain, &sc); err != nil {
		return nil, fmt.Errorf("sealed ceremony: %w", err)
	}
	if sc.Kind != kind || !c.now().Before(sc.Expires) {
		return nil, ErrCeremonyGone
	}
	return &Ceremony{hash: HashSecret(value), Kind: sc.Kind, Session: sc.Session, CreatedAt: sc.Created, expires: sc.Expires, sealed: true}, nil
}

// claimSealed claims a sealed ceremony by inserting its row with its
// result: exactly one transaction, on any replica, inserts it.
func (c *Core) claimSealed(ctx context.Context, q store.Execer, cer *Ceremony, result string) error {
	now := c.now()
	if !now.Before(cer.expires) {
		return ErrCeremonyGone
	}
	raw, err := json.Marshal(cer.Session)
	if err != nil {
		return fmt.Errorf("encode ceremony: %w", err)
	}
	// A plain INSERT: a duplicate is an error, on every database, which
	// rolls back the transaction it is in (the sign-in's, whose other rows
	// go with it). Not "do nothing on conflict": in a pipelined
	// transaction (store.InTxPipelined) the count would only be read after
	// the other rows were sent, and MySQL's no-op upsert counts as a
	// changed row. The error may come back from a later call (the
	// commit): Commit reads it there.
	_, err = store.Exec(ctx, q, "INSERT INTO "+c.n.Ceremonies+" ("+c.Cols("", "id", "kind", "session_data", "created_at", "expires_at", "finished_at", "result")+") VALUES (?, ?, ?, ?, ?, ?, ?)",
		cer.hash, cer.Kind, string(raw), cer.CreatedAt, cer.expires, now, result)
	if store.IsUniqueViolation(err) {
		return ErrCeremonyGone // finished before, here or on another replica
	}
	if err != nil {
		return fmt.Errorf("claim ceremony: %w", err)
	}
	cer.claimed = true
	return nil
}
