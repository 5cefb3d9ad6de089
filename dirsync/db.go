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
	// MappedHash is mappedHash of the fields the sync last wrote (NULL for
	// an identity not written since the column was added).
	MappedHash sql.NullString `db:"mapped_hash" json:"-"`
}

const identityColumns = "id, directory_id, dn, username, email, display_name, department, state, state_reason, user_key, link_state, link_detail, mapped_hash"

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
	out := make(map[string]*identityRow, len(ids))
	for start := 0; start < len(ids); start += maxInList {
		q, args := d.byDirectoryID(ids[start:min(start+maxInList, len(ids))])
		rows, err := d.query(ctx, q, args...)
		if err != nil {
			return nil, err
		}
		for _, r := range rows {
			out[r.DirectoryID] = r
		}
	}
	return out, nil
}

// byDirectoryID is the query of the stored identities with these
// directory IDs (at most maxInList).
//
// On PostgreSQL it is one probe of the directory_id index per ID (a
// lateral subquery that cannot be flattened, as usersBy's): an IN list on
// an identities table that has never been ANALYZEd (a new install right
// after its first full sync, before autovacuum comes by) is estimated at
// most of the table and run as a sequential scan, once per page of the
// directory, which made a full sync grow with the square of its size.
func (d dbState) byDirectoryID(ids []string) (string, []any) {
	n := d.s.n
	if n.Dialect.Kind() == store.Postgres {
		return "SELECT i.* FROM unnest(CAST(? AS text[])) AS w(x) CROSS JOIN LATERAL (" + selectIdentities(n) + " WHERE " +
			n.Dialect.Quote("directory_id") + " = w.x OFFSET 0) AS i", []any{ids}
	}
	args := make([]any, len(ids))
	for i, id := range ids {
		args[i] = id
	}
	return selectIdentities(d.s.n) + " WHERE " + d.s.n.Dialect.Quote("directory_id") + " IN (" + placeholders(len(args)) + ")", args
}

// identitiesByRowID loads the stored identities with these row IDs, by id.
func (d dbState) identitiesByRowID(ctx context.Context, ids []int64) ([]*identityRow, error) {
	s := d.s
	var out []*identityRow
	for start := 0; start < len(ids); start += maxInList {
		chunk := ids[start:min(start+maxInList, len(ids))]
		args := make([]any, len(chunk))
		for i, id := range chunk {
			args[i] = id
		}
		rows, err := d.query(ctx, selectIdentities(s.n)+" WHERE "+s.n.Dialect.Quote("id")+" IN ("+placeholders(len(args))+") ORDER BY "+s.n.Dialect.Quote("id"), args...)
		if err != nil {
			return nil, err
		}
		out = append(out, rows...)
	}
	return out, nil
}

// query runs a SELECT of identityColumns and scans the rows (by hand: the
// sync reads every stored identity at least once a full run, and sqlx's
// reflection was a good part of that).
func (d dbState) query(ctx context.Context, q string, args ...any) ([]*identityRow, error) {
	s := d.s
	t0 := time.Now()
	defer func() { s.addDBTime(time.Since(t0)) }()
	rows, err := s.db.QueryContext(ctx, s.db.Rebind(q), args...)
	if err != nil {
		return nil, fmt.Errorf("read identities: %w", err)
	}
	defer rows.Close()
	var out []*identityRow
	for rows.Next() {
		r := new(identityRow)
		if err := rows.Scan(&r.ID, &r.DirectoryID, &r.DN, &r.Username, &r.Email, &r.DisplayName, &r.Department, &r.State, &r.StateReason,
			&r.UserKey, &r.LinkState, &r.LinkDetail, &r.MappedHash); err != nil {
			return nil, fmt.Errorf("read identities: %w", err)
		}
		r.UserKey = schema.NormKey(r.UserKey)
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read identities: %w", err)
	}
	return out, nil
}

// maxInList bounds the values of one IN (...) list (SQLite allows 32766
// parameters, PostgreSQL and MySQL 65535).
const maxInList = 1000

// where is the condition of an identity filter (no user input in it).
func (d dbState) where(f identityFilter) string {
	q := d.s.n.Column
	var conds []string
	if f.notDeleted {
		conds = append(conds, q("state")+" <> '"+schema.StateDeleted+"'")
	}
	if f.unlinked {
		conds = append(conds, q("link_state")+" <> '"+schema.LinkManual+"' AND "+q("user_key")+" IS NULL")
	}
	if len(conds) == 0 {
		return ""
	}
	return " AND (" + strings.Join(conds, " AND ") + ")"
}

// eachIdentity streams the stored identities f selects in pages by id, so
// memory holds one page.
func (d dbState) eachIdentity(ctx context.Context, f identityFilter, fn func(rows []*identityRow) error) error {
	s := d.s
	var last int64 = -1 << 62
	for {
		q := selectIdentities(s.n) + " WHERE " + s.n.Dialect.Quote("id") + " > ?" + d.where(f) +
			" ORDER BY " + s.n.Dialect.Quote("id") + " LIMIT " + fmt.Sprint(maxInList)
		rows, err := d.query(ctx, q, last)
		if err != nil {
			return err
		}
		if len(rows) == 0 {
			return nil
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

// idPage is how many row IDs eachIdentityID reads at a time.
const idPage = 20000

// eachIdentityID streams the row IDs of the stored identities f selects,
// in order: the deletion pass of a full run reads every stored identity's
// ID, and the whole row only of those the read did not see.
func (d dbState) eachIdentityID(ctx context.Context, f identityFilter, fn func(ids []int64) error) error {
	s := d.s
	var last int64 = -1 << 62
	for {
		q := "SELECT " + s.n.Dialect.Quote("id") + " FROM " + s.n.Identities + " WHERE " + s.n.Dialect.Quote("id") + " > ?" + d.where(f) +
			" ORDER BY " + s.n.Dialect.Quote("id") + " LIMIT " + fmt.Sprint(idPage)
		var ids []int64
		t0 := time.Now()
		err := store.Select(ctx, s.db, &ids, q, last)
		s.addDBTime(time.Since(t0))
		if err != nil {
			return fmt.Errorf("read identities: %w", err)
		}
		if len(ids) == 0 {
			return nil
		}
		if err := fn(ids); err != nil {
			return err
		}
		last = ids[len(ids)-1]
		if len(ids) < idPage {
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
