package enroll

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/go-webauthn/webauthn/protocol"
	"github.com/go-webauthn/webauthn/webauthn"
	"github.com/jmoiron/sqlx"
	"github.com/labstack/echo/v4"

	"github.com/passbridge/passbridge/enroll/aaguid"
	"github.com/passbridge/passbridge/internal/httpjson"
	"github.com/passbridge/passbridge/store"
)

// waUser is a user as go-webauthn sees it.
type waUser struct {
	handle      []byte
	name        string
	displayName string
	creds       []webauthn.Credential
}

func (u *waUser) WebAuthnID() []byte                         { return u.handle }
func (u *waUser) WebAuthnName() string                       { return u.name }
func (u *waUser) WebAuthnDisplayName() string                { return u.displayName }
func (u *waUser) WebAuthnCredentials() []webauthn.Credential { return u.creds }

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
	beginRegisterRequest struct{}
	finishRequest        struct {
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
	if !validSecret(r.Ceremony) {
		return errCeremonyGone
	}
	if len(bytes.TrimSpace(r.Credential)) == 0 || bytes.Equal(bytes.TrimSpace(r.Credential), []byte("null")) {
		return &userError{Status: http.StatusBadRequest, Code: "malformed", Message: "The request has no passkey response (credential)."}
	}
	return nil
}

