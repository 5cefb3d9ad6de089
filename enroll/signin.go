package enroll

import (
	"cmp"
	"context"
	"errors"
	"net/http"
	"strings"
	"time"
	"unicode"

	"github.com/labstack/echo/v4"

	"github.com/passbridge/passbridge/campaign"
	"github.com/passbridge/passbridge/directory"
	"github.com/passbridge/passbridge/ratelimit"
)

// home is the portal's one address: the sign-in page when signed out, the
// passkeys page when signed in.
func (p *Portal) home(c echo.Context) error {
	s := currentSession(c)
	if s == nil {
		return p.render(c, http.StatusOK, "signin", pageData{Title: "Sign in", Notice: notices[c.QueryParam("done")], Recovery: p.recoveryPaths()})
	}
	if s.identity == nil {
		return c.Redirect(http.StatusSeeOther, "/admin")
	}
	return p.renderHome(c, s, http.StatusOK, pageData{Notice: notices[c.QueryParam("done")]})
}

// notices are the messages of ?done= after a redirect (post/redirect/get).
var notices = map[string]string{
	"signedout": "You are signed out.",
	"signedin":  "You are signed in.",
	"link":      "Welcome. Add a passkey now: next time you sign in with it, no password needed.",
	"added":     "Your passkey is ready. Next time, choose “Sign in with a passkey”.",
	"upgraded":  "Your password manager saved a passkey for this portal: next time, choose “Sign in with a passkey”, no password needed.",
	"renamed":   "The passkey was renamed.",
	"recovered": "You are signed in for a recovery. Add a new passkey now.",
	"deleted":   "The passkey was deleted. It no longer signs you in; you can also remove it from the device or password manager that holds it.",
}

func (p *Portal) renderHome(c echo.Context, s *session, status int, d pageData) error {
	creds, err := p.data.activeCredentials(c.Request().Context(), s.identity.UserKey)
	if err != nil {
		return err
	}
	d.Title = "Your passkeys"
	d.Passkeys = p.passkeyViews(creds, s)
	if d.Signals, err = p.signals(c.Request().Context(), s.identity, creds); err != nil {
		return err
	}
	d.CanAdd = len(creds) < p.policy.Max
	// Right after a password sign-in, someone without a passkey is
	// offered one at once, and the script tries the automatic upgrade.
	d.Upgrade = d.CanAdd && len(creds) == 0 && s.data.Method == methodPassword
	if !d.CanAdd {
		d.MaxNotice = "You have the most passkeys your company allows. Delete one to add another."
	}
	return p.render(c, status, "home", d)
}

// signInPassword checks the directory password, within the rate limits that
// keep the portal below the directory's lockout.
func (p *Portal) signInPassword(c echo.Context) error {
	username := strings.TrimSpace(c.FormValue("username"))
	found, uerr := p.checkPassword(c, username, c.FormValue("password"), methodPassword)
	if uerr != nil {
		return p.render(c, uerr.Status, "signin", pageData{Title: "Sign in", Error: uerr.Message, Username: username})
	}
	return p.signInIdentity(c, found.DirectoryID, methodPassword)
}

// The answers of checkPassword.
var (
	errWrongPassword = &userError{Status: http.StatusUnauthorized, Code: "credentials", Message: "That username and password did not work. Check them and try again."}
	errDirectoryDown = &userError{Status: http.StatusServiceUnavailable, Code: "directory", Message: "The company directory cannot be reached right now, so passwords cannot be checked. Try again in a few minutes, or sign in with a passkey."}
)

// checkPassword checks a directory password (for a sign-in or a recovery,
// method says which in the audit trail) within the password rate limits,
// and returns the directory entry. The same answer, with similar timing,
// for an unknown user, a disabled one and a wrong password.
func (p *Portal) checkPassword(c echo.Context, username, password, method string) (*directory.Identity, *userError) {
	a, ue := p.lookupAccount(c, username, password, method)
	if ue != nil {
		return nil, ue
	}
	return p.verifyPassword(c, a, password, method)
}

