package signin

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/passbridge/passbridge/config"
	"github.com/passbridge/passbridge/store"
)

// TestSealedCeremony: a sign-in's begin writes nothing; the sealed value
// opens on any replica of the database (one key, made by whoever needs it
// first) and only as itself: another kind, a changed byte, a cut value, an
// expired one or one sealed under a deleted key is "gone". Of many
// concurrent claims of one ceremony on two replicas exactly one wins, and
// after it the ceremony's row holds its result; once claimed, a ceremony
// is gone for every later finish. On SQLite, PostgreSQL and MariaDB (the
// claim is an insert whose duplicate is the error of the losers).
func TestSealedCeremony(t *testing.T) {
	eachDatabase(t, func(t *testing.T, db *store.DB, cfg *config.Config) {
		var mu sync.Mutex
		now := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
		clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
		travel := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
		replica := func() *Core {
			c := newCore(t, cfg, db)
			c.SetClock(clock)
			return c
		}
		a, b := replica(), replica()
		ctx := context.Background()
		rows := func(table string) int {
			var n int
			if err := store.Get(ctx, db, &n, "SELECT COUNT(*) FROM "+table); err != nil {
				t.Fatal(err)
			}
			return n
		}

		id, assertion, err := a.BeginLogin(ctx, KindLogin, false)
		if err != nil {
			t.Fatal(err)
		}
		if n := rows(a.n.Ceremonies); n != 0 {
			t.Errorf("begin stored %d ceremony rows, want none", n)
		}
		if !ValidCeremony(id) || !strings.HasPrefix(id, sealPrefix) {
			t.Fatalf("ceremony ID %q is not a sealed one", id)
		}
		cer, err := b.peekCeremony(ctx, id, KindLogin)
		if err != nil {
			t.Fatalf("the other replica cannot open the ceremony: %v", err)
		}
		if string(cer.Session.Challenge) != string(assertion.Response.Challenge.String()) {
			t.Errorf("challenge %q, want the one sent, %q", cer.Session.Challenge, assertion.Response.Challenge.String())
		}
		if n := rows(a.n.Table("ceremony_keys")); n != 1 {
			t.Errorf("%d ceremony keys, want 1", n)
		}

		gone := func(what, value, kind string) {
			t.Helper()
			if _, err := b.peekCeremony(ctx, value, kind); !errors.Is(err, ErrCeremonyGone) {
				t.Errorf("%s: err = %v, want ErrCeremonyGone", what, err)
			}
		}
		flip := func(s string, i int) string {
			r := []byte(s)
			if r[i] == 'A' {
				r[i] = 'B'
			} else {
				r[i] = 'A'
			}
			return string(r)
		}
		gone("another kind", id, KindAppLogin)
		gone("a byte changed in the sealed part", flip(id, len(id)-10), KindLogin)
		gone("a byte changed in the key ID", flip(id, len(sealPrefix)+3), KindLogin)
		gone("cut", id[:len(id)-5], KindLogin)
		gone("no sealed part", id[:len(sealPrefix)+32], KindLogin)
		gone("oversized", id+strings.Repeat("A", maxSealed), KindLogin)
		gone("garbage", sealPrefix+"../../etc/passwd", KindLogin)

		// Many finishes of one ceremony at once, on both replicas:
		// one claim.
		var wg sync.WaitGroup
		var won sync.Map
		for i := range 16 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c := []*Core{a, b}[i%2]
				cer, err := c.peekCeremony(ctx, id, KindLogin)
				if err != nil {
					t.Error(err)
					return
				}
				err = db.InTxShared(ctx, func(tx *sqlx.Tx) error { return c.claimIn(ctx, tx, cer, ResultSucceeded) })
				switch {
				case err == nil:
					won.Store(i, true)
				case !errors.Is(err, ErrCeremonyGone):
					t.Errorf("claim %d: %v", i, err)
				}
			}()
		}
		wg.Wait()
		winners := 0
		won.Range(func(_, _ any) bool { winners++; return true })
		if winners != 1 {
			t.Errorf("%d claims won, want exactly 1", winners)
		}
		var result string
		if err := store.Get(ctx, db, &result, "SELECT "+a.q("result")+" FROM "+a.n.Ceremonies+" WHERE "+a.q("id")+" = ?", HashSecret(id)); err != nil {
			t.Fatal(err)
		}
		if result != ResultSucceeded {
			t.Errorf("claimed ceremony's result %q, want %q", result, ResultSucceeded)
		}
		// Cancelling a finished ceremony is gone too.
		if err := a.CancelCeremony(ctx, id, KindLogin); !errors.Is(err, ErrCeremonyGone) {
			t.Errorf("cancel after the claim: %v, want ErrCeremonyGone", err)
		}

		// Expired: opens no more, even unclaimed.
		late, _, err := a.BeginLogin(ctx, KindLogin, false)
		if err != nil {
			t.Fatal(err)
		}
		travel(cfg.Portal.CeremonyTimeout.D())
		gone("expired", late, KindLogin)

		// The keys deleted (a rotation): a ceremony sealed before is
		// gone once the replicas' caches have expired, and a new one
		// seals under a new key.
		old, _, err := a.BeginLogin(ctx, KindLogin, false)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := store.Exec(ctx, db, "DELETE FROM "+a.n.Table("ceremony_keys")); err != nil {
			t.Fatal(err)
		}
		travel(sealKeyTTL + time.Second)
		gone("sealed under a deleted key", old, KindLogin)
		fresh, _, err := b.BeginLogin(ctx, KindLogin, false)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := a.peekCeremony(ctx, fresh, KindLogin); err != nil {
			t.Errorf("a ceremony under the new key: %v", err)
		}
	})
}
