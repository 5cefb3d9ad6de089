package directory

import (
	"bytes"
	"fmt"
	"math"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	ber "github.com/go-asn1-ber/asn1-ber"

	"github.com/passbridge/passbridge/config"
)

var guidForm = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)

// FuzzGUID: objectGUID bytes and the string AD tools print convert both
// ways without loss, and anything else is refused with an error.
func FuzzGUID(f *testing.F) {
	raw := []byte{0xff, 0x19, 0x96, 0x6f, 0x86, 0x8b, 0x11, 0xd0, 0xb4, 0x2d, 0x00, 0xc0, 0x4f, 0xc9, 0x64, 0xff}
	for _, s := range []struct {
		b []byte
		s string
	}{
		{raw, "{6F9619FF-8B86-D011-B42D-00C04FC964FF}"}, {make([]byte, 16), "00000000-0000-0000-0000-000000000000"},
		{bytes.Repeat([]byte{0xff}, 16), " ffffffff-ffff-ffff-ffff-ffffffffffff "}, {raw[:15], "6f9619ff"}, {nil, ""},
		{append(raw, 0), "6f9619ff-8b86-d011-b42d-00c04fc964fz"}, {[]byte("0123456789abcdef"), "{{6f9619ff-8b86-d011-b42d-00c04fc964ff}}"},
		{raw, "+f9619ff-8b86-d011-b42d-00c04fc964ff"}, {raw, "6f9619ff-8b86-d011-b42d-00c0-4fc964f"}, {raw, "６f9619ff-8b86-d011-b42d-00c04fc964ff"},
	} {
		f.Add(s.b, s.s)
	}
	f.Fuzz(func(t *testing.T, b []byte, s string) {
		str, err := GUIDString(b)
		if len(b) != 16 {
			if err == nil || !strings.Contains(err.Error(), "16 bytes") {
				t.Fatalf("GUIDString(%x) = %q, %v: want a 16-byte error", b, str, err)
			}
		} else {
			if err != nil || !guidForm.MatchString(str) {
				t.Fatalf("GUIDString(%x) = %q, %v", b, str, err)
			}
			back, err := GUIDBytes(str)
			if err != nil || !bytes.Equal(back, b) {
				t.Fatalf("GUIDBytes(GUIDString(%x)) = %x, %v", b, back, err)
			}
			if up, err := GUIDBytes("{" + strings.ToUpper(str) + "}"); err != nil || !bytes.Equal(up, b) {
				t.Fatalf("GUIDBytes of the braced upper-case form %q: %x, %v", str, up, err)
			}
		}
		out, err := GUIDBytes(s)
		if err != nil {
			if out != nil || !strings.Contains(err.Error(), "not a GUID") {
				t.Fatalf("GUIDBytes(%q) = %x, %v", s, out, err)
			}
			return
		}
		if len(out) != 16 {
			t.Fatalf("GUIDBytes(%q) is %d bytes", s, len(out))
		}
		again, err := GUIDString(out)
		want := strings.ToLower(strings.Trim(strings.TrimSpace(s), "{}"))
		if err != nil || again != want {
			t.Fatalf("GUIDString(GUIDBytes(%q)) = %q, %v; want %q", s, again, err, want)
		}
	})
}

// FuzzFileTime: AD's accountExpires never panics the mapper; "never"
// values are never a date; every real FILETIME after 1970 converts to the
// instant it encodes (back to the same count of 100 ns intervals).
func FuzzFileTime(f *testing.F) {
	for _, s := range []string{"0", "9223372036854775807", "133485408000000000", "116444736000000000", "116444735999999999", "1", "-1",
		" 133485408000000000 ", "+5", "0x10", "", "junk", "9223372036854775808", "150000000000000000", "9223372036854775806"} {
		n, _ := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
		f.Add(s, n)
	}
	const epochDiff = 116444736000000000
	now := time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC)
	m := NewMapper(config.Directory{Kind: "ad", Attributes: config.Presets["ad"].Attributes})
	m.now = func() time.Time { return now }
	f.Fuzz(func(t *testing.T, s string, n int64) {
		at, ok := fileTime(s)
		if ok {
			if at.Location() != time.UTC || at.Before(time.Unix(0, 0)) {
				t.Fatalf("fileTime(%q) = %v", s, at)
			}
		} else if at != (time.Time{}) {
			t.Fatalf("fileTime(%q): a time with ok=false", s)
		}
		// The mapper reads it as accountExpires: disabled exactly when it
		// is a date not after now.
		e := entry("cn=x,dc=corp", map[string][]string{"objectGUID": {string(make([]byte, 16))}, "sAMAccountName": {"x"},
			"userAccountControl": {"512"}, "accountExpires": {s}})
		it, err := m.Map(e)
		if err != nil {
			t.Fatal(err)
		}
		if want := ok && !at.After(now) && strings.TrimSpace(s) != "" && e.GetAttributeValue("accountExpires") != ""; it.Disabled != want {
			t.Fatalf("accountExpires %q: disabled %v, want %v (%q)", s, it.Disabled, want, it.DisabledReason)
		}

		v := strconv.FormatInt(n, 10)
		at, ok = fileTime(v)
		switch {
		case n <= 0 || n == math.MaxInt64:
			if ok {
				t.Fatalf("fileTime(%d) is %v, but it means never", n, at)
			}
		case n < epochDiff:
			if !ok || !at.Equal(time.Unix(0, 0)) {
				t.Fatalf("fileTime(%d) = %v %v, want the epoch (long expired)", n, at, ok)
			}
		default:
			if !ok {
				t.Fatalf("fileTime(%d) refused", n)
			}
			if back := at.Unix()*1e7 + int64(at.Nanosecond()/100) + epochDiff; back != n {
				t.Fatalf("fileTime(%d) = %v, which is FILETIME %d", n, at, back)
			}
		}
	})
}

