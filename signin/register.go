package signin

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"

	"github.com/go-webauthn/webauthn/protocol"
	"github.com/go-webauthn/webauthn/webauthn"
	"github.com/jmoiron/sqlx"

	"github.com/passbridge/passbridge/enroll/aaguid"
	"github.com/passbridge/passbridge/store"
)

// Adding a passkey is the same ceremony wherever it is offered (the
// portal's button, its automatic upgrade after a password sign-in, the
// OpenID Connect login page's invitation after a password sign-in): a
// discoverable credential with user verification, the user's passkeys
// excluded, the policy applied, the passkey stored in the columns the
// application reads, under the users row's lock so that the most passkeys
// a user may have holds across replicas, and the outcome audited.

// EvRegistered is a passkey registration: success false when it was refused
// by the policy or failed; detail.via says where it was offered.
const EvRegistered = "passkey.register"

// PasskeyEnrolled is the value of users.<prefix>passkey_state for a row
// with at least one active passkey.
const PasskeyEnrolled = "enrolled"

// Answers of a registration.
var (
	ErrHasPasskey = &Error{Status: http.StatusConflict, Code: "has_passkey",
		Message: "You already have a passkey: this offer is for people who have none yet."}
	ErrPasskeyExists = &Error{Status: http.StatusConflict, Code: "exists", Message: "This passkey is already registered."}
	errLimitRace     = &Error{Status: http.StatusConflict, Code: "limit", Message: "You already have the most passkeys your company allows. Delete one to add another."}
)

// ActiveCredentials are the passkeys of a users row that are not revoked.
func (c *Core) ActiveCredentials(ctx context.Context, userKey any) ([]*Credential, error) {
	return c.CredentialsWhere(ctx, c.q("user_key")+" = ? AND "+c.q("revoked_at")+" IS NULL", userKey)
}

// userHandle is the WebAuthn user handle of a users row: the one its
// passkeys already carry (so a new passkey on the same authenticator
// replaces the old one there instead of piling up), else a new random one.
// It is random, never derived from the username or key, as the
// specification asks: it carries no personal data.
func (c *Core) userHandle(ctx context.Context, userKey any) ([]byte, error) {
	var handles [][]byte
	err := store.Select(ctx, c.db, &handles, "SELECT "+c.q("user_handle")+" FROM "+c.n.Credentials+" WHERE "+c.q("user_key")+" = ? ORDER BY "+c.q("id")+" LIMIT 1", userKey)
	if err != nil {
		return nil, fmt.Errorf("read user handle: %w", err)
	}
	if len(handles) == 1 && len(handles[0]) > 0 {
		return handles[0], nil
	}
	h := make([]byte, 32)
	if _, err := rand.Read(h); err != nil {
		return nil, err
	}
	return h, nil
}

// SetPasskeyState keeps users.<prefix>passkey_state right for the
// application: PasskeyEnrolled while the row has an active passkey, NULL
// otherwise. It runs inside the transaction that changed the passkeys.
func (c *Core) SetPasskeyState(ctx context.Context, tx store.Querier, userKey any) error {
	var n int
	if err := store.Get(ctx, tx, &n, "SELECT COUNT(*) FROM "+c.n.Credentials+" WHERE "+c.q("user_key")+" = ? AND "+c.q("revoked_at")+" IS NULL", userKey); err != nil {
		return fmt.Errorf("count passkeys: %w", err)
	}
	var state any
	if n > 0 {
		state = PasskeyEnrolled
	}
	if _, err := store.Exec(ctx, tx, "UPDATE "+c.n.Users+" SET "+c.n.PasskeyState+" = ? WHERE "+c.n.UserKey+" = ?", state, userKey); err != nil {
		return fmt.Errorf("update the users row's passkey state: %w", err)
	}
	return nil
}

// AccountName is the name the authenticator shows for the account: the
// email when there is one (what people recognize among many passkeys),
// else the username.
func AccountName(it *Identity) string {
	if it.Email.String != "" {
		return it.Email.String
	}
	return it.Username
}

// RegisterOptions say which registration begins.
type RegisterOptions struct {
	// Kind is the ceremony's kind: KindRegistration, or the automatic
	// upgrade's own (counted as its own method in the figures).
	Kind string
	// Conditional asks for a conditional creation (mediation
	// "conditional"), which a password manager may make without a dialog:
	// user verification is then preferred, not required.
	Conditional bool
	// FirstOnly refuses (ErrHasPasskey) a user who has an active passkey:
	// the offers made after a password sign-in are for a first passkey.
	FirstOnly bool
}

