package testsrv

import (
	"bufio"
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
	"fmt"
	"io"
	"unicode/utf8"
)

// ldifWriter writes LDIF records (RFC 2849) for slapadd.
type ldifWriter struct {
	w   *bufio.Writer
	err error
}

func newLDIFWriter(w io.Writer) *ldifWriter { return &ldifWriter{w: bufio.NewWriterSize(w, 1<<16)} }

// attr is one attribute with its values, in the order they are written.
type attr struct {
	name   string
	values []string
}

func (l *ldifWriter) entry(dn string, attrs ...attr) {
	l.line("dn", dn)
	for _, a := range attrs {
		for _, v := range a.values {
			l.line(a.name, v)
		}
	}
	l.raw("\n")
}

// comment-free raw text, used for directives such as include:.
func (l *ldifWriter) raw(s string) {
	if l.err == nil {
		_, l.err = l.w.WriteString(s)
	}
}

func (l *ldifWriter) line(name, value string) {
	if ldifSafe(value) {
		l.raw(name + ": " + value + "\n")
		return
	}
	l.raw(name + ":: " + base64.StdEncoding.EncodeToString([]byte(value)) + "\n")
}

func (l *ldifWriter) flush() error {
	if l.err != nil {
		return fmt.Errorf("write LDIF: %w", l.err)
	}
	if err := l.w.Flush(); err != nil {
		return fmt.Errorf("write LDIF: %w", err)
	}
	return nil
}

// ldifSafe reports whether value may be written as a plain SAFE-STRING
// (RFC 2849); anything else is base64-encoded.
func ldifSafe(v string) bool {
	if v == "" {
		return true
	}
	if !utf8.ValidString(v) {
		return false
	}
	switch v[0] {
	case ' ', ':', '<':
		return false
	}
	if v[len(v)-1] == ' ' {
		return false
	}
	for i := 0; i < len(v); i++ {
		if c := v[i]; c == 0 || c == '\n' || c == '\r' || c >= 0x80 {
			return false
		}
	}
	return true
}

// ssha hashes a password the way slapd's {SSHA} scheme does, so that
// entries loaded offline with slapadd (which hashes nothing) can bind.
func ssha(password string) (string, error) {
	salt := make([]byte, 8)
	if _, err := rand.Read(salt); err != nil {
		return "", fmt.Errorf("password salt: %w", err)
	}
	h := sha1.New()
	h.Write([]byte(password))
	h.Write(salt)
	return "{SSHA}" + base64.StdEncoding.EncodeToString(append(h.Sum(nil), salt...)), nil
}
