package appsignin

import (
	"database/sql"
	"errors"
	"net/http"
	"net/url"
	"strings"

	"github.com/jmoiron/sqlx"
	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"

	"github.com/passbridge/passbridge/config"
	"github.com/passbridge/passbridge/directory"
	"github.com/passbridge/passbridge/signin"
	"github.com/passbridge/passbridge/store"
)

// The password fallback of the OpenID Connect login page. A client with
// oidc.clients[].password_fallback offers the directory password beside
// the passkey; whether it is accepted is then the user's
// users.<prefix>password_policy (signin.PasswordAllowed). The password is
// checked by the portal, within its rate limits (per directory account
// and per client address), so the login page adds no second way to guess
// towards the directory's lockout. The sign-in's amr is pwd. Someone who
// signed in with a password and has no passkey is then invited to add one
// (the sign-in core's registration, the portal's policy) before the
// browser goes back to the application, or to skip it.

// Portal is what the password fallback asks of the employee portal: its
// password check (its rate limits, its audit of the failures) and its
// notice of a passkey added. *enroll.Portal is the real one.
type Portal interface {
	CheckPassword(c echo.Context, username, password string, detail map[string]any) (*directory.Identity, error)
	NotifyPasskeyAdded(c echo.Context, it *signin.Identity, name, how string)
}

// Paths of the password fallback.
const (
	passwordPath = loginPath + "/password"
	invitePath   = loginPath + "/passkey"
	csrfCookie   = "pb_oidc_csrf"
	csrfField    = "_csrf"
	csrfHeader   = "X-CSRF-Token"
	ctxCSRF      = "pb_oidc_csrf"
	// maxForm bounds the password form: a request ID, a username, a
	// password and a token.
	maxForm = 8 << 10
)

// amrPassword is the amr of a password sign-in (RFC 8176).
const amrPassword = "pwd"

var (
	errPasswordOff = &signin.Error{Status: http.StatusForbidden, Code: "password_off",
		Message: "This application accepts passkeys only: sign in with your passkey. No passkey yet? Add one on the passkey portal first."}
	errPasswordPolicy = &signin.Error{Status: http.StatusForbidden, Code: "password_policy",
		Message: "Your company requires a passkey for your account: sign in with your passkey. No passkey, or lost it? The passkey portal can help you add one."}
	errNotSynced = &signin.Error{Status: http.StatusForbidden, Code: "not_synced",
		Message: "Your account has not reached passbridge yet: it is added by the next directory sync, within a few minutes. Try again later, or contact IT."}
)

// offersPassword says whether the login page of a client offers the
// directory password.
func (a *Apps) offersPassword(cl *config.Client) bool {
	return cl.PasswordFallback && a.portal != nil
}

// newCSRF protects the password form and the invitation's calls: the token
// is in a cookie only this site's pages send (SameSite Strict) and in the
// form or the X-CSRF-Token header.
func (a *Apps) newCSRF() echo.MiddlewareFunc {
	return middleware.CSRFWithConfig(middleware.CSRFConfig{
		TokenLookup:    "header:" + csrfHeader + ",form:" + csrfField,
		CookieName:     csrfCookie,
		CookiePath:     "/oidc/",
		CookieHTTPOnly: true,
		CookieSecure:   strings.HasPrefix(a.issuer, "https://"),
		CookieSameSite: http.SameSiteStrictMode,
		CookieMaxAge:   int(authRequestLifetime.Seconds()),
		ContextKey:     ctxCSRF,
		ErrorHandler: func(err error, c echo.Context) error {
			const msg = "This form has expired or did not come from this page. Go back to the application and start again."
			if strings.HasPrefix(c.Request().Header.Get("Content-Type"), "application/json") {
				return appError(c, &signin.Error{Status: http.StatusForbidden, Code: "csrf", Message: msg})
			}
			return a.render(c, http.StatusForbidden, loginView{Title: "Sign-in expired", Error: msg})
		},
	})
}

// formOnly refuses a password post that is not a small URL-encoded form
// before anything reads it (a multipart body would be spooled to disk).
func formOnly(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		r := c.Request()
		if ct := strings.ToLower(r.Header.Get("Content-Type")); !strings.HasPrefix(ct, "application/x-www-form-urlencoded") {
			return appError(c, &signin.Error{Status: http.StatusUnsupportedMediaType, Code: "malformed", Message: "Expected a form (application/x-www-form-urlencoded)."})
		}
		r.Body = http.MaxBytesReader(c.Response(), r.Body, maxForm)
		if err := r.ParseForm(); err != nil {
			return appError(c, &signin.Error{Status: http.StatusRequestEntityTooLarge, Code: "too_large", Message: "This form is too large or malformed."})
		}
		return next(c)
	}
}

