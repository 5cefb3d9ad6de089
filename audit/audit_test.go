package audit

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/csv"
	"encoding/json"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/jmoiron/sqlx"

	"github.com/passbridge/passbridge/config"
	"github.com/passbridge/passbridge/store"
)

var t0 = time.Date(2026, 3, 1, 10, 0, 0, 123456000, time.UTC)

// catalogue is a small trail: the portal's events and names with LIKE's
// special characters.
func catalogue() []Event {
	h := func(n int) time.Time { return t0.Add(time.Duration(n) * time.Hour) }
	return []Event{
		{At: h(0), Event: "signin.password", Success: true, Actor: "alice", Target: "alice", IP: "192.0.2.1", UserAgent: "Firefox"},
		{At: h(1), Event: "signin.failed", Actor: "ALICE", Target: "ALICE", IP: "192.0.2.1", Detail: Detail(map[string]any{"method": "password", "reason": "bad password"})},
		{At: h(2), Event: "signout", Success: true, Actor: "alice", Target: "alice"},
		{At: h(3), Event: "passkey.register", Success: true, Actor: "it-admin", Target: "Alice"},
		{At: h(4), Event: "signin.passkey", Success: true, Actor: "bob", Target: "bob"},
		{At: h(5), Event: "link.issue", Success: true, Actor: "cli:root", Target: "bob", Detail: json.RawMessage(`{"kind": "enroll"}`)},
		{At: h(6), Event: "x_y.a", Success: true},
		{At: h(6), Event: "xay.b", Success: true},
		{At: h(6), Event: "100%.a", Success: true},
		{At: h(6), Event: "100x.a", Success: true},
		{At: h(6), Event: "a!b.c", Success: true},
		{At: h(6), Event: "a!!b.c", Success: true},
		{At: h(6), Event: "a\\b.c", Success: true},
	}
}

