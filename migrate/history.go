package migrate

import (
	"context"
	"fmt"
	"strings"
	"time"
)

// HistoryEntry is one row of <prefix>schema_history: a step that was
// applied, with the checksum of the SQL it ran.
type HistoryEntry struct {
	StepID     string    `json:"step_id"`
	Kind       string    `json:"kind"`
	Checksum   string    `json:"checksum"`
	Statements string    `json:"-"`
	AppliedAt  time.Time `json:"applied_at"`
	DurationMS int64     `json:"duration_ms"`
	Version    string    `json:"passbridge_version"`
}

type history struct {
	eng   Engine
	table string // quoted, qualified
}

// read returns the recorded steps; none when the table does not exist yet.
func (h history) read(ctx context.Context, q querier, exists bool) (map[string]HistoryEntry, error) {
	out := map[string]HistoryEntry{}
	if !exists {
		return out, nil
	}
	rows, err := q.QueryContext(ctx, "SELECT step_id, kind, checksum, statements, applied_at, duration_ms, passbridge_version FROM "+h.table)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", h.table, err)
	}
	defer rows.Close()
	for rows.Next() {
		var e HistoryEntry
		var at flexTime
		if err := rows.Scan(&e.StepID, &e.Kind, &e.Checksum, &e.Statements, &at, &e.DurationMS, &e.Version); err != nil {
			return nil, fmt.Errorf("read %s: %w", h.table, err)
		}
		e.AppliedAt = at.t
		out[e.StepID] = e
	}
	return out, rows.Err()
}

// record writes (or rewrites) the row of a step.
func (h history) record(ctx context.Context, q querier, s Step, took time.Duration, version string) error {
	if _, err := q.ExecContext(ctx, h.eng.dialect().Rebind("DELETE FROM "+h.table+" WHERE step_id = ?"), s.ID()); err != nil {
		return fmt.Errorf("record %s: %w", s.ID(), err)
	}
	_, err := q.ExecContext(ctx, h.eng.dialect().Rebind("INSERT INTO "+h.table+
		" (step_id, kind, checksum, statements, applied_at, duration_ms, passbridge_version) VALUES (?, ?, ?, ?, ?, ?, ?)"),
		s.ID(), s.Kind(), s.Checksum(), strings.Join(s.SQL(), ";\n"), time.Now().UTC().Truncate(time.Microsecond), took.Milliseconds(), version)
	if err != nil {
		return fmt.Errorf("record %s: %w", s.ID(), err)
	}
	return nil
}

func (h history) forget(ctx context.Context, q querier, id string) error {
	if _, err := q.ExecContext(ctx, h.eng.dialect().Rebind("DELETE FROM "+h.table+" WHERE step_id = ?"), id); err != nil {
		return fmt.Errorf("forget %s: %w", id, err)
	}
	return nil
}

// flexTime scans a timestamp whatever the driver hands back: time.Time,
// or text when a MySQL DSN lacks parseTime or SQLite stored a string.
type flexTime struct{ t time.Time }

func (f *flexTime) Scan(v any) error {
	switch x := v.(type) {
	case nil:
		f.t = time.Time{}
	case time.Time:
		f.t = x.UTC()
	case []byte:
		return f.parse(string(x))
	case string:
		return f.parse(x)
	default:
		return fmt.Errorf("unexpected time value %T", v)
	}
	return nil
}

func (f *flexTime) parse(s string) error {
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02 15:04:05.999999999-07:00", "2006-01-02 15:04:05.999999999 -0700 MST",
		"2006-01-02 15:04:05.999999999", "2006-01-02T15:04:05.999999999", "2006-01-02 15:04:05"} {
		if t, err := time.Parse(layout, s); err == nil {
			f.t = t.UTC()
			return nil
		}
	}
	return fmt.Errorf("cannot read time %q", s)
}
