package enroll

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/labstack/echo/v4"

	"github.com/passbridge/passbridge/internal/httpjson"
	"github.com/passbridge/passbridge/signin"
	"github.com/passbridge/passbridge/store"
)

// waUser is a user as go-webauthn sees it.
type waUser = signin.User

// maxBody bounds every JSON request of the portal: a registration response
// with a large attestation certificate chain stays well under it.
const maxBody = 64 << 10

// Request DTOs of the ceremony API. Each is decoded strictly (unknown
// fields, trailing data and oversized bodies are 4xx) and validated in
// bindJSON.
type (
	beginLoginRequest struct {
		// Conditional asks for the browser's autofill UI (mediation
		// "conditional") instead of a modal dialog.
		Conditional bool `json:"conditional"`
	}
	beginRegisterRequest struct {
		// Upgrade asks for the automatic passkey upgrade after a password
		// sign-in: a conditional creation (mediation "conditional"), which
		// the browser's password manager may do without a dialog.
		Upgrade bool `json:"upgrade"`
	}
	finishRequest struct {
		Ceremony   string          `json:"ceremony"`
		Name       string          `json:"name,omitempty"` // registration only
		Credential json.RawMessage `json:"credential"`
	}
	cancelRequest struct {
		Ceremony string `json:"ceremony"`
		Kind     string `json:"kind"`
		Reason   string `json:"reason,omitempty"`
	}
)

type validator interface{ validate() error }

func (beginLoginRequest) validate() error    { return nil }
func (beginRegisterRequest) validate() error { return nil }

func (r *finishRequest) validate() error {
	if !signin.ValidCeremony(r.Ceremony) {
		return errCeremonyGone
	}
	if len(bytes.TrimSpace(r.Credential)) == 0 || bytes.Equal(bytes.TrimSpace(r.Credential), []byte("null")) {
		return &userError{Status: http.StatusBadRequest, Code: "malformed", Message: "The request has no passkey response (credential)."}
	}
	return nil
}

func (r *cancelRequest) validate() error {
	if r.Kind != kindRegistration && r.Kind != kindLogin && r.Kind != kindUpgrade {
		return &userError{Status: http.StatusBadRequest, Code: "malformed", Message: "kind must be registration, upgrade or login"}
	}
	if !signin.ValidCeremony(r.Ceremony) {
		return errCeremonyGone
	}
	return nil
}

// bindJSON decodes and validates a JSON request body into v. An empty body
// is the zero value (begin requests need nothing).
func bindJSON(c echo.Context, v validator) error {
	if err := httpjson.Decode(c.Response(), c.Request(), maxBody, v); err != nil {
		return err
	}
	return v.validate()
}

// ceremonyResponse is what a begin call returns: the ceremony to send back,
// and the options for navigator.credentials (their publicKey member is
// the JSON form PublicKeyCredential.parse*OptionsFromJSON takes).
type ceremonyResponse struct {
	Ceremony string `json:"ceremony"`
	Options  any    `json:"options"`
}

// registerBegin starts adding a passkey for the signed-in user (the
// sign-in core's registration: the same wherever a passkey is offered).
func (p *Portal) registerBegin(c echo.Context) error {
	var req beginRegisterRequest
	if err := bindJSON(c, &req); err != nil {
		return err
	}
	s := currentSession(c)
	o := signin.RegisterOptions{Kind: kindRegistration}
	if req.Upgrade {
		// Only right after a password sign-in, for someone without a
		// passkey: the upgrade replaces that password next time.
		if s.data.Method != methodPassword {
			return errNoUpgrade
		}
		o = signin.RegisterOptions{Kind: kindUpgrade, Conditional: true, FirstOnly: true}
	}
	id, creation, err := p.core.BeginRegistration(c.Request().Context(), s.identity, o)
	if errors.Is(err, signin.ErrHasPasskey) {
		return errNoUpgrade
	}
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, ceremonyResponse{Ceremony: id, Options: creation})
}

var errNoUpgrade = &userError{Status: http.StatusConflict, Code: "no_upgrade", Message: "The automatic passkey upgrade is offered after a password sign-in, to someone without a passkey."}