func TestQueryFilters(t *testing.T) {
	forEachDriver(t, func(t *testing.T, e *env) {
		ids := e.record(t, catalogue()...)
		for _, tc := range []struct {
			name string
			f    Filter
			want []string
		}{
			{"all, newest first", Filter{Limit: 3}, []string{"a\\b.c", "a!!b.c", "a!b.c"}},
			{"prefix with *", Filter{Event: "signin.*"}, []string{"signin.passkey", "signin.failed", "signin.password"}},
			{"prefix with .", Filter{Event: "signin."}, []string{"signin.passkey", "signin.failed", "signin.password"}},
			{"prefix without .", Filter{Event: "sign*"}, []string{"signin.passkey", "signout", "signin.failed", "signin.password"}},
			{"exact", Filter{Event: "signout"}, []string{"signout"}},
			{"exact is not a prefix", Filter{Event: "signin"}, nil},
			{"* is everything", Filter{Event: "*", Limit: 1}, []string{"a\\b.c"}},
			{"_ is no wildcard", Filter{Event: "x_y.*"}, []string{"x_y.a"}},
			{"% is no wildcard", Filter{Event: "100%.*"}, []string{"100%.a"}},
			{"the escape character is literal", Filter{Event: "a!b.*"}, []string{"a!b.c"}},
			{"a backslash is literal", Filter{Event: `a\b.*`}, []string{`a\b.c`}},
			{"user, actor or target", Filter{User: "alice"}, []string{"passkey.register", "signout", "signin.failed", "signin.password"}},
			{"user, case-insensitive", Filter{User: "ALICE"}, []string{"passkey.register", "signout", "signin.failed", "signin.password"}},
			{"user, target only", Filter{User: "Bob"}, []string{"link.issue", "signin.passkey"}},
			{"user is exact", Filter{User: "ali"}, nil},
			{"user is no pattern", Filter{User: "%"}, nil},
			{"user with a colon", Filter{User: "CLI:root"}, []string{"link.issue"}},
			{"failed only", Filter{Success: ptr(false)}, []string{"signin.failed"}},
			{"succeeded, by user and prefix", Filter{Success: ptr(true), User: "alice", Event: "signin.*"}, []string{"signin.password"}},
			{"time range: since inclusive, until exclusive", Filter{Since: t0.Add(time.Hour), Until: t0.Add(3 * time.Hour)}, []string{"signout", "signin.failed"}},
			{"since to the microsecond", Filter{Since: t0, Until: t0.Add(time.Microsecond)}, []string{"signin.password"}},
			{"since in another zone", Filter{Since: t0.Add(4 * time.Hour).In(time.FixedZone("CET", 3600)), Event: "signin.*"}, []string{"signin.passkey"}},
			{"before an id", Filter{Before: ids[3], Limit: 2}, []string{"signout", "signin.failed"}},
			{"before the first", Filter{Before: ids[0]}, nil},
		} {
			got := names(e.query(t, tc.f))
			if !slices.Equal(got, tc.want) {
				t.Errorf("%s: %+v: got %q, want %q", tc.name, tc.f, got, tc.want)
			}
		}

		// The events read back as written.
		got := e.query(t, Filter{Event: "signin.failed"})
		if len(got) != 1 {
			t.Fatalf("signin.failed: %+v", got)
		}
		want := Event{ID: ids[1], At: t0.Add(time.Hour), Event: "signin.failed", Actor: "ALICE", Target: "ALICE", IP: "192.0.2.1",
			Detail: json.RawMessage(`{"method":"password","reason":"bad password"}`)}
		if g := got[0]; g.ID != want.ID || !g.At.Equal(want.At) || g.At.Location() != time.UTC || g.Event != want.Event || g.Success ||
			g.Actor != want.Actor || g.Target != want.Target || g.IP != want.IP || g.UserAgent != "" || string(g.Detail) != string(want.Detail) {
			t.Fatalf("read back\n%+v\nwant\n%+v", g, want)
		}
		if d := e.query(t, Filter{Event: "link.issue"})[0].Detail; string(d) != `{"kind":"enroll"}` {
			t.Fatalf("detail not compacted: %s", d)
		}

		// Bad filters are errors, not queries.
		for _, f := range []Filter{{Event: "sign*in"}, {Event: "*.failed"}, {Limit: -1}, {Before: -1},
			{Since: t0, Until: t0}, {User: strings.Repeat("u", 300)}} {
			if err := Query(context.Background(), e.db, e.cfg, f, func(Event) error { return nil }); err == nil {
				t.Errorf("filter %+v: no error", f)
			}
		}
	})
}

func TestQueryPages(t *testing.T) {
	defer func(n int) { pageSize = n }(pageSize)
	pageSize = 3
	forEachDriver(t, func(t *testing.T, e *env) {
		var evs []Event
		for i := range 10 {
			evs = append(evs, Event{Event: "page.test", Success: i%2 == 0, Actor: "u", At: t0.Add(time.Duration(i) * time.Second)})
		}
		ids := e.record(t, evs...)
		idsOf := func(evs []Event) []int64 {
			var out []int64
			for _, e := range evs {
				out = append(out, e.ID)
			}
			return out
		}
		rev := slices.Clone(ids)
		slices.Reverse(rev)
		if got := idsOf(e.query(t, Filter{})); !slices.Equal(got, rev) {
			t.Fatalf("all: %v, want %v", got, rev)
		}
		for _, limit := range []int{1, 3, 4, 6, 9, 10, 11} {
			got := idsOf(e.query(t, Filter{Limit: limit}))
			if want := rev[:min(limit, len(rev))]; !slices.Equal(got, want) {
				t.Fatalf("limit %d: %v, want %v", limit, got, want)
			}
		}
		// Page through with Before, as the admin console does.
		var all []int64
		before := int64(0)
		for {
			page := idsOf(e.query(t, Filter{Limit: 4, Before: before}))
			all = append(all, page...)
			if len(page) < 4 {
				break
			}
			before = page[len(page)-1]
		}
		if !slices.Equal(all, rev) {
			t.Fatalf("paged: %v, want %v", all, rev)
		}
		// A filter across pages.
		if got := idsOf(e.query(t, Filter{Success: ptr(false)})); !slices.Equal(got, []int64{ids[9], ids[7], ids[5], ids[3], ids[1]}) {
			t.Fatalf("failed across pages: %v", got)
		}
		// The callback may use the database (no result set is open) and
		// its error stops the query.
		n := 0
		stop := context.Canceled
		err := Query(context.Background(), e.db, e.cfg, Filter{}, func(Event) error {
			n++
			if err := Record(context.Background(), e.db, e.n, Event{Event: "nested.write", At: t0}); err != nil {
				return err
			}
			if n == 5 {
				return stop
			}
			return nil
		})
		if err != stop || n != 5 {
			t.Fatalf("stopped query: %v after %d", err, n)
		}
	})
}

