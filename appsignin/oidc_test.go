package appsignin_test

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"html"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	gooidc "github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"

	"github.com/passbridge/passbridge/internal/testsrv"
)

// goRP is a relying party in Go (coreos/go-oidc + x/oauth2), a confidential
// client doing the code flow with PKCE S256, state and nonce, serving
// http://localhost:PORT.
type goRP struct {
	URL     string
	oauth   oauth2.Config
	verify  *gooidc.IDTokenVerifier
	pending map[string][2]string // state -> verifier, nonce
}

func startGoRP(t *testing.T, issuer, clientID, secret string, port int) *goRP {
	t.Helper()
	ctx := gooidc.InsecureIssuerURLContext(context.Background(), issuer)
	provider, err := gooidc.NewProvider(ctx, issuer)
	if err != nil {
		t.Fatalf("go-oidc discovery: %v", err)
	}
	rp := &goRP{URL: "http://localhost:" + strconv.Itoa(port), pending: map[string][2]string{}}
	rp.oauth = oauth2.Config{ClientID: clientID, ClientSecret: secret, Endpoint: provider.Endpoint(),
		RedirectURL: rp.URL + "/callback", Scopes: []string{gooidc.ScopeOpenID, "profile", "email"}}
	rp.verify = provider.Verifier(&gooidc.Config{ClientID: clientID})
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		state, nonce, verifier := random(), random(), oauth2.GenerateVerifier()
		rp.pending[state] = [2]string{verifier, nonce}
		http.Redirect(w, r, rp.oauth.AuthCodeURL(state, gooidc.Nonce(nonce), oauth2.S256ChallengeOption(verifier)), http.StatusFound)
	})
	mux.HandleFunc("/callback", func(w http.ResponseWriter, r *http.Request) {
		p, ok := rp.pending[r.URL.Query().Get("state")]
		if !ok {
			http.Error(w, "unknown state", http.StatusBadRequest)
			return
		}
		tok, err := rp.oauth.Exchange(r.Context(), r.URL.Query().Get("code"), oauth2.VerifierOption(p[0]))
		if err != nil {
			http.Error(w, "exchange: "+err.Error(), http.StatusBadGateway)
			return
		}
		raw, _ := tok.Extra("id_token").(string)
		idt, err := rp.verify.Verify(r.Context(), raw)
		if err != nil || idt.Nonce != p[1] {
			http.Error(w, fmt.Sprintf("ID token: %v (nonce %q)", err, idt), http.StatusBadGateway)
			return
		}
		var claims map[string]any
		idt.Claims(&claims)
		b, _ := json.Marshal(claims)
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprintf(w, `<!doctype html><main><h1>Signed in (go)</h1><pre id="claims">%s</pre></main>`, html.EscapeString(string(b)))
	})
	srv := &http.Server{Addr: "127.0.0.1:" + strconv.Itoa(port), Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go srv.ListenAndServe()
	t.Cleanup(func() { srv.Close() })
	if err := testsrv.WaitTCP(context.Background(), srv.Addr); err != nil {
		t.Fatal(err)
	}
	return rp
}

