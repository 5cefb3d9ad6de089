// Package aaguid names a passkey by its provider, from the AAGUID the
// authenticator reports at registration (for go-webauthn, the 16 bytes in
// Credential.Authenticator.AAGUID).
//
// The table is bundled: aaguids.json, names only, built from the community
// list at github.com/passkeydeveloper/passkey-authenticator-aaguids
// (combined_aaguid.json: the hand-curated providers plus the FIDO Metadata
// Service entries). The current file was taken from that repository at commit
// b976141b732e0ded22d4dca0a505660eac3fa1d6 (its dist/index.json, which the
// upstream split-aaguids script derives from combined_aaguid.json), on
// 2026-12-03; 367 entries. See README.md for how to refresh it.
//
// The names are for display only (naming a passkey in the enrollment portal).
// An AAGUID is self-declared by the authenticator unless attestation is
// verified, so never base a security decision on it.
package aaguid

//go:generate go run ./internal/gen -o aaguids.json

import (
	_ "embed"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"sync"
)

// Fallback names returned by [Name].
const (
	// NameHidden is the name for a passkey whose provider did not say who
	// it is: the all-zero AAGUID (attestation "none" on some platforms,
	// browsers and authenticators that hide it) or no AAGUID at all.
	NameHidden = "Passkey"
	// NameUnknown is the name for an AAGUID that is not in the table, or
	// one that is not 16 bytes long.
	NameUnknown = "Passkey (unknown provider)"
)

//go:embed aaguids.json
var tableJSON []byte

// table parses the embedded file on first use. The file is written by
// internal/gen and checked by the tests, so a bad file is a build mistake:
// it panics rather than silently naming every passkey "unknown".
var table = sync.OnceValue(func() map[[16]byte]string {
	m, err := parseTable(tableJSON)
	if err != nil {
		panic("aaguid: embedded aaguids.json: " + err.Error())
	}
	return m
})

func parseTable(data []byte) (map[[16]byte]string, error) {
	var raw map[string]string
	if err := json.Unmarshal(data, &raw); err != nil {
		return nil, err
	}
	m := make(map[[16]byte]string, len(raw))
	for k, name := range raw {
		id, ok := parseCanonical(k)
		if !ok || k != Format(id[:]) {
			return nil, fmt.Errorf("key %q is not a lowercase 8-4-4-4-12 AAGUID", k)
		}
		if id == ([16]byte{}) {
			return nil, fmt.Errorf("key %q: the all-zero AAGUID names no provider", k)
		}
		if name == "" {
			return nil, fmt.Errorf("key %q: empty name", k)
		}
		m[id] = name
	}
	return m, nil
}

// Lookup returns the provider name for a raw 16-byte AAGUID. ok is false
// when the AAGUID is not in the table, is all zeros, or is not 16 bytes
// long (including nil).
func Lookup(aaguid []byte) (name string, ok bool) {
	if len(aaguid) != 16 {
		return "", false
	}
	name, ok = table()[[16]byte(aaguid)]
	return name, ok
}

// LookupString is [Lookup] for an AAGUID in the canonical 8-4-4-4-12
// hexadecimal form ("ea9b8d66-4d01-1d21-3ce4-b6b48cb575d4"), in either
// case. Any other form (braces, "urn:uuid:", spaces, no hyphens) is not
// found.
func LookupString(s string) (name string, ok bool) {
	id, ok := parseCanonical(s)
	if !ok {
		return "", false
	}
	return Lookup(id[:])
}

// Name returns a display name for a passkey and is never empty: the
// provider's name when the AAGUID is in the table, [NameHidden] for the
// all-zero AAGUID or an empty/nil one (the provider is not disclosed), and
// [NameUnknown] for any other AAGUID (including one of the wrong length).
func Name(aaguid []byte) string {
	if name, ok := Lookup(aaguid); ok {
		return name
	}
	if len(aaguid) == 0 || (len(aaguid) == 16 && [16]byte(aaguid) == [16]byte{}) {
		return NameHidden
	}
	return NameUnknown
}

// Format returns the canonical lowercase 8-4-4-4-12 form of a 16-byte
// AAGUID, or "" when aaguid is not 16 bytes long (including nil).
func Format(aaguid []byte) string {
	if len(aaguid) != 16 {
		return ""
	}
	var b [36]byte
	hex.Encode(b[0:8], aaguid[0:4])
	b[8] = '-'
	hex.Encode(b[9:13], aaguid[4:6])
	b[13] = '-'
	hex.Encode(b[14:18], aaguid[6:8])
	b[18] = '-'
	hex.Encode(b[19:23], aaguid[8:10])
	b[23] = '-'
	hex.Encode(b[24:36], aaguid[10:16])
	return string(b[:])
}

// parseCanonical parses the 8-4-4-4-12 form, hex digits in either case.
func parseCanonical(s string) (id [16]byte, ok bool) {
	if len(s) != 36 || s[8] != '-' || s[13] != '-' || s[18] != '-' || s[23] != '-' {
		return id, false
	}
	j := 0
	for i := 0; i < 36; {
		if i == 8 || i == 13 || i == 18 || i == 23 {
			i++
			continue
		}
		hi, ok1 := fromHex(s[i])
		lo, ok2 := fromHex(s[i+1])
		if !ok1 || !ok2 {
			return [16]byte{}, false
		}
		id[j] = hi<<4 | lo
		j++
		i += 2
	}
	return id, true
}

func fromHex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}
