package directory

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/go-ldap/ldap/v3"

	"github.com/passbridge/passbridge/config"
)

// Identity is one user as the directory describes it, keyed by the
// directory's stable ID (never by the DN, which changes on rename and move).
type Identity struct {
	DirectoryID    string `json:"directory_id"`
	DN             string `json:"dn"`
	Username       string `json:"username"`
	Email          string `json:"email,omitempty"`
	DisplayName    string `json:"display_name,omitempty"`
	Department     string `json:"department,omitempty"`
	Disabled       bool   `json:"disabled"`
	DisabledReason string `json:"disabled_reason,omitempty"`
}

// Column sizes of the identities table (schema/tables.go): longer values
// are cut on a rune boundary rather than failing the whole run. MaxNameLen
// bounds the names and reasons of 255 characters (display_name,
// department, state_reason).
const (
	maxIDLen       = 64
	maxUsernameLen = 255
	maxEmailLen    = 320
	MaxNameLen     = 255
)

// Mapper turns directory entries into identities with the configured
// attribute names (the kind's preset, each overridable).
type Mapper struct {
	kind  string
	attrs config.Attributes
	// expires is AD's accountExpires (FILETIME); read alongside the
	// disabled attribute when the kind is ad.
	expires string
	now     func() time.Time
	// The attribute names as bytes, for the lean entries (rawEntry.first).
	id, username, email, displayName, department, disabledAttr, expiresAttr []byte
}

// NewMapper builds the mapper for a directory configuration whose presets
// have been applied (config.Load does it).
func NewMapper(d config.Directory) *Mapper {
	m := &Mapper{kind: d.Kind, attrs: d.Attributes, now: time.Now}
	if d.Kind == "ad" {
		m.expires = "accountExpires"
	}
	m.id, m.username, m.email, m.displayName = []byte(m.attrs.ID), []byte(m.attrs.Username), []byte(m.attrs.Email), []byte(m.attrs.DisplayName)
	m.department, m.disabledAttr, m.expiresAttr = []byte(m.attrs.Department), []byte(m.attrs.Disabled), []byte(m.expires)
	return m
}

// Attributes are the attributes to request for each user entry.
func (m *Mapper) Attributes() []string {
	var out []string
	seen := map[string]bool{}
	for _, a := range []string{m.attrs.ID, m.attrs.Username, m.attrs.Email, m.attrs.DisplayName, m.attrs.Department, m.attrs.Disabled, m.expires} {
		if a != "" && !seen[strings.ToLower(a)] {
			seen[strings.ToLower(a)] = true
			out = append(out, a)
		}
	}
	return out
}

// IDAttribute is the name of the stable ID attribute.
func (m *Mapper) IDAttribute() string { return m.attrs.ID }

// ErrNoID means an entry lacks its stable ID (often: the service account
// may not read it).
var ErrNoID = errors.New("no stable ID")

// Map maps one entry. An entry without a stable ID or a username cannot be
// an identity: the error says which attribute is missing.
func (m *Mapper) Map(e *ldap.Entry) (Identity, error) {
	return m.mapRaw(rawFromLDAP(e, nil))
}

// mapRaw is Map on an entry as it arrived (the sync's reads): each field
// is cut from the value's bytes, then copied once into its string.
func (m *Mapper) mapRaw(e *rawEntry) (Identity, error) {
	id, err := m.rawID(e)
	if err != nil {
		return Identity{}, err
	}
	it := Identity{
		DirectoryID: id,
		DN:          text(string(e.dn)),
		Username:    field(m.value(e, m.username), maxUsernameLen),
		Email:       field(m.value(e, m.email), maxEmailLen),
		DisplayName: field(m.value(e, m.displayName), MaxNameLen),
		Department:  field(m.value(e, m.department), MaxNameLen),
	}
	if it.Username == "" {
		return Identity{}, fmt.Errorf("entry %q has no %s (the username attribute)", e.dn, m.attrs.Username)
	}
	it.Disabled, it.DisabledReason = m.disabled(e)
	return it, nil
}

