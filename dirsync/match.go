package dirsync

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/passbridge/passbridge/schema"
	"github.com/passbridge/passbridge/store"
)

// linkInput is an identity to link to a users row.
type linkInput struct {
	DirectoryID, Username, Email string
}

// linkResult is the outcome of the match rules for one identity.
type linkResult struct {
	State  string // schema.LinkLinked, LinkUnmatched or LinkAmbiguous
	Key    any    // the users row, when linked
	Rule   string // the rule that decided
	Detail string // why, in words
}

// match finds each identity's candidate users row by the configured rules,
// in order: the first rule that finds exactly one row makes it the
// candidate; a rule that finds several rows makes the identity ambiguous
// (never guessed); a row already linked to another identity is not taken
// again, nor a row that users_table.never_link protects. Whether a
// candidate is linked is decided when the run is read (claims: no two
// identities of a run may claim one row). Emails and usernames compare
// case-insensitively (SQLite's LOWER folds ASCII only, so the query also
// asks for the value as given and in upper case, and Go compares).
func (p *planner) match(ctx context.Context, in []linkInput) ([]linkResult, error) {
	s := p.s
	out := make([]linkResult, len(in))
	decided := make([]bool, len(in))
	tried := []string{}
	for _, rule := range s.cfg.Directory.Match {
		col := s.n.UserEmail
		if rule == "username" {
			col = s.n.UserUsername
		}
		if col == "" {
			continue
		}
		tried = append(tried, rule)
		value := func(li linkInput) string {
			if rule == "email" {
				return strings.ToLower(strings.TrimSpace(li.Email))
			}
			return strings.ToLower(strings.TrimSpace(li.Username))
		}
		var want []string
		for i, li := range in {
			if !decided[i] && value(li) != "" {
				want = append(want, value(li))
			}
		}
		rows, err := p.usersBy(ctx, col, want)
		if err != nil {
			return nil, err
		}
		for i, li := range in {
			v := value(li)
			if decided[i] || v == "" {
				continue
			}
			keys := rows[v]
			switch {
			case len(keys) == 1:
				out[i] = linkResult{State: schema.LinkLinked, Key: keys[0], Rule: rule,
					Detail: fmt.Sprintf("%s %s matches users row %s", rule, v, schema.KeyString(keys[0]))}
				decided[i] = true
			case len(keys) > 1:
				ks := make([]string, len(keys))
				for j, k := range keys {
					ks[j] = schema.KeyString(k)
				}
				out[i] = linkResult{State: schema.LinkAmbiguous, Rule: rule,
					Detail: fmt.Sprintf("%s %s matches %d users rows (%s): link one by hand", rule, v, len(keys), strings.Join(ks, ", "))}
				decided[i] = true
			}
		}
	}
	for i := range in {
		if !decided[i] {
			out[i] = linkResult{State: schema.LinkUnmatched, Detail: "no users row matches by " + strings.Join(tried, " or ")}
		}
	}
	// A row already linked to another identity is not taken again.
	var keys []any
	for _, r := range out {
		if r.State == schema.LinkLinked {
			keys = append(keys, r.Key)
		}
	}
	owners, err := p.keyOwners(ctx, keys)
	if err != nil {
		return nil, err
	}
	protected, err := p.neverLinked(ctx, keys)
	if err != nil {
		return nil, err
	}
	for i, r := range out {
		if r.State != schema.LinkLinked {
			continue
		}
		k := schema.KeyString(r.Key)
		if owner, ok := owners[k]; ok && owner != in[i].DirectoryID {
			out[i] = linkResult{State: schema.LinkAmbiguous, Rule: r.Rule,
				Detail: fmt.Sprintf("%s; but that row is already linked to identity %s: link one by hand", r.Detail, owner)}
		} else if protected[k] {
			// Ambiguous, not unmatched: provision: create must not make a
			// second row for an account that is protected on purpose.
			out[i] = linkResult{State: schema.LinkAmbiguous, Rule: r.Rule,
				Detail: fmt.Sprintf("%s; but users_table.never_link (%s) keeps that row from automatic linking: link it by hand if it is this person's", r.Detail, p.s.cfg.UsersTable.NeverLink)}
		}
	}
	return out, nil
}

