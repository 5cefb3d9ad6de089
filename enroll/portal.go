// Package enroll is the employee portal: sign in with the directory
// password or a one-time link from IT, attach passkeys (WebAuthn, through
// go-webauthn) to the directory identity, manage them, and sign in with
// them. Everything it keeps between requests (sessions, ceremony state,
// rate-limit counters) is in the application database, so any replica can
// serve any request; the passkeys themselves are stored in the columns
// `passbridge migrate` added, complete enough for the application to verify
// a passkey login with any WebAuthn library.
//
// The portal is one Echo router surface mounted on the daemon's portal
// listener (agent.Options.Mount): server-rendered pages (html/template,
// embedded) that work without JavaScript, plus a small JSON API under
// /webauthn/ for the ceremonies, called by the embedded script.
package enroll

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"

	"github.com/passbridge/passbridge/agent/metrics"
	"github.com/passbridge/passbridge/audit"
	"github.com/passbridge/passbridge/config"
	"github.com/passbridge/passbridge/directory"
	"github.com/passbridge/passbridge/enroll/mail"
	"github.com/passbridge/passbridge/internal/httpjson"
	"github.com/passbridge/passbridge/internal/redact"
	"github.com/passbridge/passbridge/ratelimit"
	"github.com/passbridge/passbridge/signin"
	"github.com/passbridge/passbridge/store"
)

// Directory is what the portal asks of the directory: find a user in scope
// with the service account, and check a password with a bind.
// *directory.Client is the real one.
type Directory interface {
	LookupUser(ctx context.Context, username string) (*directory.Identity, error)
	CheckPassword(ctx context.Context, dn, password string) error
	// IsMember reports whether the entry is in the group, nested
	// membership counted (portal.admin_group).
	IsMember(ctx context.Context, userDN, groupDN string) (bool, error)
}

// Options are the portal's dependencies.
type Options struct {
	DB *store.DB
	// Directory checks passwords; nil builds a directory.Client from the
	// configuration.
	Directory Directory
	Log       *slog.Logger
	// Metrics receives ceremony counts; nil records nothing.
	Metrics *metrics.Metrics
	// Mail sends recovery codes and notices; nil builds it from the mail
	// section of the configuration (none when mail.host is empty).
	Mail mail.Sender
	// Core is the passkey sign-in core to share (with the application
	// sign-in); nil builds one.
	Core *signin.Core
}

// Portal is the employee portal of one configuration.
type Portal struct {
	cfg     *config.Config
	log     *slog.Logger
	metrics *metrics.Metrics
	core    *signin.Core
	data    *data
	dir     Directory
	limits  *ratelimit.Limiter
	admins  *adminCache
	views   *views
	policy  signin.Policy
	// secure: the portal is reached over HTTPS (cookies get Secure).
	secure  bool
	csrf    echo.MiddlewareFunc
	baseURL string
	mail    mail.Sender // nil: no mail configured
	sync    SyncControl // nil until SetSync
	// campaigns is the daemon's campaign engine (nil until SetCampaigns):
	// the console wakes it when IT creates or resumes a campaign.
	campaigns Waker
}

// Waker is what the console asks of the campaign engine: look for work
// now. *campaign.Engine is the real one.
type Waker interface{ Wake() }

// SetCampaigns gives the console the daemon's campaign engine.
func (p *Portal) SetCampaigns(w Waker) { p.campaigns = w }

// ErrNotConfigured means portal.rp_id and portal.origins are not set: the
// daemon then runs without the portal.
var ErrNotConfigured = signin.ErrNotConfigured

