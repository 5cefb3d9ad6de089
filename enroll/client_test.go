package enroll

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/descope/virtualwebauthn"
)

// client is a browser without JavaScript, over plain HTTP: cookies, the
// CSRF token, forms and the ceremony API. Its passkeys come from a software
// authenticator (github.com/descope/virtualwebauthn).
type client struct {
	t    testing.TB
	base string
	http *http.Client
	csrf string
	rp   virtualwebauthn.RelyingParty
	auth virtualwebauthn.Authenticator
	// header is sent with every request (X-Forwarded-For through a
	// trusted proxy, say).
	header http.Header
}

func (e *env) client() *client {
	return newClient(e.t, e.URL)
}

func newClient(t testing.TB, base string) *client {
	jar, _ := cookiejar.New(nil)
	c := &client{
		t: t, base: base,
		// The test server answers on 127.0.0.1; the origin is localhost.
		http: &http.Client{Jar: jar, Timeout: 30 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }},
		rp:   virtualwebauthn.RelyingParty{Name: "Test Corp", ID: "localhost", Origin: base},
		auth: virtualwebauthn.NewAuthenticator(),
	}
	return c
}

// response is an answer, read whole.
type response struct {
	status int
	header http.Header
	body   string
}

func (r response) json(t testing.TB) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(r.body), &m); err != nil {
		t.Fatalf("not JSON (status %d): %q", r.status, r.body)
	}
	return m
}

func (c *client) do(req *http.Request) response {
	c.t.Helper()
	for k, vs := range c.header {
		req.Header[k] = vs
	}
	res, err := c.http.Do(req)
	if err != nil {
		c.t.Fatalf("%s %s: %v", req.Method, req.URL.Path, err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	for _, ck := range res.Cookies() {
		if ck.Name == "pb_csrf" && ck.Value != "" {
			c.csrf = ck.Value
		}
	}
	return response{status: res.StatusCode, header: res.Header, body: string(b)}
}

func (c *client) get(path string) response {
	c.t.Helper()
	req, _ := http.NewRequest(http.MethodGet, c.base+path, nil)
	return c.do(req)
}

// form posts a form with the CSRF token (unless it is given).
func (c *client) form(path string, v url.Values) response {
	c.t.Helper()
	if c.csrf == "" {
		c.get("/")
	}
	if _, ok := v[csrfField]; !ok {
		v.Set(csrfField, c.csrf)
	}
	req, _ := http.NewRequest(http.MethodPost, c.base+path, strings.NewReader(v.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return c.do(req)
}

// post sends a JSON body (a string as it is, anything else marshalled)
// with the CSRF header.
func (c *client) post(path string, body any) response {
	c.t.Helper()
	if c.csrf == "" {
		c.get("/")
	}
	var raw []byte
	switch b := body.(type) {
	case string:
		raw = []byte(b)
	case []byte:
		raw = b
	default:
		raw, _ = json.Marshal(b)
	}
	req, _ := http.NewRequest(http.MethodPost, c.base+path, bytes.NewReader(raw))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(csrfHeader, c.csrf)
	return c.do(req)
}

func (c *client) signIn(login, password string) response {
	c.t.Helper()
	return c.form("/signin/password", url.Values{"username": {login}, "password": {password}})
}

// mustSignIn signs in with the password and fails unless it worked.
func (c *client) mustSignIn(login, password string) {
	c.t.Helper()
	if r := c.signIn(login, password); r.status != http.StatusSeeOther {
		c.t.Fatalf("sign in as %s: status %d: %s", login, r.status, strip(r.body))
	}
}

// begin starts a ceremony and returns its ID and the options JSON.
func (c *client) begin(path string, body any) (string, string) {
	c.t.Helper()
	r := c.post(path, body)
	if r.status != http.StatusOK {
		c.t.Fatalf("%s: status %d: %s", path, r.status, r.body)
	}
	var out struct {
		Ceremony string          `json:"ceremony"`
		Options  json.RawMessage `json:"options"`
	}
	if err := json.Unmarshal([]byte(r.body), &out); err != nil {
		c.t.Fatal(err)
	}
	return out.Ceremony, string(out.Options)
}

// attest makes the authenticator's answer to registration options.
func (c *client) attest(options string) (virtualwebauthn.Credential, string) {
	c.t.Helper()
	opts, err := virtualwebauthn.ParseAttestationOptions(options)
	if err != nil {
		c.t.Fatalf("registration options: %v\n%s", err, options)
	}
	cred := virtualwebauthn.NewCredential(virtualwebauthn.KeyTypeEC2)
	// Browsers report credProps for create() only.
	auth := c.auth
	auth.Options.ClientExtensionResults = map[string]any{"credProps": map[string]any{"rk": true}}
	return cred, virtualwebauthn.CreateAttestationResponse(c.rp, auth, cred, *opts)
}

// register enrolls a new passkey for the signed-in user and keeps it in the
// authenticator.
func (c *client) register(name string) virtualwebauthn.Credential {
	c.t.Helper()
	ceremony, options := c.begin("/webauthn/register/begin", nil)
	opts, err := virtualwebauthn.ParseAttestationOptions(options)
	if err != nil {
		c.t.Fatal(err)
	}
	cred, att := c.attest(options)
	r := c.post("/webauthn/register/finish", map[string]any{"ceremony": ceremony, "name": name, "credential": json.RawMessage(att)})
	if r.status != http.StatusOK {
		c.t.Fatalf("register finish: status %d: %s", r.status, r.body)
	}
	c.auth.Options.UserHandle = []byte(opts.UserID)
	c.auth.AddCredential(cred)
	return cred
}

// assert makes the authenticator's answer to sign-in options with cred,
// its counter advanced as a real authenticator does.
func (c *client) assert(options string, cred *virtualwebauthn.Credential) string {
	c.t.Helper()
	opts, err := virtualwebauthn.ParseAssertionOptions(options)
	if err != nil {
		c.t.Fatalf("sign-in options: %v\n%s", err, options)
	}
	cred.Counter++
	return virtualwebauthn.CreateAssertionResponse(c.rp, c.auth, *cred, *opts)
}

// passkeySignIn signs in with cred: begin, assert, finish.
func (c *client) passkeySignIn(cred *virtualwebauthn.Credential) response {
	c.t.Helper()
	ceremony, options := c.begin("/webauthn/login/begin", nil)
	return c.post("/webauthn/login/finish", map[string]any{"ceremony": ceremony, "credential": json.RawMessage(c.assert(options, cred))})
}

// strip keeps the text of an HTML page's main element, for messages.
func strip(body string) string {
	if i := strings.Index(body, "<main"); i >= 0 {
		body = body[i:]
	}
	if i := strings.Index(body, "</main>"); i >= 0 {
		body = body[:i]
	}
	var b strings.Builder
	in := false
	for _, r := range body {
		switch {
		case r == '<':
			in = true
		case r == '>':
			in = false
			b.WriteByte(' ')
		case !in:
			b.WriteRune(r)
		}
	}
	return strings.Join(strings.Fields(b.String()), " ")
}

func mustContain(t testing.TB, what, got, want string) {
	t.Helper()
	if !strings.Contains(got, want) {
		t.Errorf("%s: %q does not contain %q", what, got, want)
	}
}
