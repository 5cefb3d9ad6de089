package enroll

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/labstack/echo/v4"

	"github.com/passbridge/passbridge/store"
)

// Audit events the portal records in passbridge_audit (append-only: the
// portal only ever INSERTs there).
const (
	evSignIn         = "signin."          // + the method: signin.password, signin.passkey, signin.link, signin.recovery
	evSignInFailed   = "signin.failed"    // detail.method, detail.reason
	evSignInLimited  = "signin.limited"   // a password check refused by the rate limit
	evSignOut        = "signout"          //
	evCloneWarning   = "passkey.clone"    // a sign counter went backwards: sign-in refused
	evRegistered     = "passkey.register" // success false: refused by policy or failed
	evRenamed        = "passkey.rename"   //
	evDeleted        = "passkey.delete"   //
	evLinkIssued     = "link.issue"       // detail.kind, detail.expires_at
	evLinkUsed       = "link.use"         //
	evSessionRefused = "session.refused"  // the identity may no longer use the portal
)

// event is one audit record. Actor is who acted (a username, "cli:<user>");
// Target is the user it concerns.
type event struct {
	Event   string
	Success bool
	Actor   string
	Target  string
	IP      string
	UA      string
	Detail  map[string]any
}

// record writes an audit event. A failure to audit is logged loudly but
// does not undo what happened (the change is already committed).
func (s *data) record(ctx context.Context, q store.Querier, e event) error {
	var detail any
	if len(e.Detail) > 0 {
		b, err := json.Marshal(e.Detail)
		if err != nil {
			return err
		}
		detail = string(b)
	}
	_, err := store.Exec(ctx, q, "INSERT INTO "+s.n.Audit+" ("+s.cols("", "at", "event", "success", "actor", "target", "ip", "user_agent", "detail")+") VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
		s.now(), e.Event, e.Success, nullStr(clip(e.Actor, 255)), nullStr(clip(e.Target, 255)), nullStr(clip(e.IP, 64)), nullStr(clip(e.UA, 512)), detail)
	if err != nil {
		return fmt.Errorf("audit %s: %w", e.Event, err)
	}
	return nil
}

// audit records an event of a portal request.
func (p *Portal) audit(c echo.Context, e event) {
	if err := p.data.record(c.Request().Context(), p.data.db, p.event(c, e)); err != nil {
		p.log.Error("cannot write the audit trail", "event", e.Event, "err", err)
	}
}

// event completes an audit event of a portal request with the client's
// address and user agent, and the signed-in user as actor unless the event
// names one.
func (p *Portal) event(c echo.Context, e event) event {
	e.IP = c.RealIP()
	e.UA = c.Request().UserAgent()
	if e.Actor == "" {
		if s := currentSession(c); s != nil {
			e.Actor = s.identity.Username
		} else {
			e.Actor = e.Target
		}
	}
	return e
}
