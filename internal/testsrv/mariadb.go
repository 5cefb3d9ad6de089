package testsrv

import (
	"context"
	"database/sql"
	"fmt"
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

	_ "github.com/go-sql-driver/mysql" // driver "mysql"
)

// MDB is a throwaway MariaDB server on 127.0.0.1, shared by the tests of one
// package. Tests get their own database from NewDatabase. Its time zone is
// +05:30, not UTC, as production servers often are not.
type MDB struct {
	Host string // 127.0.0.1
	Port int
	// User and Password are an administrator with every privilege
	// ('passbridge_admin'@'127.0.0.1'). root can only log in through the
	// unix socket, with a random password.
	User     string
	Password string
	// AppUser and AppPassword ('passbridge_app'@'127.0.0.1') have all
	// privileges on the databases NewDatabase makes and nothing else, as an
	// application's database account would.
	AppUser     string
	AppPassword string
	// Dir holds the data directory (Dir/data), the socket (Dir/run) and the
	// server log (Dir/mariadb.log); it is removed at the end.
	Dir string

	proc  *dbProc
	admin *sql.DB
	seq   atomic.Int64
}

var (
	mdbMu  sync.Mutex
	mdbSrv *MDB
	mdbErr error
)

// MariaDB returns the package's MariaDB server, starting it on first use. It
// is stopped and its directory removed when the test binary ends (see Run).
func MariaDB(tb testing.TB) *MDB {
	tb.Helper()
	install := Binary(tb, "mariadb-install-db", "mariadb-server")
	server := Binary(tb, "mariadbd", "mariadb-server")
	mdbMu.Lock()
	defer mdbMu.Unlock()
	if mdbSrv == nil && mdbErr == nil {
		mdbSrv, mdbErr = startMariaDB(install, server)
	}
	if mdbErr != nil {
		tb.Fatalf("start MariaDB: %v", mdbErr)
	}
	return mdbSrv
}

// DSN is the administrator's go-sql-driver/mysql DSN for database
// (parseTime=true, utf8mb4, multiStatements off).
func (m *MDB) DSN(database string) string { return m.dsn(m.User, m.Password, database) }

// AppDSN is the DSN of AppUser for database.
func (m *MDB) AppDSN(database string) string { return m.dsn(m.AppUser, m.AppPassword, database) }

func (m *MDB) dsn(user, password, database string) string {
	// The passwords are hex and the names [a-z0-9_]: nothing to escape.
	return fmt.Sprintf("%s:%s@tcp(%s:%d)/%s?parseTime=true&charset=utf8mb4", user, password, m.Host, m.Port, database)
}

// PID is the server's process id.
func (m *MDB) PID() int { return m.proc.pid() }

// NewDatabase creates an empty database (utf8mb4) for one test, grants
// AppUser every privilege on it, and returns AppUser's DSN for it. The
// database is dropped when the test ends.
func (m *MDB) NewDatabase(tb testing.TB) string {
	tb.Helper()
	name := dbTestName(tb.Name(), m.seq.Add(1))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, q := range []string{
		"CREATE DATABASE `" + name + "` CHARACTER SET utf8mb4",
		"GRANT ALL PRIVILEGES ON `" + name + "`.* TO '" + m.AppUser + "'@'127.0.0.1'",
	} {
		if _, err := m.admin.ExecContext(ctx, q); err != nil {
			tb.Fatalf("create MariaDB database %s: %s: %v", name, q, err)
		}
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		// The grant is not dropped with the database: revoke it, so that a
		// later database of the same name would not inherit it.
		for _, q := range []string{
			"DROP DATABASE IF EXISTS `" + name + "`",
			"REVOKE ALL PRIVILEGES ON `" + name + "`.* FROM '" + m.AppUser + "'@'127.0.0.1'",
		} {
			if _, err := m.admin.ExecContext(ctx, q); err != nil {
				tb.Errorf("drop MariaDB database %s: %s: %v", name, q, err)
			}
		}
	})
	return m.AppDSN(name)
}