// registerFinish verifies the new credential, applies the policy, and
// stores the whole credential with its flags (the sign-in core), then
// tells the employee by mail.
func (p *Portal) registerFinish(c echo.Context) error {
	var req finishRequest
	if err := bindJSON(c, &req); err != nil {
		return err
	}
	ctx := c.Request().Context()
	s := currentSession(c)
	it := s.identity
	cer, err := p.core.ClaimCeremony(ctx, req.Ceremony, kindRegistration)
	if errors.Is(err, errCeremonyGone) {
		cer, err = p.core.ClaimCeremony(ctx, req.Ceremony, kindUpgrade)
	}
	if err != nil {
		return err
	}
	// via is how the passkey came: the portal's button, or the automatic
	// upgrade after a password sign-in (its own method in the figures).
	via, done := "portal", "/?done=added"
	if cer.Kind == kindUpgrade {
		via, done = "upgrade", "/?done=upgraded"
	}
	var name string
	if strings.TrimSpace(req.Name) != "" {
		var uerr *userError
		if name, uerr = cleanName(req.Name); uerr != nil {
			p.core.FinishCeremony(ctx, cer, resultFailed)
			p.audit(c, event{Event: evRegistered, Target: it.Username, Detail: map[string]any{"code": uerr.Code, "via": via}})
			return uerr
		}
	}
	ev := p.event(c, event{})
	detail := map[string]any{"method": s.data.Method, "via": via, "recovery": s.data.Recovery, "revoked": 0}
	revoked := 0
	reg, err := p.core.FinishRegistration(ctx, signin.Registration{Ceremony: cer, Identity: it, Name: name, Credential: req.Credential,
		Actor: s.who(), IP: ev.IP, UA: ev.UA, Detail: detail,
		InTx: func(tx *sqlx.Tx, id int64) error {
			if s.data.Method != methodRecovery || !p.cfg.Portal.Recovery.RevokeOld {
				return nil
			}
			var err error
			revoked, err = p.data.revokeOthers(ctx, tx, it.UserKey, id, "replaced by a recovery ("+s.data.Recovery+")", s.id)
			detail["revoked"] = revoked
			return err
		}})
	if err != nil {
		return err
	}
	p.notifyPasskeyAdded(c, it, s, reg.Name, revoked)
	return c.JSON(http.StatusOK, map[string]any{"ok": true, "passkey": map[string]any{"id": reg.ID, "name": reg.Name}, "redirect": done})
}

// loginBegin starts a discoverable passkey sign-in: no username needed, the
// authenticator offers the passkeys it holds for this RP.
func (p *Portal) loginBegin(c echo.Context) error {
	var req beginLoginRequest
	if err := bindJSON(c, &req); err != nil {
		return err
	}
	id, assertion, err := p.core.BeginLogin(c.Request().Context(), kindLogin, req.Conditional)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, ceremonyResponse{Ceremony: id, Options: assertion})
}

// loginFinish verifies a passkey assertion (the sign-in core: the policy,
// the account's state, the clone warning) and signs its owner in: the
// session is written in the core's one transaction with the rest of the
// sign-in.
func (p *Portal) loginFinish(c echo.Context) error {
	var req finishRequest
	if err := bindJSON(c, &req); err != nil {
		return err
	}
	if req.Name != "" {
		return &userError{Status: http.StatusBadRequest, Code: "malformed", Message: "Malformed request: name is for registrations."}
	}
	ctx := c.Request().Context()
	l, err := p.core.Verify(ctx, signin.Assertion{Kind: kindLogin, Ceremony: req.Ceremony, Credential: req.Credential, IP: c.RealIP(), UA: c.Request().UserAgent()})
	if err != nil {
		return err
	}
	// The directory is asked before the transaction, never inside it.
	admin := p.isAdmin(ctx, l.Identity)
	var secret string
	var expires time.Time
	err = p.core.Commit(ctx, l, evSignIn+methodPasskey, func(tx store.Execer) error {
		var err error
		secret, expires, err = p.newSession(c, tx, l.Identity, sessionData{Method: methodPasskey, Admin: admin, CredentialID: base64.RawURLEncoding.EncodeToString(l.Credential.CredentialID)})
		return err
	})
	if err != nil {
		return err
	}
	p.setCookie(c, sessionCookie, secret, expires)
	return c.JSON(http.StatusOK, map[string]any{"ok": true, "redirect": "/?done=signedin"})
}

// cancel records a ceremony the browser gave up on.
func (p *Portal) cancel(c echo.Context) error {
	var req cancelRequest
	if err := bindJSON(c, &req); err != nil {
		return err
	}
	if err := p.core.CancelCeremony(c.Request().Context(), req.Ceremony, req.Kind); err != nil {
		return err
	}
	return c.NoContent(http.StatusNoContent)
}
