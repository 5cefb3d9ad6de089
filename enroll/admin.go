package enroll

import (
	"context"
	"errors"
	"fmt"
	"html/template"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/labstack/echo/v4"

	"github.com/passbridge/passbridge/admintoken"
	"github.com/passbridge/passbridge/audit"
	"github.com/passbridge/passbridge/dirsync"
	"github.com/passbridge/passbridge/enroll/adoption"
	identities "github.com/passbridge/passbridge/identity"
	"github.com/passbridge/passbridge/schema"
	"github.com/passbridge/passbridge/store"
)

// The IT admin console, under /admin: for members of portal.admin_group
// (nested membership counts, checked at sign-in) and for holders of the
// admin token (signed in at /signin/admin-token, or with Authorization:
// Bearer on GET requests, for scripts). Every route under /admin refuses
// anyone else with 403; every change it makes is in the audit trail.

// SyncControl is what the console asks of the daemon: the sync, by the
// same code paths as the admin API and `passbridge sync`, and the admin
// token, which the daemon holds (a reload brings a new one to the console
// and the API at once; wrong tokens count per address on both).
// *agent.Agent is the real one.
type SyncControl interface {
	SyncNow(ctx context.Context, full, dryRun bool) (dirsync.SyncResponse, error)
	RecentRuns(ctx context.Context, limit int) ([]dirsync.RunRecord, error)
	ScheduleNow() dirsync.Schedule
	AdminTokens() *admintoken.Guard
}

// SetSync gives the console the daemon (the daemon is built after the
// portal, which it mounts). Without it, the admin token opens nothing.
func (p *Portal) SetSync(s SyncControl) { p.sync = s }

// Admin audit events.
const (
	evAdminSignIn    = "admin.signin_token"
	evAdminRevoke    = "admin.revoke"
	evAdminRevokeAll = "admin.revoke_all"
	evAdminPolicy    = "admin.password_policy"
	evAdminLink      = "admin.manual_link"
	evAdminUnlink    = "admin.unlink"
	evAdminSync      = "admin.sync"
	evAdminExport    = "admin.audit_export"
	evAdminEnded     = "session.admin_ended" // the admin part of a session ended: no longer in portal.admin_group
)

func (p *Portal) mountAdmin(e *echo.Echo, page []echo.MiddlewareFunc) {
	e.GET("/signin/admin-token", p.showTokenSignIn, page...)
	e.POST("/signin/admin-token", p.tokenSignIn, page...)

	admin := append(append([]echo.MiddlewareFunc{}, page...), p.requireAdmin)
	e.GET("/admin", p.adminHome, admin...)
	e.GET("/admin/users", p.adminUsers, admin...)
	e.GET("/admin/users/:id", p.adminUser, admin...)
	e.POST("/admin/users/:id/links", p.adminIssueLink, admin...)
	e.POST("/admin/users/:id/passkeys/:pid/revoke", p.adminRevoke, admin...)
	e.POST("/admin/users/:id/passkeys/revoke-all", p.adminRevokeAll, admin...)
	e.POST("/admin/users/:id/password-policy", p.adminPolicy, admin...)
	e.POST("/admin/users/:id/manual-link", p.adminManualLink, admin...)
	e.POST("/admin/users/:id/unlink", p.adminUnlink, admin...)
	e.GET("/admin/sync", p.adminSync, admin...)
	e.POST("/admin/sync", p.adminSyncNow, admin...)
	e.GET("/admin/audit", p.adminAudit, admin...)
	e.GET("/admin/audit/export", p.adminAuditExport, admin...)
	p.mountCampaigns(e, admin)
}

var errNotAdmin = &userError{Status: http.StatusForbidden, Code: "not_admin",
	Message: "This page is for IT administrators (members of the portal's admin group)."}