// New builds the portal. It checks the relying party (RP ID and origins)
// now, so that a wrong one stops the daemon at start instead of failing the
// first employee's enrollment.
func New(cfg *config.Config, opts Options) (*Portal, error) {
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	core := opts.Core
	if core == nil {
		var err error
		if core, err = signin.New(cfg, opts.DB, signin.Options{Log: opts.Log, Metrics: opts.Metrics, OnRecord: onRecord}); err != nil {
			return nil, err
		}
	}
	dir := opts.Directory
	if dir == nil {
		c, err := directory.NewClient(cfg.Directory, opts.Log.With("subsystem", "directory"))
		if err != nil {
			return nil, fmt.Errorf("portal: %w", err)
		}
		dir = c
	}
	v, err := newViews(cfg.Portal.RPName)
	if err != nil {
		return nil, err
	}
	p := &Portal{
		cfg: cfg, log: opts.Log, metrics: opts.Metrics, core: core, data: newData(core, opts.DB, cfg), dir: dir,
		views: v, policy: core.Policy(), secure: allHTTPS(cfg.Portal.Origins),
	}
	p.limits = ratelimit.New(opts.DB, p.data.n)
	p.admins = newAdminCache(dir, func() time.Duration { return p.cfg.Portal.AdminGroupCache.D() })
	p.mail = opts.Mail
	if p.mail == nil && cfg.Mail.Host != "" {
		if p.mail, err = mail.New(cfg.Mail, opts.Log.With("subsystem", "mail")); err != nil {
			return nil, fmt.Errorf("portal: mail: %w", err)
		}
	}
	p.baseURL = strings.TrimRight(cfg.Portal.PublicURL, "/")
	if p.baseURL == "" {
		p.baseURL = strings.TrimRight(cfg.Portal.Origins[0], "/")
	}
	p.csrf = middleware.CSRFWithConfig(middleware.CSRFConfig{
		TokenLookup:    "header:" + csrfHeader + ",form:" + csrfField,
		CookieName:     "pb_csrf",
		CookiePath:     "/",
		CookieHTTPOnly: true,
		CookieSecure:   p.secure,
		CookieSameSite: http.SameSiteStrictMode,
		CookieMaxAge:   int((24 * time.Hour).Seconds()),
		ContextKey:     ctxCSRF,
		// Every CSRF refusal is a 403 that says what to do, whether the
		// token is missing or wrong.
		ErrorHandler: func(err error, c echo.Context) error {
			return &userError{Status: http.StatusForbidden, Code: "csrf",
				Message: "This form has expired or did not come from this portal. Reload the page and try again."}
		},
	})
	return p, nil
}

// BaseURL is the address employees open (portal.public_url, else the first
// origin), without a trailing slash.
func (p *Portal) BaseURL() string { return p.baseURL }

// allHTTPS reports whether every origin is HTTPS (then cookies are Secure;
// plain HTTP is only accepted on localhost, see config).
func allHTTPS(origins []string) bool {
	for _, o := range origins {
		if u, err := url.Parse(o); err != nil || u.Scheme != "https" {
			return false
		}
	}
	return true
}

// CSRF token transport: a header for the script's JSON calls, a hidden
// field for forms.
const (
	csrfHeader = "X-CSRF-Token"
	csrfField  = "_csrf"
	ctxCSRF    = "csrf"
)

// Mount adds the portal's routes to the portal listener's router.
func (p *Portal) Mount(e *echo.Echo) {
	if len(p.cfg.Portal.TrustedProxies) > 0 {
		var trust []echo.TrustOption
		for _, c := range p.cfg.Portal.TrustedProxies {
			if !strings.Contains(c, "/") {
				if ip := net.ParseIP(c); ip != nil && ip.To4() != nil {
					c += "/32"
				} else {
					c += "/128"
				}
			}
			if _, n, err := net.ParseCIDR(c); err == nil {
				trust = append(trust, echo.TrustIPRange(n))
			}
		}
		// Only these proxies are believed; loopback and private ranges
		// are not trusted by default.
		trust = append(trust, echo.TrustLoopback(false), echo.TrustLinkLocal(false), echo.TrustPrivateNet(false))
		e.IPExtractor = echo.ExtractIPFromXFFHeader(trust...)
	} else {
		e.IPExtractor = echo.ExtractIPDirect()
	}
	// A page address typed with a trailing slash (/admin/) goes to the page:
	// GET and HEAD only, since a redirected form post would lose its body.
	e.Pre(middleware.RemoveTrailingSlashWithConfig(middleware.TrailingSlashConfig{
		RedirectCode: http.StatusMovedPermanently,
		Skipper: func(c echo.Context) bool {
			m := c.Request().Method
			return m != http.MethodGet && m != http.MethodHead
		},
	}))
	// limitBody comes before csrf: the CSRF check reads the form.
	page := []echo.MiddlewareFunc{p.headers, limitBody, p.csrf, p.withSession}
	signedIn := append(append([]echo.MiddlewareFunc{}, page...), requireSession)
	// The sign-in ceremonies need no session: they make one.
	anonAPI := []echo.MiddlewareFunc{p.headers, limitBody, p.csrf, p.noStore}
	api := append(append([]echo.MiddlewareFunc{}, page...), p.noStore)

	e.GET("/", p.home, page...)
	e.POST("/signin/password", p.signInPassword, page...)
	e.POST("/signout", p.signOut, page...)
	e.GET("/link/:token", p.showLink, page...)
	e.POST("/link/:token", p.useLink, page...)
	e.POST("/passkeys/:id/rename", p.rename, signedIn...)
	e.POST("/passkeys/:id/delete", p.delete, signedIn...)

	e.POST("/webauthn/login/begin", p.loginBegin, anonAPI...)
	e.POST("/webauthn/login/finish", p.loginFinish, anonAPI...)
	e.POST("/webauthn/register/begin", p.registerBegin, append(api, requireSession)...)
	e.POST("/webauthn/register/finish", p.registerFinish, append(api, requireSession)...)
	e.POST("/webauthn/cancel", p.cancel, anonAPI...)

	e.GET("/recover", p.showRecover, page...)
	e.POST("/recover/email", p.recoverEmail, page...)
	e.POST("/recover/code", p.recoverCode, page...)
	e.POST("/recover/totp", p.recoverTOTP, page...)

	p.mountAdmin(e, page)

	e.GET("/static/*", p.static, p.headers)
	e.GET("/.well-known/webauthn", p.relatedOrigins)
}

