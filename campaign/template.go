package campaign

import (
	"bytes"
	"errors"
	"fmt"
	htmltemplate "html/template"
	"strings"
	"text/template"
	"time"
)

// Fields are what a campaign's templates can show.
type Fields struct {
	Name     string // the person's display name (else the username)
	Username string
	Email    string
	Company  string // the template's company, else portal.rp_name
	Link     string // the personal one-time enrollment link
	Expires  string // when the link stops working, "Mon 2 Jan 2006 15:04 UTC"
	Deadline string // the campaign's deadline in the same format, "" without one
	Reminder bool   // the mail is a reminder, not the invitation
}

// The default mail, in plain words: what a passkey is, what to do, until
// when, and that IT never asks for a password by mail.
const (
	DefaultSubject = `{{if .Reminder}}Reminder: {{end}}Add a passkey to your {{.Company}} account`
	DefaultText    = `Hello {{.Name}},

{{.Company}} is moving sign-in to passkeys: instead of typing your password,
you unlock a key kept on your phone or computer with your fingerprint, face
or PIN. It takes about a minute, and passkeys cannot be phished.

Open this personal link and choose "Add a passkey":

  {{.Link}}

The link works once, for you only, until {{.Expires}}.{{if .Deadline}}
Please add your passkey before {{.Deadline}}.{{end}}

IT will never ask you for your password by mail. If you did not expect this
message, tell IT.
`
	DefaultHTML = `<!doctype html>
<html lang="en"><body style="font-family: system-ui, -apple-system, 'Segoe UI', Roboto, Arial, sans-serif; color: #1f2328; line-height: 1.5">
<p>Hello {{.Name}},</p>
<p>{{.Company}} is moving sign-in to passkeys: instead of typing your password, you unlock a key kept on your phone or computer with your fingerprint, face or PIN. It takes about a minute, and passkeys cannot be phished.</p>
<p><a href="{{.Link}}" style="display: inline-block; padding: 10px 18px; background: #0a4f9e; color: #ffffff; text-decoration: none; border-radius: 6px">Add a passkey</a></p>
<p>The link works once, for you only, until {{.Expires}}.{{if .Deadline}} Please add your passkey before {{.Deadline}}.{{end}}</p>
<p style="color: #57606a">IT will never ask you for your password by mail. If you did not expect this message, tell IT.</p>
</body></html>
`
)

func (t Template) withDefaults() Template {
	if strings.TrimSpace(t.Subject) == "" {
		t.Subject = DefaultSubject
	}
	if strings.TrimSpace(t.Text) == "" {
		t.Text = DefaultText
		if strings.TrimSpace(t.HTML) == "" {
			t.HTML = DefaultHTML
		}
	}
	return t
}

// sample are the fields a template is tried with when a campaign is made.
var sample = Fields{Name: "Zoë Ørsted", Username: "zoe.orsted", Email: "zoe.orsted@corp.example", Company: "Northwind",
	Link: "https://passkeys.corp.example/link/sample", Expires: "Mon 2 Jan 2006 15:04 UTC", Deadline: "Fri 6 Jan 2006 18:00 UTC"}

// check parses the templates and renders them once, so that a mistake is
// found when IT makes the campaign rather than at the first send.
func (t Template) check() error {
	if !strings.Contains(t.Text, "{{.Link}}") {
		return errors.New("the text template must show the link: {{.Link}}")
	}
	if t.HTML != "" && !strings.Contains(t.HTML, "{{.Link}}") {
		return errors.New("the HTML template must show the link: {{.Link}}")
	}
	if _, err := t.render(sample); err != nil {
		return err
	}
	return nil
}

// rendered is one person's mail.
type rendered struct{ Subject, Text, HTML string }

func (t Template) render(f Fields) (rendered, error) {
	var r rendered
	var err error
	if r.Subject, err = execText("subject", t.Subject, f); err != nil {
		return r, err
	}
	r.Subject = strings.Join(strings.Fields(r.Subject), " ")
	if r.Text, err = execText("text", t.Text, f); err != nil {
		return r, err
	}
	if t.HTML != "" {
		ht, err := htmltemplate.New("html").Option("missingkey=error").Parse(t.HTML)
		if err != nil {
			return r, fmt.Errorf("the HTML template: %w", err)
		}
		var b bytes.Buffer
		if err := ht.Execute(&b, f); err != nil {
			return r, fmt.Errorf("the HTML template: %w", err)
		}
		r.HTML = b.String()
	}
	return r, nil
}

func execText(name, src string, f Fields) (string, error) {
	tt, err := template.New(name).Option("missingkey=error").Parse(src)
	if err != nil {
		return "", fmt.Errorf("the %s template: %w", name, err)
	}
	var b bytes.Buffer
	if err := tt.Execute(&b, f); err != nil {
		return "", fmt.Errorf("the %s template: %w", name, err)
	}
	return b.String(), nil
}

// when formats a time for a mail.
func when(t time.Time) string { return t.UTC().Format("Mon 2 Jan 2006 15:04 UTC") }