// account is a username as the directory resolved it with the service
// account, before any bind.
type account struct {
	typed string              // as the person typed it (trimmed)
	found *directory.Identity // the entry; nil for nobody (unknown, ambiguous, another domain)
	err   error               // why there is no usable entry (a credential error), nil if there is
	ip    string              // the client's address, as the address limits count it
}

// key is what every per-account limit counts: the directory's stable ID,
// so that every spelling the directory resolves to one account ("alice",
// "CORP\alice", "alice@corp.example", "ａｌｉｃｅ") shares one budget.
// Nobody is counted by the name as typed, lower-cased.
func (a *account) key() string {
	if a.found != nil {
		return "id:" + a.found.DirectoryID
	}
	return "name:" + strings.ToLower(a.typed)
}

// name names the account in the audit trail: its directory username when
// there is one, else what was typed.
func (a *account) name() string {
	if a.found != nil {
		return a.found.Username
	}
	return a.typed
}

var errInternal = &userError{Status: http.StatusInternalServerError, Code: "internal", Message: "Something went wrong on our side. Please try again in a moment."}

// lookupAccount checks the form, counts the attempt against the client
// address (portal.rate_limits.password_per_ip) and resolves the username
// in the directory. The lookup uses the service account: it counts
// towards nobody's lockout.
func (p *Portal) lookupAccount(c echo.Context, username, password, method string) (*account, *userError) {
	ctx := c.Request().Context()
	if username == "" || password == "" {
		return nil, &userError{Status: http.StatusBadRequest, Code: "missing", Message: "Enter your username and your password."}
	}
	if len(username) > 256 || len(password) > 1024 || strings.IndexFunc(username, unicode.IsControl) >= 0 {
		return nil, &userError{Status: http.StatusBadRequest, Code: "invalid", Message: "That username or password is too long or has characters that are not allowed."}
	}
	rl := p.cfg.Portal.RateLimits
	// An IPv6 client counts by its /64, an IPv4 one by its address.
	a := &account{typed: username, ip: ratelimit.Address(c.RealIP())}
	ok, err := p.limits.Hit(ctx, a.ip, rl.PasswordPerIP, rl.PasswordWindow.D())
	if err != nil {
		p.log.Error("password check failed", "err", err)
		return nil, errInternal
	}
	if !ok {
		p.audit(c, event{Event: evSignInLimited, Target: username, Detail: map[string]any{"method": method, "limit": "address"}})
		return nil, &userError{Status: http.StatusTooManyRequests, Code: "limited", Message: "Too many sign-in attempts from your network. Wait a few minutes and try again, or sign in with a passkey."}
	}
	a.found, a.err = p.dir.LookupUser(ctx, username)
	if a.err != nil && !isCredentialError(a.err) {
		_ = p.limits.Unhit(ctx, a.ip)
		p.log.Warn("directory unavailable for a password check", "err", a.err)
		return nil, errDirectoryDown
	}
	return a, nil
}

