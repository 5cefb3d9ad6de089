package testsrv

import (
	"context"
	"database/sql"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // driver "pgx"
)

// PG is a throwaway PostgreSQL 15 server on 127.0.0.1, shared by the tests
// of one package. Tests get their own database from NewDatabase. Its
// default session time zone is Asia/Kolkata, not UTC, as production servers
// often are not.
type PG struct {
	Host string // 127.0.0.1
	Port int
	// User and Password are the superuser's.
	User     string
	Password string
	// AppUser and AppPassword are an ordinary login role (no superuser, no
	// CREATEDB, no CREATEROLE) that owns every database NewDatabase makes,
	// as an application's database account would.
	AppUser     string
	AppPassword string
	// Dir holds the data directory (Dir/data), the unix socket (Dir/run)
	// and the server log (Dir/postgres.log); it is removed at the end.
	Dir string

	proc  *dbProc
	admin *sql.DB
	seq   atomic.Int64
}

var (
	pgMu  sync.Mutex
	pgSrv *PG
	pgErr error
)

// Postgres returns the package's PostgreSQL server, starting it on first use.
// It is stopped (fast shutdown) and its directory removed when the test
// binary ends (see Run).
func Postgres(tb testing.TB) *PG {
	tb.Helper()
	initdb := Binary(tb, "initdb", "postgresql-15")
	// The server must be the same version as the initdb that made the data
	// directory: take it from the same directory.
	server := filepath.Join(filepath.Dir(initdb), "postgres")
	if _, err := os.Stat(server); err != nil {
		server = Binary(tb, "postgres", "postgresql-15")
	}
	pgMu.Lock()
	defer pgMu.Unlock()
	if pgSrv == nil && pgErr == nil {
		pgSrv, pgErr = startPostgres(initdb, server)
	}
	if pgErr != nil {
		tb.Fatalf("start PostgreSQL: %v", pgErr)
	}
	return pgSrv
}

// DSN is a superuser DSN (postgres://) for database, for the pgx stdlib
// driver.
func (p *PG) DSN(database string) string { return p.dsn(p.User, p.Password, database) }

// AppDSN is the DSN of AppUser for database.
func (p *PG) AppDSN(database string) string { return p.dsn(p.AppUser, p.AppPassword, database) }

func (p *PG) dsn(user, password, database string) string {
	u := url.URL{
		Scheme:   "postgres",
		User:     url.UserPassword(user, password),
		Host:     fmt.Sprintf("%s:%d", p.Host, p.Port),
		Path:     "/" + database,
		RawQuery: "sslmode=disable",
	}
	return u.String()
}

// PID is the postmaster's process id.
func (p *PG) PID() int { return p.proc.pid() }

// NewDatabase creates an empty database for one test, owned by AppUser, and
// returns AppUser's DSN for it. The database is dropped when the test ends,
// terminating any connections the test left open.
func (p *PG) NewDatabase(tb testing.TB) string {
	tb.Helper()
	name := dbTestName(tb.Name(), p.seq.Add(1))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// FILE_COPY: with fsync off it is faster than WAL-logging the template.
	q := fmt.Sprintf(`CREATE DATABASE %s OWNER %s STRATEGY = FILE_COPY`, pgIdent(name), pgIdent(p.AppUser))
	if _, err := p.admin.ExecContext(ctx, q); err != nil {
		tb.Fatalf("create PostgreSQL database %s: %v", name, err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if _, err := p.admin.ExecContext(ctx, `DROP DATABASE IF EXISTS `+pgIdent(name)+` WITH (FORCE)`); err != nil {
			tb.Errorf("drop PostgreSQL database %s: %v", name, err)
		}
	})
	return p.AppDSN(name)
}

func pgIdent(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }

