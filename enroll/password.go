package enroll

import (
	"maps"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/passbridge/passbridge/directory"
	"github.com/passbridge/passbridge/signin"
)

// What the portal lends the other surfaces on its router (the OpenID
// Connect login page's password fallback, package appsignin): its password
// check, so that there is one way to approach the directory's lockout, and
// its notice of a passkey added.

// ctxAuditDetail is where a request keeps the audit detail that every event
// recorded while serving it carries (CheckPassword's client_id).
const ctxAuditDetail = "pb_audit_detail"

// CheckPassword checks a directory password exactly as the portal's own
// password sign-in does: within the same rate limits (per directory
// account by its stable ID, per client address, an IPv6 client by its
// /64), with the same answer for an unknown user, a disabled one and a
// wrong password, every refusal audited as the portal's are with detail
// added (the application's client_id). It returns the directory entry of a
// right password; a refusal is a *signin.Error with the status to answer.
func (p *Portal) CheckPassword(c echo.Context, username, password string, detail map[string]any) (*directory.Identity, error) {
	if len(detail) > 0 {
		c.Set(ctxAuditDetail, maps.Clone(detail))
	}
	found, ue := p.checkPassword(c, strings.TrimSpace(username), password, methodPassword)
	if ue != nil {
		return nil, ue
	}
	return found, nil
}

// NotifyPasskeyAdded mails the employee that a passkey was added to their
// account, how (the end of "a passkey was added to your account ..."), as
// the portal does for its own registrations. Best effort.
func (p *Portal) NotifyPasskeyAdded(c echo.Context, it *signin.Identity, name, how string) {
	p.mailPasskeyAdded(c, it, name, how, 0)
}
