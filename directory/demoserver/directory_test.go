package demoserver

import (
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"errors"
	"slices"
	"strings"
	"testing"
)

const testSuffix = `dn: dc=t,dc=example
objectClass: top
objectClass: dcObject
objectClass: organization
dc: t
o: T
entryUUID: 00000000-0000-4000-8000-000000000001
`

func TestLoadRejectsBadLDIF(t *testing.T) {
	cases := []struct {
		name, ldif, want string
	}{
		{"missing entryUUID", "dn: dc=t,dc=example\nobjectClass: top\ndc: t\n", "t.ldif:1: dc=t,dc=example: entry has no entryUUID"},
		{"duplicate DN in another spelling", testSuffix + "\ndn: DC=T, DC=Example\nobjectClass: top\ndc: t\nentryUUID: 00000000-0000-4000-8000-000000000002\n", "t.ldif:9: DC=T, DC=Example: duplicate entry"},
		{"duplicate entryUUID", testSuffix + "\ndn: ou=a,dc=t,dc=example\nobjectClass: organizationalUnit\nou: a\nentryUUID: 00000000-0000-4000-8000-000000000001\n", "is also the entryUUID of \"dc=t,dc=example\""},
		{"missing parent", testSuffix + "\ndn: uid=x,ou=Gone,dc=t,dc=example\nobjectClass: account\nuid: x\nentryUUID: 00000000-0000-4000-8000-000000000002\n", "parent entry is missing (the nearest ancestor in the file is \"dc=t,dc=example\")"},
		{"memberOf in the file", testSuffix + "memberOf: cn=g,dc=t,dc=example\n", "t.ldif:8: dc=t,dc=example: memberOf is computed by the server"},
		{"bad base64", testSuffix + "description:: not*base64\n", "t.ldif:8: description:: is not valid base64"},
		{"binary value", testSuffix + "description:: AAEC\n", "binary data"},
		{"change record", testSuffix + "changetype: modify\n", "change records (changetype: modify) are not supported"},
		{"RDN value not in the entry", "dn: dc=t,dc=example\nobjectClass: top\ndc: other\nentryUUID: 00000000-0000-4000-8000-000000000001\n", "the RDN value dc=t is not a value of the entry"},
		{"unknown password scheme", testSuffix + "userPassword: {MD5}CY9rzUYh03PK3k6DJie09g==\n", "unsupported password scheme {MD5}"},
		{"DES crypt", testSuffix + "userPassword: {CRYPT}431Zc1LnUlQqYqeIXKYek31E\n", "{CRYPT} value is not a bcrypt hash"},
		{"SSHA without a salt", testSuffix + "userPassword: {SSHA}ppzhmTczLb6d4Q37Q8Cp0iGdvvs=\n", "does not fit a 20-byte digest plus a salt"},
		{"bad timestamp", testSuffix + "modifyTimestamp: 2024-01-01\n", "modifyTimestamp: not a GeneralizedTime"},
		{"local timestamp", testSuffix + "createTimestamp: 20240101120000\n", "createTimestamp: not a GeneralizedTime"},
		{"31 February", testSuffix + "createTimestamp: 20240231120000Z\n", "not a GeneralizedTime"},
		{"member that is not a DN", testSuffix + "member: not a dn\n", "member: invalid DN"},
		{"bad UUID", "dn: dc=t,dc=example\nobjectClass: top\ndc: t\nentryUUID: 1234\n", "entryUUID: not a UUID"},
		{"no objectClass", "dn: dc=t,dc=example\ndc: t\nentryUUID: 00000000-0000-4000-8000-000000000001\n", "entry has no objectClass"},
		{"continuation without a line", " folded\n", "t.ldif:1: continuation line"},
		{"attribute options", testSuffix + "cn;lang-de: x\n", "attribute options (cn;lang-de) are not supported"},
		{"line without a colon", testSuffix + "just text\n", "t.ldif:8: expected \"attribute: value\""},
		{"URL value", testSuffix + "jpegPhoto:< file:///etc/passwd\n", "URL values are not supported"},
		{"duplicate value", testSuffix + "o: t\n", "o: duplicate value \"t\""},
		{"second value of a single-valued attribute", testSuffix + "entryUUID: 00000000-0000-4000-8000-000000000009\n", "entryUUID is single-valued"},
		{"boolean", testSuffix + "nsAccountLock: yes\n", "boolean values are TRUE or FALSE"},
		{"record without dn", "objectClass: top\n", "expected a dn: line to start a record"},
		{"two dn lines", testSuffix + "dn: dc=u,dc=example\n", "second dn: line in one record"},
		{"root DSE", "dn:\nobjectClass: top\n", "the empty DN is the root DSE"},
		{"invalid DN", "dn: dc=t,,dc=example\nobjectClass: top\n", "t.ldif:1: invalid DN"},
		{"LDIF version 2", "version: 2\n", "unsupported LDIF version"},
		{"invalid UTF-8", testSuffix + "description: \xff\n", "t.ldif:8: invalid UTF-8"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Load("t.ldif", strings.NewReader(tc.ldif))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
}

func TestLoadLDIFSyntax(t *testing.T) {
	// Folded lines (also inside a comment), base64 DN and value, CRLF line
	// ends, comments between attributes, a version line and a dn: with
	// no space.
	ldif := "version: 1\r\n" +
		"# a comment that is\r\n  folded\r\n" +
		"dn: dc=t,dc=example\r\n" +
		"objectClass: top\r\nobjectClass: dcObject\r\ndc: t\r\n" +
		"description: a long value that is fo\r\n lded in the middle\r\n" +
		"# between attributes\r\n" +
		"entryUUID: 00000000-0000-4000-8000-000000000001\r\n" +
		"\r\n" +
		"dn:: " + base64.StdEncoding.EncodeToString([]byte("cn=Zoë Ørsted,dc=t,dc=example")) + "\r\n" +
		"objectClass:person\r\n" +
		"cn:: " + base64.StdEncoding.EncodeToString([]byte("Zoë Ørsted")) + "\r\n" +
		"commonName: Zoe Orsted\r\n" +
		"surname: Ørsted\r\n" +
		"entryUUID: 00000000-0000-4000-8000-000000000002\r\n" +
		"userPassword: plain text\r\n"
	d, err := Load("t.ldif", strings.NewReader(ldif))
	if err != nil {
		t.Fatal(err)
	}
	if d.Len() != 2 || !slices.Equal(d.NamingContexts(), []string{"dc=t,dc=example"}) {
		t.Fatalf("%d entries, naming contexts %v", d.Len(), d.NamingContexts())
	}
	top, _ := d.Lookup("dc=t,dc=example")
	if got := top.First("description"); got != "a long value that is folded in the middle" {
		t.Errorf("folded value: %q", got)
	}
	if top.First("hasSubordinates") != "TRUE" || top.First("createTimestamp") == "" || top.First("modifyTimestamp") == "" {
		t.Errorf("computed attributes: %+v", top.Attributes)
	}
	z, ok := d.Lookup("CN=zoë ørsted,DC=t,DC=example")
	if !ok {
		t.Fatal("base64 DN not found")
	}
	if got := z.Get("cn"); !slices.Equal(got, []string{"Zoë Ørsted", "Zoe Orsted"}) {
		t.Errorf("cn (with its alias commonName merged): %v", got)
	}
	if z.First("sn") != "Ørsted" || z.Get("userPassword") != nil {
		t.Errorf("entry: %+v", z.Attributes)
	}
	if z.First("hasSubordinates") != "FALSE" {
		t.Errorf("leaf hasSubordinates: %v", z.Get("hasSubordinates"))
	}
}

func TestPasswordSchemes(t *testing.T) {
	salted := func(scheme string, sum func([]byte) []byte, pw string) string {
		salt := []byte("0123456789")
		return scheme + base64.StdEncoding.EncodeToString(append(sum(append([]byte(pw), salt...)), salt...))
	}
	s256 := func(b []byte) []byte { h := sha256.Sum256(b); return h[:] }
	s512 := func(b []byte) []byte { h := sha512.Sum512(b); return h[:] }
	cases := []struct {
		name, stored, password string
		ok                     bool
	}{
		// Written by OpenLDAP's slappasswd -h {SSHA} / {SHA} -s 'Zoë-secret'.
		{"slappasswd SSHA", "{SSHA}H2LEzd7Ozf+7uXmVL+xQqAd3uIMUigNZ", "Zoë-secret", true},
		{"slappasswd SSHA, wrong", "{SSHA}H2LEzd7Ozf+7uXmVL+xQqAd3uIMUigNZ", "Zoe-secret", false},
		{"slappasswd SHA", "{SHA}ppzhmTczLb6d4Q37Q8Cp0iGdvvs=", "Zoë-secret", true},
		{"lower-case scheme", "{ssha}H2LEzd7Ozf+7uXmVL+xQqAd3uIMUigNZ", "Zoë-secret", true},
		// slappasswd -h {CRYPT} -c '$2y$10$%.22s' -s x (glibc bcrypt).
		{"bcrypt $2y$ in {CRYPT}", "{CRYPT}$2y$10$lhE7tuGL7oVh4pe8dVvhn.rYArMHDke8yD4YAIQHyHjc3k8FcAjHy", "x", true},
		{"bcrypt, wrong", "{CRYPT}$2y$10$lhE7tuGL7oVh4pe8dVvhn.rYArMHDke8yD4YAIQHyHjc3k8FcAjHy", "y", false},
		{"HashSSHA", HashSSHA("northwind", []byte("saltsalt")), "northwind", true},
		{"HashSSHA, wrong", HashSSHA("northwind", []byte("saltsalt")), "northwinD", false},
		{"SSHA256", salted("{SSHA256}", s256, "pw"), "pw", true},
		{"SSHA512", salted("{SSHA512}", s512, "pw"), "pw", true},
		{"SSHA512, wrong", salted("{SSHA512}", s512, "pw"), "pw ", false},
		{"cleartext", "plain", "plain", true},
		{"cleartext, wrong", "plain", "Plain", false},
		{"empty password never matches a hash", HashSSHA("", nil) + "x", "", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := verifyPassword(tc.stored, tc.password)
			if tc.ok && err != nil {
				t.Fatalf("verify: %v", err)
			}
			if !tc.ok && err == nil {
				t.Fatal("a wrong password matched")
			}
			if !tc.ok && !errors.Is(err, errPasswordMismatch) && strings.HasPrefix(tc.stored, "{SSHA}") && !strings.HasSuffix(tc.stored, "x") {
				t.Fatalf("a wrong password gave %v, want errPasswordMismatch", err)
			}
		})
	}
}

func TestGeneralizedTime(t *testing.T) {
	cases := map[string]string{
		"20250303101500Z":     "2025-03-03T10:15:00Z",
		"20250303111500+0100": "2025-03-03T10:15:00Z",
		"2025030310Z":         "2025-03-03T10:00:00Z",
		"202503031015Z":       "2025-03-03T10:15:00Z",
		"20250303101500.5Z":   "2025-03-03T10:15:00.5Z",
		"2025030310,25Z":      "2025-03-03T10:15:00Z",
		"000001010000Z":       "0000-01-01T00:00:00Z",
		"20241231230000-0130": "2025-01-01T00:30:00Z",
	}
	for in, want := range cases {
		got, err := parseGeneralizedTime(in)
		if err != nil || got.UTC().Format("2006-01-02T15:04:05.999999999Z07:00") != want {
			t.Errorf("%s: %v %v, want %s", in, got.UTC(), err, want)
		}
	}
	for _, bad := range []string{"", "2025", "20250303101500", "20251303101500Z", "20250303246000Z", "2025030310.Z", "20250303101500+01", "x0250303101500Z"} {
		if _, err := parseGeneralizedTime(bad); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
}
