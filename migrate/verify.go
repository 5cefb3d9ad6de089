package migrate

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"fmt"
	"io"
	"time"
)

// PasswordReport compares the password column with the baseline taken
// before the first change. Only rows that existed at the baseline count:
// a baseline row whose hash changed or that was deleted is a violation; a
// row added since is reported as added, never as a violation.
type PasswordReport struct {
	Column       string    `json:"column"`
	TakenAt      time.Time `json:"taken_at"`
	BaselineRows int64     `json:"baseline_rows"`
	CurrentRows  int64     `json:"current_rows"`
	Unchanged    int64     `json:"unchanged"`
	Changed      int64     `json:"changed"`
	Deleted      int64     `json:"deleted"`
	Added        int64     `json:"added"`
	Chunks       int       `json:"chunks"`
	// BadChunks are the key ranges whose checksum differs from the baseline.
	BadChunks []ChunkReport `json:"bad_chunks,omitempty"`
	// Rows names the first violating rows (at most 100).
	Rows []RowViolation `json:"rows,omitempty"`
	OK   bool           `json:"ok"`
}

// ChunkReport is one key range whose checksum no longer matches.
type ChunkReport struct {
	Chunk        int    `json:"chunk"`
	FirstKey     string `json:"first_key"`
	LastKey      string `json:"last_key"`
	BaselineRows int64  `json:"baseline_rows"`
	Changed      int64  `json:"changed"`
	Deleted      int64  `json:"deleted"`
}

// RowViolation is one baseline row whose hash changed or that is gone.
type RowViolation struct {
	Key   string `json:"key"`
	Chunk int    `json:"chunk"`
	Kind  string `json:"kind"` // changed | deleted
}

const maxRowViolations = 100

type chunkNow struct {
	rows, present, changed int64
	checksum               string
}

// verifyPasswords recomputes every chunk over the baseline's keys and
// compares.
func (m *migrator) verifyPasswords(ctx context.Context, q querier) (*PasswordReport, error) {
	b := m.bl
	rep := &PasswordReport{Column: m.cfg.UsersTable.Password}
	type stored struct {
		first, last, checksum string
		rows                  int64
	}
	base := map[int]stored{}
	rows, err := q.QueryContext(ctx, "SELECT chunk, first_key, last_key, row_count, checksum, taken_at FROM "+b.chunks+" ORDER BY chunk")
	if err != nil {
		return nil, fmt.Errorf("read baseline: %w", err)
	}
	var order []int
	for rows.Next() {
		var n int
		var s stored
		var at flexTime
		if err := rows.Scan(&n, &s.first, &s.last, &s.rows, &s.checksum, &at); err != nil {
			rows.Close()
			return nil, fmt.Errorf("read baseline: %w", err)
		}
		if rep.TakenAt.IsZero() || at.t.Before(rep.TakenAt) {
			rep.TakenAt = at.t
		}
		base[n] = s
		order = append(order, n)
		rep.BaselineRows += s.rows
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read baseline: %w", err)
	}
	rep.Chunks = len(order)

	now, err := m.chunksNow(ctx, q)
	if err != nil {
		return nil, fmt.Errorf("recompute checksums: %w", err)
	}
	var bad []int
	for _, n := range order {
		s, c := base[n], now[n]
		deleted := c.rows - c.present
		rep.Changed += c.changed
		rep.Deleted += deleted
		if c.checksum != s.checksum || c.rows != s.rows || c.changed > 0 || deleted > 0 {
			rep.BadChunks = append(rep.BadChunks, ChunkReport{Chunk: n, FirstKey: s.first, LastKey: s.last, BaselineRows: s.rows, Changed: c.changed, Deleted: deleted})
			bad = append(bad, n)
		}
	}
	for n := range now {
		if _, ok := base[n]; !ok { // fingerprints without a chunk summary: tampering
			rep.BadChunks = append(rep.BadChunks, ChunkReport{Chunk: n, FirstKey: "?", LastKey: "?"})
			bad = append(bad, n)
		}
	}
	for _, n := range bad {
		if len(rep.Rows) >= maxRowViolations {
			break
		}
		v, err := m.rowViolations(ctx, q, n, base[n].first, base[n].last, maxRowViolations-len(rep.Rows))
		if err != nil {
			return nil, err
		}
		rep.Rows = append(rep.Rows, v...)
	}
	if err := q.QueryRowContext(ctx, "SELECT count(*) FROM "+b.users).Scan(&rep.CurrentRows); err != nil {
		return nil, fmt.Errorf("count rows: %w", err)
	}
	rep.Unchanged = rep.BaselineRows - rep.Changed - rep.Deleted
	rep.Added = rep.CurrentRows - (rep.BaselineRows - rep.Deleted)
	rep.OK = len(rep.BadChunks) == 0
	return rep, nil
}