// relatedOrigins is the WebAuthn related origins document: the origins
// outside the RP ID's domain (portal.related_origins) whose pages may use
// its passkeys. Browsers fetch it from https://<rp_id>/.well-known/webauthn,
// so the portal must answer on the RP ID's own host for it to count.
func (p *Portal) relatedOrigins(c echo.Context) error {
	if len(p.cfg.Portal.RelatedOrigins) == 0 {
		return echo.NewHTTPError(http.StatusNotFound)
	}
	c.Response().Header().Set("Cache-Control", "max-age=300")
	return c.JSON(http.StatusOK, map[string]any{"origins": p.cfg.Portal.RelatedOrigins})
}

// PageHeaders sets the security headers of a passbridge page (the portal's,
// the OpenID Connect login page): a CSP that allows no inline script and no
// framing, no referrer, no MIME sniffing, and HSTS over HTTPS.
func PageHeaders(h http.Header, secure bool) {
	h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cross-Origin-Opener-Policy", "same-origin")
	h.Set("Permissions-Policy", "publickey-credentials-get=(self), publickey-credentials-create=(self), camera=(), microphone=(), geolocation=()")
	if secure {
		h.Set("Strict-Transport-Security", "max-age=31536000")
	}
}

// headers are the security headers of every portal response (PageHeaders:
// no referrer matters here, enrollment links carry a secret in the path),
// and no-store on everything but the static files.
func (p *Portal) headers(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		h := c.Response().Header()
		PageHeaders(h, p.secure)
		if !strings.HasPrefix(c.Request().URL.Path, "/static/") {
			h.Set("Cache-Control", "no-store")
		}
		return next(c)
	}
}

// limitBody bounds every request body of the portal to maxBody bytes and
// reads forms at once under that bound: without it, the first FormValue
// (the CSRF check's) would read up to 10 MB of a urlencoded body into
// memory and spool a multipart one of any size to disk. An oversized body
// is a 413, a form that does not parse a 400. JSON bodies are decoded by
// bindJSON, under the same bound.
func limitBody(next echo.HandlerFunc) echo.HandlerFunc {
	tooLarge := &userError{Status: http.StatusRequestEntityTooLarge, Code: "too_large", Message: fmt.Sprintf("The request is larger than %d bytes.", maxBody)}
	return func(c echo.Context) error {
		r := c.Request()
		if r.Body == nil || r.Body == http.NoBody {
			return next(c)
		}
		if r.ContentLength > maxBody && !isAPI(r.URL.Path) {
			return tooLarge
		}
		r.Body = http.MaxBytesReader(c.Response(), r.Body, maxBody)
		ct := strings.ToLower(r.Header.Get(echo.HeaderContentType))
		var err error
		switch {
		case strings.HasPrefix(ct, echo.MIMEApplicationForm):
			err = r.ParseForm()
		case strings.HasPrefix(ct, echo.MIMEMultipartForm):
			err = r.ParseMultipartForm(maxBody)
		}
		if err != nil {
			var mbe *http.MaxBytesError
			if errors.As(err, &mbe) {
				return tooLarge
			}
			return &userError{Status: http.StatusBadRequest, Code: "malformed", Message: "The form could not be read: " + err.Error()}
		}
		return next(c)
	}
}

