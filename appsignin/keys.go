package appsignin

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/passbridge/passbridge/schema"
	"github.com/passbridge/passbridge/store"
)

// Signing keys live in passbridge_signing_keys, so that every replica signs
// with the same key and publishes the same JWKS. Time is cut into rotation
// periods (oidc.key_rotation); the key of period p signs during p and is
// created, and published, one whole period earlier, so that relying parties
// that cache the JWKS know it before the first token it signs; it stays
// published until the last token it signed has expired. The period number
// is unique in the table: two replicas that create the same period's key at
// once insert one row, and the loser reads the winner's.

// keyCacheTTL is how long a replica keeps the keys it read: a new period's
// key is read as soon as the period starts, whatever the cache.
const keyCacheTTL = 30 * time.Second

// skew is added to a key's publication for clocks that disagree.
const skew = time.Minute

// signingKey is one stored key.
type signingKey struct {
	id             string
	period         int64
	private        *ecdsa.PrivateKey
	public         jose.JSONWebKey
	signsFrom      time.Time
	signsUntil     time.Time
	publishedUntil time.Time
}

// Keys reads, creates and caches the signing keys.
type Keys struct {
	db       *store.DB
	n        schema.Names
	rotation time.Duration
	// lifetime is the longest life of a token passbridge signs.
	lifetime time.Duration
	now      func() time.Time

	mu       sync.Mutex
	keys     []*signingKey // by period
	cachedAt time.Time
}

// NewKeys returns the key store of a database.
func NewKeys(db *store.DB, n schema.Names, rotation, lifetime time.Duration, now func() time.Time) *Keys {
	return &Keys{db: db, n: n, rotation: rotation, lifetime: lifetime, now: now}
}

func (k *Keys) period(t time.Time) int64 { return t.UnixNano() / int64(k.rotation) }

func (k *Keys) periodStart(p int64) time.Time { return time.Unix(0, p*int64(k.rotation)).UTC() }

// load returns the keys published now, creating this period's and the next
// one's when they do not exist yet.
func (k *Keys) load(ctx context.Context) ([]*signingKey, error) {
	now := k.now()
	p := k.period(now)
	k.mu.Lock()
	defer k.mu.Unlock()
	if now.Sub(k.cachedAt) < keyCacheTTL && now.After(k.cachedAt) && hasPeriod(k.keys, p) && hasPeriod(k.keys, p+1) {
		return k.keys, nil
	}
	keys, err := k.read(ctx, now)
	if err != nil {
		return nil, err
	}
	created := false
	for _, want := range []int64{p, p + 1} {
		if !hasPeriod(keys, want) {
			if err := k.create(ctx, want); err != nil {
				return nil, err
			}
			created = true
		}
	}
	if created {
		if keys, err = k.read(ctx, now); err != nil {
			return nil, err
		}
	}
	k.keys, k.cachedAt = keys, now
	return keys, nil
}

func hasPeriod(keys []*signingKey, p int64) bool {
	for _, key := range keys {
		if key.period == p {
			return true
		}
	}
	return false
}

func (k *Keys) read(ctx context.Context, now time.Time) ([]*signingKey, error) {
	q := k.n.Column
	var rows []struct {
		ID             string    `db:"id"`
		Period         int64     `db:"period"`
		Private        string    `db:"private_key"`
		SignsFrom      time.Time `db:"signs_from"`
		SignsUntil     time.Time `db:"signs_until"`
		PublishedUntil time.Time `db:"published_until"`
	}
	err := store.Select(ctx, k.db, &rows, "SELECT "+q("id")+", "+q("period")+", "+q("private_key")+", "+q("signs_from")+", "+q("signs_until")+", "+q("published_until")+
		" FROM "+k.n.Table("signing_keys")+" WHERE "+q("published_until")+" > ? ORDER BY "+q("period"), now)
	if err != nil {
		return nil, fmt.Errorf("read the signing keys: %w", err)
	}
	out := make([]*signingKey, 0, len(rows))
	for _, r := range rows {
		block, _ := pem.Decode([]byte(r.Private))
		if block == nil {
			return nil, fmt.Errorf("signing key %s: not PEM", r.ID)
		}
		parsed, err := x509.ParsePKCS8PrivateKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("signing key %s: %w", r.ID, err)
		}
		priv, ok := parsed.(*ecdsa.PrivateKey)
		if !ok {
			return nil, fmt.Errorf("signing key %s: not an ECDSA key", r.ID)
		}
		out = append(out, &signingKey{id: r.ID, period: r.Period, private: priv,
			public:    jose.JSONWebKey{Key: &priv.PublicKey, KeyID: r.ID, Algorithm: string(jose.ES256), Use: "sig"},
			signsFrom: r.SignsFrom, signsUntil: r.SignsUntil, publishedUntil: r.PublishedUntil})
	}
	return out, nil
}

// create makes the key of period p; another replica that made it first
// wins (the unique period), which is no error.
func (k *Keys) create(ctx context.Context, p int64) error {
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return err
	}
	pub := jose.JSONWebKey{Key: &priv.PublicKey, Algorithm: string(jose.ES256), Use: "sig"}
	thumb, err := pub.Thumbprint(crypto.SHA256)
	if err != nil {
		return err
	}
	pub.KeyID = base64.RawURLEncoding.EncodeToString(thumb)
	pubJSON, err := json.Marshal(pub)
	if err != nil {
		return err
	}
	from := k.periodStart(p)
	until := k.periodStart(p + 1)
	q := k.n.Column
	_, err = store.Exec(ctx, k.db, "INSERT INTO "+k.n.Table("signing_keys")+" ("+q("id")+", "+q("period")+", "+q("alg")+", "+q("private_key")+", "+q("public_key")+", "+
		q("signs_from")+", "+q("signs_until")+", "+q("published_until")+", "+q("created_at")+") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
		pub.KeyID, p, string(jose.ES256), string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})), string(pubJSON),
		from, until, until.Add(k.lifetime+skew), k.now())
	if err != nil && !store.IsUniqueViolation(err) {
		return fmt.Errorf("create a signing key: %w", err)
	}
	return nil
}

var errNoKey = errors.New("no signing key for the current period")

// Signing is the key that signs now.
func (k *Keys) Signing(ctx context.Context) (*signingKey, error) {
	keys, err := k.load(ctx)
	if err != nil {
		return nil, err
	}
	p := k.period(k.now())
	for _, key := range keys {
		if key.period == p {
			return key, nil
		}
	}
	return nil, errNoKey
}

// Published are the public keys of the JWKS, by period.
func (k *Keys) Published(ctx context.Context) ([]jose.JSONWebKey, error) {
	keys, err := k.load(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]jose.JSONWebKey, len(keys))
	for i, key := range keys {
		out[i] = key.public
	}
	return out, nil
}

// Prune deletes the keys no longer published.
func (k *Keys) Prune(ctx context.Context) error {
	_, err := store.Exec(ctx, k.db, "DELETE FROM "+k.n.Table("signing_keys")+" WHERE "+k.n.Column("published_until")+" < ?", k.now())
	return err
}
