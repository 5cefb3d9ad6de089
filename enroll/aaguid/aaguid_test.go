package aaguid

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
)

func mustBytes(t testing.TB, s string) []byte {
	t.Helper()
	id, ok := parseCanonical(s)
	if !ok {
		t.Fatalf("parseCanonical(%q) failed", s)
	}
	return id[:]
}

func TestKnownEntries(t *testing.T) {
	for _, tc := range []struct{ aaguid, name string }{
		{"ea9b8d66-4d01-1d21-3ce4-b6b48cb575d4", "Google Password Manager"},
		// Upstream renamed "iCloud Keychain" to "Apple Passwords"; the
		// managed (enterprise) variant keeps the old name.
		{"fbfc3007-154e-4ecc-8c0b-6e020557d7bd", "Apple Passwords"},
		{"dd4ec289-e01d-41c9-bb89-70fa845d4bf2", "iCloud Keychain (Managed)"},
		{"08987058-cadc-4b81-b6e1-30de50dcbe96", "Windows Hello"},
		{"9ddd1817-af5a-4672-a2b9-3e3dd95000a9", "Windows Hello"},
		{"6028b017-b1d4-4c02-b4b3-afcdafc96bb2", "Windows Hello"},
		{"bada5566-a7aa-401f-bd96-45619a55120d", "1Password"},
		{"d548826e-79b4-db40-a3d8-11116f7e8349", "Bitwarden"},
		{"53414d53-554e-4700-0000-000000000000", "Samsung Pass"},
		{"cb69481e-8ff7-4039-93ec-0a2729a154a8", "YubiKey 5 Series"},
		{"ee882879-721c-4913-9775-3dfcce97072a", "YubiKey 5 Series"},
		{"891494da-2c90-4d31-a9cd-4eab0aed1309", "Sésame"},
		// Upstream has a trailing space here; the generator trims it.
		{"c611b55c-77b2-4527-8082-590e931b2f08", "GoTrust Idem Key"},
	} {
		b := mustBytes(t, tc.aaguid)
		if got, ok := Lookup(b); !ok || got != tc.name {
			t.Errorf("Lookup(%s) = %q, %v; want %q, true", tc.aaguid, got, ok, tc.name)
		}
		if got, ok := LookupString(tc.aaguid); !ok || got != tc.name {
			t.Errorf("LookupString(%s) = %q, %v; want %q, true", tc.aaguid, got, ok, tc.name)
		}
		if got := Name(b); got != tc.name {
			t.Errorf("Name(%s) = %q, want %q", tc.aaguid, got, tc.name)
		}
		if got := Format(b); got != tc.aaguid {
			t.Errorf("Format(%x) = %q, want %q", b, got, tc.aaguid)
		}
	}
}

// TestEmbeddedTable checks the bundled file as the generator writes it:
// keys sorted and unique, every key a lowercase AAGUID, names trimmed.
func TestEmbeddedTable(t *testing.T) {
	m := table()
	if len(m) < 300 {
		t.Fatalf("table has %d entries, want the full list (367 at the last refresh)", len(m))
	}
	dec := json.NewDecoder(bytes.NewReader(tableJSON))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		t.Fatalf("first token = %v, %v", tok, err)
	}
	prev, n := "", 0
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			t.Fatal(err)
		}
		key := tok.(string)
		var name string
		if err := dec.Decode(&name); err != nil {
			t.Fatalf("value of %q: %v", key, err)
		}
		if key <= prev {
			t.Errorf("key %q after %q: not sorted or duplicate", key, prev)
		}
		if name != strings.TrimSpace(name) || name == "" {
			t.Errorf("key %q: name %q not trimmed or empty", key, name)
		}
		if id, ok := parseCanonical(key); !ok || Format(id[:]) != key {
			t.Errorf("key %q is not a canonical lowercase AAGUID", key)
		}
		prev = key
		n++
	}
	if n != len(m) {
		t.Errorf("file has %d keys, table %d", n, len(m))
	}
	if !bytes.HasSuffix(tableJSON, []byte("}\n")) {
		t.Error("file does not end in a newline after the object")
	}
}

