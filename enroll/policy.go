package enroll

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"net/http"
	"strings"

	"github.com/go-webauthn/webauthn/webauthn"

	"github.com/passbridge/passbridge/config"
	"github.com/passbridge/passbridge/enroll/aaguid"
)

// policy is portal.policy, parsed: what the enterprise accepts as a passkey.
type policy struct {
	allowed      [][]byte // raw AAGUIDs; empty allows any
	forbidSynced bool
	max          int
}

func newPolicy(c config.Policy) (policy, error) {
	p := policy{forbidSynced: c.ForbidSynced, max: c.MaxPasskeys}
	for i, s := range c.AllowedAAGUIDs {
		b, err := hex.DecodeString(strings.ReplaceAll(s, "-", ""))
		if err != nil || len(b) != 16 {
			return p, fmt.Errorf("portal.policy.allowed_aaguids[%d]: not an AAGUID: %q", i, s)
		}
		p.allowed = append(p.allowed, b)
	}
	return p, nil
}

// check refuses a new credential the policy does not allow, with a message
// the employee can act on.
func (p policy) check(c *webauthn.Credential) *userError {
	if len(p.allowed) > 0 {
		ok := false
		for _, a := range p.allowed {
			if bytes.Equal(a, c.Authenticator.AAGUID) {
				ok = true
			}
		}
		if !ok {
			what := aaguid.Name(c.Authenticator.AAGUID)
			if isZero(c.Authenticator.AAGUID) {
				what = "This authenticator does not say which model it is, so"
			} else {
				what = "“" + what + "” (" + aaguid.Format(c.Authenticator.AAGUID) + ") is not among the authenticators your company approved, so"
			}
			return &userError{Status: http.StatusForbidden, Code: "policy_authenticator",
				Message: what + " it cannot be used here. Use an approved security key or device; IT can tell you which."}
		}
	}
	if p.forbidSynced && c.Flags.BackupEligible {
		return &userError{Status: http.StatusForbidden, Code: "policy_synced",
			Message: "This passkey would be synced to your other devices (a password manager or cloud keychain), and company policy allows only device-bound passkeys, such as a security key or Windows Hello. Choose another authenticator."}
	}
	return nil
}

func isZero(b []byte) bool {
	for _, x := range b {
		if x != 0 {
			return false
		}
	}
	return true
}
