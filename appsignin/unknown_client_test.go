package appsignin

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/labstack/echo/v4"
	"github.com/zitadel/oidc/v3/pkg/oidc"

	"github.com/passbridge/passbridge/config"
	"github.com/passbridge/passbridge/internal/testdb"
	"github.com/passbridge/passbridge/signin"
)

// TestRequestOfAGoneClient: a pending authorization request of a client
// that this replica's oidc.clients no longer has (a client removed while
// someone was signing in, a replica still on another configuration file)
// is gone on every step of the login page: a 4xx, never a panic, nothing
// begun.
func TestRequestOfAGoneClient(t *testing.T) {
	db, cfg := testdb.Open(t, "sqlite")
	cfg.Portal.RPID = "localhost"
	cfg.Portal.Origins = []string{"http://localhost:8080"}
	cfg.OIDC.Clients = []config.Client{
		{ID: "erp", Secret: "erp-secret-0123456789abcdef", RedirectURIs: []string{"https://erp.corp.example/cb"}},
		{ID: "wiki", Secret: "wiki-secret-0123456789abcdef", RedirectURIs: []string{"https://wiki.corp.example/cb"}},
	}
	if err := config.FinishFor(config.ForEnroll, cfg, nil); err != nil {
		t.Fatal(err)
	}
	core, err := signin.New(cfg, db, signin.Options{})
	if err != nil {
		t.Fatal(err)
	}
	before, err := New(cfg, Options{DB: db, Core: core})
	if err != nil {
		t.Fatal(err)
	}
	r, err := (&storage{a: before}).CreateAuthRequest(context.Background(), &oidc.AuthRequest{ClientID: "erp", RedirectURI: "https://erp.corp.example/cb",
		ResponseType: oidc.ResponseTypeCode, Scopes: []string{oidc.ScopeOpenID}}, "")
	if err != nil {
		t.Fatal(err)
	}
	after := *cfg
	after.OIDC.Clients = cfg.OIDC.Clients[1:]
	apps, err := New(&after, Options{DB: db, Core: core})
	if err != nil {
		t.Fatal(err)
	}
	e := echo.New()
	apps.Mount(e)
	id := r.GetID()
	const token = "0123456789abcdef0123456789abcdef"
	for _, tc := range []struct{ method, path, ctype, body string }{
		{http.MethodGet, "/oidc/login?id=" + id, "", ""},
		{http.MethodPost, "/oidc/login/begin", "application/json", `{"request":"` + id + `"}`},
		{http.MethodPost, "/oidc/login/finish", "application/json", `{"request":"` + id + `","ceremony":"` + id + `","credential":{"id":"x"}}`},
		{http.MethodPost, "/oidc/login/password", "application/x-www-form-urlencoded", "request=" + id + "&username=ann&password=secret&_csrf=" + token},
	} {
		req := httptest.NewRequest(tc.method, tc.path, strings.NewReader(tc.body))
		if tc.ctype != "" {
			req.Header.Set("Content-Type", tc.ctype)
		}
		req.AddCookie(&http.Cookie{Name: csrfCookie, Value: token})
		rec := httptest.NewRecorder()
		e.ServeHTTP(rec, req)
		if rec.Code != http.StatusBadRequest || strings.Contains(rec.Body.String(), "options") {
			t.Errorf("%s %s: %d %s, want 400 (the request is gone)", tc.method, tc.path, rec.Code, rec.Body)
		}
	}
}