// requireAdmin lets through admin sessions, and GET requests with the admin
// token as a Bearer token. A directory admin's membership of
// portal.admin_group is checked again (through the admin cache): once it
// lapses, the admin part of the session ends.
func (p *Portal) requireAdmin(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		if s := currentSession(c); s != nil && s.data.Admin {
			if ue := p.stillAdmin(c, s); ue != nil {
				return ue
			}
			return next(c)
		}
		scheme, tok, ok := strings.Cut(c.Request().Header.Get(echo.HeaderAuthorization), " ")
		if c.Request().Method == http.MethodGet && ok && strings.EqualFold(scheme, "Bearer") {
			if _, ue := p.checkAdminToken(c, strings.TrimSpace(tok), "/admin"); ue != nil {
				if ue.Code == "limited" {
					return ue
				}
				return errNotAdmin
			}
			return next(c)
		}
		return errNotAdmin
	}
}

// stillAdmin checks that an admin session's directory account is still in
// portal.admin_group, and ends the admin part of the session when it is
// not (the employee part stays). Token sessions are checked against the
// token when they are loaded.
func (p *Portal) stillAdmin(c echo.Context, s *session) *userError {
	if s.identity == nil {
		return nil
	}
	ctx := c.Request().Context()
	ok := false
	if group := p.cfg.Portal.AdminGroup; group != "" {
		var err error
		if ok, err = p.admins.member(ctx, group, s.identity.DN); err != nil {
			p.log.Warn("cannot check membership of portal.admin_group; admin request refused", "user", s.identity.Username, "err", err)
			return &userError{Status: http.StatusServiceUnavailable, Code: "directory",
				Message: "Your admin rights cannot be checked with the company directory right now. Try again in a few minutes."}
		}
	}
	if ok {
		return nil
	}
	s.data.Admin = false
	if err := p.saveSession(ctx, s); err != nil {
		p.log.Error("cannot end the admin part of a session", "user", s.identity.Username, "err", err)
		return errInternal
	}
	p.audit(c, event{Event: evAdminEnded, Target: s.identity.Username, Detail: map[string]any{"reason": "not in portal.admin_group"}})
	return errNotAdmin
}

// checkAdminToken checks a presented admin token with the daemon (the
// current token, the per-address limit of wrong ones, the audit trail) and
// returns the token's fingerprint for a session.
func (p *Portal) checkAdminToken(c echo.Context, token, where string) (string, *userError) {
	wrong := &userError{Status: http.StatusUnauthorized, Code: "wrong_token", Message: "That is not the admin token (admin.token_file)."}
	if p.sync == nil {
		return "", wrong
	}
	id, err := p.sync.AdminTokens().Check(c.Request().Context(), admintoken.Attempt{Token: token, Addr: c.RealIP(), UserAgent: c.Request().UserAgent(), Where: where})
	var lim *admintoken.LimitedError
	switch {
	case err == nil:
		return id, nil
	case errors.As(err, &lim):
		c.Response().Header().Set("Retry-After", strconv.Itoa(int(lim.Retry.Seconds())))
		return "", &userError{Status: http.StatusTooManyRequests, Code: "limited",
			Message: "Too many wrong admin tokens from your network. Wait " + humanDuration(lim.Window) + " and try again."}
	case errors.Is(err, admintoken.ErrWrong), errors.Is(err, admintoken.ErrOff):
		return "", wrong
	}
	p.log.Error("cannot check the admin token", "err", err)
	return "", errInternal
}

func (p *Portal) showTokenSignIn(c echo.Context) error {
	return p.render(c, http.StatusOK, "admin_token", pageData{Title: "IT console: sign in with the admin token"})
}

// tokenSignIn opens a console session for the holder of the admin token,
// bound to the token (a rotation ends it).
func (p *Portal) tokenSignIn(c echo.Context) error {
	id, ue := p.checkAdminToken(c, strings.TrimSpace(c.FormValue("token")), "/signin/admin-token")
	if ue != nil {
		return p.render(c, ue.Status, "admin_token", pageData{Title: "IT console: sign in with the admin token", Error: ue.Message})
	}
	if err := p.createSession(c, nil, sessionData{Method: methodToken, Admin: true, TokenID: id}); err != nil {
		return err
	}
	p.audit(c, event{Event: evAdminSignIn, Success: true, Actor: "admin-token", Target: "admin-token"})
	return c.Redirect(http.StatusSeeOther, "/admin")
}

