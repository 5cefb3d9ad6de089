package testsrv

import (
	"bufio"
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
)

// The database servers are started in a child test binary, so that the
// parent can check that testsrv.Run really stops them and removes their
// directory when the binary ends. The child runs the functional checks.
const dbChildEnv = "PASSBRIDGE_TESTSRV_DB_CHILD"

func TestPostgresStartsAnswersAndStops(t *testing.T) {
	Binary(t, "initdb", "postgresql-15")
	pid, dir := runDBChild(t, "TestPostgresChild")
	assertDBServerGone(t, pid, dir)
}

func TestMariaDBStartsAnswersAndStops(t *testing.T) {
	Binary(t, "mariadb-install-db", "mariadb-server")
	Binary(t, "mariadbd", "mariadb-server")
	pid, dir := runDBChild(t, "TestMariaDBChild")
	assertDBServerGone(t, pid, dir)
}

func TestPostgresChild(t *testing.T) {
	if os.Getenv(dbChildEnv) == "" {
		t.Skip("run in a child process by TestPostgresStartsAnswersAndStops")
	}
	ctx := context.Background()
	p := Postgres(t)
	if p2 := Postgres(t); p2 != p {
		t.Fatal("second Postgres call started another server")
	}
	if err := syscall.Kill(p.PID(), 0); err != nil {
		t.Fatalf("postmaster %d: %v", p.PID(), err)
	}

	super := dbOpen(t, "pgx", p.DSN("postgres"))
	var version, fsync string
	if err := super.QueryRowContext(ctx, `SELECT current_setting('server_version_num'), current_setting('fsync')`).Scan(&version, &fsync); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(version, "15") || fsync != "off" {
		t.Errorf("server_version_num %s fsync %s, want 15xxxx and off", version, fsync)
	}

	// Two databases: what one test creates, the other does not see.
	a := dbOpen(t, "pgx", p.NewDatabase(t))
	b := dbOpen(t, "pgx", p.NewDatabase(t))
	if _, err := a.ExecContext(ctx, `CREATE TABLE only_in_a (id int)`); err != nil {
		t.Fatal(err)
	}
	var reg sql.NullString
	if err := b.QueryRowContext(ctx, `SELECT to_regclass('only_in_a')::text`).Scan(&reg); err != nil {
		t.Fatal(err)
	}
	if reg.Valid {
		t.Errorf("table of database A visible in database B: %q", reg.String)
	}
	var isSuper bool
	if err := a.QueryRowContext(ctx, `SELECT rolsuper FROM pg_roles WHERE rolname = current_user`).Scan(&isSuper); err != nil {
		t.Fatal(err)
	}
	if isSuper {
		t.Error("the application role is a superuser")
	}

	// Passwords are really checked.
	bad := strings.Replace(p.AppDSN("postgres"), p.AppPassword, "wrong"+p.AppPassword, 1)
	if err := dbPingOnce(bad, "pgx"); err == nil {
		t.Error("a wrong password was accepted")
	}

	// The database is dropped when its test ends, even with a connection
	// still open.
	var name string
	t.Run("cleanup", func(t *testing.T) {
		db := dbOpen(t, "pgx", p.NewDatabase(t))
		if err := db.QueryRowContext(ctx, `SELECT current_database()`).Scan(&name); err != nil {
			t.Fatal(err)
		}
		db.SetMaxIdleConns(1) // the connection stays open in the pool
	})
	var n int
	if err := super.QueryRowContext(ctx, `SELECT count(*) FROM pg_database WHERE datname = $1`, name).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if name == "" || n != 0 {
		t.Errorf("database %q still exists after its test (count %d)", name, n)
	}
	fmt.Printf("DBCHILD pid=%d dir=%s\n", p.PID(), p.Dir)
}

