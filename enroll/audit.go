package enroll

import (
	"context"
	"maps"

	"github.com/labstack/echo/v4"

	"github.com/passbridge/passbridge/signin"
	"github.com/passbridge/passbridge/store"
)

// Audit events the portal records in passbridge_audit (append-only: the
// portal only ever INSERTs there).
const (
	evSignIn         = "signin."             // + the method: signin.password, signin.passkey, signin.link, signin.recovery
	evSignInFailed   = signin.EvSignInFailed // detail.method, detail.reason
	evSignInLimited  = "signin.limited"      // a password check refused by the rate limit
	evSignOut        = "signout"             //
	evCloneWarning   = signin.EvCloneWarning // a sign counter went backwards: sign-in refused
	evRegistered     = signin.EvRegistered   // success false: refused by policy or failed
	evRenamed        = "passkey.rename"      //
	evDeleted        = "passkey.delete"      //
	evLinkIssued     = "link.issue"          // detail.kind, detail.expires_at
	evLinkUsed       = "link.use"            //
	evSessionRefused = "session.refused"     // the identity may no longer use the portal
)

// event is one audit record (the sign-in core's).
type event = signin.Event

// record writes an audit event through q (a transaction when the event
// belongs to a change), with the one writer of the audit trail.
func (s *data) record(ctx context.Context, q store.Querier, e event) error {
	return s.core.Record(ctx, q, e)
}

// recorded, when set (by the tests), hears of every event written: the
// suite checks that each kind of event is recorded somewhere.
var recorded func(event string)

func onRecord(ev string) {
	if recorded != nil {
		recorded(ev)
	}
}

// audit records an event of a portal request.
func (p *Portal) audit(c echo.Context, e event) {
	if err := p.data.record(c.Request().Context(), p.data.db, p.event(c, e)); err != nil {
		p.log.Error("cannot write the audit trail", "event", e.Event, "err", err)
	}
}

// event completes an audit event of a portal request with the client's
// address and user agent, the request's own audit detail (CheckPassword),
// and the signed-in user as actor unless the event names one.
func (p *Portal) event(c echo.Context, e event) event {
	e.IP = c.RealIP()
	e.UA = c.Request().UserAgent()
	if extra, ok := c.Get(ctxAuditDetail).(map[string]any); ok {
		d := maps.Clone(extra)
		maps.Copy(d, e.Detail) // the event's own keys win
		e.Detail = d
	}
	if e.Actor == "" {
		if s := currentSession(c); s != nil {
			e.Actor = s.who()
		} else {
			e.Actor = e.Target
		}
	}
	return e
}