// usersBy returns the keys of the users rows whose column equals one of
// the (lower-case) values, case-insensitively, by lower-case value.
func (d dbState) usersBy(ctx context.Context, col string, values []string) (map[string][]any, error) {
	s := d.s
	out := make(map[string][]any, len(values))
	uniq := make(map[string]bool, len(values))
	vals := make([]string, 0, len(values))
	for _, v := range values {
		if !uniq[v] {
			uniq[v] = true
			vals = append(vals, v)
		}
	}
	seen := make(map[string]bool, len(values))
	collect := func(q string, args []any) error {
		t0 := time.Now()
		defer func() { s.addDBTime(time.Since(t0)) }()
		rows, err := s.db.QueryxContext(ctx, s.db.Rebind(q), args...)
		if err != nil {
			return fmt.Errorf("match against %s: %w", s.n.Users, err)
		}
		defer rows.Close()
		for rows.Next() {
			var k, v any
			if err := rows.Scan(&k, &v); err != nil {
				return fmt.Errorf("match against %s: %w", s.n.Users, err)
			}
			k = schema.NormKey(k)
			lv := strings.ToLower(strings.TrimSpace(fmt.Sprint(schema.NormKey(v))))
			if !uniq[lv] {
				continue // a false positive of the LOWER/exact prefilter
			}
			id := lv + "\x00" + schema.KeyString(k)
			if seen[id] {
				continue
			}
			seen[id] = true
			out[lv] = append(out[lv], k)
		}
		if err := rows.Err(); err != nil {
			return fmt.Errorf("match against %s: %w", s.n.Users, err)
		}
		return nil
	}
	sel := "SELECT " + s.n.UserKey + " AS k, " + col + " AS v FROM " + s.n.Users + " WHERE "
	ci := false
	if s.n.Dialect.Kind() == store.MySQL {
		var err error
		if ci, err = s.caseInsensitive(ctx, col); err != nil {
			return nil, err
		}
	}
	for start := 0; start < len(vals); start += maxInList / 3 {
		chunk := vals[start:min(start+maxInList/3, len(vals))]
		// LOWER(col) IN (...) is what the lookup index (lower(col), made
		// by migrate) serves. It finds every case variant of an ASCII
		// value; for a non-ASCII one, whose case SQLite's LOWER (and
		// PostgreSQL's under the C locale) does not fold, the value as
		// given and in upper case are asked for too, in a query of their
		// own: in the same statement, the OR would make the database scan
		// the whole table for every chunk.
		var args, exact []any
		for _, v := range chunk {
			args = append(args, v)
			if !isASCII(v) {
				exact = append(exact, v, strings.ToUpper(v))
			}
		}
		lower := sel + "LOWER(" + col + ") IN (" + placeholders(len(args)) + ")"
		if ci && s.n.Dialect.Kind() == store.MySQL {
			// A case-insensitive (_ci) collation compares without case
			// already, and the plain index migrate makes on MySQL serves
			// col IN (...); LOWER(col) would scan the table.
			lower = sel + col + " IN (" + placeholders(len(args)) + ")"
		}
		if s.n.Dialect.Kind() == store.Postgres {
			// One index probe per value. PostgreSQL estimates an IN list
			// on lower(col) from the statistics of the expression index,
			// which exist only once the users table has been ANALYZEd
			// after the index was made; before that it guesses most of the
			// table and scans it all, for every chunk (35 ms per chunk of
			// a 100,000-row table, against 1 ms). A lateral subquery that
			// cannot be flattened into a join (OFFSET 0) can only be run
			// as one lookup per value, statistics or not.
			lower = "SELECT u.k, u.v FROM unnest(CAST(? AS text[])) AS w(x) CROSS JOIN LATERAL (SELECT " + s.n.UserKey + " AS k, " + col +
				" AS v FROM " + s.n.Users + " WHERE LOWER(" + col + ") = w.x OFFSET 0) AS u"
			args = []any{chunk}
		}
		if err := collect(lower, args); err != nil {
			return nil, err
		}
		if len(exact) > 0 {
			if err := collect(sel+col+" IN ("+placeholders(len(exact))+")", exact); err != nil {
				return nil, err
			}
		}
	}
	for v := range out {
		sort.Slice(out[v], func(i, j int) bool { return schema.KeyString(out[v][i]) < schema.KeyString(out[v][j]) })
	}
	return out, nil
}

