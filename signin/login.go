package signin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"

	"github.com/go-webauthn/webauthn/protocol"
	"github.com/go-webauthn/webauthn/webauthn"

	"github.com/passbridge/passbridge/enroll/aaguid"
	"github.com/passbridge/passbridge/store"
)

// Audit events of the sign-in core.
const (
	EvSignInFailed = "signin.failed" // detail.method, detail.code (and client_id for an application)
	EvCloneWarning = "passkey.clone" // a sign counter went backwards: sign-in refused
)

// MethodPasskey is the sign-in method of a passkey, in sessions and the
// audit trail.
const MethodPasskey = "passkey"

// User is a user as go-webauthn sees it.
type User struct {
	Handle      []byte
	Name        string
	DisplayName string
	Creds       []webauthn.Credential
}

func (u *User) WebAuthnID() []byte                         { return u.Handle }
func (u *User) WebAuthnName() string                       { return u.Name }
func (u *User) WebAuthnDisplayName() string                { return u.DisplayName }
func (u *User) WebAuthnCredentials() []webauthn.Credential { return u.Creds }

// BeginLogin starts a discoverable passkey sign-in of a kind (KindLogin,
// KindAppLogin) with user verification required: no username needed, the
// authenticator offers the passkeys it holds for this RP. conditional asks
// for the browser's autofill UI instead of a modal dialog.
func (c *Core) BeginLogin(ctx context.Context, kind string, conditional bool) (string, *protocol.CredentialAssertion, error) {
	mediation := protocol.MediationDefault
	if conditional {
		mediation = protocol.MediationConditional
	}
	assertion, sd, err := c.wa.BeginDiscoverableMediatedLogin(mediation, webauthn.WithUserVerification(protocol.VerificationRequired))
	if err != nil {
		return "", nil, fmt.Errorf("begin login: %w", err)
	}
	// Sealed, not stored: a sign-in's begin writes nothing (seal.go).
	id, err := c.sealCeremony(ctx, kind, sd)
	if err != nil {
		return "", nil, err
	}
	return id, assertion, nil
}

// Assertion is a finished sign-in ceremony as the browser sends it, and who
// asks: the request's address and user agent, and the audit detail every
// event of this sign-in carries (an application's client_id).
type Assertion struct {
	Kind       string
	Ceremony   string
	Credential json.RawMessage
	// Origins, when set, are the only web origins the assertion may have
	// been made on (an application's, besides the relying party's own);
	// the relying party's origins are checked by go-webauthn in any case.
	Origins []string
	IP, UA  string
	Detail  map[string]any
}

// Login is a verified passkey sign-in, not yet written: Commit writes it.
type Login struct {
	Ceremony   *Ceremony
	Identity   *Identity
	Credential *Credential          // the stored passkey
	Verified   *webauthn.Credential // as go-webauthn updated it (counter, flags)
	assertion  Assertion
}

var (
	ErrUnknownPasskey = &Error{Status: http.StatusBadRequest, Code: "unknown_passkey",
		Message: "This passkey is not registered here (it may have been deleted). Sign in with your directory password, then add a new passkey."}
	ErrRevokedPasskey = &Error{Status: http.StatusForbidden, Code: "revoked_passkey",
		Message: "This passkey was removed from your account and no longer signs you in. Sign in with your directory password, then add a new passkey."}
	ErrClone = &Error{Status: http.StatusForbidden, Code: "clone_warning",
		Message: "This passkey's signature counter went backwards, which can mean that it was copied. The sign-in was refused and recorded for IT. Sign in with your directory password and tell IT."}
)