func TestFallbacks(t *testing.T) {
	zero := make([]byte, 16)
	if name, ok := Lookup(zero); ok {
		t.Errorf("Lookup(zero) = %q, true; want not found", name)
	}
	unknown := mustBytes(t, "01234567-89ab-cdef-0123-456789abcdef")
	if name, ok := Lookup(unknown); ok {
		t.Fatalf("test AAGUID is in the table as %q; pick another", name)
	}
	for _, tc := range []struct {
		desc   string
		aaguid []byte
		want   string
	}{
		{"all-zero", zero, NameHidden},
		{"nil", nil, NameHidden},
		{"empty", []byte{}, NameHidden},
		{"unknown", unknown, NameUnknown},
		{"15 bytes", unknown[:15], NameUnknown},
		{"17 bytes", append(append([]byte{}, unknown...), 0), NameUnknown},
		{"15 zero bytes", make([]byte, 15), NameUnknown},
		{"one byte", []byte{0}, NameUnknown},
	} {
		if got := Name(tc.aaguid); got != tc.want {
			t.Errorf("Name(%s) = %q, want %q", tc.desc, got, tc.want)
		}
	}
	if NameHidden == "" || NameUnknown == "" || NameHidden == NameUnknown {
		t.Error("fallback names must be distinct and non-empty")
	}
}

func TestBadLengths(t *testing.T) {
	known := mustBytes(t, "ea9b8d66-4d01-1d21-3ce4-b6b48cb575d4")
	for _, b := range [][]byte{nil, {}, known[:1], known[:15], append(append([]byte{}, known...), 0), make([]byte, 32)} {
		if name, ok := Lookup(b); ok || name != "" {
			t.Errorf("Lookup(%d bytes) = %q, %v; want \"\", false", len(b), name, ok)
		}
		if got := Format(b); got != "" {
			t.Errorf("Format(%d bytes) = %q, want \"\"", len(b), got)
		}
	}
}

func TestLookupStringCase(t *testing.T) {
	for _, s := range []string{
		"EA9B8D66-4D01-1D21-3CE4-B6B48CB575D4",
		"Ea9b8D66-4d01-1D21-3cE4-b6B48cb575d4",
		"ea9b8d66-4d01-1d21-3ce4-b6b48cb575d4",
	} {
		if name, ok := LookupString(s); !ok || name != "Google Password Manager" {
			t.Errorf("LookupString(%q) = %q, %v", s, name, ok)
		}
	}
}

func TestLookupStringRejects(t *testing.T) {
	for _, s := range []string{
		"",
		"ea9b8d664d011d213ce4b6b48cb575d4",       // no hyphens
		"{ea9b8d66-4d01-1d21-3ce4-b6b48cb575d4}", // braces
		"urn:uuid:ea9b8d66-4d01-1d21-3ce4-b6b48cb575d4",
		" ea9b8d66-4d01-1d21-3ce4-b6b48cb575d4",    // leading space
		"ea9b8d66-4d01-1d21-3ce4-b6b48cb575d4 ",    // trailing space
		"ea9b8d66-4d01-1d21-3ce4-b6b48cb575d",      // 35 chars
		"ea9b8d66-4d01-1d21-3ce4-b6b48cb575d44",    // 37 chars
		"ea9b8d6-64d01-1d21-3ce4-b6b48cb575d4",     // hyphen misplaced
		"ea9b8d66-4d01-1d21-3ce4-b6b48cb575dg",     // not hex
		"ea9b8d66_4d01_1d21_3ce4_b6b48cb575d4",     // wrong separator
		"ea9b8d66-4d01-1d21-3ce4-b6b48cb575\u00e4", // non-ASCII, 36 bytes
		"00000000-0000-0000-0000-000000000000",
	} {
		if name, ok := LookupString(s); ok {
			t.Errorf("LookupString(%q) = %q, true; want not found", s, name)
		}
	}
}