// actor names the admin in the audit trail and on links they issue.
func actor(c echo.Context) string {
	if s := currentSession(c); s != nil {
		return s.who()
	}
	return "admin-token"
}

// adminHome is the dashboard: adoption (measured, next to the field
// report's figures), the enrollment chart, the sync state.
func (p *Portal) adminHome(c echo.Context) error {
	ctx := c.Request().Context()
	rep, err := adoption.Compute(ctx, p.data.db, p.cfg, time.Now(), 30*24*time.Hour)
	if err != nil {
		return err
	}
	d := pageData{Title: "IT console", Adoption: rep, Chart: adoption.Chart(rep.Enrollment, 720, 240), Notice: adminNotices[c.QueryParam("done")]}
	d.Unlinked, err = p.data.countUnlinked(ctx)
	if err != nil {
		return err
	}
	if p.sync != nil {
		d.Runs, _ = p.sync.RecentRuns(ctx, 5)
		sch := p.sync.ScheduleNow()
		d.Schedule = &sch
	}
	return p.render(c, http.StatusOK, "admin_home", d)
}

var adminNotices = map[string]string{
	"revoked":  "The passkey was revoked; the sessions made with it ended.",
	"revokeda": "All the user's passkeys were revoked; the sessions made with them ended.",
	"policy":   "The password policy was saved in the users table.",
	"linked":   "The identity is linked to the users row by hand; later syncs keep this link.",
	"unlinked": "The manual link was removed; the next sync matches the identity by the rules again.",

	"campaign":        "The campaign is saved. The daemon starts inviting at its start, at most campaign.per_minute mails a minute.",
	"campaign_pause":  "The campaign is paused: nothing is sent and nobody is added until you resume it.",
	"campaign_resume": "The campaign is active again.",
	"campaign_cancel": "The campaign is cancelled: its queued mail will not go out and its links no longer work.",
}

// adminUsers searches identities (username, email, display name, DN) or
// lists those a link state (unmatched, ambiguous) asks for.
func (p *Portal) adminUsers(c echo.Context) error {
	q := strings.TrimSpace(c.QueryParam("q"))
	linkState := c.QueryParam("link")
	if linkState != "" && linkState != schema.LinkUnmatched && linkState != schema.LinkAmbiguous && linkState != schema.LinkManual {
		return &userError{Status: http.StatusBadRequest, Code: "bad_filter", Message: "link must be unmatched, ambiguous or manual."}
	}
	if len(q) > 256 {
		return &userError{Status: http.StatusBadRequest, Code: "bad_filter", Message: "The search is too long."}
	}
	its, err := p.data.searchIdentities(c.Request().Context(), q, linkState, 200)
	if err != nil {
		return err
	}
	return p.render(c, http.StatusOK, "admin_users", pageData{Title: "Users", Query: q, LinkFilter: linkState, Identities: its})
}

// adminIdentity reads the :id identity with its users row and passkeys.
func (p *Portal) adminIdentity(c echo.Context) (*identity, *identities.IdentityDetail, error) {
	id, err := strconv.ParseInt(c.Param("id"), 10, 64)
	if err != nil || id <= 0 {
		return nil, nil, echo.ErrNotFound
	}
	ctx := c.Request().Context()
	it, err := p.data.identityByID(ctx, id)
	if err != nil {
		return nil, nil, err
	}
	if it == nil {
		return nil, nil, echo.ErrNotFound
	}
	all, err := identities.FindIdentities(ctx, p.data.db, p.cfg, it.DirectoryID)
	if err != nil {
		return nil, nil, err
	}
	for i := range all {
		if all[i].ID == id {
			return it, &all[i], nil
		}
	}
	return nil, nil, echo.ErrNotFound
}