func startPostgres(initdb, server string) (_ *PG, err error) {
	dir, err := dbTempDir("pg")
	if err != nil {
		return nil, err
	}
	cred, uid, gid, err := dbSystemUser("postgres", "postgresql-15")
	if err != nil {
		return nil, err
	}
	p := &PG{
		Host: "127.0.0.1", Dir: dir,
		User: "postgres", Password: dbRandomHex(16),
		AppUser: "passbridge_app", AppPassword: dbRandomHex(16),
	}
	pwfile := filepath.Join(dir, "pwfile")
	if err := os.WriteFile(pwfile, []byte(p.Password+"\n"), 0o600); err != nil {
		return nil, err
	}
	if err := os.Mkdir(filepath.Join(dir, "run"), 0o700); err != nil {
		return nil, err
	}
	if err := dbChownR(dir, uid, gid); err != nil {
		return nil, fmt.Errorf("give %s to the postgres user: %w", dir, err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// Passwords are checked on TCP (as in production); the unix socket in
	// the private directory trusts local users, for debugging by hand.
	cmd := exec.CommandContext(ctx, initdb,
		"-D", filepath.Join(dir, "data"), "-U", p.User, "--pwfile", pwfile,
		"-E", "UTF8", "--no-locale", "--auth-host=scram-sha-256", "--auth-local=trust",
		"--no-sync", "--no-instructions")
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Pdeathsig: syscall.SIGKILL}
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("initdb: %w: %s", err, strings.TrimSpace(string(out)))
	}
	os.Remove(pwfile)

	// The port was free a moment ago; another process may take it before
	// the server binds, so try a few ports.
	for attempt := 1; ; attempt++ {
		if p.Port, err = freePort(); err != nil {
			return nil, err
		}
		var portTaken bool
		portTaken, err = p.start(ctx, server, cred)
		if err == nil {
			break
		}
		if !portTaken || attempt == 3 {
			return nil, err
		}
	}
	onStop(p.stop)

	if _, err := p.admin.ExecContext(ctx, fmt.Sprintf(`CREATE ROLE %s LOGIN PASSWORD '%s'`, pgIdent(p.AppUser), p.AppPassword)); err != nil {
		return nil, fmt.Errorf("create role %s: %w", p.AppUser, err)
	}
	return p, nil
}

// start runs the server on p.Port and waits until it answers queries.
// portTaken reports a failure that another port may fix.
func (p *PG) start(ctx context.Context, server string, cred *syscall.Credential) (portTaken bool, err error) {
	logPath := filepath.Join(p.Dir, "postgres.log")
	cmd := exec.Command(server,
		"-D", filepath.Join(p.Dir, "data"),
		"-p", strconv.Itoa(p.Port),
		"-c", "listen_addresses="+p.Host,
		"-c", "unix_socket_directories="+filepath.Join(p.Dir, "run"),
		// A test server: durability is worthless, speed is not.
		"-c", "fsync=off",
		"-c", "synchronous_commit=off",
		"-c", "full_page_writes=off",
		"-c", "max_connections=200",
		"-c", "shared_buffers=64MB",
		"-c", "max_wal_size=1GB",
		"-c", "checkpoint_timeout=1h",
		"-c", "logging_collector=off",
		"-c", "log_min_messages=warning",
		"-c", "log_timezone=UTC",
		// Not UTC, as many production servers: code that assumes the
		// session time zone is UTC fails here too.
		"-c", "timezone=Asia/Kolkata",
	)
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	// SIGQUIT is immediate shutdown: what the kernel sends if the test
	// binary dies before stopping the server.
	proc, err := startDBProc("postgres", cmd, logPath, cred, syscall.SIGQUIT)
	if err != nil {
		return false, err
	}
	admin, err := sql.Open("pgx", p.DSN("postgres"))
	if err != nil {
		proc.stop(syscall.SIGQUIT, 10*time.Second)
		return false, err
	}
	admin.SetMaxOpenConns(4)
	for {
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		err = admin.PingContext(pctx)
		cancel()
		if err == nil {
			p.proc, p.admin = proc, admin
			return false, nil
		}
		if proc.exited() {
			admin.Close()
			tail := proc.logTail()
			return strings.Contains(tail, "could not bind") || strings.Contains(tail, "Address already in use"),
				fmt.Errorf("postgres exited during startup: %s", tail)
		}
		if ctx.Err() != nil {
			admin.Close()
			proc.stop(syscall.SIGQUIT, 10*time.Second)
			return false, fmt.Errorf("postgres did not answer on %s:%d: %v; log: %s", p.Host, p.Port, err, proc.logTail())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (p *PG) stop() {
	if p.admin != nil {
		p.admin.Close()
	}
	// SIGINT is PostgreSQL's fast shutdown: it disconnects clients and
	// does not wait for them.
	if err := p.proc.stop(syscall.SIGINT, 30*time.Second); err != nil {
		fmt.Fprintf(os.Stderr, "testsrv: stop PostgreSQL: %v\n", err)
	}
}