func (r *cancelRequest) validate() error {
	if r.Kind != kindRegistration && r.Kind != kindLogin {
		return &userError{Status: http.StatusBadRequest, Code: "malformed", Message: "kind must be registration or login"}
	}
	if !validSecret(r.Ceremony) {
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

// registerBegin starts adding a passkey for the signed-in user: a
// discoverable credential with user verification, the user's passkeys
// excluded (the authenticator refuses a second one), credProps requested
// (the browser says whether the key is really discoverable).
func (p *Portal) registerBegin(c echo.Context) error {
	if err := bindJSON(c, &beginRegisterRequest{}); err != nil {
		return err
	}
	ctx := c.Request().Context()
	s := currentSession(c)
	it := s.identity
	creds, err := p.data.activeCredentials(ctx, it.UserKey)
	if err != nil {
		return err
	}
	if len(creds) >= p.policy.max {
		return &userError{Status: http.StatusConflict, Code: "limit", Message: fmt.Sprintf("You already have %d passkeys, the most your company allows. Delete one to add another.", len(creds))}
	}
	handle, err := p.data.userHandle(ctx, it.UserKey)
	if err != nil {
		return err
	}
	user := &waUser{handle: handle, name: accountName(it), displayName: it.Name()}
	exclude := make([]protocol.CredentialDescriptor, 0, len(creds))
	for _, cr := range creds {
		wc, err := cr.webauthn()
		if err != nil {
			return err
		}
		exclude = append(exclude, wc.Descriptor())
	}
	creation, sd, err := p.wa.BeginRegistration(user,
		webauthn.WithExclusions(exclude),
		webauthn.WithExtensions(webauthn.WithExtensionCredProps()),
	)
	if err != nil {
		return fmt.Errorf("begin registration: %w", err)
	}
	id, err := p.beginCeremony(ctx, kindRegistration, &it.ID, sd)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, ceremonyResponse{Ceremony: id, Options: creation})
}

// accountName is the name the authenticator shows for the account: the
// email when there is one (what people recognize among many passkeys),
// else the username.
func accountName(it *identity) string {
	if it.Email.String != "" {
		return it.Email.String
	}
	return it.Username
}

// registerFinish verifies the new credential, applies the policy, and
// stores the whole credential with its flags.
func (p *Portal) registerFinish(c echo.Context) error {
	var req finishRequest
	if err := bindJSON(c, &req); err != nil {
		return err
	}
	ctx := c.Request().Context()
	s := currentSession(c)
	it := s.identity
	cer, err := p.claimCeremony(ctx, req.Ceremony, kindRegistration)
	if err != nil {
		return err
	}
	fail := func(result string, ue *userError, detail map[string]any) error {
		p.finishCeremony(ctx, cer, result)
		if detail == nil {
			detail = map[string]any{}
		}
		detail["code"] = ue.Code
		p.audit(c, event{Event: evRegistered, Success: false, Target: it.Username, Detail: detail})
		return ue
	}
	if !cer.identityID.Valid || cer.identityID.Int64 != it.ID {
		return fail(resultFailed, errCeremonyGone, nil)
	}
	var name string
	if strings.TrimSpace(req.Name) != "" {
		var uerr *userError
		if name, uerr = cleanName(req.Name); uerr != nil {
			return fail(resultFailed, uerr, nil)
		}
	}
	parsed, err := protocol.ParseCredentialCreationResponseBytes(req.Credential)
	if err != nil {
		return fail(resultFailed, malformed("registration", err), nil)
	}
	user := &waUser{handle: cer.session.UserID, name: accountName(it), displayName: it.Name()}
	cred, err := p.wa.CreateCredential(user, cer.session, parsed)
	if err != nil {
		return fail(resultFailed, unverified("registration", err), nil)
	}
	if ue := p.policy.check(cred); ue != nil {
		return fail(resultRefused, ue, map[string]any{"aaguid": aaguid.Format(cred.Authenticator.AAGUID), "backup_eligible": cred.Flags.BackupEligible})
	}
	if name == "" {
		name = aaguid.Name(cred.Authenticator.AAGUID)
	}
	raw, err := json.Marshal(cred)
	if err != nil {
		return err
	}
	var transports []string
	for _, t := range cred.Transport {
		transports = append(transports, string(t))
	}
	q := p.data.q
	var id int64
	revoked := 0
	limitHit := false
	err = p.data.db.InTx(ctx, func(tx *sqlx.Tx) error {
		// Count again inside the transaction: two finishes at once must
		// not pass the limit together. The users row is locked first,
		// so that concurrent enrollments of one user queue here.
		var key any
		if err := store.Get(ctx, tx, &key, "SELECT "+p.data.n.UserKey+" FROM "+p.data.n.Users+" WHERE "+p.data.n.UserKey+" = ?"+p.data.d.ForUpdate(), it.UserKey); err != nil {
			return fmt.Errorf("lock the users row: %w", err)
		}
		var n int
		if err := store.Get(ctx, tx, &n, "SELECT COUNT(*) FROM "+p.data.n.Credentials+" WHERE "+q("user_key")+" = ? AND "+q("revoked_at")+" IS NULL", it.UserKey); err != nil {
			return err
		}
		if n >= p.policy.max {
			limitHit = true
			return nil
		}
		id, err = p.data.d.InsertID(ctx, tx, "INSERT INTO "+p.data.n.Credentials+" ("+p.data.cols("", "user_key", "identity_id", "credential_id", "public_key", "sign_count", "aaguid", "transports",
			"user_present", "user_verified", "backup_eligible", "backup_state", "attestation_type", "attestation_format", "user_handle", "name", "credential_json", "created_at")+
			") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", "id",
			it.UserKey, it.ID, cred.ID, cred.PublicKey, int64(cred.Authenticator.SignCount), nullBytes(cred.Authenticator.AAGUID), nullStr(strings.Join(transports, ",")),
			cred.Flags.UserPresent, cred.Flags.UserVerified, cred.Flags.BackupEligible, cred.Flags.BackupState,
			nullStr(cred.AttestationType), nullStr(cred.AttestationFormat), cer.session.UserID, name, string(raw), p.data.now())
		if err != nil {
			return err
		}
		if s.data.Method == methodRecovery && p.cfg.Portal.Recovery.RevokeOld {
			if revoked, err = p.data.revokeOthers(ctx, tx, it.UserKey, id, "replaced by a recovery ("+s.data.Recovery+")", s.id); err != nil {
				return err
			}
		}
		return p.data.setPasskeyState(ctx, tx, it.UserKey)
	})
	switch {
	case err != nil && store.IsUniqueViolation(err):
		return fail(resultFailed, &userError{Status: http.StatusConflict, Code: "exists", Message: "This passkey is already registered."}, nil)
	case err != nil:
		p.finishCeremony(ctx, cer, resultFailed)
		return err
	case limitHit:
		return fail(resultRefused, &userError{Status: http.StatusConflict, Code: "limit", Message: "You already have the most passkeys your company allows. Delete one to add another."}, nil)
	}
	p.finishCeremony(ctx, cer, resultSucceeded)
	p.notifyPasskeyAdded(c, it, s, name, revoked)
	p.audit(c, event{Event: evRegistered, Success: true, Target: it.Username, Detail: map[string]any{
		"method": s.data.Method, "recovery": s.data.Recovery, "revoked": revoked,
		"passkey_id": id, "name": name, "aaguid": aaguid.Format(cred.Authenticator.AAGUID), "provider": aaguid.Name(cred.Authenticator.AAGUID),
		"backup_eligible": cred.Flags.BackupEligible, "backup_state": cred.Flags.BackupState, "attestation": cred.AttestationFormat,
		"seconds": p.data.now().Sub(cer.createdAt).Seconds()}})
	return c.JSON(http.StatusOK, map[string]any{"ok": true, "passkey": map[string]any{"id": id, "name": name}, "redirect": "/?done=added"})
}

func nullBytes(b []byte) any {
	if len(b) == 0 {
		return nil
	}
	return b
}

// loginBegin starts a discoverable passkey sign-in: no username needed, the
// authenticator offers the passkeys it holds for this RP.
func (p *Portal) loginBegin(c echo.Context) error {
	var req beginLoginRequest
	if err := bindJSON(c, &req); err != nil {
		return err
	}
	mediation := protocol.MediationDefault
	if req.Conditional {
		mediation = protocol.MediationConditional
	}
	assertion, sd, err := p.wa.BeginDiscoverableMediatedLogin(mediation, webauthn.WithUserVerification(protocol.VerificationRequired))
	if err != nil {
		return fmt.Errorf("begin login: %w", err)
	}
	id, err := p.beginCeremony(c.Request().Context(), kindLogin, nil, sd)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, ceremonyResponse{Ceremony: id, Options: assertion})
}

