package dirsync

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"time"

	"github.com/passbridge/passbridge/schema"
	"github.com/passbridge/passbridge/store"
)

// identityRow is an identity as stored.
type identityRow struct {
	ID          int64          `db:"id" json:"id"`
	DirectoryID string         `db:"directory_id" json:"directory_id"`
	DN          string         `db:"dn" json:"dn"`
	Username    string         `db:"username" json:"username"`
	Email       sql.NullString `db:"email" json:"-"`
	DisplayName sql.NullString `db:"display_name" json:"-"`
	Department  sql.NullString `db:"department" json:"-"`
	State       string         `db:"state" json:"state"`
	StateReason sql.NullString `db:"state_reason" json:"-"`
	UserKey     any            `db:"user_key" json:"-"`
	LinkState   string         `db:"link_state" json:"link_state"`
	LinkDetail  sql.NullString `db:"link_detail" json:"-"`
}

const identityColumns = "id, directory_id, dn, username, email, display_name, department, state, state_reason, user_key, link_state, link_detail"

func selectIdentities(n schema.Names) string {
	cols := strings.Split(identityColumns, ", ")
	for i, c := range cols {
		cols[i] = n.Column(c)
	}
	return "SELECT " + strings.Join(cols, ", ") + " FROM " + n.Identities
}

// placeholders returns "?, ?, ?" for n values.
func placeholders(n int) string {
	if n <= 0 {
		return ""
	}
	return strings.TrimSuffix(strings.Repeat("?, ", n), ", ")
}

// identities loads the stored identities with these IDs.
func (d dbState) identities(ctx context.Context, ids []string) (map[string]*identityRow, error) {
	s := d.s
	out := make(map[string]*identityRow, len(ids))
	for start := 0; start < len(ids); start += maxInList {
		end := min(start+maxInList, len(ids))
		args := make([]any, 0, end-start)
		for _, id := range ids[start:end] {
			args = append(args, id)
		}
		var rows []*identityRow
		q := selectIdentities(s.n) + " WHERE " + s.n.Dialect.Quote("directory_id") + " IN (" + placeholders(len(args)) + ")"
		if err := store.Select(ctx, s.db, &rows, q, args...); err != nil {
			return nil, fmt.Errorf("read identities: %w", err)
		}
		for _, r := range rows {
			r.UserKey = schema.NormKey(r.UserKey)
			out[r.DirectoryID] = r
		}
	}
	return out, nil
}

// maxInList bounds the values of one IN (...) list (SQLite allows 32766
// parameters, PostgreSQL and MySQL 65535).
const maxInList = 1000

// eachIdentity streams the stored identities f selects in pages by id, so
// memory holds one page.
func (d dbState) eachIdentity(ctx context.Context, f identityFilter, fn func(rows []*identityRow) error) error {
	s := d.s
	q := s.n.Column
	var conds []string
	if f.notDeleted {
		conds = append(conds, q("state")+" <> '"+schema.StateDeleted+"'")
	}
	if f.unlinked {
		conds = append(conds, q("link_state")+" <> '"+schema.LinkManual+"' AND "+q("user_key")+" IS NULL")
	}
	where := strings.Join(conds, " AND ")
	var last int64 = -1 << 62
	for {
		var rows []*identityRow
		q := selectIdentities(s.n) + " WHERE " + s.n.Dialect.Quote("id") + " > ?"
		if where != "" {
			q += " AND (" + where + ")"
		}
		q += " ORDER BY " + s.n.Dialect.Quote("id") + " LIMIT " + fmt.Sprint(maxInList)
		t0 := time.Now()
		err := store.Select(ctx, s.db, &rows, q, last)
		s.dbTime += time.Since(t0)
		if err != nil {
			return fmt.Errorf("read identities: %w", err)
		}
		if len(rows) == 0 {
			return nil
		}
		for _, r := range rows {
			r.UserKey = schema.NormKey(r.UserKey)
		}
		if err := fn(rows); err != nil {
			return err
		}
		last = rows[len(rows)-1].ID
		if len(rows) < maxInList {
			return nil
		}
	}
}

func nullString(s string) any {
	if s == "" {
		return nil
	}
	return s
}