func TestRecord(t *testing.T) {
	forEachDriver(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		long := strings.Repeat("é", 300)
		emoji := strings.Repeat("🙂", 600)
		before := time.Now().UTC().Add(-time.Second)
		e.record(t,
			Event{Event: "clip.test", Actor: long, Target: "x" + long, IP: strings.Repeat("1", 100), UserAgent: emoji},
			Event{Event: "null.test", Success: true},
			Event{Event: "dirty.test", Actor: "bad\xffutf8", Target: "nul\x00byte"},
		)
		got := e.query(t, Filter{Event: "clip.test"})[0]
		if got.Actor != strings.Repeat("é", 255) || got.Target != "x"+strings.Repeat("é", 254) || got.IP != strings.Repeat("1", 64) ||
			got.UserAgent != strings.Repeat("🙂", 512) {
			t.Fatalf("clipped: actor %d, target %d, ip %d, ua %d characters", utf8.RuneCountInString(got.Actor),
				utf8.RuneCountInString(got.Target), len(got.IP), utf8.RuneCountInString(got.UserAgent))
		}
		if got.Success || got.At.Before(before) || got.At.After(time.Now().Add(time.Second)) || got.At.Nanosecond()%1000 != 0 {
			t.Fatalf("defaults: %+v", got)
		}
		// Empty strings are NULL.
		var nulls int
		c := e.n.Column
		if err := store.Get(ctx, e.db, &nulls, "SELECT COUNT(*) FROM "+e.n.Audit+" WHERE "+c("event")+" = ? AND "+c("actor")+" IS NULL AND "+
			c("target")+" IS NULL AND "+c("ip")+" IS NULL AND "+c("user_agent")+" IS NULL AND "+c("detail")+" IS NULL", "null.test"); err != nil || nulls != 1 {
			t.Fatalf("NULL columns: %d, %v", nulls, err)
		}
		if g := e.query(t, Filter{Event: "null.test"})[0]; !g.Success || g.Actor != "" || g.Detail != nil {
			t.Fatalf("null.test: %+v", g)
		}
		if g := e.query(t, Filter{Event: "dirty.test"})[0]; g.Actor != "bad\uFFFDutf8" || g.Target != "nul\uFFFDbyte" {
			t.Fatalf("dirty strings: %q %q", g.Actor, g.Target)
		}

		// In a transaction, rolled back with it.
		err := e.db.InTx(ctx, func(tx *sqlx.Tx) error {
			if err := Record(ctx, tx, e.n, Event{Event: "tx.test"}); err != nil {
				return err
			}
			return context.Canceled
		})
		if err != context.Canceled || len(e.query(t, Filter{Event: "tx.test"})) != 0 {
			t.Fatalf("rolled back record: %v", err)
		}

		// Refused: no name, a name too long, a detail that is no object.
		for _, bad := range []Event{{}, {Event: strings.Repeat("e", 65)}, {Event: "d", Detail: json.RawMessage(`[1]`)},
			{Event: "d", Detail: json.RawMessage(`{"a":`)}, {Event: "d", Detail: json.RawMessage(`"s"`)}} {
			if err := Record(ctx, e.db, e.n, bad); err == nil {
				t.Errorf("Record(%+v): no error", bad)
			}
		}
		// Empty details are none.
		e.record(t, Event{Event: "empty.detail", Detail: json.RawMessage(` { } `)}, Event{Event: "empty.detail", Detail: json.RawMessage(`null`)},
			Event{Event: "empty.detail", Detail: Detail(map[string]any{})}, Event{Event: "empty.detail", Detail: Detail(nil)})
		for _, g := range e.query(t, Filter{Event: "empty.detail"}) {
			if g.Detail != nil {
				t.Fatalf("empty detail stored as %s", g.Detail)
			}
		}
	})
}

