package appsignin

import (
	"context"
	"crypto/rand"
	"embed"
	"encoding/json"
	"html/template"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/rs/cors"
	"github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/oidc/v3/pkg/op"

	"github.com/passbridge/passbridge/config"
	"github.com/passbridge/passbridge/enroll"
	"github.com/passbridge/passbridge/signin"
	"github.com/passbridge/passbridge/store"
)

// The OpenID Connect provider is zitadel/oidc's (an OpenID-certified
// library), on the storage in oidc_storage.go, mounted on the portal's
// router: discovery at /.well-known/openid-configuration, the endpoints
// under /oidc/. Only the authorization code flow is offered (PKCE S256
// required of public clients), refresh tokens are not issued, and the
// employee signs in on passbridge's own login page (/oidc/login) with a
// passkey, through the sign-in core (or, for a client with
// password_fallback, with the directory password: password.go). The browser that signed in gets a
// cookie that the authorization callback requires, so that a login page
// opened from someone else's authorization request cannot hand its code to
// whoever started that request.

// Paths of the provider.
const (
	loginPath      = "/oidc/login"
	callbackPath   = "/oidc/authorize/callback"
	loginCookie    = "pb_oidc"
	EvCodeReplayed = "app.code_replayed" // an authorization code presented twice: its tokens revoked
)

//go:embed login.html static/login.js
var loginFiles embed.FS

var loginPage = template.Must(template.ParseFS(loginFiles, "login.html"))

// newProvider builds the zitadel/oidc provider of the clients.
func (a *Apps) newProvider() (http.Handler, error) {
	var key [32]byte
	if _, err := rand.Read(key[:]); err != nil {
		return nil, err
	}
	cfg := &op.Config{
		// Access tokens are JWTs signed with the shared keys: the key
		// below encrypts nothing that outlives this process.
		CryptoKey:                key,
		CodeMethodS256:           true,
		AuthMethodPost:           true,
		DefaultLogoutRedirectURI: loginPath + "/signed-out",
		SupportedScopes:          []string{oidc.ScopeOpenID, oidc.ScopeProfile, oidc.ScopeEmail},
		SupportedClaims: []string{"sub", "aud", "exp", "iat", "iss", "auth_time", "nonce", "amr", "azp", "at_hash", "c_hash",
			"name", "preferred_username", "email", "user_key", "directory_id"},
	}
	origins := map[string]bool{}
	for _, c := range a.clients {
		for _, r := range append(slices.Clone(c.RedirectURIs), c.Origins...) {
			if u, err := url.Parse(r); err == nil {
				origins[u.Scheme+"://"+u.Host] = true
			}
		}
	}
	opts := []op.Option{
		op.WithCustomEndpoints(op.NewEndpoint("/oidc/authorize"), op.NewEndpoint("/oidc/token"), op.NewEndpoint("/oidc/userinfo"),
			op.NewEndpoint("/oidc/revoke"), op.NewEndpoint("/oidc/end_session"), op.NewEndpoint(jwksPath)),
		op.WithCustomIntrospectionEndpoint(op.NewEndpoint("/oidc/introspect")),
		op.WithCustomDeviceAuthorizationEndpoint(op.NewEndpoint("/oidc/device_authorization")),
		// Browsers may call the token, userinfo and keys endpoints from
		// the clients' origins only (public clients in the browser).
		op.WithCORSOptions(&cors.Options{
			AllowOriginFunc: func(o string) bool { return origins[o] },
			AllowedHeaders:  []string{"Authorization", "Content-Type"},
			AllowedMethods:  []string{http.MethodGet, http.MethodPost},
		}),
	}
	if strings.HasPrefix(a.issuer, "http://") {
		// Allowed by config only on localhost (the demo, development).
		opts = append(opts, op.WithAllowInsecure())
	}
	return op.NewOpenIDProvider(a.issuer, cfg, &storage{a: a}, opts...)
}

