package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/passbridge/passbridge/campaign"
	"github.com/passbridge/passbridge/config"
	"github.com/passbridge/passbridge/store"
)

func newCampaignCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "campaign",
		Short: "Enrollment campaigns: invite a group, an OU or a list of users to add a passkey",
		Long: `Enrollment campaigns invite the people of a directory group (nested
membership counts), of an OU or of a list of usernames who have no passkey yet,
each by mail with a personal one-time link, remind those who have not enrolled,
and at the deadline may switch their password fallback to "passkey required".

The daemon (passbridge run) sends: one replica at a time, at most
campaign.per_minute messages a minute, never the same step twice to a person.
These commands create and steer campaigns in the database.`,
	}
	cmd.AddCommand(newCampaignCreateCmd(g), newCampaignListCmd(g), newCampaignShowCmd(g))
	for _, a := range []struct{ action, short string }{
		{campaign.ActionPause, "Pause a campaign: nothing is sent and nobody is added until it is resumed"},
		{campaign.ActionResume, "Resume a paused campaign"},
		{campaign.ActionCancel, "Cancel a campaign for good: its queued mail is cancelled and its links expire"},
	} {
		cmd.AddCommand(&cobra.Command{
			Use:   a.action + " NAME",
			Short: a.short,
			Args:  cobra.ExactArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				cfg, _, db, err := g.openApp(cmd.Context(), cmd.ErrOrStderr(), config.ForCampaign)
				if err != nil {
					return err
				}
				defer db.Close()
				c, err := campaign.SetState(cmd.Context(), db, cfg, args[0], a.action, "cli:"+operator())
				if err != nil {
					return err
				}
				return g.printData(cmd.OutOrStdout(), c, func(w io.Writer) error {
					_, err := fmt.Fprintf(w, "campaign %s is %s\n", c.Name, c.State)
					return err
				})
			},
		})
	}
	return cmd
}

type campaignCreateFlags struct {
	group, ou, users   string
	start, deadline    string
	remind             []string
	company, subject   string
	textFile, htmlFile string
	enforce            bool
	grace              string
}

