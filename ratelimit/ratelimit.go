// Package ratelimit counts attempts in passbridge_rate_limits, so that
// every replica shares the limits: the portal's password checks (per
// directory account and per client address), its recoveries, and the admin
// token on the console and the admin API.
//
// The portal checks directory passwords with binds, and every failed bind
// counts towards the directory's lockout. Account limits make sure the
// portal alone can never reach that lockout: per account, at most N checks
// in ANY window of W (a true sliding window, not fixed windows, which allow
// 2N across a window boundary). They use N slot rows per account (bucket
// "pw:acct:<key>#i", window_start = when the slot was taken). Taking a slot
// is one conditional UPDATE (the slot's time is older than W) or the INSERT
// of a new slot, both atomic on every engine, so concurrent attempts on
// several replicas cannot take more than N. A check that succeeds gives its
// slot back: only failed passwords use up the allowance.
//
// Address limits are a plain fixed-window counter ("pw:ip:<key>"): they
// slow down password spraying, and no account depends on their exactness.
// A client address is counted by Address: an IPv4 address alone, an IPv6
// address by its /64.
package ratelimit

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/passbridge/passbridge/schema"
	"github.com/passbridge/passbridge/store"
)

// Limiter implements the rate limits on passbridge_rate_limits.
type Limiter struct {
	db  *store.DB
	n   schema.Names
	now func() time.Time
}

// New returns the limiter of the database whose names n gives.
func New(db *store.DB, n schema.Names) *Limiter {
	return &Limiter{db: db, n: n, now: func() time.Time { return time.Now().UTC().Truncate(time.Microsecond) }}
}

// released is the window_start of a slot given back: older than any window.
var released = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)

// Slot is a taken account slot ("" for none).
type Slot string

// bucketSize is the longest bucket name written: the column holds 255
// characters, and "#i" follows an account's name.
const bucketSize = 240

// bucket names a row: prefix and key, the key replaced by its SHA-256
// when the name would not fit (a long username, say), so that two keys
// never share a row by being cut to the same prefix.
func bucket(prefix, key string) string {
	if len(prefix)+len(key) <= bucketSize {
		return prefix + key
	}
	sum := sha256.Sum256([]byte(key))
	return prefix + "sha256:" + hex.EncodeToString(sum[:])
}

// Take reserves one of limit slots of an account for window. It returns
// ok=false, and when the oldest slot frees, if all are in use.
func (l *Limiter) Take(ctx context.Context, account string, limit int, window time.Duration) (Slot, bool, time.Time, error) {
	now := l.now()
	q := l.n.Column
	t := l.n.RateLimits
	name := bucket("pw:acct:", account)
	buckets := make([]any, limit)
	for i := range limit {
		b := name + "#" + strconv.Itoa(i)
		buckets[i] = b
		res, err := store.Exec(ctx, l.db, "UPDATE "+t+" SET "+q("window_start")+" = ?, "+q("hits")+" = "+q("hits")+" + 1 WHERE "+q("bucket")+" = ? AND "+q("window_start")+" <= ?",
			now, b, now.Add(-window))
		if err != nil {
			return "", false, time.Time{}, fmt.Errorf("rate limit: %w", err)
		}
		if n, _ := res.RowsAffected(); n == 1 {
			return Slot(b), true, time.Time{}, nil
		}
		_, err = store.Exec(ctx, l.db, "INSERT INTO "+t+" ("+q("bucket")+", "+q("window_start")+", "+q("hits")+") VALUES (?, ?, 1)", b, now)
		if err == nil {
			return Slot(b), true, time.Time{}, nil
		}
		if !store.IsUniqueViolation(err) {
			return "", false, time.Time{}, fmt.Errorf("rate limit: %w", err)
		}
		// The slot exists and is in use (or another request just took
		// it): try the next one.
	}
	var starts []time.Time
	in := "(" + strings.TrimSuffix(strings.Repeat("?, ", len(buckets)), ", ") + ")"
	if err := store.Select(ctx, l.db, &starts, "SELECT "+q("window_start")+" FROM "+t+" WHERE "+q("bucket")+" IN "+in, buckets...); err != nil || len(starts) == 0 {
		return "", false, now.Add(window), nil // refused anyway; the hint is a nicety
	}
	oldest := starts[0]
	for _, s := range starts[1:] {
		if s.Before(oldest) {
			oldest = s
		}
	}
	return "", false, oldest.Add(window), nil
}

