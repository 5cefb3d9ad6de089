package enroll

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

	"github.com/passbridge/passbridge/config"
	"github.com/passbridge/passbridge/schema"
	"github.com/passbridge/passbridge/store"
)

// data is the portal's access to passbridge's tables in the application
// database. Every statement uses ? placeholders through the store helpers;
// names come from schema.NamesFor, quoted and qualified.
type data struct {
	db  *store.DB
	n   schema.Names
	d   store.Dialect
	now func() time.Time
}

func newData(db *store.DB, cfg *config.Config) *data {
	return &data{db: db, n: schema.NamesFor(cfg), d: db.Dialect(), now: func() time.Time { return time.Now().UTC().Truncate(time.Microsecond) }}
}

func (s *data) q(name string) string { return s.d.Quote(name) }

// cols quotes a list of column names for a SELECT, optionally prefixed by
// a table alias.
func (s *data) cols(alias string, names ...string) string {
	out := make([]string, len(names))
	for i, c := range names {
		out[i] = s.q(c)
		if alias != "" {
			out[i] = alias + "." + out[i]
		}
	}
	return strings.Join(out, ", ")
}

// newSecret returns a random 256-bit value as unpadded base64url (for a
// cookie, a link or a ceremony) and the hex SHA-256 under which the database
// stores it: a leaked table gives no usable session or link.
func newSecret() (secret, hash string) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand never fails on Linux
	}
	secret = base64.RawURLEncoding.EncodeToString(b)
	return secret, hashSecret(secret)
}

func hashSecret(secret string) string {
	h := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(h[:])
}

// validSecret reports whether s looks like a value newSecret made, so that
// garbage never reaches the database.
func validSecret(s string) bool {
	if len(s) != 43 {
		return false
	}
	// Strict refuses non-zero trailing bits (another spelling of the same
	// bytes); the length check refuses CR and LF, which the decoder skips.
	b, err := base64.RawURLEncoding.Strict().DecodeString(s)
	return err == nil && len(b) == 32
}

// identity is a stored directory identity as the portal needs it.
type identity struct {
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

// Name is what the portal calls the person.
func (i *identity) Name() string {
	if i.DisplayName.String != "" {
		return i.DisplayName.String
	}
	return i.Username
}

// refusal says why an identity may not use the portal, "" when it may.
// Only identities that the last sync saw active and in scope, and that are
// linked to a users row (passkeys belong to the application's user), may
// sign in or enroll.
func (i *identity) refusal() string {
	switch {
	case i.State == schema.StateDisabled:
		return "Your directory account is disabled, so it cannot use passkeys. Contact IT if this is a mistake."
	case i.State != schema.StateActive:
		return "Your directory account is no longer in the scope of the passkey portal. Contact IT if this is a mistake."
	case i.UserKey == nil:
		return "Your directory account is not linked to an application account yet, so there is nothing to attach a passkey to. IT can link it for you."
	case !truthy(i.AppActive):
		return "Your application account is deactivated, so it cannot use passkeys. Contact IT if this is a mistake."
	}
	return ""
}

// truthy reads a users_table.active value the way applications write
// booleans: false, 0, '0', 'f', 'false', 'n', 'no' and the empty string are inactive.
// NULL says nothing and does not refuse: a row is only inactive when the
// application says so.
func truthy(v any) bool {
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
		return truthy(string(x))
	case string:
		switch strings.ToLower(strings.TrimSpace(x)) {
		case "", "0", "f", "false", "n", "no":
			return false
		}
		return true
	}
	return true
}

// selectIdentities is the SELECT ... FROM of identities, for a WHERE to
// follow.
func (s *data) selectIdentities() string {
	cols := s.cols("", identityCols...)
	if s.n.UserActive != "" {
		// The application's own "is this account active" flag, read with
		// the identity so that every request sees it (one query).
		cols += ", (SELECT u." + s.n.UserActive + " FROM " + s.n.Users + " u WHERE u." + s.n.UserKey + " = " + s.n.Identities + "." + s.q("user_key") + ") AS " + s.q("app_active")
	}
	return "SELECT " + cols + " FROM " + s.n.Identities
}

func (s *data) identityWhere(ctx context.Context, where string, args ...any) (*identity, error) {
	var it identity
	err := store.Get(ctx, s.db, &it, s.selectIdentities()+" WHERE "+where, args...)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read identity: %w", err)
	}
	it.UserKey = schema.NormKey(it.UserKey)
	return &it, nil
}

// identityByDirectoryID finds the identity the sync stored for a directory
// entry; nil when the sync has not seen it.
func (s *data) identityByDirectoryID(ctx context.Context, id string) (*identity, error) {
	return s.identityWhere(ctx, s.q("directory_id")+" = ?", id)
}

