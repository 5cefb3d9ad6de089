package directory

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/go-ldap/ldap/v3"

	"github.com/passbridge/passbridge/config"
)

func TestGUIDString(t *testing.T) {
	// The example of the objectGUID documentation: the bytes as stored,
	// and the string AD tools (Get-ADUser, ldp) print.
	raw, _ := hex.DecodeString("ff19966f868b11d0b42d00c04fc964ff")
	got, err := GUIDString(raw)
	if err != nil {
		t.Fatal(err)
	}
	if want := "6f9619ff-8b86-d011-b42d-00c04fc964ff"; got != want {
		t.Fatalf("GUIDString = %s, want %s", got, want)
	}
	back, err := GUIDBytes("{6F9619FF-8B86-D011-B42D-00C04FC964FF}")
	if err != nil || !bytes.Equal(back, raw) {
		t.Fatalf("GUIDBytes = %x, %v; want %x", back, err, raw)
	}
	if _, err := GUIDString(raw[:15]); err == nil {
		t.Fatal("a 15-byte GUID must be refused")
	}
	for _, bad := range []string{"", "6f9619ff", "6f9619ff-8b86-d011-b42d-00c04fc964fz", "6f9619ff8b86-d011-b42d-00c04fc964ff-"} {
		if _, err := GUIDBytes(bad); err == nil {
			t.Errorf("GUIDBytes(%q) must fail", bad)
		}
	}
}

func TestFileTime(t *testing.T) {
	for _, never := range []string{"0", "9223372036854775807", "", "junk", "-5"} {
		if _, ok := fileTime(never); ok {
			t.Errorf("accountExpires %q means never", never)
		}
	}
	// 2024-01-01T00:00:00Z
	at, ok := fileTime("133485408000000000")
	if !ok || !at.Equal(time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)) {
		t.Fatalf("fileTime = %v %v", at, ok)
	}
}

func entry(dn string, attrs map[string][]string) *ldap.Entry { return ldap.NewEntry(dn, attrs) }

func TestMapDisabledState(t *testing.T) {
	now := time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC)
	cases := []struct {
		kind   string
		attrs  map[string][]string
		want   bool
		reason string
	}{
		{"ad", map[string][]string{"userAccountControl": {"512"}}, false, ""},
		{"ad", map[string][]string{"userAccountControl": {"514"}}, true, "ACCOUNTDISABLE"},
		{"ad", map[string][]string{"userAccountControl": {"66050"}}, true, "ACCOUNTDISABLE"},
		{"ad", map[string][]string{"userAccountControl": {"512"}, "accountExpires": {"0"}}, false, ""},
		{"ad", map[string][]string{"userAccountControl": {"512"}, "accountExpires": {"9223372036854775807"}}, false, ""},
		{"ad", map[string][]string{"userAccountControl": {"512"}, "accountExpires": {"133485408000000000"}}, true, "accountExpires 2024-01-01"},
		{"ad", map[string][]string{"userAccountControl": {"512"}, "accountExpires": {"150000000000000000"}}, false, ""},
		{"freeipa", map[string][]string{"nsAccountLock": {"TRUE"}}, true, "nsAccountLock"},
		{"freeipa", map[string][]string{"nsAccountLock": {"false"}}, false, ""},
		{"freeipa", nil, false, ""},
		{"openldap", map[string][]string{"pwdAccountLockedTime": {"000001010000Z"}}, true, "administrator"},
		// A lockout after failed binds ends by itself: not a disable.
		{"openldap", map[string][]string{"pwdAccountLockedTime": {"20250601120000Z"}}, false, ""},
		{"openldap", nil, false, ""},
	}
	for _, c := range cases {
		d := config.Directory{Kind: c.kind, Attributes: config.Presets[c.kind].Attributes}
		m := NewMapper(d)
		m.now = func() time.Time { return now }
		attrs := map[string][]string{"objectGUID": {string(make([]byte, 16))}, "entryUUID": {"0C7E8E2A-1B2B-4A3B-9C3D-1234567890AB"},
			"nsUniqueId": {"a-b-c-d"}, "sAMAccountName": {"u"}, "uid": {"u"}}
		for k, v := range c.attrs {
			attrs[k] = v
		}
		it, err := m.Map(entry("cn=u,dc=x", attrs))
		if err != nil {
			t.Fatalf("%s %v: %v", c.kind, c.attrs, err)
		}
		if it.Disabled != c.want || !strings.Contains(it.DisabledReason, c.reason) {
			t.Errorf("%s %v: disabled=%v (%q), want %v (%q)", c.kind, c.attrs, it.Disabled, it.DisabledReason, c.want, c.reason)
		}
	}
}