// Verify checks a passkey assertion against its ceremony and the policy,
// and says whose it is. It writes nothing unless it refuses (then the
// ceremony is finished as failed or refused, and the refusal audited): a
// refusal is an *Error with the status to answer. A sign counter that did
// not go up (go-webauthn's CloneWarning, which by itself does not fail the
// login) refuses the sign-in and is recorded.
func (c *Core) Verify(ctx context.Context, a Assertion) (*Login, error) {
	cer, err := c.peekCeremony(ctx, a.Ceremony, a.Kind)
	if err != nil {
		return nil, err
	}
	// A refusal is recorded only by the request that finishes the
	// ceremony: the ceremony is claimed first, so that a replay racing
	// with the sign-in that commits (which may see the counter it wrote)
	// is told the ceremony is gone, not audited as a clone or a failure.
	fail := func(result string, ue *Error, target string, detail map[string]any) (*Login, error) {
		if err := c.settle(ctx, cer, result); err != nil {
			return nil, err
		}
		c.audit(ctx, a.event(EvSignInFailed, target, ue.Code, detail))
		return nil, ue
	}
	parsed, err := protocol.ParseCredentialRequestResponseBytes(a.Credential)
	if err != nil {
		return fail(ResultFailed, Malformed("sign-in", err), "", nil)
	}
	if o := parsed.Response.CollectedClientData.Origin; len(a.Origins) > 0 && !slices.Contains(a.Origins, o) {
		return fail(ResultRefused, &Error{Status: http.StatusForbidden, Code: "origin",
			Message: "This passkey sign-in was made on " + Clip(o, 100) + ", which is not an origin of this application."}, "", map[string]any{"origin": Clip(o, 100)})
	}
	var found *Credential
	var it *Identity
	var lookupErr error
	handler := func(rawID, userHandle []byte) (webauthn.User, error) {
		cr, ident, err := c.CredentialWithIdentity(ctx, rawID)
		switch {
		case err != nil:
			lookupErr = err
		case cr == nil || !bytes.Equal(cr.UserHandle, userHandle):
			lookupErr = ErrUnknownPasskey
		case cr.RevokedAt.Valid:
			found, it, lookupErr = cr, ident, ErrRevokedPasskey
		}
		if lookupErr != nil {
			return nil, lookupErr
		}
		wc, err := cr.WebAuthn()
		if err != nil {
			lookupErr = err
			return nil, err
		}
		found, it = cr, ident
		return &User{Handle: cr.UserHandle, Creds: []webauthn.Credential{wc}}, nil
	}
	_, wc, err := c.wa.ValidatePasskeyLogin(handler, cer.Session, parsed)
	target := ""
	if it != nil {
		target = it.Username
	}
	if err != nil {
		var ue *Error
		switch {
		case errors.As(lookupErr, &ue):
			return fail(ResultFailed, ue, target, nil)
		case lookupErr != nil:
			c.FinishCeremony(ctx, cer, ResultFailed)
			return nil, lookupErr
		}
		return fail(ResultFailed, Unverified("sign-in", err), target, nil)
	}
	if wc.Authenticator.CloneWarning {
		if err := c.settle(ctx, cer, ResultRefused); err != nil {
			return nil, err
		}
		c.audit(ctx, a.event(EvCloneWarning, target, "", map[string]any{
			"passkey_id": found.ID, "stored_count": found.SignCount, "presented_count": parsed.Response.AuthenticatorData.Counter}))
		c.audit(ctx, a.event(EvSignInFailed, target, ErrClone.Code, map[string]any{"passkey_id": found.ID}))
		return nil, ErrClone
	}
	if it == nil {
		return fail(ResultRefused, ErrUnknownPasskey, target, nil)
	}
	if why := it.Refusal(); why != "" {
		return fail(ResultRefused, &Error{Status: http.StatusForbidden, Code: "refused", Message: why}, it.Username, map[string]any{"reason": it.State + "/" + it.LinkState})
	}
	// The policy applies at every sign-in, not only at registration: a
	// policy tightened since refuses the passkeys it no longer allows.
	if ue := c.policy.Check(wc); ue != nil {
		return fail(ResultRefused, ue, it.Username, map[string]any{"passkey_id": found.ID, "aaguid": aaguid.Format(wc.Authenticator.AAGUID), "backup_eligible": wc.Flags.BackupEligible})
	}
	return &Login{Ceremony: cer, Identity: it, Credential: found, Verified: wc, assertion: a}, nil
}