// keyOwners returns which identity (directory ID) each users key is linked
// to, for the keys given.
func (d dbState) keyOwners(ctx context.Context, keys []any) (map[string]string, error) {
	s := d.s
	out := map[string]string{}
	for start := 0; start < len(keys); start += maxInList {
		chunk := keys[start:min(start+maxInList, len(keys))]
		var rows []struct {
			Key any    `db:"user_key"`
			ID  string `db:"directory_id"`
		}
		q := "SELECT " + s.n.Dialect.Quote("user_key") + ", " + s.n.Dialect.Quote("directory_id") + " FROM " + s.n.Identities +
			" WHERE " + s.n.Dialect.Quote("user_key") + " IN (" + placeholders(len(chunk)) + ")"
		t0 := time.Now()
		err := store.Select(ctx, s.db, &rows, q, chunk...)
		s.addDBTime(time.Since(t0))
		if err != nil {
			return nil, fmt.Errorf("read linked identities: %w", err)
		}
		for _, r := range rows {
			out[schema.KeyString(schema.NormKey(r.Key))] = r.ID
		}
	}
	return out, nil
}

// checkNeverLink has the database run users_table.never_link once, so that
// a condition it refuses stops the run before anything is read or written.
func (s *Syncer) checkNeverLink(ctx context.Context) error {
	cond := s.cfg.UsersTable.NeverLink
	if cond == "" {
		return nil
	}
	var n int
	t0 := time.Now()
	err := store.Get(ctx, s.db, &n, "SELECT COUNT(*) FROM "+s.n.Users+" WHERE ("+cond+")")
	s.addDBTime(time.Since(t0))
	if err != nil {
		return fmt.Errorf("users_table.never_link: the database refuses the condition %q on %s: %w", cond, s.n.Users, err)
	}
	return nil
}

// neverLinked returns which of the keys are users rows that
// users_table.never_link holds (none when it is not set).
func (d dbState) neverLinked(ctx context.Context, keys []any) (map[string]bool, error) {
	s := d.s
	out := map[string]bool{}
	cond := s.cfg.UsersTable.NeverLink
	if cond == "" {
		return out, nil
	}
	for start := 0; start < len(keys); start += maxInList {
		chunk := keys[start:min(start+maxInList, len(keys))]
		var got []any
		q := "SELECT " + s.n.UserKey + " FROM " + s.n.Users + " WHERE " + s.n.UserKey + " IN (" + placeholders(len(chunk)) + ") AND (" + cond + ")"
		t0 := time.Now()
		err := store.Select(ctx, s.db, &got, q, chunk...)
		s.addDBTime(time.Since(t0))
		if err != nil {
			return nil, fmt.Errorf("users_table.never_link (%s) against %s: %w", cond, s.n.Users, err)
		}
		for _, k := range got {
			out[schema.KeyString(schema.NormKey(k))] = true
		}
	}
	return out, nil
}

// isASCII reports whether s has no byte outside ASCII: then every
// database's LOWER folds all of its case.
func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

// caseInsensitive reports whether a users column (as quoted in s.n) has a
// case-insensitive collation on MySQL/MariaDB (utf8mb4_general_ci and the
// like: the usual ones), read once from the catalog (store's column facts,
// the reader migrate inspects the users table with).
func (s *Syncer) caseInsensitive(ctx context.Context, col string) (bool, error) {
	s.ciMu.Lock()
	defer s.ciMu.Unlock()
	if v, ok := s.ci[col]; ok {
		return v, nil
	}
	name := s.cfg.UsersTable.Email
	if col == s.n.UserUsername {
		name = s.cfg.UsersTable.Username
	}
	t0 := time.Now()
	cols, err := s.n.Dialect.Columns(ctx, s.db, s.cfg.UsersTable.Schema, s.cfg.UsersTable.Name)
	s.addDBTime(time.Since(t0))
	if err != nil {
		return false, fmt.Errorf("read the collation of %s.%s: %w", s.n.Users, name, err)
	}
	c, _ := s.n.Dialect.FindColumn(cols, name)
	v := strings.HasSuffix(strings.ToLower(c.Collation), "_ci")
	if s.ci == nil {
		s.ci = map[string]bool{}
	}
	s.ci[col] = v
	return v, nil
}