// FuzzGeneralizedTime: the modifyTimestamp comparison of timestamp-based
// delta syncs is a consistent order on any two values (an unparsable value
// sorts first), and a valid time formatted as GeneralizedTime parses back
// to the same instant.
func FuzzGeneralizedTime(f *testing.F) {
	for _, s := range [][2]string{
		{"20250601120000Z", "20250601120000.5Z"}, {"20250601120000+0200", "20250601100000Z"}, {"000001010000Z", "20250601120000Z"},
		{"", "x"}, {"2025060112Z", "202506011200Z"}, {"20251301000000Z", "20250230000000Z"}, {"20250601120000,25Z", "20250601120000.Z"},
		{"99991231235959.999999999Z", "00000101000000Z"}, {"20250601120000-2400", "20250601120000+9999"}, {"20250601120000", "\xff"},
	} {
		f.Add(s[0], s[1], int64(1748779200), uint32(0))
	}
	f.Fuzz(func(t *testing.T, a, b string, sec int64, nsec uint32) {
		ab, ba := compareGeneralizedTime(a, b), compareGeneralizedTime(b, a)
		if ab != -ba {
			t.Fatalf("compare(%q, %q) = %d but compare(%q, %q) = %d", a, b, ab, b, a, ba)
		}
		if c := compareGeneralizedTime(a, a); c != 0 {
			t.Fatalf("compare(%q, itself) = %d", a, c)
		}
		tm := time.Unix(sec, int64(nsec%1e9)).UTC()
		if tm.Year() < 1 || tm.Year() > 9999 {
			return
		}
		s := tm.Format("20060102150405.999999999Z")
		got, err := ber.ParseGeneralizedTime([]byte(s))
		if err != nil || !got.Equal(tm) {
			t.Fatalf("%v as %q parses to %v, %v", tm, s, got, err)
		}
		if c := compareGeneralizedTime(s, tm.Add(time.Second).Format("20060102150405.999999999Z")); c >= 0 && tm.Year() < 9999 {
			t.Fatalf("%q not before a second later: %d", s, c)
		}
	})
}