func (p *Portal) adminUser(c echo.Context) error {
	it, detail, err := p.adminIdentity(c)
	if err != nil {
		return err
	}
	return p.renderAdminUser(c, http.StatusOK, it, detail, pageData{Notice: adminNotices[c.QueryParam("done")]})
}

func (p *Portal) renderAdminUser(c echo.Context, status int, it *identity, detail *identities.IdentityDetail, d pageData) error {
	ctx := c.Request().Context()
	d.Title = it.Name()
	d.Detail = detail
	d.Refusal = it.Refusal()
	if it.UserKey != nil {
		creds, err := p.data.core.CredentialsWhere(ctx, p.data.q("user_key")+" = ?", it.UserKey)
		if err != nil {
			return err
		}
		d.Passkeys = p.passkeyViews(creds, nil)
		for i, cr := range creds {
			d.Passkeys[i].Revoked = cr.RevokedAt.Valid
		}
		pol, err := p.core.PasswordPolicy(ctx, it.UserKey)
		if err != nil {
			return err
		}
		if pol == "" {
			pol = "default" // NULL: the console's name for it
		}
		d.PasswordPolicy = pol
	}
	err := audit.Query(ctx, p.data.db, p.cfg, audit.Filter{User: it.Username, Limit: 20}, func(e audit.Event) error {
		d.Events = append(d.Events, e)
		return nil
	})
	if err != nil {
		return err
	}
	d.RecoveryLinks = p.cfg.Portal.Recovery.Link
	return p.render(c, status, "admin_user", d)
}

// adminIssueLink makes an enrollment or recovery link and shows it once.
func (p *Portal) adminIssueLink(c echo.Context) error {
	it, _, err := p.adminIdentity(c)
	if err != nil {
		return err
	}
	kind := c.FormValue("kind")
	if kind != LinkEnroll && kind != LinkRecovery {
		return &userError{Status: http.StatusBadRequest, Code: "bad_kind", Message: "kind must be enroll or recovery."}
	}
	var ttl time.Duration
	if s := c.FormValue("expires"); s != "" {
		if ttl, err = time.ParseDuration(s); err != nil {
			return &userError{Status: http.StatusBadRequest, Code: "bad_expiry", Message: "expires must be a duration such as 24h."}
		}
	}
	l, err := IssueLink(c.Request().Context(), p.data.db, p.cfg, it.DirectoryID, LinkOptions{Kind: kind, TTL: ttl, CreatedBy: actor(c)})
	if err != nil {
		return &userError{Status: http.StatusConflict, Code: "link", Message: err.Error()}
	}
	return p.render(c, http.StatusOK, "admin_issued", pageData{Title: "Link for " + it.Name(), Issued: l, IdentityID: it.ID})
}

// adminRevoke revokes one passkey; the sessions made with it end.
func (p *Portal) adminRevoke(c echo.Context) error {
	it, _, err := p.adminIdentity(c)
	if err != nil {
		return err
	}
	pid, err := strconv.ParseInt(c.Param("pid"), 10, 64)
	if err != nil || it.UserKey == nil {
		return echo.ErrNotFound
	}
	ctx := c.Request().Context()
	creds, err := p.data.activeCredentials(ctx, it.UserKey)
	if err != nil {
		return err
	}
	found := false
	for _, cr := range creds {
		found = found || cr.ID == pid
	}
	if !found {
		return &userError{Status: http.StatusNotFound, Code: "not_found", Message: "No such active passkey for this user."}
	}
	if err := p.data.revoke(ctx, it.UserKey, pid, "revoked by IT ("+actor(c)+")", ""); err != nil {
		return err
	}
	p.audit(c, event{Event: evAdminRevoke, Success: true, Actor: actor(c), Target: it.Username, Detail: map[string]any{"passkey_id": pid}})
	return c.Redirect(http.StatusSeeOther, fmt.Sprintf("/admin/users/%d?done=revoked", it.ID))
}

