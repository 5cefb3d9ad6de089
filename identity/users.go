// Package identity is the admin layer over the synced identities, for the
// CLI (`passbridge users`) and the IT console: list and find identities with
// their users row and passkeys, and link one to a users row by hand (or undo
// that) under the sync's lock. It reads and writes the database only; the
// sync engine (package dirsync) is what creates identities.
package identity

import (
	"context"
	"database/sql"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/passbridge/passbridge/config"
	"github.com/passbridge/passbridge/schema"
	"github.com/passbridge/passbridge/store"
)

// IdentityInfo is a stored identity as `passbridge users` shows it.
type IdentityInfo struct {
	ID             int64      `json:"id"`
	DirectoryID    string     `json:"directory_id"`
	DN             string     `json:"dn"`
	Username       string     `json:"username"`
	Email          string     `json:"email,omitempty"`
	DisplayName    string     `json:"display_name,omitempty"`
	Department     string     `json:"department,omitempty"`
	State          string     `json:"state"`
	StateReason    string     `json:"state_reason,omitempty"`
	StateChangedAt *time.Time `json:"state_changed_at,omitempty"`
	UserKey        string     `json:"user_key,omitempty"`
	LinkState      string     `json:"link_state"`
	LinkDetail     string     `json:"link_detail,omitempty"`
	FirstSeenAt    time.Time  `json:"first_seen_at"`
	LastSeenAt     time.Time  `json:"last_seen_at"`
	UpdatedAt      time.Time  `json:"updated_at"`
}

// LinkedRow is the users row an identity is linked to.
type LinkedRow struct {
	Key      string `json:"key"`
	Username string `json:"username,omitempty"`
	Email    string `json:"email,omitempty"`
	// Missing is set when the row no longer exists.
	Missing bool `json:"missing,omitempty"`
}

// Passkey is one credential of a user, as stored by the portal.
type Passkey struct {
	ID             int64      `json:"id"`
	Name           string     `json:"name"`
	AAGUID         string     `json:"aaguid,omitempty"`
	Transports     string     `json:"transports,omitempty"`
	BackupEligible bool       `json:"backup_eligible"`
	BackupState    bool       `json:"backup_state"`
	SignCount      int64      `json:"sign_count"`
	CreatedAt      time.Time  `json:"created_at"`
	LastUsedAt     *time.Time `json:"last_used_at,omitempty"`
	RevokedAt      *time.Time `json:"revoked_at,omitempty"`
	RevokedReason  string     `json:"revoked_reason,omitempty"`
}

// IdentityDetail is everything `passbridge users show` prints.
type IdentityDetail struct {
	IdentityInfo
	Row      *LinkedRow `json:"users_row,omitempty"`
	Passkeys []Passkey  `json:"passkeys"`
}

// ListFilter narrows ListIdentities; empty fields match everything.
type ListFilter struct {
	State string // active | disabled | deleted
	Link  string // linked | created | manual | unmatched | ambiguous
}

// Identity and link states that filters accept.
var (
	States     = []string{schema.StateActive, schema.StateDisabled, schema.StateDeleted}
	LinkStates = []string{schema.LinkLinked, schema.LinkCreated, schema.LinkManual, schema.LinkUnmatched, schema.LinkAmbiguous}
)

type infoRow struct {
	ID             int64          `db:"id"`
	DirectoryID    string         `db:"directory_id"`
	DN             string         `db:"dn"`
	Username       string         `db:"username"`
	Email          sql.NullString `db:"email"`
	DisplayName    sql.NullString `db:"display_name"`
	Department     sql.NullString `db:"department"`
	State          string         `db:"state"`
	StateReason    sql.NullString `db:"state_reason"`
	StateChangedAt sql.NullTime   `db:"state_changed_at"`
	UserKey        any            `db:"user_key"`
	LinkState      string         `db:"link_state"`
	LinkDetail     sql.NullString `db:"link_detail"`
	FirstSeenAt    time.Time      `db:"first_seen_at"`
	LastSeenAt     time.Time      `db:"last_seen_at"`
	UpdatedAt      time.Time      `db:"updated_at"`
}

