package testsrv_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"image/png"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/chromedp/cdproto/webauthn"
	"github.com/chromedp/chromedp"

	"github.com/passbridge/passbridge/internal/testsrv"
)

func servePage(t *testing.T) string {
	t.Helper()
	ts := httptest.NewServer(http.FileServer(http.Dir("testdata")))
	t.Cleanup(ts.Close)
	if !strings.HasPrefix(ts.URL, "http://127.0.0.1:") {
		t.Fatalf("httptest serves on %s, want loopback 127.0.0.1", ts.URL)
	}
	return testsrv.Localhost(ts.URL)
}

type registration struct {
	ID                 string   `json:"id"`
	RawID              string   `json:"rawId"`
	Type               string   `json:"type"`
	ClientDataJSON     string   `json:"clientDataJSON"`
	AuthenticatorData  string   `json:"authenticatorData"`
	PublicKey          string   `json:"publicKey"`
	PublicKeyAlgorithm int      `json:"publicKeyAlgorithm"`
	Transports         []string `json:"transports"`
	ResidentKey        bool     `json:"residentKey"`
}

type assertion struct {
	ID                string `json:"id"`
	RawID             string `json:"rawId"`
	ClientDataJSON    string `json:"clientDataJSON"`
	AuthenticatorData string `json:"authenticatorData"`
	Signature         string `json:"signature"`
	UserHandle        string `json:"userHandle"`
}

type clientData struct {
	Type      string `json:"type"`
	Challenge string `json:"challenge"`
	Origin    string `json:"origin"`
}

const (
	flagUP = 0x01 // user present
	flagUV = 0x04 // user verified
	flagAT = 0x40 // attested credential data included
)

type authData struct {
	rpIDHash  []byte
	flags     byte
	signCount uint32
	credID    []byte
}

// parseAuthData reads authenticator data (WebAuthn 6.1).
func parseAuthData(t *testing.T, b []byte) authData {
	t.Helper()
	if len(b) < 37 {
		t.Fatalf("authenticator data of %d bytes", len(b))
	}
	a := authData{rpIDHash: b[:32], flags: b[32], signCount: binary.BigEndian.Uint32(b[33:37])}
	if a.flags&flagAT != 0 {
		if len(b) < 55 {
			t.Fatalf("attested credential data cut short: %d bytes", len(b))
		}
		n := int(binary.BigEndian.Uint16(b[53:55]))
		if len(b) < 55+n {
			t.Fatalf("credential ID of %d bytes cut short", n)
		}
		a.credID = b[55 : 55+n]
	}
	return a
}

func b64u(t *testing.T, s string) []byte {
	t.Helper()
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		t.Fatalf("base64url %q: %v", s, err)
	}
	return b
}

