package appsignin

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/passbridge/passbridge/internal/testdb"
	"github.com/passbridge/passbridge/schema"
)

// TestKeyRotationAcrossReplicas: two replicas on one PostgreSQL database
// create and use the same key per rotation period (one row, whoever comes
// first, also when both come at once); the next period's key is published
// before it signs; a token signed just before a rotation still verifies
// against the other replica's JWKS after it, until it has expired, and the
// old key is no longer published once its last token has.
func TestKeyRotationAcrossReplicas(t *testing.T) {
	db, cfg := testdb.Open(t, "postgres")
	n := schema.NamesFor(cfg)
	const rotation, lifetime = time.Hour, 2 * time.Minute
	var mu sync.Mutex
	now := time.Date(2026, 3, 1, 0, 59, 0, 0, time.UTC) // one minute before a period ends
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	travel := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	a, b := NewKeys(db, n, rotation, lifetime, clock), NewKeys(db, n, rotation, lifetime, clock)
	ctx := context.Background()

	// Both replicas start at once.
	var wg sync.WaitGroup
	keys := make([]*signingKey, 2)
	for i, k := range []*Keys{a, b} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var err error
			if keys[i], err = k.Signing(ctx); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	if keys[0].id != keys[1].id {
		t.Fatalf("the replicas sign with different keys: %s and %s", keys[0].id, keys[1].id)
	}
	var rows int
	if err := db.GetContext(ctx, &rows, "SELECT COUNT(*) FROM "+n.Table("signing_keys")); err != nil {
		t.Fatal(err)
	}
	if rows != 2 {
		t.Errorf("%d key rows, want 2 (this period's and the next one's)", rows)
	}

	// A token signed by replica a just before the rotation.
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: keys[0].private, KeyID: keys[0].id}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	issued := clock()
	token, err := jwt.Signed(signer).Claims(jwt.Claims{Subject: "41", Expiry: jwt.NewNumericDate(issued.Add(lifetime))}).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	verify := func(k *Keys) error {
		published, err := k.Published(ctx)
		if err != nil {
			return err
		}
		tok, err := jwt.ParseSigned(token, []jose.SignatureAlgorithm{jose.ES256})
		if err != nil {
			return err
		}
		var c jwt.Claims
		if err := tok.Claims(jose.JSONWebKeySet{Keys: published}, &c); err != nil {
			return err
		}
		return c.ValidateWithLeeway(jwt.Expected{Time: clock()}, 0)
	}
	next, err := b.Published(ctx)
	if err != nil || len(next) != 2 {
		t.Fatalf("published before the rotation: %d keys (%v), want the current and the next", len(next), err)
	}

	travel(90 * time.Second) // the next period: b rotates
	kb, err := b.Signing(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if kb.id == keys[0].id || kb.id != next[1].KeyID {
		t.Errorf("after the rotation b signs with %s; want the key published in advance, %s", kb.id, next[1].KeyID)
	}
	if ka, err := a.Signing(ctx); err != nil || ka.id != kb.id {
		t.Errorf("after the rotation a signs with %v (%v), b with %s", ka, err, kb.id)
	}
	if err := verify(b); err != nil {
		t.Errorf("a token signed before the rotation, not expired, does not verify against the other replica's keys: %v", err)
	}

	travel(lifetime + skew + keyCacheTTL) // its last token has expired
	published, err := b.Published(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range published {
		if k.KeyID == keys[0].id {
			t.Errorf("the old key is still published after its last token expired")
		}
	}
	if err := verify(b); err == nil {
		t.Errorf("an expired token signed by a retired key still verifies")
	}
	if err := b.Prune(ctx); err != nil {
		t.Fatal(err)
	}
	if err := db.GetContext(ctx, &rows, "SELECT COUNT(*) FROM "+n.Table("signing_keys")); err != nil {
		t.Fatal(err)
	}
	if rows != 2 {
		t.Errorf("%d key rows after pruning, want 2 (this period's and the next one's)", rows)
	}
}