// FuzzMap maps an entry of any attribute values for each directory kind.
// Properties: no panic; a refusal names the entry's DN; an identity has a
// stable ID (for AD, the GUID of the objectGUID bytes), a non-empty
// username, every value trimmed and cut to its column on a rune boundary,
// and a reason exactly when it is disabled; mapping is deterministic.
func FuzzMap(f *testing.F) {
	guid := string([]byte{0xff, 0x19, 0x96, 0x6f, 0x86, 0x8b, 0x11, 0xd0, 0xb4, 0x2d, 0x00, 0xc0, 0x4f, 0xc9, 0x64, 0xff})
	for _, s := range []struct {
		kind                                       uint8
		dn, id, user, mail, name, dept, dis, expir string
	}{
		{0, "CN=Zoë,OU=People,DC=corp", guid, "zoe", " zoe@corp.example ", "Zoë Ä", "IT", "512", "0"},
		{0, "CN=x,DC=corp", guid, "x", "", "", "", "514", "133485408000000000"},
		{0, "CN=x,DC=corp", guid[:15], "x", "", "", "", "", ""},
		{0, "", "", "", "", "", "", "", ""},
		{0, "CN=x,DC=corp", guid, " \t ", "", "", "", "-2", "-1"},
		{0, "CN=x,DC=corp", guid, strings.Repeat("é", 200), strings.Repeat("m", 400), strings.Repeat("日", 100), "", "99999999999999999999", "x"},
		{1, "uid=a,dc=x", "0C7E8E2A-1B2B-4A3B-9C3D-1234567890AB", "a", "a@x", "A", "", "000001010000Z", ""},
		{1, "uid=a,dc=x", "\xff\xfe\x00", "a", "", "", "", "20250601120000Z", ""},
		{1, "uid=a,dc=x", strings.Repeat("i", 65), "a", "", "", "", "", ""},
		{2, "uid=a,cn=users,dc=x", "a-b-c-d", "a", "", "", "", "TRUE", ""},
		{2, "uid=a,dc=x", "   ", "a", "", "", "", "yes", ""},
		{1, "uid=a,dc=x", "id", "\xff" + strings.Repeat("a", 300), "\xc3", "a\xc3", "", "", ""},
		{1, "uid=a)(uid=*", "*", "*)(uid=*", "\x00", "", "", "locked", ""},
	} {
		f.Add(s.kind, s.dn, s.id, s.user, s.mail, s.name, s.dept, s.dis, s.expir)
	}
	kinds := []string{"ad", "openldap", "freeipa"}
	now := time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, kind uint8, dn, id, user, mail, name, dept, dis, expir string) {
		k := kinds[int(kind)%len(kinds)]
		a := config.Presets[k].Attributes
		m := NewMapper(config.Directory{Kind: k, Attributes: a})
		m.now = func() time.Time { return now }
		attrs := map[string][]string{}
		for _, kv := range [][2]string{{a.ID, id}, {a.Username, user}, {a.Email, mail}, {a.DisplayName, name}, {a.Department, dept}, {a.Disabled, dis}, {"accountExpires", expir}} {
			if kv[0] != "" && kv[1] != "" {
				attrs[kv[0]] = []string{kv[1]}
			}
		}
		e := entry(dn, attrs)
		it, err := m.Map(e)
		it2, err2 := m.Map(e)
		if it != it2 || fmt.Sprint(err) != fmt.Sprint(err2) {
			t.Fatalf("not deterministic: %+v %v / %+v %v", it, err, it2, err2)
		}
		if err != nil {
			if it != (Identity{}) {
				t.Fatalf("an identity with the error %v: %+v", err, it)
			}
			if !strings.Contains(err.Error(), fmt.Sprintf("%q", dn)) {
				t.Fatalf("the error does not name the entry %q: %v", dn, err)
			}
			if strings.Contains(err.Error(), "(the username attribute)") && strings.TrimSpace(user) != "" {
				t.Fatalf("username %q refused as missing: %v", user, err)
			}
			return
		}
		if it.DirectoryID == "" || len(it.DirectoryID) > maxIDLen || it.DN != text(dn) {
			t.Fatalf("identity %+v", it)
		}
		for _, v := range []string{it.DirectoryID, it.DN, it.Username, it.Email, it.DisplayName, it.Department} {
			if !utf8.ValidString(v) {
				t.Fatalf("invalid UTF-8 %q in %+v: PostgreSQL and MySQL would refuse the batch", v, it)
			}
		}
		if k == "ad" {
			if back, err := GUIDBytes(it.DirectoryID); err != nil || string(back) != id {
				t.Fatalf("objectGUID %x became %q, which is %x (%v)", id, it.DirectoryID, back, err)
			}
		} else if utf8.ValidString(id) && it.DirectoryID != strings.ToLower(strings.TrimSpace(id)) {
			t.Fatalf("ID %q became %q", id, it.DirectoryID)
		}
		for _, c := range []struct {
			field, got, in string
			max            int
		}{{"username", it.Username, user, maxUsernameLen}, {"email", it.Email, mail, maxEmailLen}, {"display name", it.DisplayName, name, MaxNameLen}, {"department", it.Department, dept, MaxNameLen}} {
			in := text(strings.TrimSpace(c.in))
			if len(c.got) > c.max || !strings.HasPrefix(in, c.got) {
				t.Fatalf("%s %q became %q", c.field, c.in, c.got)
			}
			// Cut on a rune boundary, never more than one character short.
			if len(in) > c.max && len(c.got) < c.max-utf8.UTFMax+1 {
				t.Fatalf("%s of %d bytes cut to %d (%q)", c.field, len(in), len(c.got), c.got)
			}
			if utf8.ValidString(in) && !utf8.ValidString(c.got) {
				t.Fatalf("%s %q cut inside a character: %q", c.field, c.in, c.got)
			}
		}
		if it.Username == "" {
			t.Fatalf("an identity without a username: %+v", it)
		}
		if it.Disabled != (it.DisabledReason != "") {
			t.Fatalf("disabled %v with reason %q", it.Disabled, it.DisabledReason)
		}
	})
}