// verifyPassword checks the password of a looked-up account with a bind,
// within the per-account limit (portal.rate_limits.password_per_user).
func (p *Portal) verifyPassword(c echo.Context, a *account, password, method string) (*directory.Identity, *userError) {
	ctx := c.Request().Context()
	internal := func(err error) (*directory.Identity, *userError) {
		p.log.Error("password check failed", "err", err)
		return nil, errInternal
	}
	rl := p.cfg.Portal.RateLimits
	window := rl.PasswordWindow.D()
	sl, ok, retry, err := p.limits.Take(ctx, a.key(), rl.PasswordPerUser, window)
	if err != nil {
		return internal(err)
	}
	if !ok {
		p.audit(c, event{Event: evSignInLimited, Target: a.name(), Detail: map[string]any{"method": method, "limit": "account"}})
		wait := max(time.Until(retry).Round(time.Minute), time.Minute)
		return nil, &userError{Status: http.StatusTooManyRequests, Code: "limited", Message: "Too many password attempts for this account. To keep it from being locked in the directory, the portal allows " +
			plural(rl.PasswordPerUser, "attempt") + " every " + humanDuration(window) + ". Try again in about " + humanDuration(wait) + ", or ask IT for an enrollment link."}
	}

	var checkErr error
	if a.err == nil {
		checkErr = p.dir.CheckPassword(ctx, a.found.DN, password)
	} else {
		// Unknown, disabled or ambiguous: bind as a DN that does not
		// exist, so that the answer takes as long as a wrong password
		// and says the same. No account's lockout counter moves.
		_ = p.dir.CheckPassword(ctx, "cn=passbridge-no-such-user,"+p.cfg.Directory.BaseDN, password)
		checkErr = a.err
	}
	switch {
	case errors.Is(checkErr, directory.ErrPasswordExpired):
		_ = p.limits.GiveBack(ctx, sl)
		_ = p.limits.Unhit(ctx, a.ip)
		p.audit(c, event{Event: evSignInFailed, Target: a.name(), Detail: map[string]any{"method": method, "reason": "password expired"}})
		return nil, &userError{Status: http.StatusUnauthorized, Code: "expired", Message: "Your directory password has expired. Change it first (on a company computer, or wherever you usually change it), then come back here."}
	case checkErr != nil && isCredentialError(checkErr):
		reason := "wrong password"
		if a.err != nil {
			reason = strings.SplitN(a.err.Error(), ":", 2)[0]
		}
		p.audit(c, event{Event: evSignInFailed, Target: a.name(), Detail: map[string]any{"method": method, "reason": reason}})
		return nil, errWrongPassword
	case checkErr != nil:
		_ = p.limits.GiveBack(ctx, sl)
		_ = p.limits.Unhit(ctx, a.ip)
		p.log.Warn("directory unavailable for a password check", "err", checkErr)
		return nil, errDirectoryDown
	}
	// Right password: it used up nothing.
	if err := p.limits.GiveBack(ctx, sl); err != nil {
		return internal(err)
	}
	if err := p.limits.Unhit(ctx, a.ip); err != nil {
		return internal(err)
	}
	return a.found, nil
}

// signInIdentity opens a session for the stored identity of a directory
// entry, if it may use the portal.
func (p *Portal) signInIdentity(c echo.Context, directoryID, method string) error {
	ctx := c.Request().Context()
	it, err := p.data.identityByDirectoryID(ctx, directoryID)
	if err != nil {
		return err
	}
	if it == nil {
		return p.render(c, http.StatusForbidden, "signin", pageData{Title: "Sign in",
			Error: "Your account has not reached the passkey portal yet: it is added by the next directory sync, within a few minutes. Try again later, or contact IT."})
	}
	return p.openSession(c, it, sessionData{Method: method}, "/?done=signedin")
}

// openSession signs an identity in, if it may use the portal, and sends the
// browser to next.
func (p *Portal) openSession(c echo.Context, it *identity, sd sessionData, next string) error {
	if why := it.Refusal(); why != "" {
		p.audit(c, event{Event: evSignInFailed, Target: it.Username, Detail: map[string]any{"method": sd.Method, "reason": it.State + "/" + it.LinkState}})
		return &userError{Status: http.StatusForbidden, Code: "refused", Message: why}
	}
	sd.Admin = p.isAdmin(c.Request().Context(), it)
	if err := p.createSession(c, it, sd); err != nil {
		return err
	}
	p.audit(c, event{Event: evSignIn + sd.Method, Success: true, Actor: it.Username, Target: it.Username, Detail: map[string]any{"method": sd.Method}})
	return c.Redirect(http.StatusSeeOther, next)
}

// isCredentialError: the directory answered, and the answer is no.
func isCredentialError(err error) bool {
	return errors.Is(err, directory.ErrInvalidCredentials) || errors.Is(err, directory.ErrDisabled) || errors.Is(err, directory.ErrAmbiguousUser)
}

func (p *Portal) signOut(c echo.Context) error {
	s := currentSession(c)
	if s != nil {
		p.audit(c, event{Event: evSignOut, Success: true, Target: s.who()})
	}
	if err := p.endSession(c, s); err != nil {
		return err
	}
	return c.Redirect(http.StatusSeeOther, "/?done=signedout")
}

// useLinkCtx is how long a link redemption may take.
const useLinkCtx = 10 * time.Second

