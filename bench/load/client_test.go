package loadbench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptrace"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"github.com/descope/virtualwebauthn"
)

// The portal's CSRF protection (Echo's double-submit cookie): the token is
// the pb_csrf cookie, echoed in a header (JSON calls) or a form field.
const (
	csrfCookie = "pb_csrf"
	csrfHeader = "X-CSRF-Token"
	csrfField  = "_csrf"
)

// newTransport is the clients' shared connection pool. Replicas listen on
// 127.0.0.1 and are reached as http://localhost:PORT (the WebAuthn
// origins): dial 127.0.0.1 directly rather than resolving localhost.
func newTransport(clients int) *http.Transport {
	d := &net.Dialer{Timeout: 10 * time.Second}
	return &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			_, port, err := net.SplitHostPort(addr)
			if err != nil {
				return nil, err
			}
			return d.DialContext(ctx, "tcp4", net.JoinHostPort("127.0.0.1", port))
		},
		MaxIdleConns:        2 * clients,
		MaxIdleConnsPerHost: clients,
		IdleConnTimeout:     2 * time.Minute,
	}
}

// client is one browser: its own cookie jar (session and CSRF cookies,
// shared by both replicas, which are the same host on two ports), the
// replica it opens pages on ("home"), and a software authenticator holding
// the passkey it signs in with.
type client struct {
	http  *http.Client
	jar   *cookiejar.Jar
	urls  [2]string // home first
	rp    [2]virtualwebauthn.RelyingParty
	auth  virtualwebauthn.Authenticator
	cred  virtualwebauthn.Credential
	ready bool // holds an enrolled passkey
}

func newClient(transport http.RoundTripper, home, other string) *client {
	jar, _ := cookiejar.New(nil)
	c := &client{
		http: &http.Client{Jar: jar, Transport: transport, Timeout: requestTimeout,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }},
		jar:  jar,
		urls: [2]string{home, other},
	}
	for i, u := range c.urls {
		c.rp[i] = virtualwebauthn.RelyingParty{Name: "Load Corp", ID: "localhost", Origin: u}
	}
	return c
}

// single points both of the client's replicas at one URL: every ceremony
// begins and finishes on that one replica (the control run).
func (c *client) single(u string) {
	for i := range c.urls {
		c.urls[i] = u
		c.rp[i] = virtualwebauthn.RelyingParty{Name: "Load Corp", ID: "localhost", Origin: u}
	}
}

// requestTimeout is how long a client waits for one answer.
const requestTimeout = 30 * time.Second

// httpError is a failed request: a transport error or an unexpected status.
type httpError struct {
	step   string
	url    string
	status int
	body   string
	err    error
}

func (e *httpError) Error() string {
	if e.err != nil {
		return fmt.Sprintf("%s %s: %v", e.step, e.url, e.err)
	}
	b := strings.Join(strings.Fields(e.body), " ")
	if len(b) > 300 {
		b = b[:300] + "..."
	}
	return fmt.Sprintf("%s %s: status %d: %s", e.step, e.url, e.status, b)
}

// Resent counts the requests sent again because the kept-alive
// connection they went out on had been closed by the server before any
// answer (the server never saw them), and stale sums those connections'
// idle time in milliseconds.
var resent, staleMillis atomic.Int64

func (c *client) do(step string, req *http.Request, want int) ([]byte, error) {
	// Browsers send a request again on a new connection when a reused
	// kept-alive one turns out to be closed before any byte of the
	// answer came (Chromium's ShouldResendRequest, for any method): an
	// HTTP/1.1 server may close an idle connection at any time, and the
	// request then never reached it. Go's client does it only for
	// idempotent methods; do the same as a browser, once, and count it.
	var reused, answered bool
	var idle time.Duration
	trace := &httptrace.ClientTrace{
		GotConn:              func(i httptrace.GotConnInfo) { reused, idle = i.Reused, i.IdleTime },
		GotFirstResponseByte: func() { answered = true },
	}
	res, err := c.http.Do(req.WithContext(httptrace.WithClientTrace(req.Context(), trace)))
	if err != nil && reused && !answered && req.GetBody != nil {
		resent.Add(1)
		staleMillis.Add(idle.Milliseconds())
		if req.Body, err = req.GetBody(); err == nil {
			res, err = c.http.Do(req)
		}
	}
	if err != nil {
		return nil, &httpError{step: step, url: req.URL.String(), err: err}
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		return nil, &httpError{step: step, url: req.URL.String(), err: err}
	}
	if res.StatusCode != want {
		return nil, &httpError{step: step, url: req.URL.String(), status: res.StatusCode, body: string(body)}
	}
	return body, nil
}

