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
	if !validSecret(r.Ceremony) {
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
	var req beginRegisterRequest
	if err := bindJSON(c, &req); err != nil {
		return err
	}
	ctx := c.Request().Context()
	s := currentSession(c)
	it := s.identity
	creds, err := p.data.activeCredentials(ctx, it.UserKey)
	if err != nil {
		return err
	}
	if len(creds) >= p.policy.Max {
		return &userError{Status: http.StatusConflict, Code: "limit", Message: fmt.Sprintf("You already have %d passkeys, the most your company allows. Delete one to add another.", len(creds))}
	}
	handle, err := p.data.userHandle(ctx, it.UserKey)
	if err != nil {
		return err
	}
	user := &waUser{Handle: handle, Name: accountName(it), DisplayName: it.Name()}
	exclude := make([]protocol.CredentialDescriptor, 0, len(creds))
	for _, cr := range creds {
		wc, err := cr.WebAuthn()
		if err != nil {
			return err
		}
		exclude = append(exclude, wc.Descriptor())
	}
	opts := []webauthn.RegistrationOption{
		webauthn.WithExclusions(exclude),
		webauthn.WithExtensions(webauthn.WithExtensionCredProps()),
	}
	kind, mediation := kindRegistration, protocol.MediationDefault
	if req.Upgrade {
		// Only right after a password sign-in, for someone without a
		// passkey: the upgrade replaces that password next time.
		if s.data.Method != methodPassword || len(creds) > 0 {
			return &userError{Status: http.StatusConflict, Code: "no_upgrade", Message: "The automatic passkey upgrade is offered after a password sign-in, to someone without a passkey."}
		}
		// The password manager creates the passkey without asking the
		// user anything: user verification cannot be required (and
		// go-webauthn does not check user presence for a conditional
		// creation). The company's policy applies at the finish as for
		// every registration.
		kind, mediation = kindUpgrade, protocol.MediationConditional
		opts = append(opts, webauthn.WithAuthenticatorSelection(protocol.AuthenticatorSelection{
			ResidentKey: protocol.ResidentKeyRequirementRequired, RequireResidentKey: protocol.ResidentKeyRequired(),
			UserVerification: protocol.VerificationPreferred,
		}))
	}
	creation, sd, err := p.wa.BeginMediatedRegistration(user, mediation, opts...)
	if err != nil {
		return fmt.Errorf("begin registration: %w", err)
	}
	id, err := p.core.BeginCeremony(ctx, kind, &it.ID, sd)
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
	fail := func(result string, ue *userError, detail map[string]any) error {
		p.core.FinishCeremony(ctx, cer, result)
		if detail == nil {
			detail = map[string]any{}
		}
		detail["code"] = ue.Code
		detail["via"] = via
		p.audit(c, event{Event: evRegistered, Success: false, Target: it.Username, Detail: detail})
		return ue
	}
	if !cer.IdentityID.Valid || cer.IdentityID.Int64 != it.ID {
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
		return fail(resultFailed, signin.Malformed("registration", err), nil)
	}
	user := &waUser{Handle: cer.Session.UserID, Name: accountName(it), DisplayName: it.Name()}
	cred, err := p.wa.CreateCredential(user, cer.Session, parsed)
	if err != nil {
		return fail(resultFailed, signin.Unverified("registration", err), nil)
	}
	if ue := p.policy.Check(cred); ue != nil {
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
		if n >= p.policy.Max {
			limitHit = true
			return nil
		}
		id, err = p.data.d.InsertID(ctx, tx, "INSERT INTO "+p.data.n.Credentials+" ("+p.data.cols("", "user_key", "identity_id", "credential_id", "public_key", "sign_count", "aaguid", "transports",
			"user_present", "user_verified", "backup_eligible", "backup_state", "attestation_type", "attestation_format", "user_handle", "name", "credential_json", "created_at")+
			") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", "id",
			it.UserKey, it.ID, cred.ID, cred.PublicKey, int64(cred.Authenticator.SignCount), nullBytes(cred.Authenticator.AAGUID), nullStr(strings.Join(transports, ",")),
			cred.Flags.UserPresent, cred.Flags.UserVerified, cred.Flags.BackupEligible, cred.Flags.BackupState,
			nullStr(cred.AttestationType), nullStr(cred.AttestationFormat), cer.Session.UserID, name, string(raw), p.data.now())
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
		p.core.FinishCeremony(ctx, cer, resultFailed)
		return err
	case limitHit:
		return fail(resultRefused, &userError{Status: http.StatusConflict, Code: "limit", Message: "You already have the most passkeys your company allows. Delete one to add another."}, nil)
	}
	p.core.FinishCeremony(ctx, cer, resultSucceeded)
	p.notifyPasskeyAdded(c, it, s, name, revoked)
	p.audit(c, event{Event: evRegistered, Success: true, Target: it.Username, Detail: map[string]any{
		"method": s.data.Method, "via": via, "recovery": s.data.Recovery, "revoked": revoked,
		"passkey_id": id, "name": name, "aaguid": aaguid.Format(cred.Authenticator.AAGUID), "provider": aaguid.Name(cred.Authenticator.AAGUID),
		"backup_eligible": cred.Flags.BackupEligible, "backup_state": cred.Flags.BackupState, "attestation": cred.AttestationFormat,
		"seconds": p.data.now().Sub(cer.CreatedAt).Seconds()}})
	return c.JSON(http.StatusOK, map[string]any{"ok": true, "passkey": map[string]any{"id": id, "name": name}, "redirect": done})
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
	err = p.core.Commit(ctx, l, evSignIn+methodPasskey, func(tx *sqlx.Tx) error {
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