func TestFormat(t *testing.T) {
	b := []byte{0xea, 0x9b, 0x8d, 0x66, 0x4d, 0x01, 0x1d, 0x21, 0x3c, 0xe4, 0xb6, 0xb4, 0x8c, 0xb5, 0x75, 0xd4}
	if got, want := Format(b), "ea9b8d66-4d01-1d21-3ce4-b6b48cb575d4"; got != want {
		t.Errorf("Format = %q, want %q", got, want)
	}
	if got, want := Format(make([]byte, 16)), "00000000-0000-0000-0000-000000000000"; got != want {
		t.Errorf("Format(zero) = %q, want %q", got, want)
	}
}

func TestParseTableRejects(t *testing.T) {
	for _, data := range []string{
		``,
		`{`,
		`[]`,
		`{"ea9b8d66-4d01-1d21-3ce4-b6b48cb575d4": {"name": "x"}}`,
		`{"EA9B8D66-4D01-1D21-3CE4-B6B48CB575D4": "upper case"}`,
		`{"ea9b8d664d011d213ce4b6b48cb575d4": "no hyphens"}`,
		`{"00000000-0000-0000-0000-000000000000": "zero"}`,
		`{"ea9b8d66-4d01-1d21-3ce4-b6b48cb575d4": ""}`,
	} {
		if m, err := parseTable([]byte(data)); err == nil {
			t.Errorf("parseTable(%q) = %v, nil; want an error", data, m)
		}
	}
	m, err := parseTable([]byte(`{"ea9b8d66-4d01-1d21-3ce4-b6b48cb575d4": "GPM"}`))
	if err != nil || len(m) != 1 {
		t.Errorf("parseTable(valid) = %v, %v", m, err)
	}
}

func FuzzLookupString(f *testing.F) {
	for _, s := range []string{
		"ea9b8d66-4d01-1d21-3ce4-b6b48cb575d4",
		"FBFC3007-154E-4ECC-8C0B-6E020557D7BD",
		"00000000-0000-0000-0000-000000000000",
		"ea9b8d664d011d213ce4b6b48cb575d4",
		"{08987058-cadc-4b81-b6e1-30de50dcbe96}",
		"",
		"--------------------------------------",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		name, ok := LookupString(s)
		if ok && name == "" {
			t.Fatalf("LookupString(%q) found an empty name", s)
		}
		id, parsed := parseCanonical(s)
		if !parsed {
			if ok {
				t.Fatalf("LookupString(%q) found %q for a string that does not parse", s, name)
			}
			return
		}
		if got := Format(id[:]); got != strings.ToLower(s) {
			t.Fatalf("Format(parse(%q)) = %q", s, got)
		}
		if n2, ok2 := Lookup(id[:]); n2 != name || ok2 != ok {
			t.Fatalf("LookupString(%q) = %q, %v but Lookup = %q, %v", s, name, ok, n2, ok2)
		}
		if n := Name(id[:]); n == "" || (ok && n != name) {
			t.Fatalf("Name(%q) = %q", s, n)
		}
	})
}

func ExampleName() {
	// As stored by go-webauthn in Credential.Authenticator.AAGUID.
	gpm := []byte{0xea, 0x9b, 0x8d, 0x66, 0x4d, 0x01, 0x1d, 0x21, 0x3c, 0xe4, 0xb6, 0xb4, 0x8c, 0xb5, 0x75, 0xd4}
	fmt.Println(Name(gpm))
	fmt.Println(Name(make([]byte, 16)))
	fmt.Println(Name([]byte{0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef, 0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef}))
	fmt.Println(Format(gpm))
	// Output:
	// Google Password Manager
	// Passkey
	// Passkey (unknown provider)
	// ea9b8d66-4d01-1d21-3ce4-b6b48cb575d4
}

func ExampleLookupString() {
	name, ok := LookupString("08987058-CADC-4B81-B6E1-30DE50DCBE96")
	fmt.Println(name, ok)
	// Output: Windows Hello true
}