// loginPassword signs in with the directory password where the client and
// the user's policy allow it, and completes the authorization request in
// the transaction that records the sign-in.
func (a *Apps) loginPassword(c echo.Context) error {
	ctx := c.Request().Context()
	id := c.FormValue("request")
	username := strings.TrimSpace(c.FormValue("username"))
	st := &storage{a: a}
	r, err := st.requestByID(ctx, id)
	if err != nil || r.Done() {
		return a.render(c, http.StatusBadRequest, loginView{Title: "Sign-in expired", Error: errRequestGone.Message})
	}
	cl := a.clients[r.Req.ClientID]
	view := a.loginView(r, cl)
	view.Username = username
	detail := map[string]any{"method": signin.MethodPassword, "client_id": cl.ID, "protocol": "oidc"}
	refuse := func(ue *signin.Error, target string, extra map[string]any) error {
		d := map[string]any{"code": ue.Code}
		for k, v := range detail {
			d[k] = v
		}
		for k, v := range extra {
			d[k] = v
		}
		a.audit(ctx, signin.Event{Event: signin.EvSignInFailed, Target: target, IP: c.RealIP(), UA: c.Request().UserAgent(), Detail: d})
		view.Error = ue.Message
		return a.render(c, ue.Status, view)
	}
	// A client without the fallback never checks a password: nothing
	// reaches the directory, nothing counts towards a lockout.
	if !a.offersPassword(cl) {
		return refuse(errPasswordOff, signin.Clip(username, 256), nil)
	}
	found, err := a.portal.CheckPassword(c, username, c.FormValue("password"), map[string]any{"client_id": cl.ID, "protocol": "oidc"})
	if err != nil {
		var ue *signin.Error
		if !errors.As(err, &ue) {
			return err
		}
		// Audited by the portal's password check.
		view.Error = ue.Message
		return a.render(c, ue.Status, view)
	}
	it, err := a.core.IdentityByDirectoryID(ctx, found.DirectoryID)
	if err != nil {
		return err
	}
	if it == nil {
		return refuse(errNotSynced, found.Username, nil)
	}
	// The account's state refuses as it refuses a passkey.
	if why := it.Refusal(); why != "" {
		return refuse(&signin.Error{Status: http.StatusForbidden, Code: "refused", Message: why}, it.Username, map[string]any{"reason": it.State + "/" + it.LinkState})
	}
	// The policy is asked only after the right password: nobody learns
	// an account's policy from a guess.
	policy, err := a.core.PasswordPolicy(ctx, it.UserKey)
	if err != nil {
		return err
	}
	creds, err := a.core.ActiveCredentials(ctx, it.UserKey)
	if err != nil {
		return err
	}
	if !signin.PasswordAllowed(policy, len(creds)) {
		return refuse(errPasswordPolicy, it.Username, map[string]any{"password_policy": policy, "passkeys": len(creds)})
	}
	browser, browserHash := signin.NewSecret()
	ev := signin.Event{Event: EvAppSignIn, Success: true, Target: it.Username, IP: c.RealIP(), UA: c.Request().UserAgent(), Detail: detail}
	err = a.db.InTx(ctx, func(tx *sqlx.Tx) error {
		if err := st.signedIn(ctx, tx, id, cl, it, []string{amrPassword}, browserHash); err != nil {
			return err
		}
		return a.core.Record(ctx, tx, ev)
	})
	if errors.Is(err, errRequestGone) {
		return a.render(c, http.StatusBadRequest, loginView{Title: "Sign-in expired", Error: errRequestGone.Message})
	}
	if err != nil {
		return err
	}
	a.setBrowser(c, browser)
	next := a.issuer + callbackPath + "?id=" + url.QueryEscape(id)
	if len(creds) == 0 && a.core.Policy().Max > 0 {
		next = a.issuer + invitePath + "?id=" + url.QueryEscape(id)
	}
	return c.Redirect(http.StatusSeeOther, next)
}

// invited is an authorization request signed in with a password, whose
// code is not issued yet, as the browser that signed in asks for it: the
// one whose user the invitation to add a passkey is for.
type invited struct {
	ID       string
	ClientID string
	Identity *signin.Identity
}