// adminRevokeAll revokes every passkey of the user.
func (p *Portal) adminRevokeAll(c echo.Context) error {
	it, _, err := p.adminIdentity(c)
	if err != nil {
		return err
	}
	if it.UserKey == nil {
		return echo.ErrNotFound
	}
	ctx := c.Request().Context()
	var n int
	err = p.data.db.InTx(ctx, func(tx *sqlx.Tx) error {
		var err error
		if n, err = p.data.revokeOthers(ctx, tx, it.UserKey, 0, "revoked by IT ("+actor(c)+")", ""); err != nil {
			return err
		}
		return p.data.setPasskeyState(ctx, tx, it.UserKey)
	})
	if err != nil {
		return err
	}
	p.audit(c, event{Event: evAdminRevokeAll, Success: true, Actor: actor(c), Target: it.Username, Detail: map[string]any{"revoked": n}})
	return c.Redirect(http.StatusSeeOther, fmt.Sprintf("/admin/users/%d?done=revokeda", it.ID))
}

// adminPolicy sets the users row's password fallback policy in the column
// the migration added, for the application to enforce.
func (p *Portal) adminPolicy(c echo.Context) error {
	it, _, err := p.adminIdentity(c)
	if err != nil {
		return err
	}
	if it.UserKey == nil {
		return &userError{Status: http.StatusConflict, Code: "unlinked", Message: "The identity is not linked to a users row: there is no row to set a policy on."}
	}
	var v any
	switch pol := c.FormValue("policy"); pol {
	case "default":
	case schema.PasswordAllowed, schema.PasswordRefusedWithPasskey, schema.PasswordPasskeyRequired:
		v = pol
	default:
		return &userError{Status: http.StatusBadRequest, Code: "bad_policy", Message: "policy must be default, allowed, refused_with_passkey or passkey_required."}
	}
	n := p.data.n
	if _, err := store.Exec(c.Request().Context(), p.data.db, "UPDATE "+n.Users+" SET "+n.PasswordPolicy+" = ? WHERE "+n.UserKey+" = ?", v, it.UserKey); err != nil {
		return err
	}
	p.audit(c, event{Event: evAdminPolicy, Success: true, Actor: actor(c), Target: it.Username, Detail: map[string]any{"policy": c.FormValue("policy")}})
	return c.Redirect(http.StatusSeeOther, fmt.Sprintf("/admin/users/%d?done=policy", it.ID))
}

// adminManualLink links an identity to a users row by hand.
func (p *Portal) adminManualLink(c echo.Context) error {
	it, detail, err := p.adminIdentity(c)
	if err != nil {
		return err
	}
	key := strings.TrimSpace(c.FormValue("user_key"))
	if key == "" || len(key) > 255 {
		return p.renderAdminUser(c, http.StatusBadRequest, it, detail, pageData{Error: "Give the key of the users row to link."})
	}
	if _, err := identities.LinkManually(c.Request().Context(), p.data.db, p.cfg, it.ID, key, actor(c)); err != nil {
		p.audit(c, event{Event: evAdminLink, Actor: actor(c), Target: it.Username, Detail: map[string]any{"user_key": key, "error": err.Error()}})
		return p.renderAdminUser(c, http.StatusConflict, it, detail, pageData{Error: err.Error()})
	}
	p.audit(c, event{Event: evAdminLink, Success: true, Actor: actor(c), Target: it.Username, Detail: map[string]any{"user_key": key, "was": it.LinkState}})
	return c.Redirect(http.StatusSeeOther, fmt.Sprintf("/admin/users/%d?done=linked", it.ID))
}

func (p *Portal) adminUnlink(c echo.Context) error {
	it, _, err := p.adminIdentity(c)
	if err != nil {
		return err
	}
	if err := identities.Unlink(c.Request().Context(), p.data.db, p.cfg, it.ID, actor(c)); err != nil {
		return &userError{Status: http.StatusConflict, Code: "unlink", Message: err.Error()}
	}
	p.audit(c, event{Event: evAdminUnlink, Success: true, Actor: actor(c), Target: it.Username})
	return c.Redirect(http.StatusSeeOther, fmt.Sprintf("/admin/users/%d?done=unlinked", it.ID))
}

