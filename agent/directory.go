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

	"github.com/passbridge/passbridge/config"
	"github.com/passbridge/passbridge/directory"
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
// "ldap" for the directory, "database" for the application database.
func errorCause(err error, cfg *config.Config) string {
	if err == nil {
		return ""
	}
	var le *ldap.Error
	var pe *pgconn.PgError
	var pce *pgconn.ConnectError
	var me *mysql.MySQLError
	switch {
	case errors.As(err, &le):
		return "ldap"
	case errors.As(err, &pe), errors.As(err, &pce), errors.As(err, &me),
		errors.Is(err, driver.ErrBadConn), errors.Is(err, sql.ErrConnDone), errors.Is(err, mysql.ErrInvalidConn):
		return "database"
	}
	// A bare network error: whose address is it?
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Addr != nil {
		for _, raw := range cfg.Directory.URLs {
			if u, perr := url.Parse(raw); perr == nil && sameEndpoint(u, oe.Addr.String()) {
				return "ldap"
			}
		}
		return "database"
	}
	return ""
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