var (
	errUnknownPasskey = &userError{Status: http.StatusBadRequest, Code: "unknown_passkey",
		Message: "This passkey is not registered here (it may have been deleted). Sign in with your directory password, then add a new passkey."}
	errRevokedPasskey = &userError{Status: http.StatusForbidden, Code: "revoked_passkey",
		Message: "This passkey was removed from your account and no longer signs you in. Sign in with your directory password, then add a new passkey."}
	errClone = &userError{Status: http.StatusForbidden, Code: "clone_warning",
		Message: "This passkey's signature counter went backwards, which can mean that it was copied. The sign-in was refused and recorded for IT. Sign in with your directory password and tell IT."}
)

// loginFinish verifies a passkey assertion and signs its owner in. A sign
// counter that did not go up (go-webauthn's CloneWarning, which by itself
// does not fail the login) refuses the sign-in and is recorded.
func (p *Portal) loginFinish(c echo.Context) error {
	var req finishRequest
	if err := bindJSON(c, &req); err != nil {
		return err
	}
	if req.Name != "" {
		return &userError{Status: http.StatusBadRequest, Code: "malformed", Message: "Malformed request: name is for registrations."}
	}
	ctx := c.Request().Context()
	cer, err := p.claimCeremony(ctx, req.Ceremony, kindLogin)
	if err != nil {
		return err
	}
	fail := func(result string, ue *userError, target string, detail map[string]any) error {
		p.finishCeremony(ctx, cer, result)
		if detail == nil {
			detail = map[string]any{}
		}
		detail["method"] = methodPasskey
		detail["code"] = ue.Code
		p.audit(c, event{Event: evSignInFailed, Target: target, Detail: detail})
		return ue
	}
	parsed, err := protocol.ParseCredentialRequestResponseBytes(req.Credential)
	if err != nil {
		return fail(resultFailed, malformed("sign-in", err), "", nil)
	}
	var found *credential
	var lookupErr error
	handler := func(rawID, userHandle []byte) (webauthn.User, error) {
		cr, err := p.data.credentialByID(ctx, rawID)
		switch {
		case err != nil:
			lookupErr = err
		case cr == nil || !bytes.Equal(cr.UserHandle, userHandle):
			lookupErr = errUnknownPasskey
		case cr.RevokedAt.Valid:
			found, lookupErr = cr, errRevokedPasskey
		}
		if lookupErr != nil {
			return nil, lookupErr
		}
		wc, err := cr.webauthn()
		if err != nil {
			lookupErr = err
			return nil, err
		}
		found = cr
		return &waUser{handle: cr.UserHandle, creds: []webauthn.Credential{wc}}, nil
	}
	_, wc, err := p.wa.ValidatePasskeyLogin(handler, cer.session, parsed)
	var it *identity
	target := ""
	if found != nil {
		var ierr error
		if it, ierr = p.credentialIdentity(c, found); ierr != nil {
			p.finishCeremony(ctx, cer, resultFailed)
			return ierr
		}
		if it != nil {
			target = it.Username
		}
	}
	if err != nil {
		var ue *userError
		switch {
		case errors.As(lookupErr, &ue):
			return fail(resultFailed, ue, target, nil)
		case lookupErr != nil:
			p.finishCeremony(ctx, cer, resultFailed)
			return lookupErr
		}
		return fail(resultFailed, unverified("sign-in", err), target, nil)
	}
	if wc.Authenticator.CloneWarning {
		p.finishCeremony(ctx, cer, resultRefused)
		p.audit(c, event{Event: evCloneWarning, Target: target, Detail: map[string]any{
			"passkey_id": found.ID, "stored_count": found.SignCount, "presented_count": parsed.Response.AuthenticatorData.Counter}})
		p.audit(c, event{Event: evSignInFailed, Target: target, Detail: map[string]any{"method": methodPasskey, "code": errClone.Code, "passkey_id": found.ID}})
		return errClone
	}
	if it == nil {
		return fail(resultRefused, errUnknownPasskey, target, nil)
	}
	if why := it.refusal(); why != "" {
		return fail(resultRefused, &userError{Status: http.StatusForbidden, Code: "refused", Message: why}, it.Username, map[string]any{"reason": it.State + "/" + it.LinkState})
	}
	raw, err := json.Marshal(wc)
	if err != nil {
		return err
	}
	q := p.data.q
	var secret string
	var expires time.Time
	admin := p.isAdmin(ctx, it)
	// Everything a sign-in writes commits together: the passkey's counter
	// and last use, the session, the ceremony's result, the audit entry.
	err = p.data.db.InTx(ctx, func(tx *sqlx.Tx) error {
		// The guard on sign_count keeps a concurrent sign-in with a
		// higher counter from being overwritten by this one.
		_, err := store.Exec(ctx, tx, "UPDATE "+p.data.n.Credentials+" SET "+q("sign_count")+" = ?, "+q("backup_state")+" = ?, "+q("user_verified")+" = ?, "+
			q("last_used_at")+" = ?, "+q("credential_json")+" = ? WHERE "+q("id")+" = ? AND "+q("sign_count")+" <= ?",
			int64(wc.Authenticator.SignCount), wc.Flags.BackupState, wc.Flags.UserVerified, p.data.now(), string(raw), found.ID, int64(wc.Authenticator.SignCount))
		if err != nil {
			return fmt.Errorf("update passkey: %w", err)
		}
		if secret, expires, err = p.newSession(c, tx, it, sessionData{Method: methodPasskey, Admin: admin, CredentialID: base64.RawURLEncoding.EncodeToString(found.CredentialID)}); err != nil {
			return err
		}
		if err := p.setResult(ctx, tx, cer, resultSucceeded); err != nil {
			return err
		}
		return p.data.record(ctx, tx, p.event(c, event{Event: evSignIn + methodPasskey, Success: true, Actor: it.Username, Target: it.Username, Detail: map[string]any{"method": methodPasskey, "passkey_id": found.ID}}))
	})
	if err != nil {
		p.finishCeremony(ctx, cer, resultFailed)
		return err
	}
	p.metrics.Ceremony(kindLogin, resultSucceeded)
	p.setCookie(c, sessionCookie, secret, expires)
	return c.JSON(http.StatusOK, map[string]any{"ok": true, "redirect": "/?done=signedin"})
}

