package enroll

import (
	"bytes"
	"embed"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"path"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/passbridge/passbridge/audit"
	"github.com/passbridge/passbridge/campaign"
	"github.com/passbridge/passbridge/dirsync"
	"github.com/passbridge/passbridge/enroll/adoption"
	identities "github.com/passbridge/passbridge/identity"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// views are the portal's pages: each one the layout plus its own content
// template, parsed once at start.
type views struct {
	rpName string
	pages  map[string]*template.Template
}

var pageNames = []string{"signin", "home", "link", "confirm_delete", "error", "recover", "recover_code",
	"admin_home", "admin_users", "admin_user", "admin_issued", "admin_audit", "admin_sync", "admin_token",
	"admin_campaigns", "admin_campaign"}

func newViews(rpName string) (*views, error) {
	v := &views{rpName: rpName, pages: map[string]*template.Template{}}
	funcs := template.FuncMap{"when": formatTime, "pct": func(f float64) string { return fmt.Sprintf("%.0f %%", 100*f) },
		"secs": func(d time.Duration) string {
			if d == 0 {
				return "—"
			}
			return fmt.Sprintf("%.1f s", d.Seconds())
		}, "str": func(b []byte) string { return string(b) }, "percent": percent, "dur": longDuration}
	for _, name := range pageNames {
		t, err := template.New(name).Funcs(funcs).ParseFS(templateFS, "templates/layout.html", "templates/_*.html", "templates/"+name+".html")
		if err != nil {
			return nil, fmt.Errorf("portal templates: %w", err)
		}
		v.pages[name] = t
	}
	return v, nil
}

// pageData is what every page template gets.
type pageData struct {
	Title  string
	RPName string
	CSRF   string
	User   *userView
	Error  string
	Notice string

	// Admin: show the link to the IT console.
	Admin bool

	// signin, recover
	Username string
	Recovery *recoveryView
	// home
	Passkeys  []passkeyView
	MaxNotice string
	CanAdd    bool
	// Upgrade: signed in with the password, no passkey yet: offer one now
	// and try the automatic upgrade (conditional creation).
	Upgrade bool
	Signals *signalsView
	// link, confirm_delete
	Token   string
	Kind    string
	Passkey *passkeyView
	Expires time.Time

	// the IT console
	Adoption       *adoption.Report
	Chart          template.HTML
	FieldReport    fieldReport
	Unlinked       map[string]int
	Runs           []dirsync.RunRecord
	Schedule       *dirsync.Schedule
	SyncResult     *dirsync.SyncResponse
	Query          string
	LinkFilter     string
	Identities     []*identity
	Detail         *identities.IdentityDetail
	Refusal        string
	PasswordPolicy string
	RecoveryLinks  bool
	Events         []audit.Event
	Issued         *Link
	IdentityID     int64
	AuditFilter    *audit.Filter
	FailedOnly     bool
	EventFilter    string
	Since, Until   string
	ExportQuery    template.URL
	OlderThan      int64
	// enrollment campaigns
	Campaigns    []campaignRow
	CampaignForm *campaignForm
	Campaign     *campaign.Campaign
	Funnel       *campaign.Funnel
}

// fieldReport are the field report's figures, shown beside the measured
// ones (passkeys-in-the-enterprise: 12 s to create a passkey against 45 s
// for a password and 2FA; abandonment from 15 % down to under 5 %).
type fieldReport struct{}

func (fieldReport) PasskeySeconds() float64   { return adoption.FieldReport.PasskeyCreation.Seconds() }
func (fieldReport) PasswordSeconds() float64  { return adoption.FieldReport.PasswordAnd2FA.Seconds() }
func (fieldReport) AbandonPasswords() float64 { return 100 * adoption.FieldReport.AbandonmentPasswords }
func (fieldReport) AbandonPasskeys() float64  { return 100 * adoption.FieldReport.AbandonmentPasskeys }

type userView struct {
	Name     string
	Username string
	Email    string
}

type passkeyView struct {
	ID       int64
	Name     string
	Provider string
	Created  time.Time
	LastUsed *time.Time
	// Synced: the passkey is backed up to a cloud account (BackupState);
	// Syncable: it may be (BackupEligible) but is not yet.
	Synced, Syncable bool
	Current          bool // the passkey this session signed in with
	Revoked          bool // (console) revoked or deleted
}

// render writes a page with the common fields filled in.
func (p *Portal) render(c echo.Context, status int, name string, d pageData) error {
	t, ok := p.views.pages[name]
	if !ok {
		return fmt.Errorf("no page %q", name)
	}
	d.RPName = p.views.rpName
	if tok, ok := c.Get(ctxCSRF).(string); ok {
		d.CSRF = tok
	}
	if s := currentSession(c); s != nil && d.User == nil {
		if s.identity != nil {
			d.User = &userView{Name: s.identity.Name(), Username: s.identity.Username, Email: s.identity.Email.String}
		} else {
			d.User = &userView{Name: "IT admin (token)"}
		}
		d.Admin = s.data.Admin
	}
	var buf bytes.Buffer
	if err := t.ExecuteTemplate(&buf, "layout", d); err != nil {
		return fmt.Errorf("render %s: %w", name, err)
	}
	return c.HTMLBlob(status, buf.Bytes())
}

func formatTime(t any) string {
	switch v := t.(type) {
	case time.Time:
		if v.IsZero() {
			return ""
		}
		return v.UTC().Format("2 Jan 2006, 15:04 UTC")
	case *time.Time:
		if v == nil {
			return "never"
		}
		return formatTime(*v)
	}
	return ""
}

// static serves the embedded script, style sheet and images. They are
// versioned by the binary, so browsers may cache them for a day.
func (p *Portal) static(c echo.Context) error {
	name := path.Clean("/" + c.Param("*"))
	b, err := fs.ReadFile(staticFS, "static"+name)
	if err != nil || strings.HasSuffix(name, "/") {
		return echo.NewHTTPError(http.StatusNotFound)
	}
	ct := "application/octet-stream"
	switch path.Ext(name) {
	case ".js":
		ct = "text/javascript; charset=utf-8"
	case ".css":
		ct = "text/css; charset=utf-8"
	case ".svg":
		ct = "image/svg+xml"
	}
	c.Response().Header().Set("Cache-Control", "public, max-age=86400")
	return c.Blob(http.StatusOK, ct, b)
}