// csrf returns the CSRF token, opening the portal's front page on replica
// r first when the jar has none.
func (c *client) csrf(r int) (string, error) {
	u, _ := url.Parse(c.urls[r])
	for _, ck := range c.jar.Cookies(u) {
		if ck.Name == csrfCookie && ck.Value != "" {
			return ck.Value, nil
		}
	}
	req, _ := http.NewRequest(http.MethodGet, c.urls[r]+"/", nil)
	if _, err := c.do("GET /", req, http.StatusOK); err != nil {
		return "", err
	}
	for _, ck := range c.jar.Cookies(u) {
		if ck.Name == csrfCookie && ck.Value != "" {
			return ck.Value, nil
		}
	}
	return "", fmt.Errorf("GET %s/: no %s cookie", c.urls[r], csrfCookie)
}

// postJSON sends body as JSON to replica r and wants a 200.
func (c *client) postJSON(r int, path string, body any) ([]byte, error) {
	token, err := c.csrf(r)
	if err != nil {
		return nil, err
	}
	raw, err := json.Marshal(body)
	if err != nil {
		return nil, err
	}
	req, _ := http.NewRequest(http.MethodPost, c.urls[r]+path, bytes.NewReader(raw))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(csrfHeader, token)
	return c.do("POST "+path, req, http.StatusOK)
}

type beginResponse struct {
	Ceremony string          `json:"ceremony"`
	Options  json.RawMessage `json:"options"`
}

func (c *client) begin(r int, path string) (*beginResponse, error) {
	body, err := c.postJSON(r, path, map[string]any{})
	if err != nil {
		return nil, err
	}
	var b beginResponse
	if err := json.Unmarshal(body, &b); err != nil || b.Ceremony == "" {
		return nil, fmt.Errorf("%s: not a ceremony: %v: %.200s", path, err, body)
	}
	return &b, nil
}

// finishOK checks a finish's answer: {"ok": true, ...}.
func finishOK(path string, body []byte) error {
	var out struct {
		OK bool `json:"ok"`
	}
	if err := json.Unmarshal(body, &out); err != nil || !out.OK {
		return fmt.Errorf("%s: not ok: %v: %.200s", path, err, body)
	}
	return nil
}

// useLink redeems a one-time enrollment link on replica r: the portal
// answers with a new session and a redirect to its front page.
func (c *client) useLink(r int, path string) error {
	token, err := c.csrf(r)
	if err != nil {
		return err
	}
	req, _ := http.NewRequest(http.MethodPost, c.urls[r]+path, strings.NewReader(url.Values{csrfField: {token}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	_, err = c.do("POST /link/…", req, http.StatusSeeOther)
	return err
}

// register adds a passkey to the signed-in account: begin on replica
// r, finish on the other one. It returns the new credential and the
// user handle the authenticator stores with it.
func (c *client) register(r int, name string) (virtualwebauthn.Credential, []byte, error) {
	b, err := c.begin(r, "/webauthn/register/begin")
	if err != nil {
		return virtualwebauthn.Credential{}, nil, err
	}
	opts, err := virtualwebauthn.ParseAttestationOptions(string(b.Options))
	if err != nil {
		return virtualwebauthn.Credential{}, nil, fmt.Errorf("registration options: %v", err)
	}
	cred := virtualwebauthn.NewCredential(virtualwebauthn.KeyTypeEC2)
	auth := virtualwebauthn.NewAuthenticator()
	// Browsers report credProps for create().
	auth.Options.ClientExtensionResults = map[string]any{"credProps": map[string]any{"rk": true}}
	att := virtualwebauthn.CreateAttestationResponse(c.rp[r], auth, cred, *opts)
	body, err := c.postJSON(1-r, "/webauthn/register/finish", map[string]any{"ceremony": b.Ceremony, "name": name, "credential": json.RawMessage(att)})
	if err != nil {
		return virtualwebauthn.Credential{}, nil, err
	}
	if err := finishOK("register finish", body); err != nil {
		return virtualwebauthn.Credential{}, nil, err
	}
	return cred, []byte(opts.UserID), nil
}

// signIn is a discoverable passkey sign-in with the client's passkey:
// begin on replica r, the assertion (counter advanced), finish on the
// other one.
func (c *client) signIn(r int) error {
	b, err := c.begin(r, "/webauthn/login/begin")
	if err != nil {
		return err
	}
	opts, err := virtualwebauthn.ParseAssertionOptions(string(b.Options))
	if err != nil {
		return fmt.Errorf("sign-in options: %v", err)
	}
	c.cred.Counter++
	assertion := virtualwebauthn.CreateAssertionResponse(c.rp[r], c.auth, c.cred, *opts)
	body, err := c.postJSON(1-r, "/webauthn/login/finish", map[string]any{"ceremony": b.Ceremony, "credential": json.RawMessage(assertion)})
	if err != nil {
		return err
	}
	return finishOK("login finish", body)
}