// event is an audit event of this sign-in: its request, its detail.
func (a Assertion) event(name, target, code string, detail map[string]any) Event {
	d := map[string]any{"method": MethodPasskey}
	for k, v := range a.Detail {
		d[k] = v
	}
	for k, v := range detail {
		d[k] = v
	}
	if code != "" {
		d["code"] = code
	}
	return Event{Event: name, Target: target, IP: a.IP, UA: a.UA, Detail: d}
}

// Commit writes a verified sign-in in one transaction: the ceremony's claim
// (so that of two finishes of one ceremony, on any replicas, exactly one
// commits; the other gets ErrCeremonyGone and writes nothing), the
// passkey's counter, flags and last use, then write (the caller's rows:
// a session, an authorization code), then the audit event (ev, with the
// sign-in's method, passkey and detail added). Nothing is written unless
// all of it is.
func (c *Core) Commit(ctx context.Context, l *Login, ev string, write func(q store.Execer) error) error {
	raw, err := json.Marshal(l.Verified)
	if err != nil {
		return err
	}
	q := c.q
	wc := l.Verified
	e := l.assertion.event(ev, l.Identity.Username, "", map[string]any{"passkey_id": l.Credential.ID})
	e.Success = true
	// On SQLite the transaction may be shared with other sign-ins' (group
	// commit: store.InTxShared), on PostgreSQL its statements go out in one
	// round trip (store.InTxPipelined); this one's rows are all or none.
	err = c.db.InTxPipelined(ctx, func(tx store.Execer) error {
		if err := c.claimIn(ctx, tx, l.Ceremony, ResultSucceeded); err != nil {
			return err
		}
		// The guard on sign_count keeps a concurrent sign-in with a
		// higher counter from being overwritten by this one.
		_, err := store.Exec(ctx, tx, "UPDATE "+c.n.Credentials+" SET "+q("sign_count")+" = ?, "+q("backup_state")+" = ?, "+q("user_verified")+" = ?, "+
			q("last_used_at")+" = ?, "+q("credential_json")+" = ? WHERE "+q("id")+" = ? AND "+q("sign_count")+" <= ?",
			int64(wc.Authenticator.SignCount), wc.Flags.BackupState, wc.Flags.UserVerified, c.now(), string(raw), l.Credential.ID, int64(wc.Authenticator.SignCount))
		if err != nil {
			return fmt.Errorf("update passkey: %w", err)
		}
		if write != nil {
			if err := write(tx); err != nil {
				return err
			}
		}
		return c.Record(ctx, tx, e)
	})
	if store.IsUniqueViolation(err) {
		// Pipelined, the claim's duplicate comes back from the commit;
		// nothing else a sign-in writes has a key it could repeat (the
		// session's and the code's are random).
		err = ErrCeremonyGone
	}
	if err != nil {
		l.Ceremony.claimed = false // the claim rolled back with the rest
		if !errors.Is(err, ErrCeremonyGone) {
			c.FinishCeremony(ctx, l.Ceremony, ResultFailed)
		}
		return err
	}
	c.count(l.Ceremony.Kind, ResultSucceeded)
	return nil
}

// Malformed is the answer to a response that does not even parse.
func Malformed(what string, err error) *Error {
	return &Error{Status: http.StatusBadRequest, Code: "malformed",
		Message: "The passkey " + what + " response is malformed: " + protocolDetail(err)}
}

// Unverified is the answer to a response that parses but does not verify.
func Unverified(what string, err error) *Error {
	return &Error{Status: http.StatusBadRequest, Code: "unverified",
		Message: "The passkey " + what + " could not be verified: " + protocolDetail(err)}
}

func protocolDetail(err error) string {
	var pe *protocol.Error
	if errors.As(err, &pe) {
		d := pe.Details
		if pe.DevInfo != "" {
			d += " (" + pe.DevInfo + ")"
		}
		return Clip(d, 300)
	}
	return Clip(err.Error(), 300)
}