func (p *Portal) adminSync(c echo.Context) error {
	d := pageData{Title: "Directory sync"}
	if p.sync == nil {
		d.Error = "The sync schedule is not available in this process."
		return p.render(c, http.StatusOK, "admin_sync", d)
	}
	var err error
	if d.Runs, err = p.sync.RecentRuns(c.Request().Context(), 50); err != nil {
		return err
	}
	sch := p.sync.ScheduleNow()
	d.Schedule = &sch
	return p.render(c, http.StatusOK, "admin_sync", d)
}

// adminSyncNow runs a sync (full or delta, optionally dry) and shows how it
// ended.
func (p *Portal) adminSyncNow(c echo.Context) error {
	if p.sync == nil {
		return &userError{Status: http.StatusServiceUnavailable, Code: "no_sync", Message: "The sync schedule is not available in this process."}
	}
	full, dry := c.FormValue("full") == "1", c.FormValue("dry_run") == "1"
	ctx, cancel := context.WithTimeout(c.Request().Context(), 50*time.Second)
	defer cancel()
	res, err := p.sync.SyncNow(ctx, full, dry)
	p.audit(c, event{Event: evAdminSync, Success: err == nil, Actor: actor(c), Target: "directory", Detail: map[string]any{"full": full, "dry_run": dry, "status": res.Status}})
	d := pageData{Title: "Directory sync", SyncResult: &res}
	switch {
	case errors.Is(err, dirsync.ErrBusy):
		d.Error = "A sync is already running (here or on another replica). Look again in a moment."
	case errors.Is(err, context.DeadlineExceeded):
		d.Notice = "The sync is still running; it will appear in the history when it is done."
	case err != nil:
		d.Error = "The sync did not succeed: " + err.Error()
	default:
		d.Notice = "The sync " + res.Status + "."
	}
	if d.Runs, err = p.sync.RecentRuns(c.Request().Context(), 50); err != nil {
		return err
	}
	sch := p.sync.ScheduleNow()
	d.Schedule = &sch
	return p.render(c, http.StatusOK, "admin_sync", d)
}

// auditFilter reads the console's audit filter from the query string.
func auditFilter(c echo.Context) (audit.Filter, *userError) {
	f := audit.Filter{Event: strings.TrimSpace(c.QueryParam("event")), User: strings.TrimSpace(c.QueryParam("user")), Limit: 200}
	if len(f.Event) > 64 || len(f.User) > 255 {
		return f, &userError{Status: http.StatusBadRequest, Code: "bad_filter", Message: "The filter is too long."}
	}
	if c.QueryParam("failed") == "1" {
		no := false
		f.Success = &no
	}
	for _, tc := range []struct {
		name string
		dst  *time.Time
	}{{"since", &f.Since}, {"until", &f.Until}} {
		if v := c.QueryParam(tc.name); v != "" {
			t, err := time.Parse("2006-01-02", v)
			if err != nil {
				return f, &userError{Status: http.StatusBadRequest, Code: "bad_filter", Message: tc.name + " must be a date such as 2026-12-01."}
			}
			if tc.name == "until" {
				t = t.Add(24 * time.Hour)
			}
			*tc.dst = t
		}
	}
	if v := c.QueryParam("before"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 1 {
			return f, &userError{Status: http.StatusBadRequest, Code: "bad_filter", Message: "before must be an event id."}
		}
		f.Before = n
	}
	return f, nil
}

func (p *Portal) adminAudit(c echo.Context) error {
	f, ue := auditFilter(c)
	if ue != nil {
		return ue
	}
	d := pageData{Title: "Audit trail", AuditFilter: &f, Query: c.QueryParam("user"), FailedOnly: c.QueryParam("failed") == "1",
		EventFilter: c.QueryParam("event"), Since: c.QueryParam("since"), Until: c.QueryParam("until"), ExportQuery: template.URL(c.QueryString())}
	err := audit.Query(c.Request().Context(), p.data.db, p.cfg, f, func(e audit.Event) error {
		d.Events = append(d.Events, e)
		return nil
	})
	if err != nil {
		return err
	}
	if len(d.Events) == f.Limit {
		d.OlderThan = d.Events[len(d.Events)-1].ID
	}
	return p.render(c, http.StatusOK, "admin_audit", d)
}