// BeginRegistration starts adding a passkey for an identity that may use
// passkeys: a discoverable credential with user verification, the user's
// passkeys excluded (the authenticator refuses a second one), credProps
// requested (the browser says whether the key is really discoverable).
func (c *Core) BeginRegistration(ctx context.Context, it *Identity, o RegisterOptions) (string, *protocol.CredentialCreation, error) {
	if why := it.Refusal(); why != "" {
		return "", nil, &Error{Status: http.StatusForbidden, Code: "refused", Message: why}
	}
	creds, err := c.ActiveCredentials(ctx, it.UserKey)
	if err != nil {
		return "", nil, err
	}
	if o.FirstOnly && len(creds) > 0 {
		return "", nil, ErrHasPasskey
	}
	if len(creds) >= c.policy.Max {
		return "", nil, &Error{Status: http.StatusConflict, Code: "limit", Message: fmt.Sprintf("You already have %d passkeys, the most your company allows. Delete one to add another.", len(creds))}
	}
	handle, err := c.userHandle(ctx, it.UserKey)
	if err != nil {
		return "", nil, err
	}
	user := &User{Handle: handle, Name: AccountName(it), DisplayName: it.Name()}
	exclude := make([]protocol.CredentialDescriptor, 0, len(creds))
	for _, cr := range creds {
		wc, err := cr.WebAuthn()
		if err != nil {
			return "", nil, err
		}
		exclude = append(exclude, wc.Descriptor())
	}
	opts := []webauthn.RegistrationOption{
		webauthn.WithExclusions(exclude),
		webauthn.WithExtensions(webauthn.WithExtensionCredProps()),
	}
	mediation := protocol.MediationDefault
	if o.Conditional {
		// The password manager creates the passkey without asking the
		// user anything: user verification cannot be required (and
		// go-webauthn does not check user presence for a conditional
		// creation). The company's policy applies at the finish as for
		// every registration.
		mediation = protocol.MediationConditional
		opts = append(opts, webauthn.WithAuthenticatorSelection(protocol.AuthenticatorSelection{
			ResidentKey: protocol.ResidentKeyRequirementRequired, RequireResidentKey: protocol.ResidentKeyRequired(),
			UserVerification: protocol.VerificationPreferred,
		}))
	}
	creation, sd, err := c.wa.BeginMediatedRegistration(user, mediation, opts...)
	if err != nil {
		return "", nil, fmt.Errorf("begin registration: %w", err)
	}
	id, err := c.BeginCeremony(ctx, o.Kind, &it.ID, sd)
	if err != nil {
		return "", nil, err
	}
	return id, creation, nil
}

// Registration is a finished registration ceremony as the browser sends
// it, and who asks.
type Registration struct {
	// Ceremony is the claimed ceremony (ClaimCeremony).
	Ceremony *Ceremony
	// Identity is who adds the passkey: it must be the ceremony's.
	Identity *Identity
	// Name is the passkey's name, already cleaned; "" names it after its
	// authenticator model.
	Name       string
	Credential json.RawMessage
	Actor      string
	IP, UA     string
	// Detail is added to every audit event of the registration (via, the
	// sign-in method); InTx may add to it.
	Detail map[string]any
	// InTx, when set, runs in the transaction that stores the passkey,
	// with the new passkey's row ID (a recovery revokes the old ones).
	InTx func(tx *sqlx.Tx, id int64) error
}

// Registered is a stored passkey.
type Registered struct {
	ID         int64
	Name       string
	Credential *webauthn.Credential
}