// value is the first value of attr, nil when the entry has none (or attr
// is not configured).
func (m *Mapper) value(e *rawEntry, attr []byte) []byte {
	if len(attr) == 0 {
		return nil
	}
	return e.first(attr)
}

// field is a value as an identity stores it: trimmed, valid UTF-8, at most
// n bytes.
func field(v []byte, n int) string {
	v = bytes.TrimSpace(v)
	if len(v) == 0 {
		return ""
	}
	return Clip(text(string(v)), n)
}

// ID returns the entry's stable ID in canonical form: AD's binary objectGUID
// as the mixed-endian string AD tools print, UUIDs in lower case.
func (m *Mapper) ID(e *ldap.Entry) (string, error) {
	return m.rawID(rawFromLDAP(e, nil))
}

func (m *Mapper) rawID(e *rawEntry) (string, error) {
	raw := e.first(m.id)
	if len(raw) == 0 {
		return "", fmt.Errorf("entry %q has no %s: %w (can the service account read it?)", string(e.dn), m.attrs.ID, ErrNoID)
	}
	id, err := canonicalID(m.attrs.ID, raw)
	if err != nil {
		return "", fmt.Errorf("entry %q: %s: %w", string(e.dn), m.attrs.ID, err)
	}
	return id, nil
}

// binaryGUIDAttrs hold a 16-byte GUID in AD's wire format.
var binaryGUIDAttrs = map[string]bool{"objectguid": true, "ms-ds-consistencyguid": true, "msds-consistencyguid": true}

func canonicalID(attr string, raw []byte) (string, error) {
	if binaryGUIDAttrs[strings.ToLower(attr)] {
		return GUIDString(raw)
	}
	if !utf8.Valid(raw) {
		// Some other binary ID: hex keeps it exact and printable.
		raw = []byte(hex.EncodeToString(raw))
	}
	// One copy: strings.ToLower returns its argument when it has nothing
	// to change (an entryUUID as OpenLDAP sends it).
	s := strings.ToLower(string(bytes.TrimSpace(raw)))
	if s == "" {
		return "", fmt.Errorf("empty value: %w", ErrNoID)
	}
	if len(s) > maxIDLen {
		return "", fmt.Errorf("value %q is longer than %d characters: choose a shorter stable ID attribute", s, maxIDLen)
	}
	return s, nil
}

// GUIDString formats AD's binary GUID as AD tools print it: the first three
// groups little-endian, the last two as stored
// (e.g. {6F9619FF-8B86-D011-B42D-00C04FC964FF} in lower case without braces).
func GUIDString(b []byte) (string, error) {
	if len(b) != 16 {
		return "", fmt.Errorf("a GUID is 16 bytes, got %d", len(b))
	}
	return fmt.Sprintf("%08x-%04x-%04x-%x-%x",
		binary.LittleEndian.Uint32(b[0:4]), binary.LittleEndian.Uint16(b[4:6]), binary.LittleEndian.Uint16(b[6:8]),
		b[8:10], b[10:16]), nil
}

// GUIDBytes is the inverse of GUIDString: the 16 bytes AD stores, for a
// filter such as (objectGUID=\ff\19\96\6f...).
func GUIDBytes(s string) ([]byte, error) {
	s = strings.Trim(strings.TrimSpace(s), "{}")
	parts := strings.Split(s, "-")
	if len(parts) != 5 || len(parts[0]) != 8 || len(parts[1]) != 4 || len(parts[2]) != 4 || len(parts[3]) != 4 || len(parts[4]) != 12 {
		return nil, fmt.Errorf("%q is not a GUID (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)", s)
	}
	h, err := hex.DecodeString(strings.Join(parts, ""))
	if err != nil {
		return nil, fmt.Errorf("%q is not a GUID: %w", s, err)
	}
	out := make([]byte, 16)
	binary.LittleEndian.PutUint32(out[0:4], binary.BigEndian.Uint32(h[0:4]))
	binary.LittleEndian.PutUint16(out[4:6], binary.BigEndian.Uint16(h[4:6]))
	binary.LittleEndian.PutUint16(out[6:8], binary.BigEndian.Uint16(h[6:8]))
	copy(out[8:], h[8:])
	return out, nil
}