func TestDetail(t *testing.T) {
	if d := Detail(map[string]any{"b": 1, "a": "x"}); string(d) != `{"a":"x","b":1}` {
		t.Fatalf("Detail: %s", d)
	}
	if d := Detail(map[string]any{"c": make(chan int)}); !strings.Contains(string(d), "detail_error") || !json.Valid(d) {
		t.Fatalf("unencodable detail: %s", d)
	}
	if d := Detail(nil); d != nil {
		t.Fatalf("nil detail: %s", d)
	}
	// A detail that is not JSON (not written by Record) still exports as
	// JSON.
	if e := (row{Detail: nullString("not json")}).event(); string(e.Detail) != `{"unparsed":"not json"}` {
		t.Fatalf("unparsed detail: %s", e.Detail)
	}
}

func TestExportCSV(t *testing.T) {
	forEachDriver(t, func(t *testing.T, e *env) {
		evs := []Event{
			{At: t0, Event: "csv.formula", Actor: "=HYPERLINK(\"http://evil.example\",\"click\")", Target: "+1+2", IP: "-3", UserAgent: "@SUM(A1)"},
			{At: t0.Add(time.Second), Event: "csv.control", Actor: "\tcmd", Target: "\rcmd", UserAgent: " =not at the start",
				Detail: Detail(map[string]any{"note": "=1+1", "multi": "a\nb"})},
			{At: t0.Add(2 * time.Second), Event: "csv.quoting", Success: true, Actor: `Smith, "Bob"`, Target: "line1\nline2\r\nline3",
				UserAgent: "Jürgen Groß 日本語 🙂", Detail: Detail(map[string]any{"q": `"quoted", comma`})},
		}
		ids := e.record(t, evs...)
		var buf bytes.Buffer
		n, err := Export(context.Background(), e.db, e.cfg, Filter{Event: "csv.*"}, "csv", &buf)
		if err != nil || n != 3 {
			t.Fatalf("export: %d, %v", n, err)
		}
		text := buf.String()
		t.Logf("CSV export:\n%s", text)
		if !utf8.Valid(buf.Bytes()) {
			t.Fatal("CSV is not UTF-8")
		}
		r := csv.NewReader(&buf)
		rows, err := r.ReadAll()
		if err != nil {
			t.Fatalf("the export is not CSV: %v", err)
		}
		if len(rows) != 4 || !slices.Equal(rows[0], CSVHeader) {
			t.Fatalf("rows: %q", rows)
		}
		want := [][]string{
			{itoa(ids[2]), "2026-03-01T10:00:02.123456Z", "csv.quoting", "true", `Smith, "Bob"`, "line1\nline2\nline3", "", "Jürgen Groß 日本語 🙂", `{"q":"\"quoted\", comma"}`},
			{itoa(ids[1]), "2026-03-01T10:00:01.123456Z", "csv.control", "false", "'\tcmd", "'\rcmd", "", " =not at the start", `{"multi":"a\nb","note":"=1+1"}`},
			{itoa(ids[0]), "2026-03-01T10:00:00.123456Z", "csv.formula", "false", "'=HYPERLINK(\"http://evil.example\",\"click\")", "'+1+2", "'-3", "'@SUM(A1)", ""},
		}
		for i, w := range want {
			if !slices.Equal(rows[i+1], w) {
				t.Errorf("row %d:\n got %q\nwant %q", i+1, rows[i+1], w)
			}
		}
		// csv.Reader turns \r\n inside a quoted field into \n; the file
		// keeps it.
		if !strings.Contains(text, "line2\r\nline3") {
			t.Fatalf("CR LF in a cell lost:\n%q", text)
		}

		// Empty: the header alone.
		buf.Reset()
		if n, err := Export(context.Background(), e.db, e.cfg, Filter{Event: "none"}, "", &buf); err != nil || n != 0 ||
			buf.String() != strings.Join(CSVHeader, ",")+"\n" {
			t.Fatalf("empty CSV export: %d, %v, %q", n, err, buf.String())
		}
	})
}