func (r infoRow) info() IdentityInfo {
	out := IdentityInfo{ID: r.ID, DirectoryID: r.DirectoryID, DN: r.DN, Username: r.Username, Email: r.Email.String,
		DisplayName: r.DisplayName.String, Department: r.Department.String, State: r.State, StateReason: r.StateReason.String,
		UserKey: schema.KeyString(schema.NormKey(r.UserKey)), LinkState: r.LinkState, LinkDetail: r.LinkDetail.String,
		FirstSeenAt: r.FirstSeenAt.UTC(), LastSeenAt: r.LastSeenAt.UTC(), UpdatedAt: r.UpdatedAt.UTC()}
	if r.StateChangedAt.Valid {
		t := r.StateChangedAt.Time.UTC()
		out.StateChangedAt = &t
	}
	return out
}

const infoColumns = "id, directory_id, dn, username, email, display_name, department, state, state_reason, state_changed_at, user_key, link_state, link_detail, first_seen_at, last_seen_at, updated_at"

func infoSelect(n schema.Names) string {
	cols := strings.Split(infoColumns, ", ")
	for i, c := range cols {
		cols[i] = n.Dialect.Quote(c)
	}
	return "SELECT " + strings.Join(cols, ", ") + " FROM " + n.Identities
}

// ListIdentities calls fn for every stored identity that matches f, by
// username, a page at a time.
func ListIdentities(ctx context.Context, db *store.DB, cfg *config.Config, f ListFilter, fn func(IdentityInfo) error) error {
	if f.State != "" && !slices.Contains(States, f.State) {
		return fmt.Errorf("--state %q: expected one of %s", f.State, strings.Join(States, ", "))
	}
	if f.Link != "" && !slices.Contains(LinkStates, f.Link) {
		return fmt.Errorf("--link %q: expected one of %s", f.Link, strings.Join(LinkStates, ", "))
	}
	n := schema.NamesFor(cfg)
	q := n.Dialect.Quote
	var where []string
	var args []any
	if f.State != "" {
		where = append(where, q("state")+" = ?")
		args = append(args, f.State)
	}
	if f.Link != "" {
		where = append(where, q("link_state")+" = ?")
		args = append(args, f.Link)
	}
	// Keyset pagination on (username, id): stable and index-friendly.
	lastName, lastID := "", int64(-1)
	for {
		w := append([]string{"(" + q("username") + " > ? OR (" + q("username") + " = ? AND " + q("id") + " > ?))"}, where...)
		a := append([]any{lastName, lastName, lastID}, args...)
		var rows []infoRow
		err := store.Select(ctx, db, &rows, infoSelect(n)+" WHERE "+strings.Join(w, " AND ")+" ORDER BY "+q("username")+", "+q("id")+" LIMIT 1000", a...)
		if err != nil {
			return fmt.Errorf("list identities: %w", err)
		}
		for _, r := range rows {
			if err := fn(r.info()); err != nil {
				return err
			}
		}
		if len(rows) < 1000 {
			return nil
		}
		lastName, lastID = rows[len(rows)-1].Username, rows[len(rows)-1].ID
	}
}

// FindIdentities returns the identities that user names: a directory ID,
// or a username or email (case-insensitively), with their users row and
// passkeys.
func FindIdentities(ctx context.Context, db *store.DB, cfg *config.Config, user string) ([]IdentityDetail, error) {
	user = strings.TrimSpace(user)
	if user == "" {
		return nil, fmt.Errorf("which user? give a username, an email or a directory ID")
	}
	n := schema.NamesFor(cfg)
	q := n.Dialect.Quote
	var rows []infoRow
	lower := strings.ToLower(user)
	err := store.Select(ctx, db, &rows, infoSelect(n)+" WHERE "+q("directory_id")+" = ? OR "+q("username")+" = ? OR LOWER("+q("username")+") = ? OR LOWER("+q("email")+") = ? ORDER BY "+q("id"),
		lower, user, lower, lower)
	if err != nil {
		return nil, fmt.Errorf("find identity %q: %w", user, err)
	}
	out := make([]IdentityDetail, 0, len(rows))
	for _, r := range rows {
		d := IdentityDetail{IdentityInfo: r.info(), Passkeys: []Passkey{}}
		if key := schema.NormKey(r.UserKey); key != nil {
			row, err := linkedRow(ctx, db, n, key)
			if err != nil {
				return nil, err
			}
			d.Row = row
			if d.Passkeys, err = passkeys(ctx, db, n, key, r.ID); err != nil {
				return nil, err
			}
		}
		out = append(out, d)
	}
	return out, nil
}

