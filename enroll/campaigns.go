package enroll

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/passbridge/passbridge/campaign"
	"github.com/passbridge/passbridge/enroll/adoption"
)

// The console's enrollment campaigns (package campaign): the list with
// each funnel, a form to create one, a campaign's page with its funnel
// chart, the effect of each reminder, and pause, resume, cancel. The same
// code paths as `passbridge campaign`; the daemon's engine sends.

func (p *Portal) mountCampaigns(e *echo.Echo, admin []echo.MiddlewareFunc) {
	e.GET("/admin/campaigns", p.adminCampaigns, admin...)
	e.POST("/admin/campaigns", p.adminCreateCampaign, admin...)
	e.GET("/admin/campaigns/:id", p.adminCampaign, admin...)
	e.POST("/admin/campaigns/:id/:action", p.adminCampaignAction, admin...)
}

// campaignRow is a campaign with its funnel, for the list.
type campaignRow struct {
	Campaign *campaign.Campaign
	Funnel   *campaign.Funnel
}

// campaignForm is the create form as typed, kept on an error.
type campaignForm struct {
	Name, Kind, Target, Start, Deadline, Reminders, Company, Subject, Text, HTML, Grace string
	Enforce                                                                             bool
}

func (p *Portal) adminCampaigns(c echo.Context) error {
	return p.renderCampaigns(c, http.StatusOK, pageData{Notice: adminNotices[c.QueryParam("done")],
		CampaignForm: &campaignForm{Kind: campaign.TargetGroup, Reminders: "3d, 7d"}})
}

func (p *Portal) renderCampaigns(c echo.Context, status int, d pageData) error {
	ctx := c.Request().Context()
	cs, err := campaign.List(ctx, p.data.db, p.cfg)
	if err != nil {
		return err
	}
	for i := len(cs) - 1; i >= 0; i-- { // newest first
		f, err := campaign.ComputeFunnel(ctx, p.data.db, p.cfg, cs[i])
		if err != nil {
			return err
		}
		d.Campaigns = append(d.Campaigns, campaignRow{Campaign: cs[i], Funnel: f})
	}
	d.Title = "Enrollment campaigns"
	return p.render(c, status, "admin_campaigns", d)
}

func (p *Portal) adminCreateCampaign(c echo.Context) error {
	f := &campaignForm{
		Name: strings.TrimSpace(c.FormValue("name")), Kind: c.FormValue("kind"), Target: strings.TrimSpace(c.FormValue("target")),
		Start: strings.TrimSpace(c.FormValue("start")), Deadline: strings.TrimSpace(c.FormValue("deadline")), Reminders: c.FormValue("reminders"),
		Company: c.FormValue("company"), Subject: c.FormValue("subject"), Text: c.FormValue("text"), HTML: c.FormValue("html"),
		Grace: c.FormValue("grace"), Enforce: c.FormValue("enforce") == "1",
	}
	again := func(err error) error {
		return p.renderCampaigns(c, http.StatusBadRequest, pageData{Error: err.Error(), CampaignForm: f})
	}
	now := time.Now()
	sp := campaign.Spec{Name: f.Name, Target: campaign.Target{Kind: f.Kind}, Enforce: f.Enforce, Grace: []string{f.Grace},
		Template: campaign.Template{Company: f.Company, Subject: f.Subject, Text: f.Text, HTML: f.HTML}}
	switch f.Kind {
	case campaign.TargetUsers:
		sp.Target.Users = []string{f.Target}
	case campaign.TargetGroup, campaign.TargetOU:
		sp.Target.DN = f.Target
	default:
		return again(errors.New("choose a group, an OU or a list of users"))
	}
	for _, r := range strings.Split(f.Reminders, ",") {
		if r = strings.TrimSpace(r); r != "" {
			sp.Reminders = append(sp.Reminders, r)
		}
	}
	var err error
	if f.Start != "" {
		if sp.StartsAt, err = campaign.ParseWhen(f.Start, now, false); err != nil {
			return again(fmt.Errorf("start: %w", err))
		}
	}
	if f.Deadline != "" {
		d, err := campaign.ParseWhen(f.Deadline, now, true)
		if err != nil {
			return again(fmt.Errorf("deadline: %w", err))
		}
		sp.Deadline = &d
	}
	cp, err := campaign.Create(c.Request().Context(), p.data.db, p.cfg, sp, actor(c))
	if err != nil {
		return again(err)
	}
	if p.campaigns != nil {
		p.campaigns.Wake()
	}
	return c.Redirect(http.StatusSeeOther, fmt.Sprintf("/admin/campaigns/%d?done=campaign", cp.ID))
}

