package signin

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"database/sql"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/go-webauthn/webauthn/protocol"
	"github.com/go-webauthn/webauthn/webauthn"

	"github.com/passbridge/passbridge/audit"
	"github.com/passbridge/passbridge/schema"
	"github.com/passbridge/passbridge/store"
)

// NewSecret returns a random 256-bit value as unpadded base64url (for a
// cookie, a link or a ceremony) and the hex SHA-256 under which the database
// stores it: a leaked table gives no usable session or link.
func NewSecret() (secret, hash string) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand never fails on Linux
	}
	secret = base64.RawURLEncoding.EncodeToString(b)
	return secret, HashSecret(secret)
}

// HashSecret is the hex SHA-256 a secret is stored under.
func HashSecret(secret string) string {
	h := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(h[:])
}

// ValidSecret reports whether s looks like a value NewSecret made, so that
// garbage never reaches the database.
func ValidSecret(s string) bool {
	if len(s) != 43 {
		return false
	}
	// Strict refuses non-zero trailing bits (another spelling of the same
	// bytes); the length check refuses CR and LF, which the decoder skips.
	b, err := base64.RawURLEncoding.Strict().DecodeString(s)
	return err == nil && len(b) == 32
}

// Identity is a stored directory identity as sign-in needs it.
type Identity struct {
	ID          int64          `db:"id"`
	DirectoryID string         `db:"directory_id"`
	DN          string         `db:"dn"`
	Username    string         `db:"username"`
	Email       sql.NullString `db:"email"`
	DisplayName sql.NullString `db:"display_name"`
	Department  sql.NullString `db:"department"`
	State       string         `db:"state"`
	UserKey     any            `db:"user_key"`
	LinkState   string         `db:"link_state"`
	// AppActive is the linked users row's users_table.active value, when
	// the table has such a column (nil otherwise, or when it is NULL).
	AppActive any `db:"app_active"`
}

var identityCols = []string{"id", "directory_id", "dn", "username", "email", "display_name", "department", "state", "user_key", "link_state"}

// Name is what passbridge calls the person.
func (i *Identity) Name() string {
	if i.DisplayName.String != "" {
		return i.DisplayName.String
	}
	return i.Username
}

// Refusal says why an identity may not sign in or enroll, "" when it may.
// Only identities that the last sync saw active and in scope, and that are
// linked to a users row (passkeys belong to the application's user) whose
// application account is active, may.
func (i *Identity) Refusal() string {
	switch {
	case i.State == schema.StateDisabled:
		return "Your directory account is disabled, so it cannot use passkeys. Contact IT if this is a mistake."
	case i.State != schema.StateActive:
		return "Your directory account is no longer in the scope of the passkey portal. Contact IT if this is a mistake."
	case i.UserKey == nil:
		return "Your directory account is not linked to an application account yet, so there is nothing to attach a passkey to. IT can link it for you."
	case !Truthy(i.AppActive):
		return "Your application account is deactivated, so it cannot use passkeys. Contact IT if this is a mistake."
	}
	return ""
}

// Truthy reads a users_table.active value the way applications write
// booleans: false, 0, '0', 'f', 'false', 'n', 'no' and the empty string are
// inactive. NULL says nothing and does not refuse: a row is only inactive
// when the application says so.
func Truthy(v any) bool {
	switch x := v.(type) {
	case nil:
		return true
	case bool:
		return x
	case int64:
		return x != 0
	case float64:
		return x != 0
	case []byte:
		return Truthy(string(x))
	case string:
		switch strings.ToLower(strings.TrimSpace(x)) {
		case "", "0", "f", "false", "n", "no":
			return false
		}
		return true
	}
	return true
}

// SelectIdentities is the SELECT ... FROM of identities, for a WHERE to
// follow.
func (c *Core) SelectIdentities() string {
	cols := c.Cols("", identityCols...)
	if c.n.UserActive != "" {
		// The application's own "is this account active" flag, read with
		// the identity so that every request sees it (one query).
		cols += ", (SELECT u." + c.n.UserActive + " FROM " + c.n.Users + " u WHERE u." + c.n.UserKey + " = " + c.n.Identities + "." + c.q("user_key") + ") AS " + c.q("app_active")
	}
	return "SELECT " + cols + " FROM " + c.n.Identities
}

