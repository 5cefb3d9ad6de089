package enroll

import (
	"context"
	"fmt"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/passbridge/passbridge/store"
)

// The portal checks directory passwords with binds, and every failed bind
// counts towards the directory's lockout. The limiter makes sure the portal
// alone can never reach that lockout: per account, at most N checks in ANY
// window of W (a true sliding window, not fixed windows, which allow 2N
// across a window boundary), shared by every replica through the database.
//
// Account limits use N slot rows per account (bucket "pw:acct:<key>#i",
// window_start = when the slot was taken). Taking a slot is one conditional
// UPDATE (the slot's time is older than W) or the INSERT of a new slot, both
// atomic on every engine, so concurrent attempts on several replicas cannot
// take more than N. A check that succeeds gives its slot back: only failed
// passwords use up the allowance. Address limits are a plain fixed-window
// counter: they slow down password spraying, and no account depends on
// their exactness.

// limiter implements the rate limits on passbridge_rate_limits.
type limiter struct {
	data *data
}

// released is the window_start of a slot given back: older than any window.
var released = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)

// slot is a taken account slot ("" for none).
type slot string

// take reserves one of limit slots of an account for window. It returns
// ok=false, and when the oldest slot frees, if all are in use.
func (l *limiter) take(ctx context.Context, account string, limit int, window time.Duration) (slot, bool, time.Time, error) {
	now := l.data.now()
	q := l.data.q
	t := l.data.n.RateLimits
	buckets := make([]any, limit)
	for i := range limit {
		bucket := clip("pw:acct:"+account, 250) + "#" + strconv.Itoa(i)
		buckets[i] = bucket
		res, err := store.Exec(ctx, l.data.db, "UPDATE "+t+" SET "+q("window_start")+" = ?, "+q("hits")+" = "+q("hits")+" + 1 WHERE "+q("bucket")+" = ? AND "+q("window_start")+" <= ?",
			now, bucket, now.Add(-window))
		if err != nil {
			return "", false, time.Time{}, fmt.Errorf("rate limit: %w", err)
		}
		if n, _ := res.RowsAffected(); n == 1 {
			return slot(bucket), true, time.Time{}, nil
		}
		_, err = store.Exec(ctx, l.data.db, "INSERT INTO "+t+" ("+l.data.cols("", "bucket", "window_start", "hits")+") VALUES (?, ?, 1)", bucket, now)
		if err == nil {
			return slot(bucket), true, time.Time{}, nil
		}
		if !store.IsUniqueViolation(err) {
			return "", false, time.Time{}, fmt.Errorf("rate limit: %w", err)
		}
		// The slot exists and is in use (or another request just took
		// it): try the next one.
	}
	var starts []time.Time
	in := "(" + placeholders(len(buckets)) + ")"
	if err := store.Select(ctx, l.data.db, &starts, "SELECT "+q("window_start")+" FROM "+t+" WHERE "+q("bucket")+" IN "+in, buckets...); err != nil || len(starts) == 0 {
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

// give back frees a slot whose password check succeeded.
func (l *limiter) giveBack(ctx context.Context, s slot) error {
	if s == "" {
		return nil
	}
	q := l.data.q
	_, err := store.Exec(ctx, l.data.db, "UPDATE "+l.data.n.RateLimits+" SET "+q("window_start")+" = ? WHERE "+q("bucket")+" = ?", released, string(s))
	if err != nil {
		return fmt.Errorf("rate limit: %w", err)
	}
	return nil
}

// hit counts one attempt from a client address in the current fixed window
// and reports whether it is within limit; a refused hit is not counted.
func (l *limiter) hit(ctx context.Context, key string, limit int, window time.Duration) (bool, error) {
	now := l.data.now()
	q := l.data.q
	t := l.data.n.RateLimits
	bucket := clip("pw:ip:"+key, 255)
	for range 2 {
		res, err := store.Exec(ctx, l.data.db, "UPDATE "+t+" SET "+q("hits")+" = "+q("hits")+" + 1 WHERE "+q("bucket")+" = ? AND "+q("window_start")+" > ? AND "+q("hits")+" < ?",
			bucket, now.Add(-window), limit)
		if err != nil {
			return false, fmt.Errorf("rate limit: %w", err)
		}
		if n, _ := res.RowsAffected(); n == 1 {
			return true, nil
		}
		res, err = store.Exec(ctx, l.data.db, "UPDATE "+t+" SET "+q("window_start")+" = ?, "+q("hits")+" = 1 WHERE "+q("bucket")+" = ? AND "+q("window_start")+" <= ?",
			now, bucket, now.Add(-window))
		if err != nil {
			return false, fmt.Errorf("rate limit: %w", err)
		}
		if n, _ := res.RowsAffected(); n == 1 {
			return true, nil
		}
		_, err = store.Exec(ctx, l.data.db, "INSERT INTO "+t+" ("+l.data.cols("", "bucket", "window_start", "hits")+") VALUES (?, ?, 1)", bucket, now)
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

// unhit takes back an address attempt whose password check succeeded.
func (l *limiter) unhit(ctx context.Context, key string) error {
	q := l.data.q
	_, err := store.Exec(ctx, l.data.db, "UPDATE "+l.data.n.RateLimits+" SET "+q("hits")+" = "+q("hits")+" - 1 WHERE "+q("bucket")+" = ? AND "+q("hits")+" > 0", clip("pw:ip:"+key, 255))
	if err != nil {
		return fmt.Errorf("rate limit: %w", err)
	}
	return nil
}

func placeholders(n int) string {
	if n <= 0 {
		return ""
	}
	b := make([]byte, 0, 3*n)
	for i := range n {
		if i > 0 {
			b = append(b, ", "...)
		}
		b = append(b, '?')
	}
	return string(b)
}

// clip cuts s to at most n bytes on a rune boundary.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	// Back off to the start of the character the cut falls in: at most
	// three bytes, so that a run of stray continuation bytes (not UTF-8
	// anyway) cannot cut the value down to nothing.
	for back := 0; n > 0 && back < utf8.UTFMax-1 && !utf8.RuneStart(s[n]); back++ {
		n--
	}
	return s[:n]
}
