package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/labstack/echo/v4"

	"github.com/passbridge/passbridge/agent"
	"github.com/passbridge/passbridge/agent/metrics"
	"github.com/passbridge/passbridge/appsignin"
	"github.com/passbridge/passbridge/campaign"
	"github.com/passbridge/passbridge/config"
	"github.com/passbridge/passbridge/demo"
	"github.com/passbridge/passbridge/directory"
	"github.com/passbridge/passbridge/enroll"
	"github.com/passbridge/passbridge/enroll/adoption"
	"github.com/passbridge/passbridge/enroll/mail"
	"github.com/passbridge/passbridge/migrate"
	"github.com/passbridge/passbridge/signin"
	"github.com/passbridge/passbridge/store"
)

type runFlags struct {
	demoDir string
	listen  string
}

func newRunCmd(g *globals) *cobra.Command {
	f := &runFlags{}
	cmd := &cobra.Command{
		Use:   "run",
		Short: "Run the daemon: sync schedules, the enrollment portal, health and metrics",
		Long: `Run the passbridge daemon: the directory sync schedules, the employee portal,
/healthz, /readyz, /metrics and the admin API.

With no --config and no passbridge.yaml, it starts the embedded demo: an SQLite
file (passbridge-demo.db in --demo-dir), the Northwind Fabrication directory
served over LDAP on loopback from configs/demo.ldif, a demo legacy users table,
and the portal on http://localhost:8080.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runDaemon(cmd.Context(), g, f)
		},
	}
	cmd.Flags().StringVar(&f.demoDir, "demo-dir", ".", "demo only: directory for the demo's SQLite file")
	cmd.Flags().StringVar(&f.listen, "listen", "", "portal listen address (overrides portal.listen)")
	return cmd
}

func runDaemon(ctx context.Context, g *globals, f *runFlags) error {
	started := time.Now()
	cfg, err := g.loadConfig(config.ForRun)
	if err != nil {
		return err
	}
	log, err := g.logger(cfg, os.Stderr)
	if err != nil {
		return err
	}

	var banner string
	if cfg == nil {
		// The demo: the same code paths as production, on built-in data.
		dir, err := demo.StartDirectory(ctx, log)
		if err != nil {
			return fmt.Errorf("demo: %w", err)
		}
		defer func() {
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			dir.Stop(sctx)
		}()
		cfg, err = demoConfig(f.demoDir, dir.URL(), f.listen)
		if err != nil {
			return err
		}
		log.Info("starting the embedded demo", "database", cfg.Database.DSN.Reveal(), "directory", dir.URL())
		banner = demo.Banner(dir.URL())
	} else if f.listen != "" {
		cfg.Portal.Listen = f.listen
	}

	db, err := store.Open(ctx, cfg.Database, log)
	if err != nil {
		return err
	}
	defer db.Close()
	if cfg.Demo {
		if err := demo.SeedLegacyUsers(ctx, db.DB.DB); err != nil {
			return fmt.Errorf("demo: %w", err)
		}
	}

	// The demo migrates its own database; a real one is migrated by the
	// DBA (`passbridge migrate apply`), never behind their back.
	if cfg.Demo {
		if err := migrate.EnsureApplied(ctx, db, cfg, log); err != nil {
			return fmt.Errorf("demo: %w", err)
		}
	} else {
		pending, err := migrate.Pending(ctx, db, cfg)
		if err != nil {
			return err
		}
		if err := migrate.PendingError(pending); err != nil {
			return err
		}
	}

	if cfg.Demo {
		issuer := strings.TrimRight(cfg.Portal.Origins[0], "/")
		// The ERP is the demo's extra: a port that is taken costs the
		// ERP, not the demo.
		if erp, err := demo.StartERP("127.0.0.1:"+demoERPPort(cfg), issuer, log.With("component", "demo-erp")); err != nil {
			log.Warn("the demo ERP is off: its port is not free", "err", err)
		} else {
			defer func() {
				sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				erp.Stop(sctx)
			}()
			banner += "Demo ERP (signs in through passbridge with OpenID Connect): " + erp.URL + "\n"
		}
	}
	m := metrics.New()
	opts := agent.Options{Metrics: m}
	var portal *enroll.Portal
	// One passkey sign-in core for the portal and the applications.
	core, err := signin.New(cfg, db, signin.Options{Log: log.With("component", "portal"), Metrics: m})
	switch {
	case errors.Is(err, signin.ErrNotConfigured):
		log.Warn("the employee portal is off: set portal.rp_id and portal.origins to serve it")
	case err != nil:
		return err
	default:
		p, err := enroll.New(cfg, enroll.Options{DB: db, Core: core, Log: log.With("component", "portal"), Metrics: m})
		if err != nil {
			return err
		}
		apps, err := appsignin.New(cfg, appsignin.Options{DB: db, Core: core, Log: log.With("component", "apps"), Portal: p})
		if err != nil {
			return err
		}
		portal = p
		opts.Mount = func(e *echo.Echo) {
			p.Mount(e)
			if apps != nil {
				apps.Mount(e)
			}
		}
		opts.PortalErrors = p.ErrorHandler()
		go p.Janitor(ctx, 10*time.Minute)
		if apps != nil {
			go apps.Janitor(ctx, 10*time.Minute)
		}
	}
	a, err := agent.NewDaemon(cfg, db, log, opts)
	if err != nil {
		return err
	}
	if portal != nil {
		portal.SetSync(a)
	}
	m.SetAdoption(adoption.Snapshot(db, cfg), log)
	engine, err := newCampaignEngine(cfg, db, portal, m, log)
	if err != nil {
		return err
	}
	if portal != nil {
		portal.SetCampaigns(engine)
	}
	engineDone := make(chan struct{})
	go func() {
		defer close(engineDone)
		engine.Run(ctx)
	}()
	// A campaign mail in flight at shutdown is finished and recorded.
	defer func() {
		select {
		case <-engineDone:
		case <-time.After(cfg.Mail.Timeout.D() + 10*time.Second):
			log.Warn("the campaign sender did not stop in time")
		}
	}()
	// SIGHUP re-reads the file (the demo has none: it rebuilds its own).
	reload := func() (*config.Config, error) {
		if cfg.Demo {
			return demoConfig(f.demoDir, cfg.Directory.URLs[0], f.listen)
		}
		return g.loadConfig(config.ForRun)
	}
	go agent.ReloadOnSIGHUP(ctx, a, reload)
	return a.Run(ctx, func(ad agent.Addrs) {
		log.Info("passbridge is ready", "portal", portalURL(cfg, ad.Portal), "startup", time.Since(started).Round(time.Millisecond).String())
		if ad.Admin != nil {
			log.Info("admin endpoints listening", "addr", ad.Admin.String())
		}
		if banner != "" {
			fmt.Fprintf(os.Stderr, "\npassbridge demo is running: open %s\n%s\n", portalURL(cfg, ad.Portal), banner)
		}
	})
}

// newCampaignEngine builds the campaign sender of the daemon: links from
// the portal, mail from mail.*, group members from the directory. Without
// the portal or mail it still follows the campaigns (enrollments,
// departures, deadlines) and says why nothing is sent.
func newCampaignEngine(cfg *config.Config, db *store.DB, portal *enroll.Portal, m *metrics.Metrics, log *slog.Logger) (*campaign.Engine, error) {
	log = log.With("component", "campaign")
	o := campaign.Options{DB: db, Log: log, Registerer: m.Registry()}
	if portal != nil {
		o.Links = portal
	}
	if cfg.Mail.Host != "" {
		s, err := mail.New(cfg.Mail, log.With("subsystem", "mail"))
		if err != nil {
			return nil, fmt.Errorf("campaigns: mail: %w", err)
		}
		o.Mail = s
	}
	dir, err := directory.NewClient(cfg.Directory, log.With("subsystem", "directory"))
	if err != nil {
		return nil, fmt.Errorf("campaigns: %w", err)
	}
	o.Directory = dir
	return campaign.New(cfg, o)
}

// demoConfig is the built-in configuration of the demo. Environment
// overrides (PASSBRIDGE_...) apply to it as to a file.
func demoConfig(dir, ldapURL, listen string) (*config.Config, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(abs, 0o755); err != nil {
		return nil, fmt.Errorf("demo dir: %w", err)
	}
	cfg := config.Default()
	cfg.Demo = true
	cfg.Database.Driver = "sqlite"
	cfg.Database.DSN = config.Secret(filepath.Join(abs, "passbridge-demo.db"))
	cfg.UsersTable.Active = "is_active"
	cfg.UsersTable.TOTP = "totp_secret"
	cfg.Directory.Kind = "openldap"
	cfg.Directory.URLs = []string{ldapURL}
	cfg.Directory.BindDN = demo.ServiceDN
	cfg.Directory.BindPassword = config.Secret(demo.ServicePassword)
	cfg.Directory.BaseDN = demo.PeopleDN
	cfg.Directory.UserFilter = demo.UserFilter
	cfg.Directory.Group = demo.PilotGroupDN
	cfg.Schedule.Incremental = "@every 1m"
	cfg.Schedule.Full = "@every 1h"
	// The demo has well-known passwords: it listens on loopback only.
	cfg.Portal.Listen = "127.0.0.1:8080"
	cfg.Portal.RPID = "localhost"
	cfg.Portal.RPName = "Northwind Fabrication"
	cfg.Portal.Origins = []string{"http://localhost:8080"}
	cfg.Portal.AdminGroup = demo.AdminGroupDN
	// The demo's legacy table holds TOTP secrets: recovery by password and
	// authenticator app code works; by mail needs an SMTP server.
	cfg.Portal.Recovery.TOTP = true
	if listen != "" {
		cfg.Portal.Listen = listen
		if _, port, err := net.SplitHostPort(listen); err == nil && port != "8080" {
			cfg.Portal.Origins = []string{"http://localhost:" + port}
		}
	}
	// The demo ERP, on the port after the portal's, signs in through the
	// OpenID Connect provider as the demo's one client.
	cfg.OIDC.Clients = []config.Client{{
		ID: demo.ERPClientID, Name: "Northwind ERP", Secret: config.Secret(demo.ERPClientSecret),
		RedirectURIs: []string{demo.ERPRedirectURI(demoERPPort(&cfg))}, PostLogoutRedirectURIs: []string{"http://localhost:" + demoERPPort(&cfg) + "/"},
	}}
	if err := config.Finish(&cfg, os.Environ()); err != nil {
		return nil, err
	}
	return &cfg, nil
}

// demoERPPort is the demo ERP's port: the one after the portal's.
func demoERPPort(cfg *config.Config) string {
	_, port, _ := net.SplitHostPort(cfg.Portal.Listen)
	n, err := strconv.Atoi(port)
	if err != nil {
		n = 8080
	}
	return strconv.Itoa(n + 1)
}

func portalURL(cfg *config.Config, addr net.Addr) string {
	if cfg.Portal.PublicURL != "" {
		return cfg.Portal.PublicURL
	}
	_, port, _ := net.SplitHostPort(addr.String())
	scheme := "http"
	if cfg.Portal.TLSCertFile != "" {
		scheme = "https"
	}
	return scheme + "://localhost:" + strings.TrimPrefix(port, ":")
}
