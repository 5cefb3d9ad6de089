package enroll

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/passbridge/passbridge/store"
)

// Sessions live in the database (passbridge_sessions), keyed by the SHA-256
// of the cookie's value, so any replica serves any request and a stolen
// table holds no usable cookie. The cookie is HttpOnly, SameSite=Lax,
// Secure when the portal is served over HTTPS, and gets a new value at
// every sign-in (no session fixation).

// sessionCookie names the portal's session cookie.
const sessionCookie = "pb_session"

// Sign-in methods, as recorded in a session and in the audit trail.
const (
	methodPassword = "password"
	methodLink     = "link"
	methodPasskey  = "passkey"
	methodRecovery = "recovery"
	methodToken    = "admin-token"
)

// sessionData is the JSON in passbridge_sessions.data.
type sessionData struct {
	Method string    `json:"method"`
	AuthAt time.Time `json:"auth_at"`
	// CredentialID is the passkey a passkey session was made with (base64url),
	// so that revoking the passkey can end the sessions it made.
	CredentialID string `json:"credential_id,omitempty"`
	IP           string `json:"ip,omitempty"`
	UserAgent    string `json:"user_agent,omitempty"`
	// Admin: the user may use the IT console (a member of
	// portal.admin_group at sign-in, or the holder of the admin token).
	Admin bool `json:"admin,omitempty"`
	// Recovery is the recovery path of a recovery session (email, totp,
	// link): a passkey added in it is mailed about and may revoke the old
	// ones.
	Recovery string `json:"recovery,omitempty"`
	// TokenID is the fingerprint of the admin token a token session was
	// opened with (admintoken.Guard.ID): once the daemon holds another
	// token, the session has ended.
	TokenID string `json:"token_id,omitempty"`
}

// session is a signed-in visitor: the session and the identity it belongs
// to, as read at the start of the request. identity is nil only for a
// session opened with the admin token (the IT console without a directory
// account).
type session struct {
	id       string // the hash, the row's key
	data     sessionData
	expires  time.Time
	identity *identity
}

// who names the session's user in the audit trail.
func (s *session) who() string {
	if s.identity == nil {
		return "admin-token"
	}
	return s.identity.Username
}

// createSession signs the identity in: a new row and a new cookie. Any
// session the browser had is ended first.
func (p *Portal) createSession(c echo.Context, it *identity, sd sessionData) error {
	secret, expires, err := p.newSession(c, p.data.db, it, sd)
	if err != nil {
		return err
	}
	p.setCookie(c, sessionCookie, secret, expires)
	return nil
}

// newSession writes the session row through q (a transaction, so that a
// sign-in's writes commit together) and returns the cookie value and its
// expiry; the caller sets the cookie once q has committed.
func (p *Portal) newSession(c echo.Context, q store.Execer, it *identity, sd sessionData) (string, time.Time, error) {
	ctx := c.Request().Context()
	if old, err := c.Cookie(sessionCookie); err == nil && validSecret(old.Value) {
		if _, err := store.Exec(ctx, q, "DELETE FROM "+p.data.n.Sessions+" WHERE "+p.data.q("id")+" = ?", hashSecret(old.Value)); err != nil {
			return "", time.Time{}, fmt.Errorf("end the previous session: %w", err)
		}
	}
	secret, hash := newSecret()
	now := p.data.now()
	sd.AuthAt = now
	sd.IP = c.RealIP()
	sd.UserAgent = clip(c.Request().UserAgent(), 512)
	raw, err := json.Marshal(sd)
	if err != nil {
		return "", time.Time{}, err
	}
	expires := now.Add(p.cfg.Portal.SessionLifetime.D())
	var ident any
	if it != nil {
		ident = it.ID
	}
	_, err = store.Exec(ctx, q, "INSERT INTO "+p.data.n.Sessions+" ("+p.data.cols("", "id", "identity_id", "data", "created_at", "expires_at")+") VALUES (?, ?, ?, ?, ?)",
		hash, ident, string(raw), now, expires)
	if err != nil {
		return "", time.Time{}, fmt.Errorf("create session: %w", err)
	}
	return secret, expires, nil
}

func (p *Portal) setCookie(c echo.Context, name, value string, expires time.Time) {
	ck := &http.Cookie{
		Name: name, Value: value, Path: "/", HttpOnly: true, Secure: p.secure, SameSite: http.SameSiteLaxMode,
	}
	if value == "" {
		ck.MaxAge = -1
	} else {
		ck.Expires = expires
	}
	c.SetCookie(ck)
}