func random() string {
	b := make([]byte, 16)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// TestOIDCCodeFlowInBrowser: an employee enrolls a passkey on the portal
// in Chromium (CDP virtual authenticator), then signs in to a Go relying
// party and to a Node one (openid-client from npm) with it: each verifies
// the ID token and gets the users row's key as sub. On slapd and Samba AD.
func TestOIDCCodeFlowInBrowser(t *testing.T) {
	for _, dir := range []string{"openldap", "ad"} {
		t.Run(dir, func(t *testing.T) {
			node := ""
			if dir == "openldap" {
				node = nodeDir(t)
			}
			goPort, nodePort := testsrv.FreePort(t), testsrv.FreePort(t)
			clients := fmt.Sprintf(`oidc:
  clients:
    - id: erp-go
      name: Northwind ERP
      secret: erp-go-secret-0123456789abcdef
      redirect_uris: ["http://localhost:%d/callback"]
    - id: erp-node
      public: true
      redirect_uris: ["http://localhost:%d/callback"]
`, goPort, nodePort)
			d := startDaemon(t, daemonOptions{ad: dir == "ad", yaml: clients})
			u := d.addUser("olga")
			rp := startGoRP(t, d.URL, "erp-go", "erp-go-secret-0123456789abcdef", goPort)

			ctx := testsrv.Browser(t)
			testsrv.VirtualAuthenticator(t, ctx)
			run := browserRun(t, ctx)
			run("enroll on the portal",
				chromedp.Navigate(d.URL+"/"),
				passwordForm("username", u.name, testsrv.DefaultUserPassword),
				chromedp.WaitVisible(chromedp.ID("register")),
				chromedp.Click(chromedp.ID("register")),
				chromedp.WaitVisible(chromedp.Search(`//div[contains(@class,"notice") and contains(., "Your passkey is ready")]`)),
			)
			signIn := func(rpURL, who string) map[string]any {
				t.Helper()
				run("sign in to the "+who+" relying party",
					chromedp.Navigate(rpURL+"/"),
					chromedp.WaitVisible(chromedp.ID("passkey-signin")),
					chromedp.Click(chromedp.ID("passkey-signin")),
				)
				text := waitText(t, ctx, "claims")
				var claims map[string]any
				if err := json.Unmarshal([]byte(text), &claims); err != nil {
					t.Fatalf("%s claims: %v: %s", who, err, text)
				}
				return claims
			}
			key := strconv.FormatInt(u.key, 10)
			claims := signIn(rp.URL, "Go")
			if claims["sub"] != key || claims["user_key"] != key || claims["preferred_username"] != u.name || claims["email"] != u.email {
				t.Errorf("Go relying party's claims: %v, want sub = user_key = %s", claims, key)
			}
			if amr, _ := json.Marshal(claims["amr"]); !strings.Contains(string(amr), `"pop"`) {
				t.Errorf("amr = %s, want a passkey's", amr)
			}
			if node != "" {
				startNode(t, node, "rp.mjs", "ISSUER="+d.URL, "CLIENT_ID=erp-node", "REDIRECT_URI="+fmt.Sprintf("http://localhost:%d/callback", nodePort), "PORT="+strconv.Itoa(nodePort))
				claims = signIn(fmt.Sprintf("http://localhost:%d", nodePort), "Node")
				if aud, _ := json.Marshal(claims["aud"]); claims["sub"] != key || string(aud) != `["erp-node"]` || claims["name"] != "Olga Tester" {
					t.Errorf("Node relying party's claims: %v, want sub %s", claims, key)
				}
			}
			if got := d.appSignIns(u); got != map[bool]int{true: 2, false: 1}[node != ""] {
				t.Errorf("%d app.signin events, want one per sign-in", got)
			}
		})
	}
}

// flow is one authorization code flow driven over HTTP with a software
// authenticator, to test what a browser cannot be made to do.
type flow struct {
	t  *testing.T
	d  *daemon
	hc *http.Client
}

func newFlow(t *testing.T, d *daemon) *flow {
	jar, _ := cookiejar.New(nil)
	return &flow{t: t, d: d, hc: &http.Client{Jar: jar, Timeout: 30 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
}

func (f *flow) get(raw string) *http.Response {
	f.t.Helper()
	res, err := f.hc.Get(raw)
	if err != nil {
		f.t.Fatal(err)
	}
	io.Copy(io.Discard, res.Body)
	res.Body.Close()
	return res
}

// authorize starts a flow and returns the authorize response.
func (f *flow) authorize(params url.Values) *http.Response {
	f.t.Helper()
	return f.get(f.d.URL + "/oidc/authorize?" + params.Encode())
}

// login signs in on the login page the authorize response sent the
// browser to, with pk, and returns the status and body of the finish.
func (f *flow) login(res *http.Response, pk *passkey) (string, int, map[string]any) {
	f.t.Helper()
	loc := res.Header.Get("Location")
	if res.StatusCode != http.StatusFound || !strings.Contains(loc, "/oidc/login?id=") {
		f.t.Fatalf("authorize did not send the browser to the login page: %d %q", res.StatusCode, loc)
	}
	id := loc[strings.Index(loc, "id=")+3:]
	st, begun, _ := api(f.t, f.d.URL, "/oidc/login/begin", "", map[string]any{"request": id})
	if st != http.StatusOK {
		f.t.Fatalf("login begin: %d %v", st, begun)
	}
	opts, _ := json.Marshal(begun["options"])
	body, _ := json.Marshal(map[string]any{"request": id, "ceremony": begun["ceremony"], "credential": pk.assert(opts, f.d.URL)})
	req, _ := http.NewRequest(http.MethodPost, f.d.URL+"/oidc/login/finish", strings.NewReader(string(body)))
	req.Header.Set("Content-Type", "application/json")
	r, err := f.hc.Do(req)
	if err != nil {
		f.t.Fatal(err)
	}
	defer r.Body.Close()
	var m map[string]any
	json.NewDecoder(r.Body).Decode(&m)
	return id, r.StatusCode, m
}

// code runs the whole browser part and returns the code.
func (f *flow) code(params url.Values, pk *passkey) string {
	f.t.Helper()
	_, st, m := f.login(f.authorize(params), pk)
	if st != http.StatusOK {
		f.t.Fatalf("login finish: %d %v", st, m)
	}
	res := f.get(m["redirect"].(string))
	loc, _ := url.Parse(res.Header.Get("Location"))
	if res.StatusCode != http.StatusFound || loc == nil || loc.Query().Get("code") == "" {
		f.t.Fatalf("callback: %d %q", res.StatusCode, res.Header.Get("Location"))
	}
	if loc.Query().Get("state") != params.Get("state") {
		f.t.Errorf("state %q came back as %q", params.Get("state"), loc.Query().Get("state"))
	}
	return loc.Query().Get("code")
}

// token posts to the token endpoint and returns the status and body.
func (f *flow) token(form url.Values, user, pass string) (int, map[string]any) {
	f.t.Helper()
	req, _ := http.NewRequest(http.MethodPost, f.d.URL+"/oidc/token", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if user != "" {
		req.SetBasicAuth(url.QueryEscape(user), url.QueryEscape(pass))
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		f.t.Fatal(err)
	}
	defer res.Body.Close()
	var m map[string]any
	json.NewDecoder(res.Body).Decode(&m)
	return res.StatusCode, m
}

func (f *flow) userinfo(access string) int {
	req, _ := http.NewRequest(http.MethodGet, f.d.URL+"/oidc/userinfo", nil)
	req.Header.Set("Authorization", "Bearer "+access)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		f.t.Fatal(err)
	}
	res.Body.Close()
	return res.StatusCode
}

// TestOIDCHostile: every way to get a token one should not is a 4xx (or,
// where OAuth says so, an error sent back to the registered redirect URI)
// and issues nothing; a replayed code also revokes what its first use got.
func TestOIDCHostile(t *testing.T) {
	const secret = "erp-secret-0123456789abcdefgh"
	d := startDaemon(t, daemonOptions{yaml: `oidc:
  clients:
    - id: erp
      secret: ` + secret + `
      redirect_uris: ["https://erp.corp.example/cb"]
    - id: spa
      public: true
      redirect_uris: ["https://spa.corp.example/cb"]
`})
	u := d.addUser("hostile")
	pk := d.enroll(u)
	verifier := oauth2.GenerateVerifier()
	params := func(client, redirect string) url.Values {
		return url.Values{"client_id": {client}, "redirect_uri": {redirect}, "response_type": {"code"}, "scope": {"openid profile email"},
			"state": {random()}, "nonce": {random()}, "code_challenge": {oauth2.S256ChallengeFromVerifier(verifier)}, "code_challenge_method": {"S256"}}
	}
	exchange := func(code, redirect, verifier string) url.Values {
		return url.Values{"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {redirect}, "code_verifier": {verifier}}
	}
	f := newFlow(t, d)
	issued := d.appSignIns(u)

	// Redirect URIs are matched exactly: no login page, no redirect.
	for _, bad := range []string{"https://evil.example/cb", "https://erp.corp.example/cb/extra", "https://erp.corp.example/cb?x=1", "https://erp.corp.example/CB"} {
		res := f.authorize(params("erp", bad))
		if res.StatusCode < 400 || res.StatusCode >= 500 || strings.Contains(res.Header.Get("Location"), "evil") {
			t.Errorf("redirect_uri %s: %d %q", bad, res.StatusCode, res.Header.Get("Location"))
		}
	}
	// A public client without PKCE S256: the error goes back to its
	// registered redirect URI, with no code.
	for _, p := range []url.Values{params("spa", "https://spa.corp.example/cb"), params("spa", "https://spa.corp.example/cb")} {
		p.Del("code_challenge")
		p.Del("code_challenge_method")
		res := f.authorize(p)
		loc, _ := url.Parse(res.Header.Get("Location"))
		if loc == nil || loc.Query().Get("error") == "" || loc.Query().Get("code") != "" || strings.Contains(loc.Path, "/oidc/login") {
			t.Errorf("public client without PKCE: %d %q", res.StatusCode, res.Header.Get("Location"))
		}
	}
	p := params("spa", "https://spa.corp.example/cb")
	p.Set("code_challenge_method", "plain")
	p.Set("code_challenge", verifier)
	if res := f.authorize(p); strings.Contains(res.Header.Get("Location"), "/oidc/login") {
		t.Errorf("a plain PKCE challenge was accepted: %q", res.Header.Get("Location"))
	}

	// A good code, then the token endpoint's refusals.
	code := f.code(params("erp", "https://erp.corp.example/cb"), pk)
	for name, tc := range map[string]struct {
		form       url.Values
		user, pass string
	}{
		"missing PKCE verifier": {exchange(code, "https://erp.corp.example/cb", ""), "erp", secret},
		"wrong PKCE verifier":   {exchange(code, "https://erp.corp.example/cb", oauth2.GenerateVerifier()), "erp", secret},
		"wrong client secret":   {exchange(code, "https://erp.corp.example/cb", verifier), "erp", "not-the-secret-0123456789"},
		"another client":        {exchange(code, "https://spa.corp.example/cb", verifier), "spa", ""},
		"other redirect_uri":    {exchange(code, "https://erp.corp.example/other", verifier), "erp", secret},
	} {
		// Each refusal uses the code up (it is claimed before the
		// checks), so every case gets a fresh one.
		c := f.code(params("erp", "https://erp.corp.example/cb"), pk)
		tc.form.Set("code", c)
		if tc.user == "spa" {
			tc.form.Set("client_id", "spa")
			tc.user = ""
		}
		st, body := f.token(tc.form, tc.user, tc.pass)
		if st < 400 || st >= 500 || body["id_token"] != nil || body["access_token"] != nil {
			t.Errorf("%s: %d %v", name, st, body)
		}
	}
	st, first := f.token(exchange(code, "https://erp.corp.example/cb", verifier), "erp", secret)
	if st != http.StatusOK || first["id_token"] == nil {
		t.Fatalf("the exchange of a good code: %d %v", st, first)
	}
	access := first["access_token"].(string)
	if got := f.userinfo(access); got != http.StatusOK {
		t.Fatalf("userinfo with a fresh token: %d", got)
	}
	st, again := f.token(exchange(code, "https://erp.corp.example/cb", verifier), "erp", secret)
	if st != http.StatusBadRequest || again["access_token"] != nil {
		t.Errorf("a replayed code: %d %v", st, again)
	}
	if got := f.userinfo(access); got < 400 || got >= 500 {
		t.Errorf("userinfo with the first use's token after the code was replayed: %d, want it revoked", got)
	}

	// The callback only in the browser that signed in.
	id, st2, m := f.login(f.authorize(params("erp", "https://erp.corp.example/cb")), pk)
	if st2 != http.StatusOK {
		t.Fatal(m)
	}
	other := newFlow(t, d)
	if res := other.get(d.URL + "/oidc/authorize/callback?id=" + id); res.StatusCode != http.StatusBadRequest || res.Header.Get("Location") != "" {
		t.Errorf("the callback from another browser: %d %q", res.StatusCode, res.Header.Get("Location"))
	}

	// The account's state refuses the sign-in on the login page.
	q := d.db.Dialect().Quote
	before := d.appSignIns(u)
	d.exec("UPDATE "+q("users")+" SET "+q("is_active")+" = ? WHERE "+q("id")+" = ?", false, u.key)
	if _, st, m := f.login(f.authorize(params("erp", "https://erp.corp.example/cb")), pk); st != http.StatusForbidden || m["redirect"] != nil {
		t.Errorf("an inactive users row: %d %v", st, m)
	}
	d.exec("UPDATE "+q("users")+" SET "+q("is_active")+" = ? WHERE "+q("id")+" = ?", true, u.key)
	d.dir.Disable(t, u.dn)
	d.command("sync", "--full")
	if _, st, m := f.login(f.authorize(params("erp", "https://erp.corp.example/cb")), pk); st != http.StatusForbidden || m["redirect"] != nil {
		t.Errorf("a user disabled in the directory: %d %v", st, m)
	}
	if d.appSignIns(u) != before {
		t.Errorf("a refused sign-in was recorded as a success")
	}
	_ = issued
}