func (p *Portal) noStore(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		c.Response().Header().Set("Cache-Control", "no-store")
		return next(c)
	}
}

// isAPI reports whether a path is the portal's JSON API (errors as JSON).
func isAPI(path string) bool { return strings.HasPrefix(path, "/webauthn/") }

// userError is an error meant for the person using the portal: its
// message is shown as it is, its code lets the script react. It is the
// error of every passbridge JSON surface (internal/httpjson).
type userError = httpjson.Error

// ErrorHandler renders the portal's errors: JSON under /webauthn/, an HTML
// page elsewhere. A 500 never shows its cause (it is logged).
func (p *Portal) ErrorHandler() echo.HTTPErrorHandler {
	return func(err error, c echo.Context) {
		if c.Response().Committed {
			return
		}
		status, code, msg := http.StatusInternalServerError, "internal", "Something went wrong on our side. Please try again in a moment; if it keeps happening, contact IT."
		var ue *userError
		var he *echo.HTTPError
		switch {
		case errors.As(err, &ue):
			status, code, msg = ue.Status, ue.Code, ue.Message
		case errors.As(err, &he) && he.Code < 500:
			status, code = he.Code, httpjson.CodeFor(he.Code)
			msg = http.StatusText(he.Code)
			if s, ok := he.Message.(string); ok && s != "" {
				msg = s
			}
			if he.Code == http.StatusNotFound {
				msg = "There is no such page here."
			}
		}
		if status >= 500 {
			p.log.Error("portal request failed", "method", c.Request().Method, "path", redact.Secrets(c.Request().URL.Path), "err", redact.Secrets(err.Error()))
		}
		var werr error
		switch {
		case c.Request().Method == http.MethodHead:
			werr = c.NoContent(status)
		case isAPI(c.Request().URL.Path):
			werr = c.JSON(status, httpjson.Body{Status: status, Code: code, Error: msg})
		default:
			werr = p.render(c, status, "error", pageData{Title: http.StatusText(status), Error: msg})
		}
		if werr != nil {
			p.log.Debug("cannot write the error response", "err", werr)
		}
	}
}

// Janitor deletes what has expired, every interval until ctx ends:
// sessions, rate-limit slots, and enrollment links, ceremonies and audit
// beyond their retention. Every replica may run it: the deletes are
// idempotent.
func (p *Portal) Janitor(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		if err := p.sweep(ctx); err != nil && ctx.Err() == nil {
			p.log.Warn("portal cleanup failed; will retry", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// ceremonyRetention is how long finished and abandoned ceremonies are kept
// for the adoption figures.
const ceremonyRetention = 90 * 24 * time.Hour

func (p *Portal) sweep(ctx context.Context) error {
	now := p.data.now()
	q := p.data.q
	for _, st := range []struct {
		table, col string
		before     time.Time
	}{
		{p.data.n.Sessions, "expires_at", now},
		{p.data.n.RateLimits, "window_start", now.Add(-24 * time.Hour)},
		{p.data.n.Tokens, "expires_at", now.Add(-30 * 24 * time.Hour)},
		{p.data.n.Ceremonies, "created_at", now.Add(-ceremonyRetention)},
	} {
		if _, err := store.Exec(ctx, p.data.db, "DELETE FROM "+st.table+" WHERE "+q(st.col)+" < ?", st.before); err != nil {
			return fmt.Errorf("clean up %s: %w", st.table, err)
		}
	}
	// The audit trail beyond audit.retention.
	if n, err := audit.Prune(ctx, p.data.db, p.cfg, now); err != nil {
		return fmt.Errorf("prune the audit trail: %w", err)
	} else if n > 0 {
		p.log.Info("audit trail pruned", "deleted", n, "retention", p.cfg.Audit.Retention)
	}
	return nil
}
