package appsignin

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"net/http"
	"slices"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/labstack/echo/v4"

	"github.com/passbridge/passbridge/config"
	"github.com/passbridge/passbridge/internal/httpjson"
	"github.com/passbridge/passbridge/signin"
	"github.com/passbridge/passbridge/store"
)

// The signed-assertion API, for applications that do not speak OpenID
// Connect. The application's page (or its backend) begins a passkey
// sign-in for its client ID, runs navigator.credentials.get with the
// options, and finishes it; passbridge verifies the passkey with the
// portal's sign-in core and answers a JWT (ES256, aud = the client ID,
// a jti to use once, a lifetime of oidc.assertion_lifetime) that the
// application's backend checks against the JWKS. Browsers may call it only
// from the client's origins (CORS), and a passkey assertion is accepted only
// when the browser made it on one of them (or on the portal).

// maxBody bounds the API's request bodies.
const maxBody = 64 << 10

//go:embed sdk/passbridge.js
var sdkJS []byte

func (a *Apps) mountAssertion(e *echo.Echo) {
	e.OPTIONS("/api/v1/signin/begin", a.preflight)
	e.OPTIONS("/api/v1/signin/finish", a.preflight)
	e.POST("/api/v1/signin/begin", a.begin)
	e.POST("/api/v1/signin/finish", a.finish)
	e.GET("/sdk/passbridge.js", a.sdk)
	e.GET("/.well-known/webauthn", a.relatedOrigins)
}

type (
	beginRequest struct {
		ClientID string `json:"client_id"`
	}
	finishRequest struct {
		beginRequest
		Ceremony   string          `json:"ceremony"`
		Credential json.RawMessage `json:"credential"`
	}
)

var errMalformed = func(msg string) *signin.Error {
	return &signin.Error{Status: http.StatusBadRequest, Code: httpjson.CodeMalformed, Message: "Malformed request: " + msg}
}

// decode reads a JSON body strictly (unknown fields, trailing data and
// oversized bodies are 4xx), as every passbridge JSON surface does.
func decode(c echo.Context, v any) error {
	return httpjson.Decode(c.Response(), c.Request(), maxBody, v)
}

var errUnknownClient = &signin.Error{Status: http.StatusBadRequest, Code: "unknown_client", Message: "Unknown client_id: this application is not configured in oidc.clients."}

// cors checks the browser's origin for a client and answers with the CORS
// headers: a request from an origin that is not the client's is refused
// before anything is begun or issued. A request without Origin is a
// backend's, which CORS does not concern.
func (a *Apps) cors(c echo.Context, cl *config.Client) error {
	origin := c.Request().Header.Get("Origin")
	h := c.Response().Header()
	h.Add("Vary", "Origin")
	if origin == "" {
		return nil
	}
	if !slices.Contains(cl.Origins, origin) && !slices.Contains(a.cfg.Portal.Origins, origin) {
		return &signin.Error{Status: http.StatusForbidden, Code: "origin", Message: "This origin may not use the sign-in of client " + cl.ID + ": it is not in its origins."}
	}
	h.Set("Access-Control-Allow-Origin", origin)
	return nil
}

// preflight answers CORS preflights: only origins of some client.
func (a *Apps) preflight(c echo.Context) error {
	origin := c.Request().Header.Get("Origin")
	h := c.Response().Header()
	h.Add("Vary", "Origin")
	known := false
	for _, cl := range a.clients {
		known = known || slices.Contains(cl.Origins, origin)
	}
	if !known {
		return appError(c, &signin.Error{Status: http.StatusForbidden, Code: "origin", Message: "This origin is not an application's origin."})
	}
	h.Set("Access-Control-Allow-Origin", origin)
	h.Set("Access-Control-Allow-Methods", "POST")
	h.Set("Access-Control-Allow-Headers", "Content-Type")
	h.Set("Access-Control-Max-Age", "600")
	return c.NoContent(http.StatusNoContent)
}

func (a *Apps) client(id string) (*config.Client, error) {
	cl := a.clients[id]
	if cl == nil {
		return nil, errUnknownClient
	}
	return cl, nil
}

func (r *beginRequest) client() string { return r.ClientID }