// IdentityWhere reads the first identity matching where; nil when none.
func (c *Core) IdentityWhere(ctx context.Context, where string, args ...any) (*Identity, error) {
	var it Identity
	// Committed state is what a sign-in reads: the reader pool (SQLite).
	err := store.Get(ctx, c.db.Reader(), &it, c.SelectIdentities()+" WHERE "+where, args...)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read identity: %w", err)
	}
	it.UserKey = schema.NormKey(it.UserKey)
	return &it, nil
}

// IdentityByDirectoryID finds the identity the sync stored for a directory
// entry; nil when the sync has not seen it.
func (c *Core) IdentityByDirectoryID(ctx context.Context, id string) (*Identity, error) {
	return c.IdentityWhere(ctx, c.q("directory_id")+" = ?", id)
}

// IdentityByID reads an identity by its row ID; nil when there is none.
func (c *Core) IdentityByID(ctx context.Context, id int64) (*Identity, error) {
	return c.IdentityWhere(ctx, c.q("id")+" = ?", id)
}

// Credential is one stored passkey.
type Credential struct {
	ID             int64          `db:"id"`
	UserKey        any            `db:"user_key"`
	IdentityID     sql.NullInt64  `db:"identity_id"`
	CredentialID   []byte         `db:"credential_id"`
	PublicKey      []byte         `db:"public_key"`
	SignCount      int64          `db:"sign_count"`
	AAGUID         []byte         `db:"aaguid"`
	Transports     sql.NullString `db:"transports"`
	UserPresent    bool           `db:"user_present"`
	UserVerified   bool           `db:"user_verified"`
	BackupEligible bool           `db:"backup_eligible"`
	BackupState    bool           `db:"backup_state"`
	AttType        sql.NullString `db:"attestation_type"`
	AttFormat      sql.NullString `db:"attestation_format"`
	UserHandle     []byte         `db:"user_handle"`
	Name           string         `db:"name"`
	JSON           sql.NullString `db:"credential_json"`
	CreatedAt      time.Time      `db:"created_at"`
	LastUsedAt     sql.NullTime   `db:"last_used_at"`
	RevokedAt      sql.NullTime   `db:"revoked_at"`
}

var credentialCols = []string{"id", "user_key", "identity_id", "credential_id", "public_key", "sign_count", "aaguid", "transports",
	"user_present", "user_verified", "backup_eligible", "backup_state", "attestation_type", "attestation_format",
	"user_handle", "name", "credential_json", "created_at", "last_used_at", "revoked_at"}

// WebAuthn rebuilds the go-webauthn credential. The stored JSON is the
// whole record as the library made it; the columns updated at each sign-in
// (sign count, flags) win over it, so that the columns the application
// reads are the truth.
func (cr *Credential) WebAuthn() (webauthn.Credential, error) {
	var wc webauthn.Credential
	if cr.JSON.Valid && cr.JSON.String != "" {
		if err := json.Unmarshal([]byte(cr.JSON.String), &wc); err != nil {
			return wc, fmt.Errorf("passkey %d: stored credential: %w", cr.ID, err)
		}
	}
	wc.ID = cr.CredentialID
	wc.PublicKey = cr.PublicKey
	wc.Authenticator.AAGUID = cr.AAGUID
	wc.Authenticator.SignCount = uint32(cr.SignCount)
	wc.Flags.UserPresent = cr.UserPresent
	wc.Flags.UserVerified = cr.UserVerified
	wc.Flags.BackupEligible = cr.BackupEligible
	wc.Flags.BackupState = cr.BackupState
	wc.Transport = nil
	for _, t := range strings.Split(cr.Transports.String, ",") {
		if t != "" {
			wc.Transport = append(wc.Transport, protocol.AuthenticatorTransport(t))
		}
	}
	return wc, nil
}

// CredentialsWhere reads the passkeys matching where, by ID.
func (c *Core) CredentialsWhere(ctx context.Context, where string, args ...any) ([]*Credential, error) {
	var out []*Credential
	// Committed state is what a sign-in reads: the reader pool (SQLite).
	err := store.Select(ctx, c.db.Reader(), &out, "SELECT "+c.Cols("", credentialCols...)+" FROM "+c.n.Credentials+" WHERE "+where+" ORDER BY "+c.q("id"), args...)
	if err != nil {
		return nil, fmt.Errorf("read passkeys: %w", err)
	}
	for _, cr := range out {
		cr.UserKey = schema.NormKey(cr.UserKey)
	}
	return out, nil
}

