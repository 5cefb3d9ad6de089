package redact

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"testing"
)

func TestSecrets(t *testing.T) {
	const secret = "YaEbLpAnSuqajo4kpF76LrTaZ1ee1PUWpz6HxL1H_9k"
	sum := sha256.Sum256([]byte(secret))
	fp := "[redacted:" + hex.EncodeToString(sum[:4]) + "]"
	for in, want := range map[string]string{
		"/link/" + secret: "/link/" + fp,
		"https://p.example/link/" + secret + "?x=1#f":    "https://p.example/link/" + fp + "?x=1#f",
		`"path":"/link/` + secret + `"`:                  `"path":"/link/` + fp + `"`,
		"/link/" + secret + "/more and /link/" + secret:  "/link/" + fp + "/more and /link/" + fp,
		"/link/" + secret + "%0A":                        "/link/[redacted:" + short(secret+"%0A") + "]",
		"/link/":                                         "/link/",
		"/link//x":                                       "/link//x",
		"/static/app.js":                                 "/static/app.js",
		"no path here":                                   "no path here",
		"/linked/" + secret:                              "/linked/" + secret, // not a link path
		"GET /link/" + secret + ": read link: timed out": "GET /link/" + fp + ": read link: timed out",
	} {
		if got := Secrets(in); got != want {
			t.Errorf("Secrets(%q)\n = %q\nwant %q", in, got, want)
		}
	}
	// The fingerprint is the start of what the tokens table stores.
	if !strings.HasPrefix(hex.EncodeToString(sum[:]), fp[len("[redacted:"):len(fp)-1]) {
		t.Error("the fingerprint is not the stored hash's prefix")
	}
}

func short(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:4])
}

func BenchmarkSecretsNoPath(b *testing.B) {
	s := `read sessions: SQL logic error: database is locked (5)`
	for b.Loop() {
		_ = Secrets(s)
	}
}