func (s *data) identityByID(ctx context.Context, id int64) (*identity, error) {
	return s.identityWhere(ctx, s.q("id")+" = ?", id)
}

// credential is one stored passkey.
type credential struct {
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

// webauthn rebuilds the go-webauthn credential. The stored JSON is the
// whole record as the library made it; the columns the portal updates at
// each sign-in (sign count, flags) win over it, so that the columns the
// application reads are the truth.
func (c *credential) webauthn() (webauthn.Credential, error) {
	var wc webauthn.Credential
	if c.JSON.Valid && c.JSON.String != "" {
		if err := json.Unmarshal([]byte(c.JSON.String), &wc); err != nil {
			return wc, fmt.Errorf("passkey %d: stored credential: %w", c.ID, err)
		}
	}
	wc.ID = c.CredentialID
	wc.PublicKey = c.PublicKey
	wc.Authenticator.AAGUID = c.AAGUID
	wc.Authenticator.SignCount = uint32(c.SignCount)
	wc.Flags.UserPresent = c.UserPresent
	wc.Flags.UserVerified = c.UserVerified
	wc.Flags.BackupEligible = c.BackupEligible
	wc.Flags.BackupState = c.BackupState
	wc.Transport = nil
	for _, t := range strings.Split(c.Transports.String, ",") {
		if t != "" {
			wc.Transport = append(wc.Transport, protocol.AuthenticatorTransport(t))
		}
	}
	return wc, nil
}

func (s *data) credentialsWhere(ctx context.Context, where string, args ...any) ([]*credential, error) {
	var out []*credential
	err := store.Select(ctx, s.db, &out, "SELECT "+s.cols("", credentialCols...)+" FROM "+s.n.Credentials+" WHERE "+where+" ORDER BY "+s.q("id"), args...)
	if err != nil {
		return nil, fmt.Errorf("read passkeys: %w", err)
	}
	for _, c := range out {
		c.UserKey = schema.NormKey(c.UserKey)
	}
	return out, nil
}

// activeCredentials are the passkeys of a users row that are not revoked.
func (s *data) activeCredentials(ctx context.Context, userKey any) ([]*credential, error) {
	return s.credentialsWhere(ctx, s.q("user_key")+" = ? AND "+s.q("revoked_at")+" IS NULL", userKey)
}

// credentialByID finds a passkey by its WebAuthn credential ID, revoked or
// not; nil when there is none.
func (s *data) credentialByID(ctx context.Context, id []byte) (*credential, error) {
	cs, err := s.credentialsWhere(ctx, s.q("credential_id")+" = ?", id)
	if err != nil || len(cs) == 0 {
		return nil, err
	}
	return cs[0], nil
}

// userHandle is the WebAuthn user handle of a users row: the one its
// passkeys already carry (so a new passkey on the same authenticator
// replaces the old one there instead of piling up), else a new random one.
// It is random, never derived from the username or key, as the
// specification asks: it carries no personal data.
func (s *data) userHandle(ctx context.Context, userKey any) ([]byte, error) {
	var handles [][]byte
	err := store.Select(ctx, s.db, &handles, "SELECT "+s.q("user_handle")+" FROM "+s.n.Credentials+" WHERE "+s.q("user_key")+" = ? ORDER BY "+s.q("id")+" LIMIT 1", userKey)
	if err != nil {
		return nil, fmt.Errorf("read user handle: %w", err)
	}
	if len(handles) == 1 && len(handles[0]) > 0 {
		return handles[0], nil
	}
	h := make([]byte, 32)
	if _, err := rand.Read(h); err != nil {
		return nil, err
	}
	return h, nil
}

// setPasskeyState keeps users.<prefix>passkey_state right for the
// application: 'enrolled' while the row has an active passkey, NULL
// otherwise. It runs inside the transaction that changed the passkeys.
func (s *data) setPasskeyState(ctx context.Context, tx store.Querier, userKey any) error {
	var n int
	if err := store.Get(ctx, tx, &n, "SELECT COUNT(*) FROM "+s.n.Credentials+" WHERE "+s.q("user_key")+" = ? AND "+s.q("revoked_at")+" IS NULL", userKey); err != nil {
		return fmt.Errorf("count passkeys: %w", err)
	}
	var state any
	if n > 0 {
		state = passkeyEnrolled
	}
	if _, err := store.Exec(ctx, tx, "UPDATE "+s.n.Users+" SET "+s.n.PasskeyState+" = ? WHERE "+s.n.UserKey+" = ?", state, userKey); err != nil {
		return fmt.Errorf("update the users row's passkey state: %w", err)
	}
	return nil
}

// passkeyEnrolled is the value of users.<prefix>passkey_state for a row with
// at least one active passkey.
const passkeyEnrolled = "enrolled"

func nullStr(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// clip cuts s to at most n bytes on a rune boundary.
func clip(s string, n int) string {
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