// adminCampaignPage finds the :id campaign; 404 for an id that is none.
func (p *Portal) adminCampaignPage(c echo.Context) (*campaign.Campaign, error) {
	id := c.Param("id")
	if id == "" || strings.TrimLeft(id, "0123456789") != "" {
		return nil, echo.ErrNotFound
	}
	cp, err := campaign.Get(c.Request().Context(), p.data.db, p.cfg, id)
	if errors.Is(err, campaign.ErrNotFound) {
		return nil, echo.ErrNotFound
	}
	return cp, err
}

func (p *Portal) adminCampaign(c echo.Context) error {
	cp, err := p.adminCampaignPage(c)
	if err != nil {
		return err
	}
	return p.renderCampaign(c, http.StatusOK, cp, pageData{Notice: adminNotices[c.QueryParam("done")]})
}

func (p *Portal) renderCampaign(c echo.Context, status int, cp *campaign.Campaign, d pageData) error {
	f, err := campaign.ComputeFunnel(c.Request().Context(), p.data.db, p.cfg, cp)
	if err != nil {
		return err
	}
	d.Title = "Campaign " + cp.Name
	d.Campaign, d.Funnel = cp, f
	d.Chart = adoption.BarChart("Campaign "+cp.Name+": how far its people got", []adoption.Bar{
		{Label: "selected", Value: f.Recipients}, {Label: "invited", Value: f.Invited}, {Label: "mail delivered", Value: f.Delivered},
		{Label: "bounced or failed", Value: f.Bounced + f.Failed}, {Label: "link opened", Value: f.Opened},
		{Label: "ceremony begun", Value: f.Began}, {Label: "passkey added", Value: f.Enrolled}, {Label: "dropped", Value: f.Dropped},
	}, 720)
	return p.render(c, status, "admin_campaign", d)
}

// adminCampaignAction pauses, resumes or cancels a campaign.
func (p *Portal) adminCampaignAction(c echo.Context) error {
	cp, err := p.adminCampaignPage(c)
	if err != nil {
		return err
	}
	action := c.Param("action")
	switch action {
	case campaign.ActionPause, campaign.ActionResume, campaign.ActionCancel:
	default:
		return echo.ErrNotFound
	}
	next, err := campaign.SetState(c.Request().Context(), p.data.db, p.cfg, fmt.Sprint(cp.ID), action, actor(c))
	if err != nil {
		return p.renderCampaign(c, http.StatusConflict, cp, pageData{Error: err.Error()})
	}
	if action == campaign.ActionResume && p.campaigns != nil {
		p.campaigns.Wake()
	}
	return c.Redirect(http.StatusSeeOther, fmt.Sprintf("/admin/campaigns/%d?done=campaign_%s", next.ID, action))
}

// percent is n of total, for the templates ("—" without a total).
func percent(n, total int) string {
	if total == 0 {
		return "—"
	}
	return fmt.Sprintf("%.0f %%", 100*float64(n)/float64(total))
}

// longDuration says a span of minutes to weeks in words: "—" for none,
// "45 s", "12 min", "5.5 h", "3.2 days".
func longDuration(d time.Duration) string {
	switch {
	case d <= 0:
		return "—"
	case d < time.Minute:
		return fmt.Sprintf("%.0f s", d.Seconds())
	case d < time.Hour:
		return fmt.Sprintf("%.0f min", d.Minutes())
	case d < 48*time.Hour:
		return fmt.Sprintf("%.1f h", d.Hours())
	}
	return fmt.Sprintf("%.1f days", d.Hours()/24)
}
