package agent

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"log/slog"
	"net"
	"net/url"
	"sync"

	"github.com/go-ldap/ldap/v3"
	"github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5/pgconn"
	"modernc.org/sqlite"

	"github.com/passbridge/passbridge/config"
	"github.com/passbridge/passbridge/directory"
	"github.com/passbridge/passbridge/dirsync"
	"github.com/passbridge/passbridge/store"
)

// DirectoryProbe returns the /readyz directory check: connect to the
// configured servers (with failover) and bind as the service account, as a
// sync would. One client is kept per configuration, so a reload takes
// effect and the client's warnings (insecure_skip_verify) are not repeated
// at every probe.
func DirectoryProbe(log *slog.Logger) func(ctx context.Context, cfg *config.Config) error {
	var mu sync.Mutex
	var forCfg *config.Config
	var client *directory.Client
	return func(ctx context.Context, cfg *config.Config) error {
		mu.Lock()
		if forCfg != cfg || client == nil {
			c, err := directory.NewClient(cfg.Directory, log)
			if err != nil {
				mu.Unlock()
				return err
			}
			forCfg, client = cfg, c
		}
		c := client
		mu.Unlock()
		conn, err := c.Connect(ctx)
		if err != nil {
			return err
		}
		return conn.Close()
	}
}

// errorCause tells which side of a sync failed, for the error metrics:
// "database" for errors of the database drivers (or a network error to an
// address that is not a directory server), "ldap" for everything else the
// engine reports: its failures outside the database are directory reads,
// connects and binds, and it does not always keep the LDAP error's type.
func errorCause(err error, cfg *config.Config) string {
	if err == nil || errors.Is(err, context.Canceled) {
		return ""
	}
	var le *ldap.Error
	var pe *pgconn.PgError
	var pce *pgconn.ConnectError
	var me *mysql.MySQLError
	var se *sqlite.Error
	switch {
	case errors.As(err, &le):
		return "ldap"
	case errors.As(err, &pe), errors.As(err, &pce), errors.As(err, &me), errors.As(err, &se),
		errors.Is(err, driver.ErrBadConn), errors.Is(err, sql.ErrConnDone), errors.Is(err, sql.ErrTxDone),
		errors.Is(err, mysql.ErrInvalidConn):
		return "database"
	}
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Addr != nil {
		for _, raw := range cfg.Directory.URLs {
			if u, perr := url.Parse(raw); perr == nil && sameEndpoint(u, oe.Addr.String()) {
				return "ldap"
			}
		}
		return "database"
	}
	return "ldap"
}

// sameEndpoint compares an LDAP URL's host:port (default ports filled in)
// with a dialled address.
func sameEndpoint(u *url.URL, addr string) bool {
	port := u.Port()
	if port == "" {
		port = "389"
		if u.Scheme == "ldaps" {
			port = "636"
		}
	}
	want := net.JoinHostPort(u.Hostname(), port)
	if want == addr {
		return true
	}
	// A name resolved to an address: compare ports and resolve nothing.
	_, p, err := net.SplitHostPort(addr)
	return err == nil && p == port && net.ParseIP(u.Hostname()) == nil
}

// NewDirectorySyncer returns the factory of the real sync engine, for
// Options.NewSyncer: the dirsync package's Syncer, the same code path as
// `passbridge sync`.
func NewDirectorySyncer(db *store.DB, log *slog.Logger) func(cfg *config.Config) (Syncer, error) {
	return func(cfg *config.Config) (Syncer, error) {
		s, err := dirsync.NewSyncer(cfg, db, log)
		if err != nil {
			return nil, err
		}
		return &directorySyncer{s: s, cfg: cfg}, nil
	}
}

type directorySyncer struct {
	s   *dirsync.Syncer
	cfg *config.Config
}

func (d *directorySyncer) Sync(ctx context.Context, req SyncRequest) (Outcome, error) {
	sum, err := d.s.Run(ctx, dirsync.RunOptions{Full: req.Full, DryRun: req.DryRun, Trigger: req.Trigger, Locked: req.locked})
	// A run the engine recorded ends with its own summary line.
	out := Outcome{Summary: sum, Logged: sum != nil && sum.RunID != 0}
	switch {
	case err == nil:
		out.Status = dirsync.StatusSucceeded
	case errors.Is(err, dirsync.ErrRefused):
		out.Status = dirsync.StatusRefused
	case sum != nil && sum.Status == dirsync.StatusUnknown:
		out.Status = dirsync.StatusUnknown
		out.Cause = errorCause(err, d.cfg)
	default:
		out.Status = dirsync.StatusFailed
		out.Cause = errorCause(err, d.cfg)
	}
	return out, err
}