// invitation reads the request of the invitation; errRequestGone unless
// it is signed in with a password, not yet sent back to the application,
// not expired, and asked for by the browser that signed in.
func (a *Apps) invitation(c echo.Context, id string) (*invited, error) {
	ck, err := c.Cookie(loginCookie)
	if err != nil || !signin.ValidSecret(ck.Value) || !signin.ValidSecret(id) {
		return nil, errRequestGone
	}
	ctx := c.Request().Context()
	q := a.n.Column
	var row struct {
		ClientID   string        `db:"client_id"`
		IdentityID sql.NullInt64 `db:"identity_id"`
		AMR        string        `db:"amr"`
	}
	err = store.Get(ctx, a.db, &row, "SELECT "+q("client_id")+", "+q("identity_id")+", "+q("amr")+" FROM "+a.n.Table("oidc_requests")+" WHERE "+
		q("id")+" = ? AND "+q("browser_hash")+" = ? AND "+q("subject")+" IS NOT NULL AND "+q("code_hash")+" IS NULL AND "+q("expires_at")+" > ?",
		signin.HashSecret(id), signin.HashSecret(ck.Value), a.core.Now())
	if errors.Is(err, sql.ErrNoRows) || (err == nil && (row.AMR != amrPassword || !row.IdentityID.Valid || a.clients[row.ClientID] == nil)) {
		return nil, errRequestGone
	}
	if err != nil {
		return nil, err
	}
	it, err := a.core.IdentityByID(ctx, row.IdentityID.Int64)
	if err != nil {
		return nil, err
	}
	if it == nil {
		return nil, errRequestGone
	}
	if why := it.Refusal(); why != "" {
		return nil, &signin.Error{Status: http.StatusForbidden, Code: "refused", Message: why}
	}
	return &invited{ID: id, ClientID: row.ClientID, Identity: it}, nil
}

// continueURL is where the browser goes on from the invitation: the
// provider's callback, which sends it to the application with the code.
func (a *Apps) continueURL(id string) string {
	return a.issuer + callbackPath + "?id=" + url.QueryEscape(id)
}

// invitePage invites someone who signed in with a password to add a
// passkey before going back to the application.
func (a *Apps) invitePage(c echo.Context) error {
	inv, err := a.invitation(c, c.QueryParam("id"))
	var ue *signin.Error
	if errors.As(err, &ue) {
		return a.render(c, ue.Status, loginView{Title: "Sign-in expired", Error: ue.Message})
	}
	if err != nil {
		return err
	}
	return a.render(c, http.StatusOK, loginView{Title: "Add a passkey", Client: clientName(a.clients[inv.ClientID]), Invite: inv.ID,
		Continue: a.continueURL(inv.ID), Username: inv.Identity.Name()})
}

type (
	inviteBeginRequest struct {
		Request string `json:"request"`
	}
	inviteFinishRequest = loginFinishRequest
)

// inviteBegin starts the registration of a first passkey.
func (a *Apps) inviteBegin(c echo.Context) error {
	c.Response().Header().Set("Cache-Control", "no-store")
	var req inviteBeginRequest
	if err := decode(c, &req); err != nil {
		return appError(c, err)
	}
	inv, err := a.invitation(c, req.Request)
	if err != nil {
		return appError(c, err)
	}
	id, creation, err := a.core.BeginRegistration(c.Request().Context(), inv.Identity, signin.RegisterOptions{Kind: signin.KindAppRegistration, FirstOnly: true})
	if err != nil {
		return appError(c, err)
	}
	return c.JSON(http.StatusOK, map[string]any{"ceremony": id, "options": creation})
}

// inviteFinish stores the new passkey and sends the browser on to the
// application.
func (a *Apps) inviteFinish(c echo.Context) error {
	c.Response().Header().Set("Cache-Control", "no-store")
	var req inviteFinishRequest
	if err := decode(c, &req); err != nil {
		return appError(c, err)
	}
	if len(req.Raw) == 0 {
		return appError(c, &signin.Error{Status: http.StatusBadRequest, Code: "malformed", Message: "The request has no passkey response (credential)."})
	}
	inv, err := a.invitation(c, req.Request)
	if err != nil {
		return appError(c, err)
	}
	ctx := c.Request().Context()
	cer, err := a.core.ClaimCeremony(ctx, req.Ceremony, signin.KindAppRegistration)
	if err != nil {
		return appError(c, err)
	}
	cl := a.clients[inv.ClientID]
	reg, err := a.core.FinishRegistration(ctx, signin.Registration{Ceremony: cer, Identity: inv.Identity, Credential: req.Raw,
		IP: c.RealIP(), UA: c.Request().UserAgent(),
		Detail: map[string]any{"method": signin.MethodPassword, "via": "app", "client_id": cl.ID, "protocol": "oidc"}})
	if err != nil {
		return appError(c, err)
	}
	if a.portal != nil {
		a.portal.NotifyPasskeyAdded(c, inv.Identity, reg.Name, "after you signed in to "+clientName(cl)+" with your password")
	}
	return c.JSON(http.StatusOK, map[string]any{"ok": true, "redirect": a.continueURL(inv.ID)})
}