func TestMapIDs(t *testing.T) {
	raw, _ := hex.DecodeString("ff19966f868b11d0b42d00c04fc964ff")
	ad := NewMapper(config.Directory{Kind: "ad", Attributes: config.Presets["ad"].Attributes})
	it, err := ad.Map(entry("CN=X,DC=corp", map[string][]string{"objectGUID": {string(raw)}, "sAMAccountName": {"x"}, "mail": {" x@corp "}}))
	if err != nil || it.DirectoryID != "6f9619ff-8b86-d011-b42d-00c04fc964ff" || it.Email != "x@corp" {
		t.Fatalf("AD identity %+v, %v", it, err)
	}
	ol := NewMapper(config.Directory{Kind: "openldap", Attributes: config.Presets["openldap"].Attributes})
	it, err = ol.Map(entry("uid=x,dc=corp", map[string][]string{"entryUUID": {"0C7E8E2A-1B2B-4A3B-9C3D-1234567890AB"}, "uid": {"x"}}))
	if err != nil || it.DirectoryID != "0c7e8e2a-1b2b-4a3b-9c3d-1234567890ab" {
		t.Fatalf("OpenLDAP identity %+v, %v", it, err)
	}
	if _, err := ol.Map(entry("uid=x,dc=corp", map[string][]string{"uid": {"x"}})); !errors.Is(err, ErrNoID) {
		t.Fatalf("an entry without entryUUID: %v, want ErrNoID", err)
	}
	if _, err := ol.Map(entry("uid=x,dc=corp", map[string][]string{"entryUUID": {"0c7e8e2a-1b2b-4a3b-9c3d-1234567890ab"}})); err == nil {
		t.Fatal("an entry without a username must be refused")
	}
	// Overridden attributes.
	custom := NewMapper(config.Directory{Kind: "openldap", Attributes: config.Attributes{ID: "employeeNumber", Username: "cn", Email: "mail", Disabled: "accountStatus"}})
	it, err = custom.Map(entry("cn=x,dc=corp", map[string][]string{"employeeNumber": {"E-17"}, "cn": {"Xavier"}, "accountStatus": {"disabled"}}))
	if err != nil || it.DirectoryID != "e-17" || it.Username != "Xavier" || !it.Disabled {
		t.Fatalf("custom identity %+v, %v", it, err)
	}
	if got := strings.Join(custom.Attributes(), ","); got != "employeeNumber,cn,mail,accountStatus" {
		t.Fatalf("requested attributes %s", got)
	}
	long := strings.Repeat("x", 65)
	if _, err := custom.Map(entry("cn=x,dc=corp", map[string][]string{"employeeNumber": {long}, "cn": {"x"}})); err == nil {
		t.Fatal("an ID longer than the column must be refused")
	}
}

func TestNormDN(t *testing.T) {
	a := NormDN(`CN=O'Brien\, \"Liam\" \+ Jr,OU=People,DC=Corp,DC=Example`)
	b := NormDN(`cn=o'brien\2c \22liam\22 \2b jr, ou=people, dc=corp, dc=example`)
	if a != b {
		t.Fatalf("normDN differs: %q vs %q", a, b)
	}
	if ParentDN("uid=a,ou=x,dc=y") != ParentDN("uid=b,OU=X,DC=Y") || ParentDN("uid=a,ou=x,dc=y") == ParentDN("uid=a,ou=z,dc=y") {
		t.Fatal("parentDN")
	}
}

func TestValidateFilter(t *testing.T) {
	if f, err := ValidateFilter("objectClass=person"); err != nil || f != "(objectClass=person)" {
		t.Fatalf("%q %v", f, err)
	}
	if _, err := ValidateFilter("(&(objectClass=person)(cn=a"); err == nil || !strings.Contains(err.Error(), "not a valid LDAP filter") {
		t.Fatalf("a broken filter: %v", err)
	}
}

func TestClip(t *testing.T) {
	s := strings.Repeat("é", 200) // 400 bytes
	c := Clip(s, 255)
	if len(c) > 255 || !strings.HasPrefix(s, c) || len(c) != 254 {
		t.Fatalf("clip cut %d bytes", len(c))
	}
}

// TestMapInvalidUTF8: a value with invalid UTF-8 (an attribute of the wrong
// syntax, a broken import) is stored with U+FFFD in place of the bad bytes:
// PostgreSQL refuses it as it is, which would fail the batch and every later
// run.
func TestMapInvalidUTF8(t *testing.T) {
	ol := NewMapper(config.Directory{Kind: "openldap", Attributes: config.Presets["openldap"].Attributes})
	it, err := ol.Map(entry("uid=bad,dc=corp", map[string][]string{"entryUUID": {"0c7e8e2a-1b2b-4a3b-9c3d-1234567890ab"}, "uid": {"bad"},
		"displayName": {"Ren\xe9 M\xfcller"}, "departmentNumber": {"R&D \xff"}, "mail": {"bad@corp.example"}}))
	if err != nil || it.DisplayName != "Ren\uFFFD M\uFFFDller" || it.Department != "R&D \uFFFD" || it.Email != "bad@corp.example" || it.Username != "bad" {
		t.Fatalf("identity %+v, %v", it, err)
	}
	_, db := database(t, "postgres")
	var got string
	if err := db.QueryRowxContext(context.Background(), "SELECT CAST($1 AS text)", it.DisplayName).Scan(&got); err != nil || got != it.DisplayName {
		t.Fatalf("PostgreSQL stores the mapped value: %q, %v", got, err)
	}
	if err := db.QueryRowxContext(context.Background(), "SELECT CAST($1 AS text)", "Ren\xe9").Scan(&got); err == nil {
		t.Error("PostgreSQL accepted invalid UTF-8: the reason for text() is gone")
	}
}
