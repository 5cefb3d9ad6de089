package audit

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/passbridge/passbridge/config"
	"github.com/passbridge/passbridge/schema"
	"github.com/passbridge/passbridge/store"
)

// Filter selects events. The zero Filter selects every event.
type Filter struct {
	// Event is an event name (exact: "signin.failed"), or a prefix ending
	// in "." or "*" ("signin.", "signin.*", "admin*"). A "*" anywhere but
	// at the end is an error.
	Event string
	// User is an actor or target, exact but case-insensitive.
	User string
	// Success, when set, keeps only successful (true) or failed (false)
	// events.
	Success *bool
	// Since (inclusive) and Until (exclusive) bound the event time; zero
	// is unbounded.
	Since, Until time.Time
	// Before keeps events whose id is below it: pass the id of the last
	// event of a page to get the next (older) one. 0 is unbounded.
	Before int64
	// Limit is the most events to return; 0 is no limit.
	Limit int
}

// maxFilterLen bounds the user-given strings of a Filter (the columns are
// no longer).
const maxFilterLen = 255

// pageSize is how many rows Query reads per statement (tests make it
// smaller).
var pageSize = 500

// Query calls fn for every event that f selects, newest first (by id). It
// reads a page at a time, so memory does not grow with the table, and no
// result set is open while fn runs (fn may use db). An error of fn stops
// the query and is returned as it is.
func Query(ctx context.Context, db *store.DB, cfg *config.Config, f Filter, fn func(Event) error) error {
	n := schema.NamesFor(cfg)
	where, args, err := f.where(n)
	if err != nil {
		return err
	}
	return query(ctx, db, n, where, args, f.Before, f.Limit, fn)
}

func query(ctx context.Context, q store.Querier, n schema.Names, where []string, args []any, before int64, limit int, fn func(Event) error) error {
	c := n.Column
	sel := "SELECT " + c("id") + ", " + c("at") + ", " + c("event") + ", " + c("success") + ", " + c("actor") + ", " + c("target") + ", " +
		c("ip") + ", " + c("user_agent") + ", " + c("detail") + " FROM " + n.Audit
	left := limit
	for {
		size := pageSize
		if limit > 0 {
			size = min(size, left)
		}
		w, a := where, args
		if before > 0 {
			w = append(w[:len(w):len(w)], c("id")+" < ?")
			a = append(a[:len(a):len(a)], before)
		}
		stmt := sel
		if len(w) > 0 {
			stmt += " WHERE " + strings.Join(w, " AND ")
		}
		stmt += " ORDER BY " + c("id") + " DESC LIMIT " + strconv.Itoa(size)
		var rows []row
		if err := store.Select(ctx, q, &rows, stmt, a...); err != nil {
			return fmt.Errorf("read the audit trail (%s): %w", n.Audit, err)
		}
		for _, r := range rows {
			if err := fn(r.event()); err != nil {
				return err
			}
		}
		if len(rows) < size {
			return nil
		}
		if limit > 0 {
			if left -= len(rows); left <= 0 {
				return nil
			}
		}
		before = rows[len(rows)-1].ID
		if err := ctx.Err(); err != nil {
			return err
		}
	}
}

// row is an audit row as stored.
type row struct {
	ID        int64          `db:"id"`
	At        time.Time      `db:"at"`
	Event     string         `db:"event"`
	Success   bool           `db:"success"`
	Actor     sql.NullString `db:"actor"`
	Target    sql.NullString `db:"target"`
	IP        sql.NullString `db:"ip"`
	UserAgent sql.NullString `db:"user_agent"`
	Detail    sql.NullString `db:"detail"`
}

func (r row) event() Event {
	e := Event{ID: r.ID, At: r.At.UTC(), Event: r.Event, Success: r.Success, Actor: r.Actor.String, Target: r.Target.String,
		IP: r.IP.String, UserAgent: r.UserAgent.String}
	if d := strings.TrimSpace(r.Detail.String); d != "" && d != "null" {
		if json.Valid([]byte(d)) {
			e.Detail = json.RawMessage(d)
		} else {
			// Not written by Record: keep the text, as valid JSON.
			e.Detail, _ = json.Marshal(map[string]string{"unparsed": d})
		}
	}
	return e
}