func TestExportJSON(t *testing.T) {
	defer func(n int) { pageSize = n }(pageSize)
	pageSize = 2
	forEachDriver(t, func(t *testing.T, e *env) {
		e.record(t, catalogue()...)
		var buf bytes.Buffer
		n, err := Export(context.Background(), e.db, e.cfg, Filter{}, "json", &buf)
		if err != nil || n != len(catalogue()) {
			t.Fatalf("export: %d, %v", n, err)
		}
		t.Logf("JSON export:\n%s", buf.String())
		if !json.Valid(buf.Bytes()) {
			t.Fatalf("invalid JSON:\n%s", buf.String())
		}
		var got []Event
		if err := json.Unmarshal(buf.Bytes(), &got); err != nil {
			t.Fatal(err)
		}
		want := e.query(t, Filter{})
		if len(got) != len(want) {
			t.Fatalf("%d events, want %d", len(got), len(want))
		}
		for i := range got {
			g, w := got[i], want[i]
			if g.ID != w.ID || !g.At.Equal(w.At) || g.Event != w.Event || g.Success != w.Success || g.Actor != w.Actor ||
				g.Target != w.Target || g.IP != w.IP || g.UserAgent != w.UserAgent || string(g.Detail) != string(w.Detail) {
				t.Fatalf("event %d:\n%+v\nwant\n%+v", i, g, w)
			}
		}
		// The shape: snake_case keys, detail only when there is one.
		var raw []map[string]any
		if err := json.Unmarshal(buf.Bytes(), &raw); err != nil {
			t.Fatal(err)
		}
		for _, r := range raw {
			for _, k := range []string{"id", "at", "event", "success", "actor", "target", "ip", "user_agent"} {
				if _, ok := r[k]; !ok {
					t.Fatalf("no %q in %v", k, r)
				}
			}
			d, ok := r["detail"]
			if r["event"] == "signin.failed" {
				if m, isObj := d.(map[string]any); !isObj || m["reason"] != "bad password" {
					t.Fatalf("detail of signin.failed: %v", d)
				}
			} else if r["event"] == "signout" && ok {
				t.Fatalf("signout has a detail: %v", d)
			}
		}
		if strings.Contains(buf.String(), `\u003c`) || strings.Contains(buf.String(), "null") {
			t.Fatalf("unexpected escapes or nulls:\n%s", buf.String())
		}

		buf.Reset()
		if n, err := Export(context.Background(), e.db, e.cfg, Filter{User: "nobody"}, "JSON", &buf); err != nil || n != 0 || buf.String() != "[]\n" {
			t.Fatalf("empty JSON export: %d, %v, %q", n, err, buf.String())
		}
		// Bad format or filter: an error, nothing written.
		buf.Reset()
		if _, err := Export(context.Background(), e.db, e.cfg, Filter{}, "xml", &buf); err == nil || buf.Len() != 0 {
			t.Fatalf("xml: %v, %q", err, buf.String())
		}
		if _, err := Export(context.Background(), e.db, e.cfg, Filter{Event: "a*b"}, "json", &buf); err == nil || buf.Len() != 0 {
			t.Fatalf("bad filter: %v, %q", err, buf.String())
		}
	})
}