func newCampaignCreateCmd(g *globals) *cobra.Command {
	f := &campaignCreateFlags{}
	cmd := &cobra.Command{
		Use:   "create NAME (--group DN | --ou DN | --users a,b,c) [--deadline T] [--remind 3d,7d,deadline-1d]",
		Short: "Create a campaign; the daemon starts inviting at its start",
		Long: `Create an enrollment campaign. Exactly one target:

  --group DN    members of a directory group, nested membership counted
  --ou DN       every synced identity whose DN is under the OU
  --users LIST  these usernames (comma-separated; each must be a synced identity)

Only people the portal accepts (active in the directory, linked to a users row,
with a mail address) who have no passkey are invited; people who join the
target later are invited when the daemon next looks (campaign.interval).

Times: --start and --deadline take a time from now (14d, 36h), a date
(2026-12-24: the start of that day for --start, its end for --deadline) or an
RFC 3339 time. Reminders: 3d (three days after the person's invitation), 36h,
deadline-1d (a day before the deadline); a reminder goes only to people who
have not enrolled by then.

The mail: --subject, --text-file and --html-file are Go templates over
{{.Name}}, {{.Username}}, {{.Email}}, {{.Company}}, {{.Link}}, {{.Expires}},
{{.Deadline}} and {{.Reminder}} (true in reminders); the text must show
{{.Link}}. Without them, a built-in mail in plain words (text and HTML).

--enforce: at the deadline, the users table's password policy column
(passbridge_password_policy) of the campaign's people switches to
passkey_required, except the --grace usernames; each switch is audited.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			sp, err := f.spec(args[0], time.Now())
			if err != nil {
				return err
			}
			cfg, _, db, err := g.openApp(cmd.Context(), cmd.ErrOrStderr(), config.ForCampaign)
			if err != nil {
				return err
			}
			defer db.Close()
			c, err := campaign.Create(cmd.Context(), db, cfg, sp, "cli:"+operator())
			if err != nil {
				return err
			}
			return g.printData(cmd.OutOrStdout(), c, func(w io.Writer) error {
				printCampaign(w, c)
				_, err := fmt.Fprintln(w, "\nThe daemon (passbridge run) starts inviting at the start, at most campaign.per_minute mails a minute.")
				return err
			})
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.group, "group", "", "a directory group's DN (nested membership counts)")
	fl.StringVar(&f.ou, "ou", "", "an OU's DN: every identity under it")
	fl.StringVar(&f.users, "users", "", "comma-separated usernames")
	fl.StringVar(&f.start, "start", "", "when the invitations start (default now)")
	fl.StringVar(&f.deadline, "deadline", "", "the deadline (none by default)")
	fl.StringSliceVar(&f.remind, "remind", nil, "reminders: 3d, 36h, deadline-1d (comma-separated or repeated)")
	fl.StringVar(&f.company, "company", "", "the company's name in the mail (default portal.rp_name)")
	fl.StringVar(&f.subject, "subject", "", "the subject template")
	fl.StringVar(&f.textFile, "text-file", "", "a file with the plain-text template")
	fl.StringVar(&f.htmlFile, "html-file", "", "a file with the HTML template")
	fl.BoolVar(&f.enforce, "enforce", false, "at the deadline, set the password policy of the campaign's people to passkey_required")
	fl.StringVar(&f.grace, "grace", "", "comma-separated usernames --enforce leaves alone")
	return cmd
}

func (f *campaignCreateFlags) spec(name string, now time.Time) (campaign.Spec, error) {
	sp := campaign.Spec{Name: name, Reminders: f.remind, Enforce: f.enforce, Grace: []string{f.grace},
		Template: campaign.Template{Company: f.company, Subject: f.subject}}
	n := 0
	for _, t := range []struct{ kind, v string }{{campaign.TargetGroup, f.group}, {campaign.TargetOU, f.ou}, {campaign.TargetUsers, f.users}} {
		if t.v == "" {
			continue
		}
		n++
		sp.Target.Kind = t.kind
		if t.kind == campaign.TargetUsers {
			sp.Target.Users = []string{t.v}
		} else {
			sp.Target.DN = t.v
		}
	}
	if n != 1 {
		return sp, fmt.Errorf("give exactly one of --group, --ou and --users")
	}
	var err error
	if f.start != "" {
		if sp.StartsAt, err = campaign.ParseWhen(f.start, now, false); err != nil {
			return sp, fmt.Errorf("--start: %w", err)
		}
	}
	if f.deadline != "" {
		d, err := campaign.ParseWhen(f.deadline, now, true)
		if err != nil {
			return sp, fmt.Errorf("--deadline: %w", err)
		}
		sp.Deadline = &d
	}
	for _, file := range []struct {
		flag, path string
		dst        *string
	}{{"--text-file", f.textFile, &sp.Template.Text}, {"--html-file", f.htmlFile, &sp.Template.HTML}} {
		if file.path == "" {
			continue
		}
		b, err := os.ReadFile(file.path)
		if err != nil {
			return sp, fmt.Errorf("%s: %w", file.flag, err)
		}
		*file.dst = string(b)
	}
	return sp, nil
}

func newCampaignListCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List the campaigns with their funnel, oldest first",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, _, db, err := g.openApp(cmd.Context(), cmd.ErrOrStderr(), config.ForCampaign)
			if err != nil {
				return err
			}
			defer db.Close()
			out, err := campaignReports(cmd.Context(), db, cfg)
			if err != nil {
				return err
			}
			return g.printData(cmd.OutOrStdout(), out, func(w io.Writer) error {
				tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "ID\tNAME\tSTATE\tTARGET\tDEADLINE\tINVITED\tDELIVERED\tENROLLED\tDROPPED")
				for _, r := range out {
					c, f := r.Campaign, r.Funnel
					fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%d\t%d\t%d\t%d\n", c.ID, c.Name, c.State, clipText(c.Target.String(), 60), deadlineText(c), f.Invited, f.Delivered, f.Enrolled, f.Dropped)
				}
				return tw.Flush()
			})
		},
	}
}

// campaignReport is a campaign with its funnel, as list and show print it.
type campaignReport struct {
	Campaign *campaign.Campaign `json:"campaign"`
	Funnel   *campaign.Funnel   `json:"funnel"`
}

func campaignReports(ctx context.Context, db *store.DB, cfg *config.Config) ([]campaignReport, error) {
	cs, err := campaign.List(ctx, db, cfg)
	if err != nil {
		return nil, err
	}
	out := make([]campaignReport, 0, len(cs))
	for _, c := range cs {
		f, err := campaign.ComputeFunnel(ctx, db, cfg, c)
		if err != nil {
			return nil, err
		}
		out = append(out, campaignReport{Campaign: c, Funnel: f})
	}
	return out, nil
}

func newCampaignShowCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "show NAME",
		Short: "Show a campaign and its funnel: invited, delivered, opened, began, enrolled, and the effect of each reminder",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, _, db, err := g.openApp(cmd.Context(), cmd.ErrOrStderr(), config.ForCampaign)
			if err != nil {
				return err
			}
			defer db.Close()
			c, err := campaign.Get(cmd.Context(), db, cfg, args[0])
			if err != nil {
				return err
			}
			f, err := campaign.ComputeFunnel(cmd.Context(), db, cfg, c)
			if err != nil {
				return err
			}
			return g.printData(cmd.OutOrStdout(), campaignReport{Campaign: c, Funnel: f}, func(w io.Writer) error {
				printCampaign(w, c)
				printFunnel(w, f)
				return nil
			})
		},
	}
}

func printCampaign(w io.Writer, c *campaign.Campaign) {
	fmt.Fprintf(w, "campaign %d: %s (%s)\n", c.ID, c.Name, c.State)
	fmt.Fprintf(w, "  target     %s\n", c.Target)
	fmt.Fprintf(w, "  starts     %s\n", c.StartsAt.Format(time.RFC3339))
	fmt.Fprintf(w, "  deadline   %s\n", deadlineText(c))
	var rs []string
	for _, r := range c.Reminders {
		rs = append(rs, r.Name)
	}
	fmt.Fprintf(w, "  reminders  %s\n", dash(strings.Join(rs, ", ")))
	if c.Enforce {
		fmt.Fprintf(w, "  enforce    at the deadline: password policy passkey_required (grace: %s)\n", dash(strings.Join(c.Grace, ", ")))
	}
	if c.LastError != "" {
		fmt.Fprintf(w, "  waiting    %s\n", c.LastError)
	}
	fmt.Fprintf(w, "  created    %s by %s\n", c.CreatedAt.Format(time.RFC3339), c.CreatedBy)
}

func printFunnel(w io.Writer, f *campaign.Funnel) {
	pct := func(n int) string {
		if f.Invited == 0 {
			return ""
		}
		return fmt.Sprintf(" (%.0f %%)", 100*float64(n)/float64(f.Invited))
	}
	fmt.Fprintf(w, "funnel\n")
	fmt.Fprintf(w, "  selected   %d\n", f.Recipients)
	fmt.Fprintf(w, "  invited    %d (%d delivered, %d bounced, %d failed, %d not sent yet; %d retries)\n", f.Invited, f.Delivered, f.Bounced, f.Failed, f.Pending, f.Retries)
	fmt.Fprintf(w, "  opened     %d%s\n", f.Opened, pct(f.Opened))
	fmt.Fprintf(w, "  began      %d%s\n", f.Began, pct(f.Began))
	fmt.Fprintf(w, "  enrolled   %d%s\n", f.Enrolled, pct(f.Enrolled))
	fmt.Fprintf(w, "  dropped    %d\n", f.Dropped)
	if f.TimeToPasskey.Count > 0 {
		fmt.Fprintf(w, "  time to passkey  median %s, p90 %s (%d people)\n", f.TimeToPasskey.Median.Round(time.Second), f.TimeToPasskey.P90.Round(time.Second), f.TimeToPasskey.Count)
	}
	for _, s := range f.Steps {
		fmt.Fprintf(w, "  after %-12s %d enrolled of %d mailed (%.0f %% of the delivered invitations)\n", s.Step, s.Enrolled, s.Sent, 100*s.Share)
	}
}

func deadlineText(c *campaign.Campaign) string {
	if c.Deadline == nil {
		return "-"
	}
	return c.Deadline.Format(time.RFC3339)
}

func clipText(s string, n int) string {
	if len([]rune(s)) <= n {
		return s
	}
	return string([]rune(s)[:n-1]) + "…"
}