func linkedRow(ctx context.Context, db *store.DB, n schema.Names, key any) (*LinkedRow, error) {
	cols := []string{n.UserKey}
	for _, c := range []string{n.UserUsername, n.UserEmail} {
		if c != "" {
			cols = append(cols, c)
		} else {
			cols = append(cols, "NULL")
		}
	}
	var k, u, e any
	err := db.QueryRowxContext(ctx, db.Rebind("SELECT "+strings.Join(cols, ", ")+" FROM "+n.Users+" WHERE "+n.UserKey+" = ?"), key).Scan(&k, &u, &e)
	if err == sql.ErrNoRows {
		return &LinkedRow{Key: schema.KeyString(key), Missing: true}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read the linked users row: %w", err)
	}
	str := func(v any) string {
		if v == nil {
			return ""
		}
		return schema.KeyString(schema.NormKey(v))
	}
	return &LinkedRow{Key: schema.KeyString(schema.NormKey(k)), Username: str(u), Email: str(e)}, nil
}

func passkeys(ctx context.Context, db *store.DB, n schema.Names, key any, identityID int64) ([]Passkey, error) {
	q := n.Dialect.Quote
	var rows []struct {
		ID             int64          `db:"id"`
		Name           string         `db:"name"`
		AAGUID         []byte         `db:"aaguid"`
		Transports     sql.NullString `db:"transports"`
		BackupEligible bool           `db:"backup_eligible"`
		BackupState    bool           `db:"backup_state"`
		SignCount      int64          `db:"sign_count"`
		CreatedAt      time.Time      `db:"created_at"`
		LastUsedAt     sql.NullTime   `db:"last_used_at"`
		RevokedAt      sql.NullTime   `db:"revoked_at"`
		RevokedReason  sql.NullString `db:"revoked_reason"`
	}
	cols := []string{"id", "name", "aaguid", "transports", "backup_eligible", "backup_state", "sign_count", "created_at", "last_used_at", "revoked_at", "revoked_reason"}
	for i, c := range cols {
		cols[i] = q(c)
	}
	err := store.Select(ctx, db, &rows, "SELECT "+strings.Join(cols, ", ")+" FROM "+n.Credentials+" WHERE "+q("user_key")+" = ? OR "+q("identity_id")+" = ? ORDER BY "+q("id"), key, identityID)
	if err != nil {
		return nil, fmt.Errorf("read passkeys: %w", err)
	}
	out := make([]Passkey, 0, len(rows))
	for _, r := range rows {
		p := Passkey{ID: r.ID, Name: r.Name, Transports: r.Transports.String, BackupEligible: r.BackupEligible, BackupState: r.BackupState,
			SignCount: r.SignCount, CreatedAt: r.CreatedAt.UTC(), RevokedReason: r.RevokedReason.String}
		if len(r.AAGUID) == 16 {
			h := hex.EncodeToString(r.AAGUID)
			p.AAGUID = h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
		}
		if r.LastUsedAt.Valid {
			t := r.LastUsedAt.Time.UTC()
			p.LastUsedAt = &t
		}
		if r.RevokedAt.Valid {
			t := r.RevokedAt.Time.UTC()
			p.RevokedAt = &t
		}
		out = append(out, p)
	}
	return out, nil
}