// where returns the SQL conditions of f (joined by AND, columns quoted by
// n) and their arguments: every value from f is an argument.
func (f Filter) where(n schema.Names) ([]string, []any, error) {
	c := n.Column
	var w []string
	var a []any
	if f.Limit < 0 {
		return nil, nil, fmt.Errorf("audit filter: limit %d: expected 0 (no limit) or more", f.Limit)
	}
	if f.Before < 0 {
		return nil, nil, fmt.Errorf("audit filter: before %d: expected an event id", f.Before)
	}
	exact, prefix, err := ParseEventPattern(f.Event)
	if err != nil {
		return nil, nil, err
	}
	switch {
	case exact != "":
		w = append(w, c("event")+" = ?")
		a = append(a, exact)
	case prefix != "":
		w = append(w, c("event")+" LIKE ? ESCAPE '"+likeEscape+"'")
		a = append(a, likePrefix(prefix))
	}
	if u := clean(strings.TrimSpace(f.User)); u != "" {
		if len(u) > maxFilterLen {
			return nil, nil, fmt.Errorf("audit filter: user: longer than %d characters", maxFilterLen)
		}
		w = append(w, "(LOWER("+c("actor")+") = LOWER(?) OR LOWER("+c("target")+") = LOWER(?))")
		a = append(a, u, u)
	}
	if f.Success != nil {
		w = append(w, c("success")+" = ?")
		a = append(a, *f.Success)
	}
	if !f.Since.IsZero() {
		w = append(w, c("at")+" >= ?")
		a = append(a, f.Since.UTC())
	}
	if !f.Until.IsZero() {
		w = append(w, c("at")+" < ?")
		a = append(a, f.Until.UTC())
	}
	if !f.Since.IsZero() && !f.Until.IsZero() && !f.Until.After(f.Since) {
		return nil, nil, fmt.Errorf("audit filter: until (%s) is not after since (%s)", f.Until.UTC().Format(time.RFC3339), f.Since.UTC().Format(time.RFC3339))
	}
	return w, a, nil
}

// likeEscape is the LIKE escape character: not a backslash, which MySQL
// string literals would take as an escape of their own.
const likeEscape = "!"

var likeEscaper = strings.NewReplacer(likeEscape, likeEscape+likeEscape, "%", likeEscape+"%", "_", likeEscape+"_")

// likePrefix is the LIKE pattern of the strings that begin with prefix.
func likePrefix(prefix string) string { return likeEscaper.Replace(prefix) + "%" }

// ParseEventPattern reads Filter.Event: an exact event name, or a prefix
// ending in "." or "*" ("signin.", "signin.*" and "signin*" are prefixes
// "signin.", "signin." and "signin"). "" and "*" select every event (both
// results empty). Invalid UTF-8 is replaced as Record replaces it.
func ParseEventPattern(s string) (exact, prefix string, err error) {
	s = clean(strings.TrimSpace(s)) // as Record stores names
	if len(s) > maxFilterLen {
		return "", "", fmt.Errorf("audit filter: event: longer than %d characters", maxFilterLen)
	}
	if s == "" {
		return "", "", nil
	}
	if strings.HasSuffix(s, "*") {
		p := strings.TrimSuffix(s, "*")
		if strings.Contains(p, "*") {
			return "", "", fmt.Errorf("audit filter: event %q: a * may only end the pattern (as in signin.*)", s)
		}
		return "", p, nil
	}
	if strings.Contains(s, "*") {
		return "", "", fmt.Errorf("audit filter: event %q: a * may only end the pattern (as in signin.*)", s)
	}
	if strings.HasSuffix(s, ".") {
		return "", s, nil
	}
	return s, "", nil
}

// ParseSince reads the start of a time range: a duration back from now
// ("24h", "90m", "7d"), a date ("2026-01-02", midnight UTC) or an RFC 3339
// time ("2026-01-02T15:04:05Z", "2026-01-02T15:04:05.5+01:00").
func ParseSince(s string, now time.Time) (time.Time, error) { return parseTime(s, now, false) }

// ParseUntil reads the end of a time range, which is exclusive: as
// ParseSince, except that a date means the end of that day (UTC), so that
// --since 2026-01-02 --until 2026-01-02 is that one day.
func ParseUntil(s string, now time.Time) (time.Time, error) { return parseTime(s, now, true) }

func parseTime(s string, now time.Time, end bool) (time.Time, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return time.Time{}, errors.New("empty time: expected a duration (24h, 7d), a date (2026-01-02) or an RFC 3339 time")
	}
	if d, ok := parseAgo(s); ok {
		return now.UTC().Add(-d), nil
	}
	if t, err := time.Parse(time.DateOnly, s); err == nil {
		if end {
			t = t.AddDate(0, 0, 1)
		}
		return t, nil
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t.UTC(), nil
	}
	return time.Time{}, fmt.Errorf("time %q: expected a duration back from now (24h, 90m, 7d), a date (2026-01-02) or an RFC 3339 time (2026-01-02T15:04:05Z)", s)
}

// parseAgo reads a positive duration: Go's syntax ("24h", "1h30m") or whole
// days ("7d").
func parseAgo(s string) (time.Duration, bool) {
	if days, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.Atoi(days)
		if err != nil || n <= 0 || n > 100*366 {
			return 0, false
		}
		return time.Duration(n) * 24 * time.Hour, true
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return 0, false
	}
	return d, true
}