// AD userAccountControl flags.
const uacAccountDisable = 0x2

// OpenLDAP ppolicy writes this pwdAccountLockedTime for an account locked
// by an administrator until unlocked (as opposed to a lockout after failed
// binds, which ends by itself after pwdLockoutDuration).
const ppolicyAdminLock = "000001010000Z"

// disabled reads the disabled state from the configured attribute:
//   - userAccountControl: bit 0x2 (ACCOUNTDISABLE); on AD also
//     accountExpires in the past (0 and 0x7FFFFFFFFFFFFFFF mean never);
//   - nsAccountLock (389 DS, FreeIPA): TRUE;
//   - pwdAccountLockedTime (OpenLDAP ppolicy): the administrative lock
//     000001010000Z. A lockout after failed binds is temporary and
//     deliberately not a disable: otherwise anyone could switch off a
//     colleague's passkeys by typing wrong passwords;
//   - any other attribute: TRUE, true, yes, 1, disabled or locked.
func (m *Mapper) disabled(e *rawEntry) (bool, string) {
	attr := m.attrs.Disabled
	if attr != "" {
		v := strings.TrimSpace(string(e.first(m.disabledAttr)))
		switch strings.ToLower(attr) {
		case "useraccountcontrol":
			if v != "" {
				n, err := strconv.ParseInt(v, 10, 64)
				if err == nil && n&uacAccountDisable != 0 {
					return true, "userAccountControl has ACCOUNTDISABLE (0x2)"
				}
			}
		case "pwdaccountlockedtime":
			if v == ppolicyAdminLock {
				return true, "pwdAccountLockedTime " + ppolicyAdminLock + " (locked by an administrator)"
			}
		default:
			switch strings.ToLower(v) {
			case "true", "yes", "1", "disabled", "locked":
				return true, attr + " is " + v
			}
		}
	}
	if m.expires != "" {
		if v := string(e.first(m.expiresAttr)); v != "" {
			if at, ok := fileTime(v); ok && !at.After(m.now()) {
				return true, m.expires + " " + at.UTC().Format(time.RFC3339) + " has passed"
			}
		}
	}
	return false, ""
}

// fileTime parses AD's FILETIME (100 ns intervals since 1601-01-01 UTC).
// 0 and 0x7FFFFFFFFFFFFFFF mean "never" and return ok=false.
func fileTime(v string) (time.Time, bool) {
	n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
	if err != nil || n <= 0 || n == math.MaxInt64 {
		return time.Time{}, false
	}
	const epochDiff = 116444736000000000 // 1601 to 1970 in 100 ns
	if n < epochDiff {
		return time.Unix(0, 0).UTC(), true // before 1970: long expired
	}
	d := n - epochDiff
	return time.Unix(d/1e7, (d%1e7)*100).UTC(), true
}

// text makes a directory value storable: PostgreSQL and MySQL refuse
// invalid UTF-8 in a text column, which would fail the whole batch, and so
// every later run, for one entry with an attribute of the wrong syntax.
// Each invalid byte sequence becomes U+FFFD.
func text(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	return strings.ToValidUTF8(s, "\uFFFD")
}

// Clip cuts s to at most n bytes, backing off to the start of the
// character the cut falls in. Only the cut itself is looked at: a stray
// invalid byte earlier in the value must not make the whole value vanish
// (that turned a long username with one bad byte into "no username").
func Clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for back := 0; n > 0 && back < utf8.UTFMax-1 && !utf8.RuneStart(s[n]); back++ {
		n--
	}
	return s[:n]
}