// chunksNow computes, per chunk, the checksum of the baseline keys over
// the live table: a deleted row shows as "key:!", a NULL hash as "key:-".
func (m *migrator) chunksNow(ctx context.Context, q querier) (map[int]chunkNow, error) {
	b := m.bl
	out := map[int]chunkNow{}
	join := " FROM " + b.rows + " b LEFT JOIN " + b.users + " u ON u." + b.key + " = b.user_key"
	k := b.keyText("b.user_key")
	var query string
	switch m.eng {
	case Postgres:
		fp := b.fp("u")
		query = "SELECT b.chunk, count(*), count(u." + b.key + "), " +
			"count(*) FILTER (WHERE u." + b.key + " IS NOT NULL AND " + fp + " IS DISTINCT FROM b.fingerprint), " +
			"encode(sha256(convert_to(string_agg(" + k + " || ':' || CASE WHEN u." + b.key + " IS NULL THEN '!' ELSE coalesce(" + fp + ", '-') END, ',' ORDER BY b.user_key), 'UTF8')), 'hex')" +
			join + " GROUP BY b.chunk"
	case MySQL:
		if _, err := q.ExecContext(ctx, "SET SESSION group_concat_max_len = 67108864"); err != nil {
			return nil, err
		}
		fp := b.fp("u")
		query = "SELECT b.chunk, COUNT(*), COUNT(u." + b.key + "), " +
			"SUM(CASE WHEN u." + b.key + " IS NOT NULL AND NOT (" + fp + " <=> b.fingerprint) THEN 1 ELSE 0 END), " +
			"SHA2(GROUP_CONCAT(CONCAT(" + k + ", ':', CASE WHEN u." + b.key + " IS NULL THEN '!' ELSE COALESCE(" + fp + ", '-') END) ORDER BY b.user_key SEPARATOR ','), 256)" +
			join + " GROUP BY b.chunk"
	default:
		return m.sqliteChunksNow(ctx, q, join, k)
	}
	rows, err := q.QueryContext(ctx, query)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	for rows.Next() {
		var n int
		var c chunkNow
		if err := rows.Scan(&n, &c.rows, &c.present, &c.changed, &c.checksum); err != nil {
			return nil, err
		}
		out[n] = c
	}
	return out, rows.Err()
}

func (m *migrator) sqliteChunksNow(ctx context.Context, q querier, join, k string) (map[int]chunkNow, error) {
	b := m.bl
	rows, err := q.QueryContext(ctx, "SELECT b.chunk, "+k+", b.fingerprint, u."+b.key+" IS NOT NULL, u."+b.pw+join+" ORDER BY b.chunk, b.user_key")
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[int]chunkNow{}
	cur := -1
	var c chunkNow
	h := sha256.New()
	flush := func() {
		if cur >= 0 {
			c.checksum = hex.EncodeToString(h.Sum(nil))
			out[cur] = c
		}
	}
	for rows.Next() {
		var n int
		var key string
		var fp sql.NullString
		var present bool
		var pw any
		if err := rows.Scan(&n, &key, &fp, &present, &pw); err != nil {
			return nil, err
		}
		if n != cur {
			flush()
			cur, c = n, chunkNow{}
			h.Reset()
		} else {
			h.Write([]byte(","))
		}
		c.rows++
		tok := "!"
		if present {
			c.present++
			now := fingerprintValue(pw)
			tok = "-"
			if now != nil {
				tok = now.(string)
			}
			if (now == nil) != !fp.Valid || (now != nil && now.(string) != fp.String) {
				c.changed++
			}
		}
		h.Write([]byte(key + ":" + tok))
	}
	flush()
	return out, rows.Err()
}

