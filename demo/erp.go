package demo

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"sync"
	"time"

	gooidc "github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"
)

// The demo ERP: a tiny application on its own loopback port that signs its
// users in through passbridge's OpenID Connect provider, as a real ERP
// would (the authorization code flow with PKCE, state and nonce, the ID
// token verified against the JWKS), so that a newcomer sees the whole
// story in one command. Sessions are kept in memory: it is a demo.

// The demo ERP's OpenID Connect client.
const (
	ERPClientID = "demo-erp"
	// ERPClientSecret is public on purpose: the demo listens on loopback.
	ERPClientSecret = "demo-erp-secret-not-for-production"
)

// ERP is the running demo ERP.
type ERP struct {
	URL string
	srv *http.Server
}

type erpSession struct {
	Claims  map[string]any
	IDToken string
}

type erp struct {
	issuer, self string
	log          *slog.Logger

	mu       sync.Mutex
	provider *gooidc.Provider
	pending  map[string][2]string // state -> PKCE verifier, nonce
	sessions map[string]*erpSession
}

// StartERP serves the demo ERP on addr (host:port on loopback), signing in
// through the provider at issuer. Discovery happens at the first sign-in,
// so the ERP may start before passbridge is listening.
func StartERP(addr, issuer string, log *slog.Logger) (*ERP, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("demo ERP: %w", err)
	}
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	e := &erp{issuer: issuer, self: "http://localhost:" + port, log: log, pending: map[string][2]string{}, sessions: map[string]*erpSession{}}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", e.home)
	mux.HandleFunc("POST /login", e.login)
	mux.HandleFunc("GET /callback", e.callback)
	mux.HandleFunc("POST /logout", e.logout)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("demo ERP stopped", "err", err)
		}
	}()
	return &ERP{URL: e.self, srv: srv}, nil
}

// Stop stops the demo ERP.
func (x *ERP) Stop(ctx context.Context) { x.srv.Shutdown(ctx) }

// ERPRedirectURI is the demo ERP's redirect URI on a port.
func ERPRedirectURI(port string) string { return "http://localhost:" + port + "/callback" }

func (e *erp) oauth(ctx context.Context) (*oauth2.Config, *gooidc.Provider, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.provider == nil {
		p, err := gooidc.NewProvider(gooidc.InsecureIssuerURLContext(ctx, e.issuer), e.issuer)
		if err != nil {
			return nil, nil, fmt.Errorf("discover %s: %w", e.issuer, err)
		}
		e.provider = p
	}
	return &oauth2.Config{ClientID: ERPClientID, ClientSecret: ERPClientSecret, Endpoint: e.provider.Endpoint(),
		RedirectURL: e.self + "/callback", Scopes: []string{gooidc.ScopeOpenID, "profile", "email"}}, e.provider, nil
}

