package agent

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/labstack/echo/v4"

	"github.com/passbridge/passbridge/agent/metrics"
	"github.com/passbridge/passbridge/config"
	"github.com/passbridge/passbridge/internal/httpjson"
)

// adminEcho serves requireToken (of a daemon on a real database, whose
// admin token is token) in front of a handler that echoes a JSON body
// decoded strictly, as the admin API does. Wrong tokens are not limited
// here (TestAdminTokenWrongLimited is about that).
func adminEcho(t *testing.T, token string) *echo.Echo {
	cfg := testConfig(t, newDatabase(t, onSQLite), nil, "")
	cfg.Admin.Token = config.Secret(token)
	cfg.Portal.RateLimits.PasswordPerUser = 100
	db := openApp(t, cfg)
	a, err := New(cfg, slog.New(slog.DiscardHandler), Options{DB: NewDatabase(db, cfg), NewSyncer: func(*config.Config) (Syncer, error) { return newGateSyncer(db, cfg, "n1"), nil }})
	if err != nil {
		t.Fatal(err)
	}
	e := newEcho(slog.New(slog.DiscardHandler), metrics.New(), nil)
	g := e.Group("/api/v1", a.requireToken)
	g.POST("/sync", func(c echo.Context) error {
		var req SyncRequest
		if err := httpjson.Decode(c.Response(), c.Request(), maxAPIBody, &req); err != nil {
			return err
		}
		return c.JSON(http.StatusOK, req)
	})
	e.GET("/boom", func(echo.Context) error { panic("kaboom") })
	return e
}

func call(t *testing.T, h http.Handler, method, path, auth, body string) (int, APIError, http.Header) {
	t.Helper()
	srv := httptest.NewServer(h)
	defer srv.Close()
	req, err := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var ae APIError
	if resp.StatusCode >= 400 {
		if err := json.Unmarshal(raw, &ae); err != nil {
			t.Fatalf("%s %s: status %d with a body that is not a JSON error: %q", method, path, resp.StatusCode, raw)
		}
		if ae.Status != resp.StatusCode || ae.Error == "" {
			t.Fatalf("%s %s: error body %+v does not match status %d", method, path, ae, resp.StatusCode)
		}
	}
	return resp.StatusCode, ae, resp.Header
}

func TestAdminTokenRequired(t *testing.T) {
	const tok = "0123456789abcdef0123456789abcdef"
	e := adminEcho(t, tok)
	cases := []struct {
		name, auth string
		want       int
		msg        string
	}{
		{"missing", "", 401, "missing Authorization"},
		{"wrong", "Bearer 0123456789abcdef0123456789abcdeX", 401, "wrong admin token"},
		{"prefix of the token", "Bearer 0123456789abcdef", 401, "wrong admin token"},
		{"token plus more", "Bearer " + tok + "00", 401, "wrong admin token"},
		{"basic scheme", "Basic " + tok, 401, "Bearer"},
		{"empty bearer", "Bearer ", 401, "Bearer"},
		{"right", "Bearer " + tok, 200, ""},
		{"scheme case-insensitive", "bearer " + tok, 200, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			code, ae, h := call(t, e, "POST", "/api/v1/sync", c.auth, `{"full":true}`)
			if code != c.want || !strings.Contains(ae.Error, c.msg) {
				t.Fatalf("status %d %q, want %d containing %q", code, ae.Error, c.want, c.msg)
			}
			if code == 401 && !strings.HasPrefix(h.Get("WWW-Authenticate"), "Bearer") {
				t.Errorf("401 without a Bearer challenge: %q", h.Get("WWW-Authenticate"))
			}
		})
	}
}

func TestAdminAPIDisabledWithoutToken(t *testing.T) {
	code, ae, _ := call(t, adminEcho(t, ""), "POST", "/api/v1/sync", "Bearer anything-at-all-long-enough", `{}`)
	if code != http.StatusForbidden || !strings.Contains(ae.Error, "admin API is disabled") || !strings.Contains(ae.Error, "admin.token") {
		t.Fatalf("status %d %q", code, ae.Error)
	}
}

func TestMalformedRequestsAre4xxNever500(t *testing.T) {
	const tok = "0123456789abcdef0123456789abcdef"
	e := adminEcho(t, tok)
	for body, want := range map[string]int{
		`{"full":`:                 400,
		`{"full":"yes"}`:           400,
		`{"ful":true}`:             400, // unknown field
		`[1,2]`:                    400,
		`{"full":true}{"x":1}`:     400,
		"\x00\x01":                 400,
		`{"dry_run":true}`:         200,
		"":                         200, // no body: a delta sync
		strings.Repeat(" ", 8<<10): 413,
	} {
		code, ae, _ := call(t, e, "POST", "/api/v1/sync", "Bearer "+tok, body)
		if code != want {
			t.Errorf("body %.20q: status %d (%s), want %d", body, code, ae.Error, want)
		}
	}
	code, _, _ := call(t, e, "GET", "/api/v1/nothing-here", "Bearer "+tok, "")
	if code != 404 && code != 405 {
		t.Errorf("unknown route: %d", code)
	}
	code, ae, _ := call(t, e, "GET", "/boom", "", "")
	if code != 500 || strings.Contains(ae.Error, "kaboom") {
		t.Errorf("panic: status %d %q; want a 500 that does not leak the panic", code, ae.Error)
	}
}

func TestPortalErrorsGoToThePortalHandler(t *testing.T) {
	html := func(err error, c echo.Context) { _ = c.HTML(http.StatusNotFound, "<p>not here</p>") }
	e := newEcho(slog.New(slog.DiscardHandler), metrics.New(), func() echo.HTTPErrorHandler { return html })
	e.GET("/readyz", func(echo.Context) error { return echo.ErrServiceUnavailable })
	srv := httptest.NewServer(e)
	defer srv.Close()
	for path, wantType := range map[string]string{"/some/page": "text/html", "/readyz": "application/json", "/api/v1/x": "application/json"} {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, wantType) {
			t.Errorf("%s: Content-Type %q, want %s", path, ct, wantType)
		}
	}
}

// TestLinkSecretsRedactedInLogs: the daemon's own error log and its panic
// log name a failing /link/<secret> request by a fingerprint, never by its
// secret (an unused enrollment or recovery link is a way in).
func TestLinkSecretsRedactedInLogs(t *testing.T) {
	var logs strings.Builder
	e := newEcho(slog.New(slog.NewJSONHandler(&logs, nil)), metrics.New(), nil)
	e.GET("/link/:token", func(c echo.Context) error {
		return fmt.Errorf("read link: the database timed out")
	})
	e.POST("/link/:token", func(c echo.Context) error { panic("kaboom at " + c.Request().URL.Path) })
	const secret = "YaEbLpAnSuqajo4kpF76LrTaZ1ee1PUWpz6HxL1H_9k"
	for _, method := range []string{"GET", "POST"} {
		if code, _, _ := call(t, e, method, "/link/"+secret, "", ""); code != 500 {
			t.Fatalf("%s /link/<secret>: %d, want 500", method, code)
		}
	}
	out := logs.String()
	for _, want := range []string{"request failed", "handler panicked", "/link/[redacted:"} {
		if !strings.Contains(out, want) {
			t.Errorf("the log lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, secret) {
		t.Errorf("the link's secret is in the log:\n%s", out)
	}
}