// mountOIDC adds the provider's endpoints and the login page.
func (a *Apps) mountOIDC(e *echo.Echo) {
	h := echo.WrapHandler(a.provider)
	e.Any(oidc.DiscoveryEndpoint, h)
	for _, path := range []string{"/oidc/authorize", "/oidc/token", "/oidc/userinfo", "/oidc/revoke", "/oidc/end_session", "/oidc/introspect", jwksPath} {
		e.Any(path, h)
	}
	e.GET(callbackPath, h, a.sameBrowser)
	e.GET(loginPath, a.loginPage, a.csrf)
	e.GET(loginPath+"/signed-out", a.signedOut)
	e.POST(loginPath+"/begin", a.loginBegin)
	e.POST(loginPath+"/finish", a.loginFinish)
	// The password fallback: formOnly reads the form before the CSRF
	// check does.
	e.POST(passwordPath, a.loginPassword, formOnly, a.csrf)
	e.GET(invitePath, a.invitePage, a.csrf)
	e.POST(invitePath+"/begin", a.inviteBegin, a.csrf)
	e.POST(invitePath+"/finish", a.inviteFinish, a.csrf)
	e.GET("/oidc/static/login.js", func(c echo.Context) error {
		b, _ := loginFiles.ReadFile("static/login.js")
		c.Response().Header().Set("Cache-Control", "max-age=300")
		return c.Blob(http.StatusOK, "text/javascript; charset=utf-8", b)
	})
}

// pageHeaders are the login page's security headers: the portal's, but
// forms may also be sent on to formTo (Chromium applies form-action to the
// redirects that follow a form's post: the password form's ends at the
// application's redirect URI).
func (a *Apps) pageHeaders(c echo.Context, formTo string) {
	h := c.Response().Header()
	enroll.PageHeaders(h, strings.HasPrefix(a.issuer, "https://"))
	if formTo != "" {
		h.Set("Content-Security-Policy", strings.Replace(h.Get("Content-Security-Policy"), "form-action 'self'", "form-action 'self' "+formTo, 1))
	}
	h.Set("Cache-Control", "no-store")
}

type loginView struct {
	Title, Client, Request, Error, RPName string
	// Password offers the password form (the client's password_fallback);
	// Username is what was typed in it.
	Password bool
	Username string
	// Invite is the request whose user is invited to add a passkey after
	// a password sign-in; Continue goes on to the application.
	Invite, Continue string
	// CSRF is the token of the password form and the invitation's calls.
	CSRF string
	// formTo is the origin of the request's redirect URI.
	formTo string
}

// loginView is the login page of an authorization request.
func (a *Apps) loginView(r *authRequest, cl *config.Client) loginView {
	name := clientName(cl)
	v := loginView{Title: "Sign in to " + name, Client: name, Request: r.ID, Password: a.offersPassword(cl)}
	if u, err := url.Parse(r.Req.RedirectURI); err == nil && v.Password {
		v.formTo = u.Scheme + "://" + u.Host
	}
	return v
}

// clientName is how the login page names an application.
func clientName(cl *config.Client) string {
	if cl.Name != "" {
		return cl.Name
	}
	return cl.ID
}

func (a *Apps) render(c echo.Context, status int, v loginView) error {
	a.pageHeaders(c, v.formTo)
	v.RPName = a.cfg.Portal.RPName
	if t, ok := c.Get(ctxCSRF).(string); ok {
		v.CSRF = t
	}
	var b strings.Builder
	if err := loginPage.Execute(&b, v); err != nil {
		return err
	}
	return c.HTML(status, b.String())
}

var errRequestGone = &signin.Error{Status: http.StatusBadRequest, Code: "request_expired",
	Message: "This sign-in has expired or was already used. Go back to the application and start again."}

// loginPage is where the provider sends the browser to sign in.
func (a *Apps) loginPage(c echo.Context) error {
	id := c.QueryParam("id")
	r, err := (&storage{a: a}).requestByID(c.Request().Context(), id)
	if err != nil {
		return a.render(c, http.StatusBadRequest, loginView{Title: "Sign-in expired", Error: errRequestGone.Message})
	}
	return a.render(c, http.StatusOK, a.loginView(r, a.clients[r.Req.ClientID]))
}

func (a *Apps) signedOut(c echo.Context) error {
	return a.render(c, http.StatusOK, loginView{Title: "Signed out", Error: ""})
}

type (
	loginBeginRequest struct {
		Request string `json:"request"`
	}
	loginFinishRequest struct {
		Request  string          `json:"request"`
		Ceremony string          `json:"ceremony"`
		Raw      json.RawMessage `json:"credential"`
	}
)

