// Package redact takes secrets out of text bound for a log line or the
// audit trail. An enrollment or recovery link carries its one-time secret
// in the URL path (/link/<secret>): a path written on an error (a database
// timeout while a link is redeemed) would hand a still-valid link to
// whoever reads the log. Every place that writes a request path, and the
// process's log handler and the audit trail's one writer behind them, run
// the text through Secrets.
package redact

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"
)

// secretPaths are the path prefixes whose next segment is a secret.
var secretPaths = []string{"/link/"}

// Secrets returns s with the path segment after each secret path prefix
// replaced by a fingerprint, /link/[redacted:1a2b3c4d]: the first eight hex
// digits of the segment's SHA-256, which is how the tokens table stores a
// link (token_hash starts with them), so IT can still tell which link
// failed. Text without such a path is returned as it is, at the cost of
// one substring search per prefix.
func Secrets(s string) string {
	for _, prefix := range secretPaths {
		if strings.Contains(s, prefix) {
			s = redactAfter(s, prefix)
		}
	}
	return s
}

func redactAfter(s, prefix string) string {
	var b strings.Builder
	for {
		i := strings.Index(s, prefix)
		if i < 0 {
			b.WriteString(s)
			return b.String()
		}
		i += len(prefix)
		b.WriteString(s[:i])
		s = s[i:]
		n := 0
		for n < len(s) && segmentByte(s[n]) {
			n++
		}
		if n > 0 {
			sum := sha256.Sum256([]byte(s[:n]))
			b.WriteString("[redacted:" + hex.EncodeToString(sum[:4]) + "]")
			s = s[n:]
		}
	}
}

// segmentByte reports whether c may be part of a secret segment: the
// base64url alphabet of passbridge's secrets and what a percent-encoded or
// mangled copy of one could hold, up to the next slash, query, fragment,
// space or quote.
func segmentByte(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	}
	return strings.IndexByte("-_%.~=+", c) >= 0
}