// FinishRegistration verifies a new passkey, applies the policy, and
// stores the whole credential with its flags, the users row's
// passkey_state with it; every outcome is recorded (the ceremony's result,
// the audit event). A refusal is an *Error with the status to answer.
func (c *Core) FinishRegistration(ctx context.Context, r Registration) (*Registered, error) {
	cer, it := r.Ceremony, r.Identity
	fail := func(result string, ue *Error, detail map[string]any) (*Registered, error) {
		c.FinishCeremony(ctx, cer, result)
		d := map[string]any{"code": ue.Code}
		for k, v := range r.Detail {
			d[k] = v
		}
		for k, v := range detail {
			d[k] = v
		}
		c.audit(ctx, Event{Event: EvRegistered, Actor: r.Actor, Target: it.Username, IP: r.IP, UA: r.UA, Detail: d})
		return nil, ue
	}
	if !cer.IdentityID.Valid || cer.IdentityID.Int64 != it.ID {
		return fail(ResultFailed, ErrCeremonyGone, nil)
	}
	if why := it.Refusal(); why != "" {
		return fail(ResultRefused, &Error{Status: http.StatusForbidden, Code: "refused", Message: why}, map[string]any{"reason": it.State + "/" + it.LinkState})
	}
	parsed, err := protocol.ParseCredentialCreationResponseBytes(r.Credential)
	if err != nil {
		return fail(ResultFailed, Malformed("registration", err), nil)
	}
	user := &User{Handle: cer.Session.UserID, Name: AccountName(it), DisplayName: it.Name()}
	cred, err := c.wa.CreateCredential(user, cer.Session, parsed)
	if err != nil {
		return fail(ResultFailed, Unverified("registration", err), nil)
	}
	if ue := c.policy.Check(cred); ue != nil {
		return fail(ResultRefused, ue, map[string]any{"aaguid": aaguid.Format(cred.Authenticator.AAGUID), "backup_eligible": cred.Flags.BackupEligible})
	}
	name := r.Name
	if name == "" {
		name = aaguid.Name(cred.Authenticator.AAGUID)
	}
	raw, err := json.Marshal(cred)
	if err != nil {
		return nil, err
	}
	var transports []string
	for _, t := range cred.Transport {
		transports = append(transports, string(t))
	}
	q := c.q
	var id int64
	limitHit := false
	err = c.db.InTx(ctx, func(tx *sqlx.Tx) error {
		// Count again inside the transaction: two finishes at once must
		// not pass the limit together. The users row is locked first,
		// so that concurrent enrollments of one user queue here.
		var key any
		if err := store.Get(ctx, tx, &key, "SELECT "+c.n.UserKey+" FROM "+c.n.Users+" WHERE "+c.n.UserKey+" = ?"+c.d.ForUpdate(), it.UserKey); err != nil {
			return fmt.Errorf("lock the users row: %w", err)
		}
		var n int
		if err := store.Get(ctx, tx, &n, "SELECT COUNT(*) FROM "+c.n.Credentials+" WHERE "+q("user_key")+" = ? AND "+q("revoked_at")+" IS NULL", it.UserKey); err != nil {
			return err
		}
		if n >= c.policy.Max {
			limitHit = true
			return nil
		}
		id, err = c.d.InsertID(ctx, tx, "INSERT INTO "+c.n.Credentials+" ("+c.Cols("", "user_key", "identity_id", "credential_id", "public_key", "sign_count", "aaguid", "transports",
			"user_present", "user_verified", "backup_eligible", "backup_state", "attestation_type", "attestation_format", "user_handle", "name", "credential_json", "created_at")+
			") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", "id",
			it.UserKey, it.ID, cred.ID, cred.PublicKey, int64(cred.Authenticator.SignCount), nullBytes(cred.Authenticator.AAGUID), nullStr(strings.Join(transports, ",")),
			cred.Flags.UserPresent, cred.Flags.UserVerified, cred.Flags.BackupEligible, cred.Flags.BackupState,
			nullStr(cred.AttestationType), nullStr(cred.AttestationFormat), cer.Session.UserID, name, string(raw), c.now())
		if err != nil {
			return err
		}
		if r.InTx != nil {
			if err := r.InTx(tx, id); err != nil {
				return err
			}
		}
		return c.SetPasskeyState(ctx, tx, it.UserKey)
	})
	switch {
	case err != nil && store.IsUniqueViolation(err):
		return fail(ResultFailed, ErrPasskeyExists, nil)
	case err != nil:
		c.FinishCeremony(ctx, cer, ResultFailed)
		return nil, err
	case limitHit:
		return fail(ResultRefused, errLimitRace, nil)
	}
	c.FinishCeremony(ctx, cer, ResultSucceeded)
	d := map[string]any{
		"passkey_id": id, "name": name, "aaguid": aaguid.Format(cred.Authenticator.AAGUID), "provider": aaguid.Name(cred.Authenticator.AAGUID),
		"backup_eligible": cred.Flags.BackupEligible, "backup_state": cred.Flags.BackupState, "attestation": cred.AttestationFormat,
		"seconds": c.now().Sub(cer.CreatedAt).Seconds()}
	for k, v := range r.Detail {
		d[k] = v
	}
	c.audit(ctx, Event{Event: EvRegistered, Success: true, Actor: r.Actor, Target: it.Username, IP: r.IP, UA: r.UA, Detail: d})
	return &Registered{ID: id, Name: name, Credential: cred}, nil
}

func nullBytes(b []byte) any {
	if len(b) == 0 {
		return nil
	}
	return b
}

func nullStr(s string) any {
	if s == "" {
		return nil
	}
	return s
}