// clientRequest reads a request of the assertion API (each names its
// client) into req, finds the client and answers CORS for its origins.
func (a *Apps) clientRequest(c echo.Context, req interface{ client() string }) (*config.Client, error) {
	c.Response().Header().Set("Cache-Control", "no-store")
	if err := decode(c, req); err != nil {
		return nil, err
	}
	cl, err := a.client(req.client())
	if err != nil {
		return nil, err
	}
	return cl, a.cors(c, cl)
}

// begin starts a discoverable passkey sign-in for a client.
func (a *Apps) begin(c echo.Context) error {
	var req beginRequest
	if _, err := a.clientRequest(c, &req); err != nil {
		return appError(c, err)
	}
	id, options, err := a.core.BeginLogin(c.Request().Context(), signin.KindAppLogin, false)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, map[string]any{"ceremony": id, "options": options})
}

// finish verifies the passkey (the sign-in core: policy, account state,
// clone warning) and answers the signed assertion.
func (a *Apps) finish(c echo.Context) error {
	var req finishRequest
	cl, err := a.clientRequest(c, &req)
	if err != nil {
		return appError(c, err)
	}
	if len(bytes.TrimSpace(req.Credential)) == 0 {
		return appError(c, errMalformed("no passkey response (credential)"))
	}
	ctx := c.Request().Context()
	// The key is read before the sign-in is written: a sign-in that is
	// recorded always gets its token.
	key, err := a.keys.Signing(ctx)
	if err != nil {
		return err
	}
	origins := append(slices.Clone(cl.Origins), a.cfg.Portal.Origins...)
	detail := map[string]any{"client_id": cl.ID, "protocol": "assertion"}
	l, err := a.core.Verify(ctx, signin.Assertion{Kind: signin.KindAppLogin, Ceremony: req.Ceremony, Credential: req.Credential,
		Origins: origins, IP: c.RealIP(), UA: c.Request().UserAgent(), Detail: detail})
	if err != nil {
		return appError(c, err)
	}
	jti, _ := signin.NewSecret()
	detail["jti"] = jti
	now := a.core.Now()
	exp := now.Add(a.cfg.OIDC.AssertionLifetime.D())
	if err := a.core.Commit(ctx, l, EvAppSignIn, func(store.Execer) error { return nil }); err != nil {
		return appError(c, err)
	}
	token, err := a.sign(key, cl, l, now, exp, jti)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, map[string]any{"token": token, "token_type": "JWT", "expires_at": exp.Format(time.RFC3339)})
}

// sign makes the assertion JWT of a sign-in.
func (a *Apps) sign(key *signingKey, cl *config.Client, l *signin.Login, now, exp time.Time, jti string) (string, error) {
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: key.private, KeyID: key.id, Algorithm: string(jose.ES256)}},
		(&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		return "", err
	}
	std := jwt.Claims{
		Issuer: a.issuer, Subject: subject(cl, l.Identity), Audience: jwt.Audience{cl.ID},
		Expiry: jwt.NewNumericDate(exp), IssuedAt: jwt.NewNumericDate(now), NotBefore: jwt.NewNumericDate(now), ID: jti,
	}
	extra := claims(l.Identity)
	extra["auth_time"] = now.Unix()
	extra["amr"] = amr(l.Credential)
	extra["azp"] = cl.ID
	return jwt.Signed(signer).Claims(std).Claims(extra).Serialize()
}

// sdk serves the one script an application's login page loads: no CDN, no
// build step.
func (a *Apps) sdk(c echo.Context) error {
	c.Response().Header().Set("Cache-Control", "max-age=300")
	return c.Blob(http.StatusOK, "text/javascript; charset=utf-8", sdkJS)
}

// relatedOrigins is the WebAuthn related origins document
// (/.well-known/webauthn): the origins outside the RP ID's domain whose
// pages may use its passkeys (portal.related_origins).
func (a *Apps) relatedOrigins(c echo.Context) error {
	origins := a.cfg.Portal.RelatedOrigins
	if len(origins) == 0 {
		return echo.NewHTTPError(http.StatusNotFound)
	}
	return c.JSON(http.StatusOK, map[string]any{"origins": origins})
}