// credentialIdentity is the identity a passkey belongs to: the one it was
// enrolled by, else (the identity row was replaced) the one linked to its
// users row.
func (p *Portal) credentialIdentity(c echo.Context, cr *credential) (*identity, error) {
	ctx := c.Request().Context()
	if cr.IdentityID.Valid {
		it, err := p.data.identityByID(ctx, cr.IdentityID.Int64)
		if err != nil || it != nil {
			return it, err
		}
	}
	return p.data.identityWhere(ctx, p.data.q("user_key")+" = ? ORDER BY "+p.data.q("id")+" LIMIT 1", cr.UserKey)
}

// cancel records a ceremony the browser gave up on.
func (p *Portal) cancel(c echo.Context) error {
	var req cancelRequest
	if err := bindJSON(c, &req); err != nil {
		return err
	}
	if err := p.cancelCeremony(c.Request().Context(), req.Ceremony, req.Kind); err != nil {
		return err
	}
	return c.NoContent(http.StatusNoContent)
}

// malformed is the answer to a response that does not even parse.
func malformed(what string, err error) *userError {
	return &userError{Status: http.StatusBadRequest, Code: "malformed",
		Message: "The passkey " + what + " response is malformed: " + protocolDetail(err)}
}

// unverified is the answer to a response that parses but does not verify.
func unverified(what string, err error) *userError {
	return &userError{Status: http.StatusBadRequest, Code: "unverified",
		Message: "The passkey " + what + " could not be verified: " + protocolDetail(err)}
}

func protocolDetail(err error) string {
	var pe *protocol.Error
	if errors.As(err, &pe) {
		d := pe.Details
		if pe.DevInfo != "" {
			d += " (" + pe.DevInfo + ")"
		}
		return clip(d, 300)
	}
	return clip(err.Error(), 300)
}