// loadSession reads the visitor's session, nil when there is none (no
// cookie, unknown, expired). The identity comes with it in one query, so
// that a user the last sync disabled is refused at their next request.
func (p *Portal) loadSession(ctx context.Context, c echo.Context) (*session, error) {
	ck, err := c.Cookie(sessionCookie)
	if err != nil || !validSecret(ck.Value) {
		return nil, nil
	}
	s := &session{id: hashSecret(ck.Value)}
	var row struct {
		Data       string        `db:"data"`
		Expires    time.Time     `db:"expires_at"`
		IdentityID sql.NullInt64 `db:"identity_id"`
	}
	err = store.Get(ctx, p.data.db, &row, "SELECT "+p.data.cols("", "data", "expires_at", "identity_id")+" FROM "+p.data.n.Sessions+
		" WHERE "+p.data.q("id")+" = ? AND "+p.data.q("expires_at")+" > ?", s.id, p.data.now())
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read session: %w", err)
	}
	if err := json.Unmarshal([]byte(row.Data), &s.data); err != nil {
		return nil, fmt.Errorf("session data: %w", err)
	}
	s.expires = row.Expires
	if row.IdentityID.Valid {
		if s.identity, err = p.data.identityByID(ctx, row.IdentityID.Int64); err != nil {
			return nil, err
		}
		if s.identity == nil {
			return nil, nil
		}
	} else if !s.data.Admin {
		return nil, nil
	}
	if s.data.Method == methodToken && (p.sync == nil || s.data.TokenID == "" || s.data.TokenID != p.sync.AdminTokens().ID()) {
		// The admin token was rotated (or removed) since: the session
		// ends with the token it was opened with.
		if err := p.endSession(c, s); err != nil {
			return nil, err
		}
		p.audit(c, event{Event: evSessionRefused, Actor: "admin-token", Target: "admin-token", Detail: map[string]any{"reason": "the admin token changed"}})
		return nil, nil
	}
	return s, nil
}

// saveSession writes a session's data back (the admin part ended, say).
func (p *Portal) saveSession(ctx context.Context, s *session) error {
	raw, err := json.Marshal(s.data)
	if err != nil {
		return err
	}
	if _, err := store.Exec(ctx, p.data.db, "UPDATE "+p.data.n.Sessions+" SET "+p.data.q("data")+" = ? WHERE "+p.data.q("id")+" = ?", string(raw), s.id); err != nil {
		return fmt.Errorf("save session: %w", err)
	}
	return nil
}

// endSession deletes the visitor's session and its cookie.
func (p *Portal) endSession(c echo.Context, s *session) error {
	p.setCookie(c, sessionCookie, "", time.Time{})
	if s == nil {
		return nil
	}
	_, err := store.Exec(c.Request().Context(), p.data.db, "DELETE FROM "+p.data.n.Sessions+" WHERE "+p.data.q("id")+" = ?", s.id)
	if err != nil {
		return fmt.Errorf("end session: %w", err)
	}
	return nil
}

// ctxSession is the echo.Context key of the request's session.
const ctxSession = "passbridge.session"

// withSession loads the session of every portal request (nil when signed
// out) and refuses, ending the session, an identity that may no longer use
// the portal.
func (p *Portal) withSession(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		s, err := p.loadSession(c.Request().Context(), c)
		if err != nil {
			return err
		}
		if s != nil && s.identity != nil {
			if why := s.identity.Refusal(); why != "" {
				if err := p.endSession(c, s); err != nil {
					return err
				}
				p.audit(c, event{Event: evSessionRefused, Success: false, Target: s.identity.Username, Detail: map[string]any{"reason": s.identity.State}})
				return &userError{Status: http.StatusForbidden, Code: "refused", Message: why}
			}
		}
		if s != nil {
			c.Set(ctxSession, s)
		}
		return next(c)
	}
}

// currentSession is the request's session, nil when signed out.
func currentSession(c echo.Context) *session {
	s, _ := c.Get(ctxSession).(*session)
	return s
}

// requireSession guards pages and calls that need a signed-in employee.
func requireSession(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		if s := currentSession(c); s == nil || s.identity == nil {
			if isAPI(c.Request().URL.Path) {
				return &userError{Status: http.StatusUnauthorized, Code: "signed_out", Message: "Your session has ended. Sign in again."}
			}
			return c.Redirect(http.StatusSeeOther, "/")
		}
		return next(c)
	}
}