// rowViolations lists the changed and deleted rows of one chunk.
func (m *migrator) rowViolations(ctx context.Context, q querier, chunk int, first, last string, limit int) ([]RowViolation, error) {
	b := m.bl
	// The chunk's key range, through the primary key; a chunk with no
	// summary (tampering) is searched by number.
	cond, args := "b.chunk = ?", []any{chunk}
	if first != "" && last != "" {
		cond, args = "b.user_key >= ? AND b.user_key <= ?", []any{b.keyArg(first), b.keyArg(last)}
		if m.eng == Postgres {
			cond = "b.user_key >= CAST(? AS " + b.keyType + ") AND b.user_key <= CAST(? AS " + b.keyType + ")"
		}
	}
	join := " FROM " + b.rows + " b LEFT JOIN " + b.users + " u ON u." + b.key + " = b.user_key WHERE " + cond
	k := b.keyText("b.user_key")
	var out []RowViolation
	if m.eng == SQLite {
		rows, err := q.QueryContext(ctx, "SELECT "+k+", b.fingerprint, u."+b.key+" IS NOT NULL, u."+b.pw+join+" ORDER BY b.user_key", args...)
		if err != nil {
			return nil, err
		}
		defer rows.Close()
		for rows.Next() && len(out) < limit {
			var key string
			var fp sql.NullString
			var present bool
			var pw any
			if err := rows.Scan(&key, &fp, &present, &pw); err != nil {
				return nil, err
			}
			now := fingerprintValue(pw)
			switch {
			case !present:
				out = append(out, RowViolation{Key: key, Chunk: chunk, Kind: "deleted"})
			case (now == nil) != !fp.Valid || (now != nil && now.(string) != fp.String):
				out = append(out, RowViolation{Key: key, Chunk: chunk, Kind: "changed"})
			}
		}
		return out, rows.Err()
	}
	differs := b.fp("u") + " IS DISTINCT FROM b.fingerprint"
	if m.eng == MySQL {
		differs = "NOT (" + b.fp("u") + " <=> b.fingerprint)"
	}
	query := "SELECT " + k + ", CASE WHEN u." + b.key + " IS NULL THEN 'deleted' ELSE 'changed' END" + join +
		" AND (u." + b.key + " IS NULL OR " + differs + ") ORDER BY b.user_key LIMIT " + fmt.Sprint(limit)
	rows, err := q.QueryContext(ctx, m.eng.dialect().Rebind(query), args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	for rows.Next() {
		var v RowViolation
		if err := rows.Scan(&v.Key, &v.Kind); err != nil {
			return nil, err
		}
		v.Chunk = chunk
		out = append(out, v)
	}
	return out, rows.Err()
}

// VerifyReport is the result of verify: the schema is as planned and the
// password hashes are as they were before apply.
type VerifyReport struct {
	OK bool `json:"ok"`
	// Problems are the schema findings: pending steps, drift, collisions.
	Problems  []string        `json:"problems,omitempty"`
	Passwords *PasswordReport `json:"passwords,omitempty"`
	// NoBaseline is set when no baseline was ever taken (apply never ran,
	// or users_table.password is not configured).
	NoBaseline string `json:"no_baseline,omitempty"`
}

func (m *migrator) verify(ctx context.Context) (*VerifyReport, error) {
	p, err := m.plan(ctx, m.db)
	if err != nil {
		return nil, err
	}
	rep := &VerifyReport{}
	baselineApplied := false
	for _, s := range p.Steps {
		switch {
		case s.State != StateApplied:
			msg := fmt.Sprintf("%s: %s", s.ID, s.State)
			if s.Detail != "" {
				msg += " (" + s.Detail + ")"
			}
			rep.Problems = append(rep.Problems, msg)
		case s.Drift != "":
			rep.Problems = append(rep.Problems, fmt.Sprintf("%s: %s", s.ID, s.Drift))
		}
		if s.Kind == "take-baseline" && s.State == StateApplied {
			baselineApplied = true
		}
	}
	switch {
	case m.bl == nil:
		rep.NoBaseline = "users_table.password is not configured: there is no password column to check"
	case !baselineApplied:
		rep.NoBaseline = "no baseline of the password column yet: it is taken by the first apply"
	default:
		if rep.Passwords, err = m.verifyPasswords(ctx, m.db); err != nil {
			return nil, err
		}
	}
	rep.OK = len(rep.Problems) == 0 && (rep.Passwords == nil || rep.Passwords.OK) && rep.NoBaseline == ""
	if m.bl == nil {
		rep.OK = len(rep.Problems) == 0
	}
	return rep, nil
}

// WriteText prints a verify report for people.
func (r *VerifyReport) WriteText(w io.Writer) error {
	ew := &errWriter{w: w}
	if r.OK {
		ew.printf("verify: OK\n")
	} else {
		ew.printf("verify: FAILED\n")
	}
	for _, p := range r.Problems {
		ew.printf("  schema: %s\n", p)
	}
	if len(r.Problems) == 0 {
		ew.printf("  schema: every step applied, no drift\n")
	}
	if r.NoBaseline != "" {
		ew.printf("  passwords: %s\n", r.NoBaseline)
	}
	if p := r.Passwords; p != nil {
		ew.printf("  passwords: column %s, baseline taken %s: %d rows in %d chunks\n", p.Column, p.TakenAt.Format(time.RFC3339), p.BaselineRows, p.Chunks)
		ew.printf("    unchanged %d, changed %d, deleted %d; added since the baseline %d (not a violation); %d rows now\n",
			p.Unchanged, p.Changed, p.Deleted, p.Added, p.CurrentRows)
		for _, c := range p.BadChunks {
			ew.printf("    chunk %d, keys %s .. %s (%d rows at baseline): checksum differs; %d changed, %d deleted\n",
				c.Chunk, c.FirstKey, c.LastKey, c.BaselineRows, c.Changed, c.Deleted)
		}
		for _, v := range p.Rows {
			ew.printf("    key %s: %s\n", v.Key, v.Kind)
		}
		if n := p.Changed + p.Deleted; n > int64(len(p.Rows)) && len(p.Rows) > 0 {
			ew.printf("    (the first %d of %d are listed)\n", len(p.Rows), n)
		}
	}
	return ew.err
}
