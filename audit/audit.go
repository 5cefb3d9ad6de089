// Package audit is passbridge's audit trail: the one writer of the table
// <prefix>audit (Record) and its readers (Query, Export) and pruner (Prune).
//
// An event is named <area>.<action> (signin.password, passkey.register,
// link.issue, sync.run, ...), has a success flag, the actor (who acted: a
// username, "cli", "schedule", "admin-token"), the target (the user or thing
// it concerns), the client's IP and user agent when a browser was involved,
// and a detail JSON object.
//
// The table is append-only for passbridge: Record only INSERTs, nothing ever
// UPDATEs a row, and the only DELETE is Prune's, of events older than
// audit.retention.
//
//	err := audit.Record(ctx, tx, schema.NamesFor(cfg), audit.Event{
//		Event: "passkey.register", Success: true, Actor: "alice", Target: "alice",
//		Detail: audit.Detail(map[string]any{"name": "YubiKey 5"}),
//	})
//
// Query streams events newest first, a page at a time: no query result stays
// open while the callback runs, so the callback may use the database (even
// SQLite's single connection) and memory does not grow with the table.
package audit

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/passbridge/passbridge/internal/redact"
	"github.com/passbridge/passbridge/schema"
	"github.com/passbridge/passbridge/store"
)

// Event is one row of the audit trail.
type Event struct {
	ID      int64     `json:"id"`
	At      time.Time `json:"at"`
	Event   string    `json:"event"`
	Success bool      `json:"success"`
	// Actor is who acted; Target the user or thing the event concerns.
	Actor     string `json:"actor"`
	Target    string `json:"target"`
	IP        string `json:"ip"`
	UserAgent string `json:"user_agent"`
	// Detail is a JSON object (nil when there is none).
	Detail json.RawMessage `json:"detail,omitempty"`
}

// table is the name of the audit table in schema.Tables.
const table = "audit"

// Column sizes of the audit table (characters), from migrate's schema.
var sizes = columnSizes()

func columnSizes() map[string]int {
	for _, t := range schema.Tables {
		if t.Name != table {
			continue
		}
		m := map[string]int{}
		for _, c := range t.Columns {
			if c.Size > 0 {
				m[c.Name] = c.Size
			}
		}
		for _, c := range []string{"event", "actor", "target", "ip", "user_agent"} {
			if m[c] == 0 {
				panic("audit: migrate's schema has no size for audit." + c)
			}
		}
		return m
	}
	panic("audit: migrate's schema has no table " + table)
}

// Detail encodes v (usually a map[string]any) as an event's detail. Values
// that JSON cannot encode give a detail that says so instead of an error:
// an audit event is never lost to its detail.
func Detail(v any) json.RawMessage {
	if v == nil {
		return nil
	}
	b, err := json.Marshal(v)
	if err != nil {
		b, _ = json.Marshal(map[string]string{"detail_error": err.Error()})
	}
	if bytes.Equal(b, []byte("null")) || bytes.Equal(b, []byte("{}")) {
		return nil
	}
	return b
}

// Record appends one event to the audit trail through q (a DB or a
// transaction: record in the transaction of the change it describes, when
// there is one). At defaults to now; times are stored in UTC with
// microsecond precision. Strings are cut to the column sizes on a
// character boundary (invalid UTF-8 and NUL characters replaced), empty
// ones are stored as NULL. Detail must be empty or a JSON object. Event
// names must be 1 to 64 characters: a longer one is a bug, not data to cut.
func Record(ctx context.Context, q store.Execer, n schema.Names, e Event) error {
	if e.Event == "" {
		return errors.New("audit: an event needs a name")
	}
	name := clean(e.Event)
	if utf8.RuneCountInString(name) > sizes["event"] {
		return fmt.Errorf("audit: event name %.64q... is longer than %d characters", name, sizes["event"])
	}
	detail, err := storedDetail(e.Detail)
	if err != nil {
		return fmt.Errorf("audit %s: %w", name, err)
	}
	at := e.At
	if at.IsZero() {
		at = time.Now()
	}
	at = at.UTC().Truncate(time.Microsecond)
	c := n.Column
	_, err = store.Exec(ctx, q, "INSERT INTO "+n.Audit+" ("+c("at")+", "+c("event")+", "+c("success")+", "+c("actor")+", "+
		c("target")+", "+c("ip")+", "+c("user_agent")+", "+c("detail")+") VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
		at, name, e.Success, field(e.Actor, "actor"), field(e.Target, "target"), field(e.IP, "ip"), field(e.UserAgent, "user_agent"), detail)
	if err != nil {
		return fmt.Errorf("audit %s: %w", name, err)
	}
	return nil
}

// storedDetail is the detail column's value: nil (NULL) or a compact JSON
// object, link secrets redacted (a URL or an error message a caller put
// there must not be a usable link in the trail).
func storedDetail(d json.RawMessage) (any, error) {
	t := bytes.TrimSpace(d)
	if len(t) == 0 || bytes.Equal(t, []byte("null")) {
		return nil, nil
	}
	if t[0] != '{' || !json.Valid(t) {
		return nil, errors.New("the detail must be a JSON object")
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, t); err != nil {
		return nil, err
	}
	if buf.String() == "{}" {
		return nil, nil
	}
	return redact.Secrets(buf.String()), nil
}

// field is a string column's value: NULL when empty, else cleaned (link
// secrets redacted, as in the detail) and cut to the column's size.
func field(s, column string) any {
	if s == "" {
		return nil
	}
	s = clip(clean(redact.Secrets(s)), sizes[column])
	if s == "" {
		return nil
	}
	return s
}

// clean makes s storable on every database: valid UTF-8 (PostgreSQL and
// MySQL refuse anything else) without NUL characters (PostgreSQL text
// cannot hold them).
func clean(s string) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	return strings.ReplaceAll(s, "\x00", "\uFFFD")
}

// clip cuts s to at most n characters (VARCHAR(n) counts characters on
// PostgreSQL and MySQL utf8mb4), never inside one.
func clip(s string, n int) string {
	if n <= 0 {
		return ""
	}
	if len(s) <= n { // n bytes hold at most n characters
		return s
	}
	i := 0
	for pos := range s {
		if i == n {
			return s[:pos]
		}
		i++
	}
	return s
}
