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

var pageNames = []string{"signin", "home", "link", "confirm_delete", "error"}

func newViews(rpName string) (*views, error) {
	v := &views{rpName: rpName, pages: map[string]*template.Template{}}
	funcs := template.FuncMap{"when": formatTime}
	for _, name := range pageNames {
		t, err := template.New(name).Funcs(funcs).ParseFS(templateFS, "templates/layout.html", "templates/"+name+".html")
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

	// signin
	Username string
	// home
	Passkeys  []passkeyView
	MaxNotice string
	CanAdd    bool
	// link, confirm_delete
	Token   string
	Kind    string
	Passkey *passkeyView
	Expires time.Time
}

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
		d.User = &userView{Name: s.identity.Name(), Username: s.identity.Username, Email: s.identity.Email.String}
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