func randomString() string {
	b := make([]byte, 24)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

var erpPage = template.Must(template.New("erp").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Northwind ERP (demo)</title>
<style>body{font:16px system-ui,sans-serif;max-width:44rem;margin:3rem auto;padding:0 1rem;color:#222}
header{border-bottom:3px solid #0b5394;margin-bottom:1.5rem}h1{color:#0b5394}button{font:inherit;padding:.5rem 1rem}
table{border-collapse:collapse}td{padding:.2rem .8rem;border-bottom:1px solid #ddd}.err{color:#a00}</style></head>
<body><header><h1>Northwind ERP</h1><p>A demo application that signs its users in through passbridge (OpenID Connect).</p></header>
<main>
{{if .Error}}<p class="err" id="error">{{.Error}}</p>{{end}}
{{if .S}}
<h2 id="welcome">Signed in as {{index .S.Claims "name"}}</h2>
<table>
<tr><td>ERP user (users row key, <code>sub</code>)</td><td id="sub">{{index .S.Claims "sub"}}</td></tr>
<tr><td>username</td><td>{{index .S.Claims "preferred_username"}}</td></tr>
<tr><td>email</td><td>{{index .S.Claims "email"}}</td></tr>
<tr><td>how (<code>amr</code>)</td><td>{{index .S.Claims "amr"}}</td></tr>
</table>
<form method="post" action="/logout"><p><button>Sign out</button></p></form>
{{else}}
<p>The ERP's login used to ask for a password and a TOTP code. Now:</p>
<form method="post" action="/login"><p><button id="signin">Sign in with passkey</button></p></form>
<p>No passkey yet? Add one on the <a href="{{.Portal}}">passkey portal</a> (sign in there with your directory password) and come back.</p>
{{end}}
</main></body></html>`))

func (e *erp) session(r *http.Request) (string, *erpSession) {
	c, err := r.Cookie("erp_session")
	if err != nil {
		return "", nil
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	return c.Value, e.sessions[c.Value]
}

func (e *erp) render(w http.ResponseWriter, status int, s *erpSession, msg string) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	erpPage.Execute(w, map[string]any{"S": s, "Error": msg, "Portal": e.issuer})
}

func (e *erp) home(w http.ResponseWriter, r *http.Request) {
	_, s := e.session(r)
	e.render(w, http.StatusOK, s, "")
}

func (e *erp) login(w http.ResponseWriter, r *http.Request) {
	cfg, _, err := e.oauth(r.Context())
	if err != nil {
		e.render(w, http.StatusBadGateway, nil, "passbridge cannot be reached: "+err.Error())
		return
	}
	state, nonce, verifier := randomString(), randomString(), oauth2.GenerateVerifier()
	e.mu.Lock()
	e.pending[state] = [2]string{verifier, nonce}
	e.mu.Unlock()
	http.Redirect(w, r, cfg.AuthCodeURL(state, gooidc.Nonce(nonce), oauth2.S256ChallengeOption(verifier)), http.StatusSeeOther)
}

func (e *erp) callback(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	e.mu.Lock()
	p, ok := e.pending[q.Get("state")]
	delete(e.pending, q.Get("state"))
	e.mu.Unlock()
	if !ok {
		e.render(w, http.StatusBadRequest, nil, "This sign-in was not started here (unknown state). Try again.")
		return
	}
	if msg := q.Get("error"); msg != "" {
		e.render(w, http.StatusBadRequest, nil, "passbridge said: "+msg+" "+q.Get("error_description"))
		return
	}
	cfg, provider, err := e.oauth(r.Context())
	if err != nil {
		e.render(w, http.StatusBadGateway, nil, err.Error())
		return
	}
	tok, err := cfg.Exchange(r.Context(), q.Get("code"), oauth2.VerifierOption(p[0]))
	if err != nil {
		e.render(w, http.StatusBadGateway, nil, "The code exchange failed: "+err.Error())
		return
	}
	raw, _ := tok.Extra("id_token").(string)
	idt, err := provider.Verifier(&gooidc.Config{ClientID: ERPClientID}).Verify(r.Context(), raw)
	if err != nil || idt.Nonce != p[1] {
		e.render(w, http.StatusBadGateway, nil, fmt.Sprintf("The ID token did not verify: %v", err))
		return
	}
	s := &erpSession{IDToken: raw}
	if err := idt.Claims(&s.Claims); err != nil {
		e.render(w, http.StatusBadGateway, nil, err.Error())
		return
	}
	id := randomString()
	e.mu.Lock()
	e.sessions[id] = s
	e.mu.Unlock()
	b, _ := json.Marshal(s.Claims["amr"])
	e.log.Info("demo ERP sign-in", "sub", s.Claims["sub"], "amr", string(b))
	http.SetCookie(w, &http.Cookie{Name: "erp_session", Value: id, Path: "/", HttpOnly: true, SameSite: http.SameSiteLaxMode})
	http.Redirect(w, r, "/", http.StatusSeeOther)
}

// logout ends the ERP's session and passbridge's tokens (RP-initiated
// logout), then comes back here.
func (e *erp) logout(w http.ResponseWriter, r *http.Request) {
	id, s := e.session(r)
	e.mu.Lock()
	delete(e.sessions, id)
	e.mu.Unlock()
	http.SetCookie(w, &http.Cookie{Name: "erp_session", Path: "/", MaxAge: -1})
	if s == nil {
		http.Redirect(w, r, "/", http.StatusSeeOther)
		return
	}
	v := url.Values{"id_token_hint": {s.IDToken}, "post_logout_redirect_uri": {e.self + "/"}, "client_id": {ERPClientID}}
	http.Redirect(w, r, e.issuer+"/oidc/end_session?"+v.Encode(), http.StatusSeeOther)
}