func TestPrune(t *testing.T) {
	defer func(n int64) { pruneBatch = n }(pruneBatch)
	pruneBatch = 2
	forEachDriver(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		now := t0
		day := 24 * time.Hour
		var evs []Event
		for i := range 7 {
			evs = append(evs, Event{Event: "old", At: now.Add(-40*day - time.Duration(i)*time.Minute)})
		}
		evs = append(evs,
			Event{Event: "old", At: now.Add(-30*day - time.Microsecond)},
			Event{Event: "kept", At: now.Add(-30 * day)}, // exactly at the cutoff: kept
			Event{Event: "kept", At: now.Add(-29 * day)},
			Event{Event: "kept", At: now},
			Event{Event: "old", At: now.Add(-50 * day)}, // out of order: a late id for an old event
		)
		e.record(t, evs...)
		// A gap in the ids.
		if _, err := store.Exec(ctx, e.db, "DELETE FROM "+e.n.Audit+" WHERE "+e.n.Column("id")+" IN (?, ?)", 2, 3); err != nil {
			t.Fatal(err)
		}

		// Retention 0 keeps everything.
		cfg := *e.cfg
		cfg.Audit.Retention = 0
		if n, err := Prune(ctx, e.db, &cfg, now); err != nil || n != 0 {
			t.Fatalf("retention 0: %d, %v", n, err)
		}
		cfg.Audit.Retention = config.Duration(30 * day)
		n, err := Prune(ctx, e.db, &cfg, now)
		if err != nil || n != 7 {
			t.Fatalf("prune: %d, %v", n, err)
		}
		left := e.query(t, Filter{})
		if got := names(left); !slices.Equal(got, []string{"kept", "kept", "kept"}) {
			t.Fatalf("left: %q", got)
		}
		if n, err := Prune(ctx, e.db, &cfg, now); err != nil || n != 0 {
			t.Fatalf("second prune: %d, %v", n, err)
		}
		// A cancelled context stops it.
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		if _, err := Prune(cctx, e.db, &cfg, now.Add(365*day)); err == nil {
			t.Fatal("cancelled prune: no error")
		}
		if n, err := Prune(ctx, e.db, &cfg, now.Add(365*day)); err != nil || n != 3 {
			t.Fatalf("prune a year later: %d, %v", n, err)
		}
	})
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

func nullString(s string) sql.NullString { return sql.NullString{String: s, Valid: true} }

// TestRecordRedactsLinkSecrets: whatever a caller puts in an audit entry,
// the secret of an enrollment or recovery link (/link/<secret>) is stored
// as a fingerprint, not as a usable link.
func TestRecordRedactsLinkSecrets(t *testing.T) {
	forEachDriver(t, func(t *testing.T, e *env) {
		const secret = "YaEbLpAnSuqajo4kpF76LrTaZ1ee1PUWpz6HxL1H_9k"
		url := "https://passkeys.corp.example/link/" + secret
		e.record(t, Event{Event: "redact.test", Target: url, UserAgent: "preview-bot (fetching /link/" + secret + ")",
			Detail: Detail(map[string]any{"url": url, "error": "GET /link/" + secret + "?x=1: timeout"})})
		got := e.query(t, Filter{Event: "redact.test"})[0]
		all := got.Target + got.UserAgent + string(got.Detail)
		if strings.Contains(all, secret) {
			t.Fatalf("the link's secret is stored: %+v %s", got, got.Detail)
		}
		if !strings.Contains(got.Target, "/link/[redacted:") || !strings.Contains(string(got.Detail), `?x=1: timeout`) {
			t.Fatalf("redacted entry: %+v %s", got, got.Detail)
		}
	})
}
