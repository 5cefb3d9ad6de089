package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/passbridge/passbridge/campaign"
	"github.com/passbridge/passbridge/internal/testsrv"
	"github.com/passbridge/passbridge/migrate"
	"github.com/passbridge/passbridge/schema"
	"github.com/passbridge/passbridge/store"
)

// campaignApp is a directory with people who have users rows, an SQLite
// application database synced from it, an SMTP server and a configuration
// for the real binary.
type campaignApp struct {
	cfgPath string
	db      *store.DB
	smtp    *testsrv.SMTP
	users   []string
	n       schema.Names
}

func newCampaignApp(t *testing.T, people int) *campaignApp {
	t.Helper()
	srv := testsrv.Slapd(t)
	ou := srv.NewOU(t)
	smtp := testsrv.StartSMTP(t, testsrv.SMTPOptions{Security: "starttls", Username: "relay", Password: "relay-Secret-1"})
	port := testsrv.FreePort(t)
	extra := srv.DirectoryYAML(ou) + fmt.Sprintf(`schedule: {incremental: "", full: ""}
portal: {listen: "127.0.0.1:%d", rp_id: localhost, origins: ["http://localhost:%d"], rp_name: Test Corp}
mail: {host: %s, port: %d, security: starttls, username: relay, password: relay-Secret-1, from: "Passkeys <passkeys@corp.example>", ca_file: %q}
campaign: {per_minute: 240, interval: 1s}
`, port, port, smtp.Host, smtp.Port, smtp.CAFile)
	cfgPath, cfg, db := appSetup(t, extra)
	a := &campaignApp{cfgPath: cfgPath, db: db, smtp: smtp, n: schema.NamesFor(cfg)}
	ctx := context.Background()
	for i := range people {
		name := fmt.Sprintf("emp%02d", i)
		srv.AddUser(t, ou, name, nil)
		if _, err := db.ExecContext(ctx, `INSERT INTO users (username, email, password_hash) VALUES (?, ?, 'x')`, name, name+"@corp.example"); err != nil {
			t.Fatal(err)
		}
		a.users = append(a.users, name)
	}
	if err := migrate.EnsureApplied(ctx, db, cfg, nil); err != nil {
		t.Fatal(err)
	}
	if _, _, err := execute(t, "sync", "--config", cfgPath); err != nil {
		t.Fatal(err)
	}
	return a
}

// TestCampaignCommands drives create, list, show, pause, resume and cancel,
// in text and JSON, and their refusals.
func TestCampaignCommands(t *testing.T) {
	a := newCampaignApp(t, 2)
	out, _, err := execute(t, "campaign", "create", "pilot", "--users", strings.Join(a.users, ","), "--deadline", "14d", "--remind", "3d,deadline-1d", "--enforce", "--grace", "EMP01", "--config", a.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"campaign 1: pilot (active)", "target     users (2): emp00, emp01", "reminders  remind-3d, deadline-1d", "grace: emp01"} {
		if !strings.Contains(out, want) {
			t.Fatalf("create output lacks %q:\n%s", want, out)
		}
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"campaign", "create", "pilot", "--users", "emp00"}, `already a campaign called "pilot"`},
		{[]string{"campaign", "create", "x", "--users", "emp00", "--group", "cn=g,dc=x"}, "exactly one of --group, --ou and --users"},
		{[]string{"campaign", "create", "x", "--users", "nobody"}, "nobody"},
		{[]string{"campaign", "create", "x", "--group", "not a dn"}, "is not a DN"},
		{[]string{"campaign", "create", "x", "--users", "emp00", "--remind", "deadline-1d"}, "the campaign has none"},
		{[]string{"campaign", "create", "x", "--users", "emp00", "--subject", "{{.Nope}}"}, "subject template"},
		{[]string{"campaign", "create", "x", "--users", "emp00", "--deadline", "yesterday"}, "--deadline"},
		{[]string{"campaign", "resume", "pilot"}, "is active: it cannot be resumed"},
		{[]string{"campaign", "show", "nope"}, "no such campaign"},
	} {
		if _, _, err := execute(t, append(tc.args, "--config", a.cfgPath)...); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v, want %q", tc.args, err, tc.want)
		}
	}
	if out, _, err = execute(t, "campaign", "pause", "pilot", "--config", a.cfgPath); err != nil || !strings.Contains(out, "campaign pilot is paused") {
		t.Fatalf("pause: %v %s", err, out)
	}
	if _, _, err = execute(t, "campaign", "resume", "1", "--config", a.cfgPath); err != nil {
		t.Fatalf("resume by id: %v", err)
	}
	out, _, err = execute(t, "campaign", "list", "-o", "json", "--config", a.cfgPath)
	var list []struct {
		Campaign campaign.Campaign `json:"campaign"`
		Funnel   campaign.Funnel   `json:"funnel"`
	}
	if err != nil || json.Unmarshal([]byte(out), &list) != nil || len(list) != 1 || list[0].Campaign.State != "active" || !list[0].Campaign.Enforce {
		t.Fatalf("list -o json: %v\n%s", err, out)
	}
	if out, _, err = execute(t, "campaign", "show", "pilot", "--config", a.cfgPath); err != nil || !strings.Contains(out, "funnel") || !strings.Contains(out, "selected   0") {
		t.Fatalf("show: %v\n%s", err, out)
	}
	if _, _, err = execute(t, "campaign", "cancel", "pilot", "--config", a.cfgPath); err != nil {
		t.Fatal(err)
	}
	var events int
	mustGet(t, a.db, &events, "SELECT COUNT(*) FROM "+a.n.Audit+" WHERE event LIKE 'campaign.%' AND actor LIKE 'cli:%'")
	if events != 4 {
		t.Errorf("%d campaign audit entries by the CLI, want 4 (create, pause, resume, cancel)", events)
	}
}