func startMariaDB(install, server string) (*MDB, error) {
	dir, err := dbTempDir("mariadb")
	if err != nil {
		return nil, err
	}
	cred, uid, gid, err := dbSystemUser("mysql", "mariadb-server")
	if err != nil {
		return nil, err
	}
	m := &MDB{
		Host: "127.0.0.1", Dir: dir,
		User: "passbridge_admin", Password: dbRandomHex(16),
		AppUser: "passbridge_app", AppPassword: dbRandomHex(16),
	}
	for _, sub := range []string{"run", "tmp"} {
		if err := os.Mkdir(filepath.Join(dir, sub), 0o700); err != nil {
			return nil, err
		}
	}
	// Run once at startup (the data directory is new): real accounts with
	// passwords, and no password-less root on TCP.
	initSQL := strings.Join([]string{
		"DROP USER IF EXISTS 'root'@'127.0.0.1', 'root'@'::1'",
		"ALTER USER 'root'@'localhost' IDENTIFIED BY '" + dbRandomHex(16) + "'",
		"CREATE USER '" + m.User + "'@'127.0.0.1' IDENTIFIED BY '" + m.Password + "'",
		"GRANT ALL PRIVILEGES ON *.* TO '" + m.User + "'@'127.0.0.1' WITH GRANT OPTION",
		"CREATE USER '" + m.AppUser + "'@'127.0.0.1' IDENTIFIED BY '" + m.AppPassword + "'",
	}, ";\n") + ";\n"
	if err := os.WriteFile(filepath.Join(dir, "init.sql"), []byte(initSQL), 0o600); err != nil {
		return nil, err
	}
	if err := dbChownR(dir, uid, gid); err != nil {
		return nil, fmt.Errorf("give %s to the mysql user: %w", dir, err)
	}

	// The same InnoDB settings for the bootstrap and the server: the log
	// file size is fixed when the data directory is made.
	common := []string{
		"--datadir=" + filepath.Join(dir, "data"),
		"--tmpdir=" + filepath.Join(dir, "tmp"),
		"--skip-name-resolve",
		// A test server: durability is worthless, speed is not.
		"--innodb-flush-log-at-trx-commit=0",
		"--innodb-doublewrite=0",
		"--innodb-flush-method=nosync",
		"--innodb-buffer-pool-size=64M",
		"--innodb-log-file-size=32M",
	}
	if cred == nil && os.Geteuid() == 0 {
		common = append(common, "--user=root")
	}

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	args := append([]string{"--no-defaults"}, common...)
	args = append(args, "--auth-root-authentication-method=normal", "--skip-test-db")
	cmd := exec.CommandContext(ctx, install, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Pdeathsig: syscall.SIGKILL}
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("mariadb-install-db: %w: %s", err, strings.TrimSpace(string(out)))
	}

	for attempt := 1; ; attempt++ {
		if m.Port, err = freePort(); err != nil {
			return nil, err
		}
		var portTaken bool
		portTaken, err = m.start(ctx, server, cred, common)
		if err == nil {
			break
		}
		if !portTaken || attempt == 3 {
			return nil, err
		}
	}
	onStop(m.stop)
	return m, nil
}

// start runs the server on m.Port and waits until the administrator can
// log in. portTaken reports a failure that another port may fix.
func (m *MDB) start(ctx context.Context, server string, cred *syscall.Credential, common []string) (portTaken bool, err error) {
	logPath := filepath.Join(m.Dir, "mariadb.log")
	args := append([]string{"--no-defaults"}, common...)
	args = append(args,
		"--port="+strconv.Itoa(m.Port),
		"--bind-address="+m.Host,
		"--socket="+filepath.Join(m.Dir, "run", "mysqld.sock"),
		"--pid-file="+filepath.Join(m.Dir, "run", "mysqld.pid"),
		"--log-error="+logPath,
		"--init-file="+filepath.Join(m.Dir, "init.sql"),
		"--character-set-server=utf8mb4",
		"--max-connections=200",
		"--performance-schema=OFF",
		"--skip-log-bin",
		// Not UTC, as many production servers: code that assumes the
		// server's clock is UTC fails here too.
		"--default-time-zone=+05:30",
	)
	proc, err := startDBProc("mariadbd", exec.Command(server, args...), logPath, cred, syscall.SIGKILL)
	if err != nil {
		return false, err
	}
	admin, err := sql.Open("mysql", m.DSN(""))
	if err != nil {
		proc.stop(syscall.SIGKILL, 10*time.Second)
		return false, err
	}
	admin.SetMaxOpenConns(4)
	for {
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		err = admin.PingContext(pctx)
		cancel()
		if err == nil {
			m.proc, m.admin = proc, admin
			return false, nil
		}
		if proc.exited() {
			admin.Close()
			tail := proc.logTail()
			return strings.Contains(tail, "Bind on TCP/IP port") || strings.Contains(tail, "Address already in use"),
				fmt.Errorf("mariadbd exited during startup: %s", tail)
		}
		if ctx.Err() != nil {
			admin.Close()
			proc.stop(syscall.SIGKILL, 10*time.Second)
			return false, fmt.Errorf("mariadbd did not accept %s on %s:%d: %v; log: %s", m.User, m.Host, m.Port, err, proc.logTail())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (m *MDB) stop() {
	if m.admin != nil {
		m.admin.Close()
	}
	if err := m.proc.stop(syscall.SIGTERM, 30*time.Second); err != nil {
		fmt.Fprintf(os.Stderr, "testsrv: stop MariaDB: %v\n", err)
	}
}
