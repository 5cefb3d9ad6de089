package appsignin_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"strings"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/passbridge/passbridge/internal/testsrv"
)

// benchClients is the number of concurrent clients of the OIDC benchmark.
const benchClients = 64

// BenchmarkOIDCCodeFlow measures OpenID Connect code flows completed per
// second at 64 concurrent clients against `passbridge run` (the real
// binary) on PostgreSQL: authorize, the login page's passkey ceremony
// (begin + finish, verified by the sign-in core), the callback, and the
// code's exchange at the token endpoint (ID and access tokens signed), with
// p50 and p99 of a whole flow; and, in the same run against the same
// daemon, the portal's own passkey sign-in (begin + finish, a session).
// The clients' signatures (software authenticators) are made on the same
// two cores.
//
//	go test -run '^$' -bench OIDCCodeFlow -benchtime 1x ./appsignin/
func BenchmarkOIDCCodeFlow(b *testing.B) {
	const secret = "bench-secret-0123456789abcdef"
	d := startDaemon(b, daemonOptions{driver: "postgres", yaml: `oidc:
  clients:
    - id: bench
      secret: ` + secret + `
      redirect_uris: ["https://bench.corp.example/cb"]
`})
	users := make([]*user, benchClients)
	for i := range users {
		users[i] = d.addUnsynced(fmt.Sprintf("bench%02d", i))
	}
	d.command("sync", "--full")
	keys := make([]*passkey, benchClients)
	for i, u := range users {
		keys[i] = d.enroll(u)
	}
	transport := &http.Transport{MaxIdleConns: 4 * benchClients, MaxIdleConnsPerHost: 4 * benchClients}
	oidcFlow := func(w int) error {
		jar, _ := cookiejar.New(nil)
		hc := &http.Client{Jar: jar, Transport: transport, Timeout: 30 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
		verifier := oauth2.GenerateVerifier()
		q := url.Values{"client_id": {"bench"}, "redirect_uri": {"https://bench.corp.example/cb"}, "response_type": {"code"}, "scope": {"openid profile email"},
			"state": {"s"}, "nonce": {"n"}, "code_challenge": {oauth2.S256ChallengeFromVerifier(verifier)}, "code_challenge_method": {"S256"}}
		res, err := hc.Get(d.URL + "/oidc/authorize?" + q.Encode())
		if err != nil {
			return err
		}
		res.Body.Close()
		loc := res.Header.Get("Location")
		i := strings.Index(loc, "id=")
		if i < 0 {
			return fmt.Errorf("authorize: %d %q", res.StatusCode, loc)
		}
		id := loc[i+3:]
		var begun struct {
			Ceremony string          `json:"ceremony"`
			Options  json.RawMessage `json:"options"`
		}
		if err := postJSON(hc, d.URL+"/oidc/login/begin", map[string]any{"request": id}, &begun); err != nil {
			return err
		}
		var done struct{ Redirect string }
		if err := postJSON(hc, d.URL+"/oidc/login/finish", map[string]any{"request": id, "ceremony": begun.Ceremony, "credential": keys[w].assert(begun.Options, d.URL)}, &done); err != nil {
			return err
		}
		res, err = hc.Get(done.Redirect)
		if err != nil {
			return err
		}
		res.Body.Close()
		cb, err := url.Parse(res.Header.Get("Location"))
		if err != nil || cb.Query().Get("code") == "" {
			return fmt.Errorf("callback: %d %q", res.StatusCode, res.Header.Get("Location"))
		}
		form := url.Values{"grant_type": {"authorization_code"}, "code": {cb.Query().Get("code")}, "redirect_uri": {"https://bench.corp.example/cb"}, "code_verifier": {verifier}}
		req, _ := http.NewRequest(http.MethodPost, d.URL+"/oidc/token", strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.SetBasicAuth("bench", secret)
		res, err = hc.Do(req)
		if err != nil {
			return err
		}
		var tok struct {
			IDToken string `json:"id_token"`
		}
		json.NewDecoder(res.Body).Decode(&tok)
		res.Body.Close()
		if res.StatusCode != http.StatusOK || tok.IDToken == "" {
			return fmt.Errorf("token: %d", res.StatusCode)
		}
		return nil
	}
	portalFlow := func(w int) error {
		hc := &http.Client{Transport: transport, Timeout: 30 * time.Second}
		var begun struct {
			Ceremony string          `json:"ceremony"`
			Options  json.RawMessage `json:"options"`
		}
		// The portal's ceremony API with its CSRF token (cookie and header).
		csrf := random()
		hdr := map[string]string{"X-CSRF-Token": csrf, "Cookie": "pb_csrf=" + csrf}
		if err := postJSONWith(hc, d.URL+"/webauthn/login/begin", nil, hdr, &begun); err != nil {
			return err
		}
		return postJSONWith(hc, d.URL+"/webauthn/login/finish", map[string]any{"ceremony": begun.Ceremony, "credential": keys[w].assert(begun.Options, d.URL)}, hdr, nil)
	}
	o := testsrv.Measure(benchClients, 10*time.Second, oidcFlow)
	p := testsrv.Measure(benchClients, 10*time.Second, portalFlow)
	b.Logf("OIDC code flow on postgres, %d clients: %.0f flows/s, p50 %s, p99 %s, %d errors", benchClients, o.Rate, o.P50, o.P99, o.Errors)
	b.Logf("portal passkey sign-in, same daemon: %.0f ceremonies/s, p50 %s, p99 %s, %d errors", p.Rate, p.P50, p.P99, p.Errors)
	o.Report(b, "oidc", "flows")
	p.Report(b, "portal", "signins")
}

func postJSON(hc *http.Client, u string, body, out any) error {
	return postJSONWith(hc, u, body, nil, out)
}

func postJSONWith(hc *http.Client, u string, body any, hdr map[string]string, out any) error {
	raw, _ := json.Marshal(body)
	if body == nil {
		raw = nil
	}
	req, _ := http.NewRequest(http.MethodPost, u, strings.NewReader(string(raw)))
	req.Header.Set("Content-Type", "application/json")
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	res, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %d", u, res.StatusCode)
	}
	if out != nil {
		return json.NewDecoder(res.Body).Decode(out)
	}
	return nil
}
