package appsignin_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// assertionClients are the clients of the assertion tests: erp's page is
// on erp.localhost (under the RP ID's registrable domain, localhost), wiki
// on another origin.
const assertionClients = `oidc:
  clients:
    - id: erp
      public: true
      origins: ["http://erp.localhost:41001"]
    - id: wiki
      public: true
      origins: ["http://wiki.localhost:41002"]
`

// signInFor runs the assertion API for a client as the page at origin
// would (Origin header, the authenticator's assertion made in that page)
// and returns the status and body of finish.
func signInFor(t *testing.T, d *daemon, pk *passkey, client, origin string) (int, map[string]any) {
	t.Helper()
	st, begun, _ := api(t, d.URL, "/api/v1/signin/begin", origin, map[string]any{"client_id": client})
	if st != http.StatusOK {
		t.Fatalf("begin for %s from %s: %d %v", client, origin, st, begun)
	}
	opts, _ := json.Marshal(begun["options"])
	st, fin, _ := api(t, d.URL, "/api/v1/signin/finish", origin, map[string]any{"client_id": client, "ceremony": begun["ceremony"], "credential": pk.assert(opts, origin)})
	return st, fin
}

// TestAssertionAPI: the assertion API signs an enrolled employee in for an
// application, and a backend in another language (Node, jose from npm)
// accepts the JWT against passbridge's JWKS; the hostile cases are each a
// 4xx with nothing issued (no token, no app.signin recorded), and the
// backend refuses a token that is replayed, tampered with, for another
// client, expired, or unsigned.
func TestAssertionAPI(t *testing.T) {
	node := nodeDir(t)
	d := startDaemon(t, daemonOptions{yaml: assertionClients})
	erpOrigin := "http://erp.localhost:41001"
	backendPort := startNode(t, node, "backend.mjs", "JWKS_URL="+d.URL+"/oidc/keys", "ISSUER="+d.URL, "AUDIENCE=erp")
	backend := func(token string, at int64) (int, map[string]any) {
		raw, _ := json.Marshal(map[string]any{"token": token, "at": at})
		res, err := http.Post("http://127.0.0.1:"+strconv.Itoa(backendPort)+"/login", "application/json", bytes.NewReader(raw))
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		var m map[string]any
		json.Unmarshal(b, &m)
		return res.StatusCode, m
	}

	ann := d.addUser("ann")
	pk := d.enroll(ann)
	st, fin := signInFor(t, d, pk, "erp", erpOrigin)
	if st != http.StatusOK {
		t.Fatalf("sign-in for erp: %d %v", st, fin)
	}
	token := fin["token"].(string)
	st, got := backend(token, 0)
	if st != http.StatusOK {
		t.Fatalf("the Node backend refused a fresh assertion: %d %v", st, got)
	}
	claims := got["claims"].(map[string]any)
	wantKey := strconv.FormatInt(ann.key, 10)
	for k, want := range map[string]any{"sub": wantKey, "aud": "erp", "user_key": wantKey, "preferred_username": ann.name, "email": ann.email, "name": "Ann Tester", "iss": d.URL} {
		if claims[k] != want {
			t.Errorf("claim %s = %v, want %v", k, claims[k], want)
		}
	}
	if amr, _ := json.Marshal(claims["amr"]); !strings.Contains(string(amr), `"pop"`) || !strings.Contains(string(amr), `"hwk"`) {
		t.Errorf("amr = %s, want a passkey's (pop, hwk, user)", amr)
	}
	if d.appSignIns(ann) != 1 {
		t.Errorf("the sign-in is not audited as app.signin")
	}

	// The backend refuses what it must.
	if st, _ := backend(token, 0); st != http.StatusUnauthorized {
		t.Errorf("a replayed jti: %d", st)
	}
	parts := strings.Split(token, ".")
	payload, _ := base64.RawURLEncoding.DecodeString(parts[1])
	tampered := parts[0] + "." + base64.RawURLEncoding.EncodeToString(bytes.Replace(payload, []byte(wantKey), []byte(wantKey+"1"), 1)) + "." + parts[2]
	none := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","typ":"JWT"}`)) + "." + parts[1] + "."
	_, wiki := signInFor(t, d, pk, "wiki", "http://wiki.localhost:41002")
	_, fresh := signInFor(t, d, pk, "erp", erpOrigin)
	priv, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	// Signed by a key of the attacker's under the real key's ID.
	signer, _ := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: priv, KeyID: jwtHeader(t, token)["kid"].(string)}}, nil)
	forged, _ := jwt.Signed(signer).Claims(json.RawMessage(payload)).Serialize()
	for name, tc := range map[string]struct {
		token string
		at    int64
	}{
		"tampered":       {tampered, 0},
		"alg none":       {none, 0},
		"wrong audience": {wiki["token"].(string), 0},
		"expired":        {fresh["token"].(string), time.Now().Add(3 * time.Minute).Unix()},
		"forged key":     {forged, 0},
	} {
		if st, got := backend(tc.token, tc.at); st != http.StatusUnauthorized {
			t.Errorf("%s: the backend accepted it: %d %v", name, st, got)
		}
	}

	// passbridge refuses, issuing nothing.
	before := d.appSignIns(ann)
	refuse := func(name string, wantStatus int, st int, body map[string]any) {
		t.Helper()
		if st != wantStatus || body["token"] != nil {
			t.Errorf("%s: %d %v, want %d and no token", name, st, body, wantStatus)
		}
	}
	st, body, hdr := api(t, d.URL, "/api/v1/signin/begin", "http://evil.localhost:1", map[string]any{"client_id": "erp"})
	refuse("begin from an origin not in the list", http.StatusForbidden, st, body)
	if hdr.Get("Access-Control-Allow-Origin") != "" {
		t.Errorf("CORS allowed an origin not in the list")
	}
	req, _ := http.NewRequest(http.MethodOptions, d.URL+"/api/v1/signin/finish", nil)
	req.Header.Set("Origin", "http://evil.localhost:1")
	req.Header.Set("Access-Control-Request-Method", "POST")
	if res, err := http.DefaultClient.Do(req); err != nil || res.StatusCode != http.StatusForbidden || res.Header.Get("Access-Control-Allow-Origin") != "" {
		t.Errorf("preflight from an origin not in the list: %v %v", res, err)
	}
	st, body, _ = api(t, d.URL, "/api/v1/signin/begin", "", map[string]any{"client_id": "nope"})
	refuse("unknown client", http.StatusBadRequest, st, body)
	st, body, _ = api(t, d.URL, "/api/v1/signin/begin", erpOrigin, map[string]any{"client_id": "erp", "extra": 1})
	refuse("unknown field", http.StatusBadRequest, st, body)

	// A passkey assertion made on wiki's page, presented (by a backend,
	// no CORS) for erp.
	st, body2 := func() (int, map[string]any) {
		st, begun, _ := api(t, d.URL, "/api/v1/signin/begin", "", map[string]any{"client_id": "erp"})
		if st != http.StatusOK {
			t.Fatal(begun)
		}
		opts, _ := json.Marshal(begun["options"])
		st, fin, _ := api(t, d.URL, "/api/v1/signin/finish", "", map[string]any{"client_id": "erp", "ceremony": begun["ceremony"], "credential": pk.assert(opts, "http://wiki.localhost:41002")})
		return st, fin
	}()
	refuse("an assertion made on another client's origin", http.StatusForbidden, st, body2)

	// A replayed finish.
	st, begun, _ := api(t, d.URL, "/api/v1/signin/begin", "", map[string]any{"client_id": "erp"})
	if st != http.StatusOK {
		t.Fatal(begun)
	}
	opts, _ := json.Marshal(begun["options"])
	fb := map[string]any{"client_id": "erp", "ceremony": begun["ceremony"], "credential": pk.assert(opts, erpOrigin)}
	if st, _, _ := api(t, d.URL, "/api/v1/signin/finish", "", fb); st != http.StatusOK {
		t.Fatalf("finish: %d", st)
	}
	before++
	st, body, _ = api(t, d.URL, "/api/v1/signin/finish", "", fb)
	refuse("a replayed finish", http.StatusBadRequest, st, body)

	// The account's state: a users row the application marked inactive,
	// a revoked passkey, a user disabled in the directory.
	q := d.db.Dialect().Quote
	d.exec("UPDATE "+q("users")+" SET "+q("is_active")+" = ? WHERE "+q("id")+" = ?", false, ann.key)
	st, body = signInFor(t, d, pk, "erp", erpOrigin)
	refuse("an inactive users row", http.StatusForbidden, st, body)
	d.exec("UPDATE "+q("users")+" SET "+q("is_active")+" = ? WHERE "+q("id")+" = ?", true, ann.key)
	d.exec("UPDATE "+q("passbridge_credentials")+" SET "+q("revoked_at")+" = ? WHERE "+q("user_key")+" = ?", time.Now().UTC(), ann.key)
	st, body = signInFor(t, d, pk, "erp", erpOrigin)
	refuse("a revoked passkey", http.StatusForbidden, st, body)
	if body["code"] != "revoked_passkey" {
		t.Errorf("revoked passkey: code %v", body["code"])
	}

	bob := d.addUser("bob")
	bpk := d.enroll(bob)
	d.dir.Disable(t, bob.dn)
	d.command("sync", "--full")
	st, body = signInFor(t, d, bpk, "erp", erpOrigin)
	refuse("a user disabled in the directory", http.StatusForbidden, st, body)

	if got := d.appSignIns(ann); got != before {
		t.Errorf("%d sign-ins of ann recorded, want %d: a refused one was recorded as a success", got, before)
	}
	if d.appSignIns(bob) != 0 {
		t.Error("a disabled user's refused sign-in was recorded as a success")
	}
}

func jwtHeader(t *testing.T, token string) map[string]any {
	raw, _ := base64.RawURLEncoding.DecodeString(strings.Split(token, ".")[0])
	var h map[string]any
	if err := json.Unmarshal(raw, &h); err != nil {
		t.Fatal(err)
	}
	return h
}