// showLink is the landing page of an enrollment link. Opening it changes
// nothing (mail scanners and link previews open links too): the employee
// uses it with the button, a POST.
func (p *Portal) showLink(c echo.Context) error {
	token := c.Param("token")
	l, it, err := p.linkIdentity(c, p.data.peekLink, token)
	if err != nil {
		return err
	}
	if why := it.Refusal(); why != "" {
		return &userError{Status: http.StatusForbidden, Code: "refused", Message: why}
	}
	if err := p.someoneElse(c, l, it); err != nil {
		return err
	}
	return p.render(c, http.StatusOK, "link", pageData{Title: "Add a passkey", Token: token, Kind: l.Kind, Expires: l.ExpiresAt,
		User: &userView{Name: it.Name(), Username: it.Username, Email: it.Email.String}})
}

var errLinkGone = &userError{Status: http.StatusGone, Code: "link_gone",
	Message: "This link is not valid: it has expired, was already used, or was replaced by a newer one. Ask IT for a new link."}

// useLink redeems an enrollment link (once) and signs its identity in.
func (p *Portal) useLink(c echo.Context) error {
	if l, it, err := p.linkIdentity(c, p.data.peekLink, c.Param("token")); err == nil {
		if err := p.someoneElse(c, l, it); err != nil {
			return err // before the claim: the link stays usable by its owner
		}
	}
	l, it, err := p.linkIdentity(c, p.data.claimLink, c.Param("token"))
	if err != nil {
		return err
	}
	p.audit(c, event{Event: evLinkUsed, Success: true, Actor: it.Username, Target: it.Username, Detail: map[string]any{"kind": l.Kind, "link_id": l.ID}})
	if l.Kind == LinkCampaign {
		if err := campaign.LinkUsed(c.Request().Context(), p.data.db, p.cfg, l.ID, p.data.now()); err != nil {
			p.log.Warn("cannot count the campaign link's use", "err", err)
		}
	}
	if l.Kind == LinkRecovery {
		if !p.cfg.Portal.Recovery.Link {
			return errLinkGone
		}
		return p.recovered(c, it, recoveryLink)
	}
	return p.openSession(c, it, sessionData{Method: methodLink}, "/?done=link")
}

// linkIdentity reads (peek) or uses up (claim) a link and its identity;
// errLinkGone when either is not there.
func (p *Portal) linkIdentity(c echo.Context, get func(context.Context, string) (*link, error), token string) (*link, *identity, error) {
	ctx, cancel := context.WithTimeout(c.Request().Context(), useLinkCtx)
	defer cancel()
	l, err := get(ctx, token)
	if err != nil || l == nil {
		return nil, nil, cmp.Or(err, error(errLinkGone))
	}
	it, err := p.data.identityByID(ctx, l.IdentityID)
	if err != nil || it == nil {
		return nil, nil, cmp.Or(err, error(errLinkGone))
	}
	return l, it, nil
}

func plural(n int, word string) string {
	if n == 1 {
		return "1 " + word
	}
	return itoa(n) + " " + word + "s"
}

func humanDuration(d time.Duration) string {
	switch {
	case d >= time.Hour && d%time.Hour == 0:
		return plural(int(d/time.Hour), "hour")
	case d >= time.Minute:
		return plural(int(d.Round(time.Minute)/time.Minute), "minute")
	}
	return plural(int(d.Round(time.Second)/time.Second), "second")
}

// isAdmin reports whether the identity may use the IT console: a member of
// portal.admin_group (nested membership counts), as the admin cache knows
// it (asked of the directory at most once per portal.admin_group_cache). A
// directory that cannot answer makes nobody an admin.
func (p *Portal) isAdmin(ctx context.Context, it *identity) bool {
	if p.cfg.Portal.AdminGroup == "" || it == nil {
		return false
	}
	ok, err := p.admins.member(ctx, p.cfg.Portal.AdminGroup, it.DN)
	if err != nil {
		p.log.Warn("cannot check membership of portal.admin_group; not an admin for this session", "user", it.Username, "err", err)
		return false
	}
	return ok
}