// CredentialWithIdentity finds a passkey by its WebAuthn credential ID,
// revoked or not, with the identity it belongs to: the one it was enrolled
// by, else (the identity row was replaced) the first one linked to its
// users row. One query, as a sign-in reads it (the reader pool on
// SQLite): nil, nil when there is no such passkey; a nil identity when no
// identity has it.
func (c *Core) CredentialWithIdentity(ctx context.Context, id []byte) (*Credential, *Identity, error) {
	var row struct {
		Credential
		// The identity's columns, as "i.<column>"; i.id is 0 when there is
		// none (the LEFT JOIN's NULLs made zero values).
		I Identity `db:"i"`
	}
	err := store.Get(ctx, c.db.Reader(), &row, c.credentialWithIdentity(), id)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("read passkey: %w", err)
	}
	cr := row.Credential
	cr.UserKey = schema.NormKey(cr.UserKey)
	if row.I.ID == 0 {
		return &cr, nil, nil
	}
	it := row.I
	it.UserKey = schema.NormKey(it.UserKey)
	return &cr, &it, nil
}

// credentialWithIdentity is CredentialWithIdentity's query, built once.
func (c *Core) credentialWithIdentity() string {
	c.cwiOnce.Do(func() {
		cols := make([]string, 0, len(credentialCols)+len(identityCols)+1)
		for _, col := range credentialCols {
			cols = append(cols, "cr."+c.q(col))
		}
		for _, col := range identityCols {
			v := "i." + c.q(col)
			switch col {
			case "id":
				v = "COALESCE(" + v + ", 0)"
			case "directory_id", "dn", "username", "state", "link_state":
				v = "COALESCE(" + v + ", '')"
			}
			cols = append(cols, v+" AS "+c.q("i."+col))
		}
		if c.n.UserActive != "" {
			cols = append(cols, "(SELECT u."+c.n.UserActive+" FROM "+c.n.Users+" u WHERE u."+c.n.UserKey+" = i."+c.q("user_key")+") AS "+c.q("i.app_active"))
		}
		ident := func(alias, where string) string {
			return "(SELECT " + alias + "." + c.q("id") + " FROM " + c.n.Identities + " " + alias + " WHERE " + where + " ORDER BY " + alias + "." + c.q("id") + " LIMIT 1)"
		}
		c.cwiSQL = "SELECT " + strings.Join(cols, ", ") + " FROM " + c.n.Credentials + " cr LEFT JOIN " + c.n.Identities + " i ON i." + c.q("id") + " = COALESCE(" +
			ident("x", "x."+c.q("id")+" = cr."+c.q("identity_id")) + ", " +
			ident("y", "y."+c.q("user_key")+" = cr."+c.q("user_key")) + ") WHERE cr." + c.q("credential_id") + " = ?"
	})
	return c.cwiSQL
}

// Event is one audit record. Actor is who acted (a username,
// "cli:<user>"); Target is the user it concerns; empty Actor is Target.
type Event struct {
	Event   string
	Success bool
	Actor   string
	Target  string
	IP      string
	UA      string
	Detail  map[string]any
}

// Record writes an audit event through q (a transaction when the event
// belongs to a change), with the one writer of the audit trail.
func (c *Core) Record(ctx context.Context, q store.Execer, e Event) error {
	var detail json.RawMessage
	if len(e.Detail) > 0 {
		detail = audit.Detail(e.Detail)
	}
	if e.Actor == "" {
		e.Actor = e.Target
	}
	err := audit.Record(ctx, q, c.n, audit.Event{At: c.now(), Event: e.Event, Success: e.Success, Actor: e.Actor, Target: e.Target, IP: e.IP, UserAgent: e.UA, Detail: detail})
	if err == nil && c.onRecord != nil {
		c.onRecord(e.Event)
	}
	return err
}

// audit records an event on its own, logging a failure to write it.
func (c *Core) audit(ctx context.Context, e Event) {
	if err := c.Record(ctx, c.db, e); err != nil {
		c.log.Error("cannot write the audit trail", "event", e.Event, "err", err)
	}
}

// Clip cuts s to at most n bytes on a rune boundary.
func Clip(s string, n int) string {
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
