package demoserver

import (
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"hash"
	"strings"

	"golang.org/x/crypto/bcrypt"
)

// The userPassword schemes the demo directory verifies. They are the ones
// OpenLDAP writes ({SSHA} is slappasswd's default), plus bcrypt behind
// {CRYPT} and {BCRYPT}, and cleartext (no scheme), which is legal in LDIF
// and what test fixtures use.
var hashSchemes = map[string]struct {
	new  func() hash.Hash
	salt bool
}{
	"{SHA}":     {sha1.New, false},
	"{SSHA}":    {sha1.New, true},
	"{SHA256}":  {sha256.New, false},
	"{SSHA256}": {sha256.New, true},
	"{SHA512}":  {sha512.New, false},
	"{SSHA512}": {sha512.New, true},
}

// checkPasswordSyntax reports a stored userPassword value that no bind could
// ever match, so that a typo in the LDIF fails at load time instead of
// locking a demo user out.
func checkPasswordSyntax(stored string) error {
	scheme, rest, ok := splitScheme(stored)
	if !ok {
		return nil // cleartext
	}
	if s, ok := hashSchemes[scheme]; ok {
		raw, err := base64.StdEncoding.DecodeString(rest)
		if err != nil {
			return fmt.Errorf("%s value is not base64: %w", scheme, err)
		}
		size := s.new().Size()
		if len(raw) < size || (!s.salt && len(raw) != size) || (s.salt && len(raw) == size) {
			return fmt.Errorf("%s value has %d bytes, which does not fit a %d-byte digest%s", scheme, len(raw), size,
				map[bool]string{true: " plus a salt", false: ""}[s.salt])
		}
		return nil
	}
	switch scheme {
	case "{CRYPT}", "{BCRYPT}":
		if _, err := bcrypt.Cost([]byte(rest)); err != nil {
			return fmt.Errorf("%s value is not a bcrypt hash ($2a$/$2b$/$2y$): %w", scheme, err)
		}
		return nil
	}
	return fmt.Errorf("unsupported password scheme %s (use {SSHA}, {SSHA256}, {SSHA512}, {CRYPT} bcrypt or cleartext)", scheme)
}

// splitScheme splits "{SSHA}abc" into "{SSHA}" (upper-cased) and "abc".
func splitScheme(stored string) (scheme, rest string, ok bool) {
	if !strings.HasPrefix(stored, "{") {
		return "", stored, false
	}
	end := strings.IndexByte(stored, '}')
	if end < 0 {
		return "", stored, false
	}
	return strings.ToUpper(stored[:end+1]), stored[end+1:], true
}

var errPasswordMismatch = errors.New("password does not match")

// verifyPassword checks a bind password against one stored userPassword
// value. Comparisons run in constant time.
func verifyPassword(stored, password string) error {
	scheme, rest, ok := splitScheme(stored)
	if !ok {
		if subtle.ConstantTimeCompare([]byte(stored), []byte(password)) == 1 {
			return nil
		}
		return errPasswordMismatch
	}
	if s, ok := hashSchemes[scheme]; ok {
		raw, err := base64.StdEncoding.DecodeString(rest)
		if err != nil {
			return fmt.Errorf("stored %s value: %w", scheme, err)
		}
		h := s.new()
		size := h.Size()
		if len(raw) < size {
			return fmt.Errorf("stored %s value is too short", scheme)
		}
		digest, salt := raw[:size], raw[size:]
		h.Write([]byte(password))
		h.Write(salt)
		if subtle.ConstantTimeCompare(h.Sum(nil), digest) == 1 {
			return nil
		}
		return errPasswordMismatch
	}
	switch scheme {
	case "{CRYPT}", "{BCRYPT}":
		err := bcrypt.CompareHashAndPassword([]byte(rest), []byte(password))
		if errors.Is(err, bcrypt.ErrMismatchedHashAndPassword) {
			return errPasswordMismatch
		}
		return err
	}
	return fmt.Errorf("unsupported password scheme %s", scheme)
}

// HashSSHA returns the {SSHA} form of password with the given salt (8 random
// bytes is what slappasswd uses), for writing LDIF fixtures.
func HashSSHA(password string, salt []byte) string {
	h := sha1.New()
	h.Write([]byte(password))
	h.Write(salt)
	return "{SSHA}" + base64.StdEncoding.EncodeToString(append(h.Sum(nil), salt...))
}