// adminAuditExport streams the filtered audit trail as CSV or JSON.
func (p *Portal) adminAuditExport(c echo.Context) error {
	f, ue := auditFilter(c)
	if ue != nil {
		return ue
	}
	f.Limit = 0
	format := c.QueryParam("format")
	ct := "text/csv; charset=utf-8"
	switch format {
	case "", "csv":
		format = "csv"
	case "json":
		ct = "application/json"
	default:
		return &userError{Status: http.StatusBadRequest, Code: "bad_format", Message: "format must be csv or json."}
	}
	p.audit(c, event{Event: evAdminExport, Success: true, Actor: actor(c), Target: "audit", Detail: map[string]any{"format": format, "event": f.Event, "user": f.User}})
	h := c.Response().Header()
	h.Set(echo.HeaderContentType, ct)
	h.Set(echo.HeaderContentDisposition, `attachment; filename="passbridge-audit-`+time.Now().UTC().Format("20060102-150405")+`.`+format+`"`)
	c.Response().WriteHeader(http.StatusOK)
	if _, err := audit.Export(c.Request().Context(), p.data.db, p.cfg, f, format, c.Response()); err != nil {
		p.log.Error("audit export broke off", "err", err)
	}
	return nil
}

// searchIdentities finds identities by a part of their username, email,
// display name or DN (case-insensitive), optionally of one link state.
func (s *data) searchIdentities(ctx context.Context, term, linkState string, limit int) ([]*identity, error) {
	q := s.q
	var where []string
	var args []any
	if term != "" {
		// "!" as the escape character: a backslash would meet MySQL's own
		// string escapes.
		like := "%" + strings.NewReplacer(`!`, `!!`, `%`, `!%`, `_`, `!_`).Replace(strings.ToLower(term)) + "%"
		var ors []string
		for _, col := range []string{"username", "email", "display_name", "dn"} {
			ors = append(ors, "LOWER("+q(col)+") LIKE ? ESCAPE '!'")
			args = append(args, like)
		}
		where = append(where, "("+strings.Join(ors, " OR ")+")")
	}
	if linkState != "" {
		where = append(where, q("link_state")+" = ?")
		args = append(args, linkState)
	}
	sql := s.core.SelectIdentities()
	if len(where) > 0 {
		sql += " WHERE " + strings.Join(where, " AND ")
	}
	sql += " ORDER BY " + q("username") + " LIMIT " + strconv.Itoa(limit)
	var out []*identity
	if err := store.Select(ctx, s.db, &out, sql, args...); err != nil {
		return nil, fmt.Errorf("search identities: %w", err)
	}
	for _, it := range out {
		it.UserKey = schema.NormKey(it.UserKey)
	}
	return out, nil
}

// countUnlinked counts the identities waiting for a decision: unmatched and
// ambiguous ones that are not deleted.
func (s *data) countUnlinked(ctx context.Context) (map[string]int, error) {
	q := s.q
	var rows []struct {
		State string `db:"link_state"`
		N     int    `db:"n"`
	}
	err := store.Select(ctx, s.db, &rows, "SELECT "+q("link_state")+", COUNT(*) AS n FROM "+s.n.Identities+" WHERE "+q("link_state")+" IN (?, ?) AND "+q("state")+" <> ? GROUP BY "+q("link_state"),
		schema.LinkUnmatched, schema.LinkAmbiguous, schema.StateDeleted)
	if err != nil {
		return nil, fmt.Errorf("count unlinked identities: %w", err)
	}
	out := map[string]int{schema.LinkUnmatched: 0, schema.LinkAmbiguous: 0}
	for _, r := range rows {
		out[r.State] = r.N
	}
	return out, nil
}
