package appsignin

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/labstack/echo/v4"

	"github.com/passbridge/passbridge/config"
	"github.com/passbridge/passbridge/internal/testdb"
	"github.com/passbridge/passbridge/signin"
)

// FuzzOIDCEndpoints sends any parameters to the authorization and token
// endpoints of a real provider (zitadel/oidc on passbridge's storage, on
// SQLite) with a confidential and a public client configured: never a 5xx,
// never a panic, and never a code or a token, since nobody signs in.
//
//	go test -run '^$' -fuzz FuzzOIDCEndpoints ./appsignin/
func FuzzOIDCEndpoints(f *testing.F) {
	db, cfg := testdb.Open(f, "sqlite")
	cfg.Portal.RPID = "localhost"
	cfg.Portal.Origins = []string{"http://localhost:8080"}
	cfg.OIDC.Clients = []config.Client{
		{ID: "erp", Secret: "erp-secret-0123456789abcdef", RedirectURIs: []string{"https://erp.corp.example/cb"}},
		{ID: "spa", Public: true, RedirectURIs: []string{"http://localhost:5173/cb"}},
	}
	if err := config.FinishFor(config.ForEnroll, cfg, nil); err != nil {
		f.Fatal(err)
	}
	core, err := signin.New(cfg, db, signin.Options{})
	if err != nil {
		f.Fatal(err)
	}
	apps, err := New(cfg, Options{DB: db, Core: core})
	if err != nil {
		f.Fatal(err)
	}
	e := echo.New()
	apps.Mount(e)

	f.Add("client_id=erp&redirect_uri=https%3A%2F%2Ferp.corp.example%2Fcb&response_type=code&scope=openid&state=s&nonce=n&code_challenge=E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM&code_challenge_method=S256",
		"grant_type=authorization_code&code=abc&redirect_uri=https%3A%2F%2Ferp.corp.example%2Fcb&code_verifier=x", "erp:erp-secret-0123456789abcdef")
	f.Add("client_id=spa&redirect_uri=http%3A%2F%2Flocalhost%3A5173%2Fcb&response_type=code%20id_token&scope=openid%20offline_access&prompt=none&request=eyJhbGciOiJub25lIn0.e30.",
		"grant_type=refresh_token&refresh_token=x&client_id=spa", "")
	f.Add("client_id=erp&redirect_uri=javascript:alert(1)&response_type=token&max_age=-1&ui_locales=%ff&id_token_hint=a.b.c",
		"grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion=a.b.c", "spa:")
	f.Add("", "grant_type=client_credentials&scope=openid", "erp:wrong")
	f.Add("%zz=1&client_id=%00", "code=%zz", ":")

	f.Fuzz(func(t *testing.T, authorize, token, basic string) {
		req := httptest.NewRequest(http.MethodGet, "/oidc/authorize", nil)
		req.URL.RawQuery = authorize
		rec := httptest.NewRecorder()
		e.ServeHTTP(rec, req)
		if rec.Code >= 500 {
			t.Fatalf("authorize?%s: %d %s", authorize, rec.Code, rec.Body)
		}
		if loc, err := url.Parse(rec.Header().Get("Location")); err == nil && loc.Query().Get("code") != "" {
			t.Fatalf("authorize?%s issued a code without a sign-in: %s", authorize, loc)
		}

		req = httptest.NewRequest(http.MethodPost, "/oidc/token", strings.NewReader(token))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		if user, pass, ok := strings.Cut(basic, ":"); ok {
			req.SetBasicAuth(user, pass)
		}
		rec = httptest.NewRecorder()
		e.ServeHTTP(rec, req)
		if rec.Code >= 500 {
			t.Fatalf("token %q: %d %s", token, rec.Code, rec.Body)
		}
		if rec.Code == http.StatusOK || strings.Contains(rec.Body.String(), "access_token") || strings.Contains(rec.Body.String(), "id_token\"") {
			t.Fatalf("token %q issued something: %d %s", token, rec.Code, rec.Body)
		}
	})
}