// GiveBack frees a slot whose password check succeeded.
func (l *Limiter) GiveBack(ctx context.Context, s Slot) error {
	if s == "" {
		return nil
	}
	q := l.n.Column
	_, err := store.Exec(ctx, l.db, "UPDATE "+l.n.RateLimits+" SET "+q("window_start")+" = ? WHERE "+q("bucket")+" = ?", released, string(s))
	if err != nil {
		return fmt.Errorf("rate limit: %w", err)
	}
	return nil
}

// Hit counts one attempt under key (a client address, from Address, with
// a prefix naming what is counted) in the current fixed window and reports
// whether it is within limit; a refused hit is not counted.
func (l *Limiter) Hit(ctx context.Context, key string, limit int, window time.Duration) (bool, error) {
	now := l.now()
	q := l.n.Column
	t := l.n.RateLimits
	b := bucket("pw:ip:", key)
	for range 2 {
		res, err := store.Exec(ctx, l.db, "UPDATE "+t+" SET "+q("hits")+" = "+q("hits")+" + 1 WHERE "+q("bucket")+" = ? AND "+q("window_start")+" > ? AND "+q("hits")+" < ?",
			b, now.Add(-window), limit)
		if err != nil {
			return false, fmt.Errorf("rate limit: %w", err)
		}
		if n, _ := res.RowsAffected(); n == 1 {
			return true, nil
		}
		res, err = store.Exec(ctx, l.db, "UPDATE "+t+" SET "+q("window_start")+" = ?, "+q("hits")+" = 1 WHERE "+q("bucket")+" = ? AND "+q("window_start")+" <= ?",
			now, b, now.Add(-window))
		if err != nil {
			return false, fmt.Errorf("rate limit: %w", err)
		}
		if n, _ := res.RowsAffected(); n == 1 {
			return true, nil
		}
		_, err = store.Exec(ctx, l.db, "INSERT INTO "+t+" ("+q("bucket")+", "+q("window_start")+", "+q("hits")+") VALUES (?, ?, 1)", b, now)
		if err == nil {
			return true, nil
		}
		if !store.IsUniqueViolation(err) {
			return false, fmt.Errorf("rate limit: %w", err)
		}
		// Someone created the row in between: count against it.
	}
	return false, nil
}

// Exceeded reports whether key has used up limit in its current window,
// without counting anything: for limits that count failures only (Hit
// after a failure), checked before the attempt.
func (l *Limiter) Exceeded(ctx context.Context, key string, limit int, window time.Duration) (bool, error) {
	q := l.n.Column
	var hits []int
	err := store.Select(ctx, l.db, &hits, "SELECT "+q("hits")+" FROM "+l.n.RateLimits+" WHERE "+q("bucket")+" = ? AND "+q("window_start")+" > ?",
		bucket("pw:ip:", key), l.now().Add(-window))
	if err != nil {
		return false, fmt.Errorf("rate limit: %w", err)
	}
	return len(hits) > 0 && hits[0] >= limit, nil
}

// Unhit takes back an attempt whose check succeeded.
func (l *Limiter) Unhit(ctx context.Context, key string) error {
	q := l.n.Column
	_, err := store.Exec(ctx, l.db, "UPDATE "+l.n.RateLimits+" SET "+q("hits")+" = "+q("hits")+" - 1 WHERE "+q("bucket")+" = ? AND "+q("hits")+" > 0", bucket("pw:ip:", key))
	if err != nil {
		return fmt.Errorf("rate limit: %w", err)
	}
	return nil
}

// Address is the key a client address is counted under: an IPv4 address
// (also written IPv4-mapped, ::ffff:192.0.2.1) as itself, an IPv6 address
// by its /64, the smallest network one subscriber gets: a client that
// rotates through its /64 (2^64 addresses) is one client. What does not
// parse as an address is counted as it is.
func Address(ip string) string {
	a, err := netip.ParseAddr(strings.TrimSpace(ip))
	if err != nil {
		return ip
	}
	a = a.WithZone("").Unmap()
	if a.Is4() {
		return a.String()
	}
	return netip.PrefixFrom(a, 64).Masked().String()
}