func TestMariaDBChild(t *testing.T) {
	if os.Getenv(dbChildEnv) == "" {
		t.Skip("run in a child process by TestMariaDBStartsAnswersAndStops")
	}
	ctx := context.Background()
	m := MariaDB(t)
	if m2 := MariaDB(t); m2 != m {
		t.Fatal("second MariaDB call started another server")
	}
	admin := dbOpen(t, "mysql", m.DSN(""))
	var version string
	if err := admin.QueryRowContext(ctx, `SELECT VERSION()`).Scan(&version); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(version, "MariaDB") {
		t.Errorf("version %q is not MariaDB", version)
	}

	dsnA := m.NewDatabase(t)
	cfg, err := mysql.ParseDSN(dsnA)
	if err != nil {
		t.Fatal(err)
	}
	if !cfg.ParseTime || cfg.MultiStatements || !strings.Contains(dsnA, "charset=utf8mb4") {
		t.Errorf("DSN %s: parseTime %v multiStatements %v, want utf8mb4, parseTime and no multi statements", dsnA, cfg.ParseTime, cfg.MultiStatements)
	}
	a := dbOpen(t, "mysql", dsnA)
	b := dbOpen(t, "mysql", m.NewDatabase(t))
	if _, err := a.ExecContext(ctx, `CREATE TABLE only_in_a (id int)`); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := b.QueryRowContext(ctx, `SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = DATABASE() AND table_name = 'only_in_a'`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Error("table of database A visible in database B")
	}
	var ts time.Time
	if err := a.QueryRowContext(ctx, `SELECT NOW()`).Scan(&ts); err != nil {
		t.Errorf("parseTime: %v", err)
	}

	// The application account is not an administrator, passwords are
	// checked, and root cannot log in over TCP.
	if err := a.QueryRowContext(ctx, `SELECT COUNT(*) FROM mysql.user`).Scan(&n); err == nil {
		t.Error("the application account can read mysql.user")
	}
	bad := strings.Replace(m.AppDSN(""), m.AppPassword, "wrong"+m.AppPassword, 1)
	if err := dbPingOnce(bad, "mysql"); err == nil {
		t.Error("a wrong password was accepted")
	}
	if err := dbPingOnce(fmt.Sprintf("root@tcp(%s:%d)/", m.Host, m.Port), "mysql"); err == nil {
		t.Error("root logged in over TCP without a password")
	}

	var name string
	t.Run("cleanup", func(t *testing.T) {
		db := dbOpen(t, "mysql", m.NewDatabase(t))
		if err := db.QueryRowContext(ctx, `SELECT DATABASE()`).Scan(&name); err != nil {
			t.Fatal(err)
		}
	})
	if err := admin.QueryRowContext(ctx, `SELECT COUNT(*) FROM information_schema.schemata WHERE schema_name = ?`, name).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if name == "" || n != 0 {
		t.Errorf("database %q still exists after its test (count %d)", name, n)
	}
	fmt.Printf("DBCHILD pid=%d dir=%s\n", m.PID(), m.Dir)
}

func TestDBTestName(t *testing.T) {
	long := strings.Repeat("Sub/Test Ä\"`'", 20)
	a, b := dbTestName(long, 1), dbTestName(long, 12345)
	for _, n := range []string{a, b} {
		if len(n) > 63 {
			t.Errorf("%q is %d bytes, more than PostgreSQL's 63", n, len(n))
		}
		for _, r := range n {
			if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '_') {
				t.Errorf("%q holds %q, which would need quoting", n, r)
			}
		}
	}
	if a == b {
		t.Errorf("two databases of one test share the name %q", a)
	}
}

func dbOpen(t *testing.T, driver, dsn string) *sql.DB {
	t.Helper()
	db, err := sql.Open(driver, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := db.PingContext(ctx); err != nil {
		t.Fatalf("connect %s: %v", driver, err)
	}
	return db
}

func dbPingOnce(dsn, driver string) error {
	db, err := sql.Open(driver, dsn)
	if err != nil {
		return err
	}
	defer db.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return db.PingContext(ctx)
}

// runDBChild runs one test of this binary in a new process and returns the
// server pid and directory it reports; the child has ended when it returns.
func runDBChild(t *testing.T, test string) (pid int, dir string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^"+test+"$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), dbChildEnv+"=1")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if err != nil {
		t.Fatalf("child test %s: %v\n%s", test, err, out.String())
	}
	sc := bufio.NewScanner(&out)
	for sc.Scan() {
		line := sc.Text()
		rest, ok := strings.CutPrefix(line, "DBCHILD ")
		if !ok {
			continue
		}
		for _, f := range strings.Fields(rest) {
			k, v, _ := strings.Cut(f, "=")
			switch k {
			case "pid":
				pid, _ = strconv.Atoi(v)
			case "dir":
				dir = v
			}
		}
	}
	if pid == 0 || dir == "" {
		if strings.Contains(out.String(), "--- SKIP") {
			t.Skipf("child skipped:\n%s", out.String())
		}
		t.Fatalf("child test %s did not report its server:\n%s", test, out.String())
	}
	return pid, dir
}

func assertDBServerGone(t *testing.T, pid int, dir string) {
	t.Helper()
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("server process %d still exists after the test binary ended (kill 0: %v)", pid, err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("server directory %s still exists after the test binary ended (stat: %v)", dir, err)
	}
}