func randomB64u(t *testing.T, n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

func checkClientData(t *testing.T, raw []byte, typ, challenge, origin string) {
	t.Helper()
	var cd clientData
	if err := json.Unmarshal(raw, &cd); err != nil {
		t.Fatalf("clientDataJSON %s: %v", raw, err)
	}
	if cd.Type != typ || cd.Challenge != challenge || cd.Origin != origin {
		t.Errorf("client data %+v, want type %s, challenge %s, origin %s", cd, typ, challenge, origin)
	}
}

// TestWebAuthnEndToEnd proves the end-to-end stack on this machine: headless
// Chromium, a virtual authenticator, and a page on loopback that registers a
// discoverable passkey with user verification and signs in with it; the
// test verifies the signature with the public key from the registration.
func TestWebAuthnEndToEnd(t *testing.T) {
	origin := servePage(t)
	ctx := testsrv.Browser(t)
	authenticator := testsrv.VirtualAuthenticator(t, ctx)
	if err := chromedp.Do(ctx, chromedp.Navigate(origin+"/webauthn.html")); err != nil {
		t.Fatal(err)
	}
	rpIDHash := sha256.Sum256([]byte("localhost"))

	challenge, userID := randomB64u(t, 32), randomB64u(t, 16)
	reg, err := chromedp.Run(ctx, chromedp.Evaluate[registration](
		fmt.Sprintf("register(%q, %q)", challenge, userID), chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatalf("navigator.credentials.create: %v", err)
	}
	if reg.Type != "public-key" || reg.ID != reg.RawID || !reg.ResidentKey || reg.PublicKeyAlgorithm != -7 {
		t.Errorf("registration %+v", reg)
	}
	if len(reg.Transports) != 1 || reg.Transports[0] != "internal" {
		t.Errorf("transports %v, want [internal]", reg.Transports)
	}
	checkClientData(t, b64u(t, reg.ClientDataJSON), "webauthn.create", challenge, origin)
	ad := parseAuthData(t, b64u(t, reg.AuthenticatorData))
	if !bytes.Equal(ad.rpIDHash, rpIDHash[:]) || ad.flags&(flagUP|flagUV|flagAT) != flagUP|flagUV|flagAT {
		t.Errorf("registration authenticator data: flags %08b, RP ID hash %x", ad.flags, ad.rpIDHash)
	}
	if !bytes.Equal(ad.credID, b64u(t, reg.RawID)) {
		t.Errorf("credential ID in the authenticator data %x, rawId %s", ad.credID, reg.RawID)
	}
	pub, err := x509.ParsePKIXPublicKey(b64u(t, reg.PublicKey))
	if err != nil {
		t.Fatalf("public key: %v", err)
	}
	ecPub, ok := pub.(*ecdsa.PublicKey)
	if !ok {
		t.Fatalf("public key is %T, want ECDSA (alg -7)", pub)
	}

	// The virtual authenticator holds the passkey, as a resident key of the
	// user.
	creds, err := chromedp.Call(ctx, webauthn.GetCredentials, webauthn.GetCredentialsParams{AuthenticatorID: authenticator})
	if err != nil {
		t.Fatal(err)
	}
	if len(creds.Credentials) != 1 {
		t.Fatalf("%d credentials in the authenticator, want 1", len(creds.Credentials))
	}
	if c := creds.Credentials[0]; !c.IsResidentCredential || c.RpID != "localhost" ||
		!bytes.Equal(c.CredentialID, b64u(t, reg.RawID)) || !bytes.Equal(c.UserHandle, b64u(t, userID)) {
		t.Errorf("stored credential %+v", c)
	}

	challenge2 := randomB64u(t, 32)
	as, err := chromedp.Run(ctx, chromedp.Evaluate[assertion](fmt.Sprintf("login(%q)", challenge2), chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatalf("navigator.credentials.get: %v", err)
	}
	if as.RawID != reg.RawID || as.UserHandle != userID {
		t.Errorf("signed in with %s for user %s, want %s for %s", as.RawID, as.UserHandle, reg.RawID, userID)
	}
	clientDataJSON := b64u(t, as.ClientDataJSON)
	checkClientData(t, clientDataJSON, "webauthn.get", challenge2, origin)
	authenticatorData := b64u(t, as.AuthenticatorData)
	ad2 := parseAuthData(t, authenticatorData)
	if !bytes.Equal(ad2.rpIDHash, rpIDHash[:]) || ad2.flags&(flagUP|flagUV) != flagUP|flagUV {
		t.Errorf("assertion authenticator data: flags %08b", ad2.flags)
	}
	if ad2.signCount <= ad.signCount {
		t.Errorf("sign count %d after %d: the counter did not advance", ad2.signCount, ad.signCount)
	}
	clientHash := sha256.Sum256(clientDataJSON)
	signed := sha256.Sum256(append(authenticatorData, clientHash[:]...))
	if !ecdsa.VerifyASN1(ecPub, signed[:], b64u(t, as.Signature)) {
		t.Error("the assertion signature does not verify with the registered public key")
	}

	shot := filepath.Join(t.TempDir(), "webauthn.png")
	testsrv.Screenshot(t, ctx, shot)
	f, err := os.Open(shot)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cfg, err := png.DecodeConfig(f)
	if err != nil {
		t.Fatalf("screenshot is not a PNG: %v", err)
	}
	if cfg.Width < 100 || cfg.Height < 100 {
		t.Errorf("screenshot of %dx%d", cfg.Width, cfg.Height)
	}
	text, err := chromedp.Run(ctx, chromedp.Text(chromedp.ID("status")))
	if err != nil || !strings.HasPrefix(text, "signed in with passkey ") {
		t.Errorf("page status %q, %v", text, err)
	}
}

// TestBrowserContextsAreIsolated checks that each Browser call is a fresh
// profile: storage and passkeys of one test are not visible to another.
func TestBrowserContextsAreIsolated(t *testing.T) {
	origin := servePage(t)
	first := testsrv.Browser(t)
	testsrv.VirtualAuthenticator(t, first)
	if err := chromedp.Do(first, chromedp.Navigate(origin+"/webauthn.html"),
		chromedp.Evaluate[chromedp.Void](`localStorage.setItem("who", "first"); document.cookie = "session=first"`)); err != nil {
		t.Fatal(err)
	}

	second := testsrv.Browser(t)
	if err := chromedp.Do(second, chromedp.Navigate(origin+"/webauthn.html")); err != nil {
		t.Fatal(err)
	}
	seen, err := chromedp.Run(second, chromedp.Evaluate[string](`String(localStorage.getItem("who")) + "|" + document.cookie`))
	if err != nil {
		t.Fatal(err)
	}
	if seen != "null|" {
		t.Errorf("the second tab sees the first one's state: %q", seen)
	}
	again, err := chromedp.Run(first, chromedp.Evaluate[string](`localStorage.getItem("who") + "|" + document.cookie`))
	if err != nil || again != "first|session=first" {
		t.Errorf("the first tab lost its state: %q, %v", again, err)
	}
}

func TestLocalhost(t *testing.T) {
	for in, want := range map[string]string{
		"http://127.0.0.1:8080":           "http://localhost:8080",
		"https://127.0.0.1:443/x?y=1":     "https://localhost:443/x?y=1",
		"http://127.0.0.1/":               "http://localhost/",
		"http://localhost:1":              "http://localhost:1",
		"http://[::1]:9":                  "http://[::1]:9",
		"http://portal.corp.example:8443": "http://portal.corp.example:8443",
	} {
		if got := testsrv.Localhost(in); got != want {
			t.Errorf("Localhost(%q) = %q, want %q", in, got, want)
		}
	}
}