func (a *Apps) loginBegin(c echo.Context) error {
	c.Response().Header().Set("Cache-Control", "no-store")
	var req loginBeginRequest
	if err := decode(c, &req); err != nil {
		return appError(c, err)
	}
	ctx := c.Request().Context()
	r, err := (&storage{a: a}).requestByID(ctx, req.Request)
	if err != nil || r.Done() {
		return appError(c, errRequestGone)
	}
	id, options, err := a.core.BeginLogin(ctx, signin.KindAppLogin, false)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, map[string]any{"ceremony": id, "options": options})
}

// loginFinish verifies the passkey with the sign-in core and completes the
// authorization request in the same transaction that records the sign-in.
func (a *Apps) loginFinish(c echo.Context) error {
	c.Response().Header().Set("Cache-Control", "no-store")
	var req loginFinishRequest
	if err := decode(c, &req); err != nil {
		return appError(c, err)
	}
	ctx := c.Request().Context()
	st := &storage{a: a}
	r, err := st.requestByID(ctx, req.Request)
	if err != nil || r.Done() {
		return appError(c, errRequestGone)
	}
	cl := a.clients[r.Req.ClientID]
	l, err := a.core.Verify(ctx, signin.Assertion{Kind: signin.KindAppLogin, Ceremony: req.Ceremony, Credential: []byte(req.Raw),
		Origins: a.cfg.Portal.Origins, IP: c.RealIP(), UA: c.Request().UserAgent(),
		Detail: map[string]any{"client_id": cl.ID, "protocol": "oidc"}})
	if err != nil {
		return appError(c, err)
	}
	browser, browserHash := signin.NewSecret()
	err = a.core.Commit(ctx, l, EvAppSignIn, func(tx store.Execer) error {
		return st.signedIn(ctx, tx, req.Request, cl, l.Identity, amr(l.Credential), browserHash)
	})
	if err != nil {
		return appError(c, err)
	}
	a.setBrowser(c, browser)
	return c.JSON(http.StatusOK, map[string]any{"redirect": a.continueURL(req.Request)})
}

// signedIn completes a pending authorization request in tx with who signed
// in and how (amr), and the hash of the cookie of the browser that did;
// errRequestGone when it is done or expired.
func (s *storage) signedIn(ctx context.Context, tx store.Execer, id string, cl *config.Client, it *signin.Identity, amr []string, browserHash string) error {
	q := s.q
	now := s.a.core.Now()
	res, err := store.Exec(ctx, tx, "UPDATE "+s.requests()+" SET "+q("identity_id")+" = ?, "+q("subject")+" = ?, "+q("amr")+" = ?, "+q("auth_time")+" = ?, "+q("browser_hash")+" = ? WHERE "+
		q("id")+" = ? AND "+q("subject")+" IS NULL AND "+q("expires_at")+" > ?",
		it.ID, subject(cl, it), strings.Join(amr, " "), now, browserHash, signin.HashSecret(id), now)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n != 1 {
		return errRequestGone
	}
	return nil
}

// setBrowser gives the browser that signed in for a request the cookie
// that the callback and the invitation require.
func (a *Apps) setBrowser(c echo.Context, value string) {
	c.SetCookie(&http.Cookie{Name: loginCookie, Value: value, Path: "/oidc/", HttpOnly: true, SameSite: http.SameSiteLaxMode,
		Secure: strings.HasPrefix(a.issuer, "https://"), Expires: time.Now().Add(authRequestLifetime)})
}

// sameBrowser lets the authorization callback through only in the browser
// that signed in for that request.
func (a *Apps) sameBrowser(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		id := c.QueryParam("id")
		ck, err := c.Cookie(loginCookie)
		if err != nil || !signin.ValidSecret(ck.Value) || !signin.ValidSecret(id) {
			return a.render(c, http.StatusBadRequest, loginView{Title: "Sign-in expired", Error: errRequestGone.Message})
		}
		var n int
		q := a.n.Column
		if err := store.Get(c.Request().Context(), a.db, &n, "SELECT COUNT(*) FROM "+a.n.Table("oidc_requests")+" WHERE "+q("id")+" = ? AND "+q("browser_hash")+" = ?",
			signin.HashSecret(id), signin.HashSecret(ck.Value)); err != nil {
			return err
		}
		if n != 1 {
			return a.render(c, http.StatusBadRequest, loginView{Title: "Sign-in expired", Error: errRequestGone.Message})
		}
		return next(c)
	}
}