// daemon is a running `passbridge run`.
type daemon struct {
	cmd    *exec.Cmd
	out    *testsrv.Buffer
	exited chan error
}

func startDaemon(t *testing.T, bin, cfgPath string) *daemon {
	t.Helper()
	d := &daemon{out: &testsrv.Buffer{}, exited: make(chan error, 1)}
	d.cmd = exec.Command(bin, "run", "--config", cfgPath, "--log-format", "json")
	d.cmd.Stdout, d.cmd.Stderr = d.out, d.out
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { d.exited <- d.cmd.Wait() }()
	t.Cleanup(func() { d.cmd.Process.Kill() })
	return d
}

func (d *daemon) stop(t *testing.T, sig os.Signal) {
	t.Helper()
	if err := d.cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-d.exited:
		if sig == syscall.SIGTERM && err != nil {
			t.Fatalf("passbridge run after SIGTERM: %v\n%s", err, d.out.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("passbridge run did not stop\n%s", d.out.String())
	}
}

// TestCampaignRestart runs a campaign in the real daemon and stops it
// mid-campaign, with SIGTERM and with SIGKILL: the restarted daemon
// finishes the campaign and nobody gets a mail twice.
func TestCampaignRestart(t *testing.T) {
	bin := testsrv.Passbridge(t)
	a := newCampaignApp(t, 12)
	received := func(subject string) map[string]int {
		got := map[string]int{}
		for _, m := range a.smtp.Messages() {
			if strings.HasPrefix(m.Subject, subject) {
				got[m.To]++
			}
		}
		return got
	}
	states := func(name string) map[string]int {
		var rows []struct {
			State string `db:"state"`
			N     int    `db:"n"`
		}
		if err := store.Select(context.Background(), a.db, &rows, "SELECT m.state, COUNT(*) AS n FROM "+a.n.Table("campaign_messages")+" m JOIN "+a.n.Table("campaigns")+" c ON c.id = m.campaign_id WHERE c.name = ? GROUP BY m.state", name); err != nil {
			t.Fatal(err)
		}
		out := map[string]int{}
		for _, r := range rows {
			out[r.State] = r.N
		}
		return out
	}
	for _, tc := range []struct {
		name string
		sig  os.Signal
	}{{"term", syscall.SIGTERM}, {"kill", syscall.SIGKILL}} {
		t.Run(tc.name, func(t *testing.T) {
			subject := "Campaign " + tc.name
			if _, _, err := execute(t, "campaign", "create", tc.name, "--users", strings.Join(a.users, ","), "--subject", subject+" {{.Company}}", "--config", a.cfgPath); err != nil {
				t.Fatal(err)
			}
			d := startDaemon(t, bin, a.cfgPath)
			waitFor(t, "4 invitations", func() bool { return len(received(subject)) >= 4 })
			d.stop(t, tc.sig)
			before := len(received(subject))
			if before >= len(a.users) {
				t.Fatalf("all %d sent before the stop: the test stopped nothing", before)
			}
			d = startDaemon(t, bin, a.cfgPath)
			waitFor(t, "every invitation handled", func() bool {
				s := states(tc.name)
				return s[campaign.MsgQueued]+s[campaign.MsgSending] == 0 && s[campaign.MsgSent]+s[campaign.MsgUnknown] == len(a.users)
			})
			d.stop(t, syscall.SIGTERM)
			got, s := received(subject), states(tc.name)
			for _, u := range a.users {
				if got[u+"@corp.example"] > 1 {
					t.Fatalf("%s got %d invitations (all: %v)", u, got[u+"@corp.example"], got)
				}
			}
			switch tc.sig {
			case syscall.SIGTERM:
				// A graceful stop finishes the mail in flight: everyone once.
				if len(got) != len(a.users) || s[campaign.MsgSent] != len(a.users) {
					t.Fatalf("after SIGTERM and restart: %d received, states %v", len(got), s)
				}
			default:
				// A kill may interrupt one delivery: it is marked unknown and
				// not resent; everyone else gets theirs once.
				if s[campaign.MsgUnknown] > 1 || s[campaign.MsgSent]+s[campaign.MsgUnknown] != len(a.users) || len(got) < s[campaign.MsgSent] {
					t.Fatalf("after SIGKILL and restart: %d received, states %v", len(got), s)
				}
			}
			t.Logf("%s: %d sent before the stop, %d after the restart; states %v", tc.name, before, len(got)-before, s)
		})
	}
}
