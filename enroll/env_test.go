package enroll

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/passbridge/passbridge/agent"
	"github.com/passbridge/passbridge/agent/metrics"
	"github.com/passbridge/passbridge/config"
	"github.com/passbridge/passbridge/directory"
	"github.com/passbridge/passbridge/dirsync"
	"github.com/passbridge/passbridge/enroll/adoption"
	"github.com/passbridge/passbridge/internal/testsrv"
	"github.com/passbridge/passbridge/migrate"
	"github.com/passbridge/passbridge/schema"
	"github.com/passbridge/passbridge/store"
)

// TestMain runs the tests on real servers and, when the whole suite ran,
// checks that every kind of audit event was recorded by some test: an
// event kind no test produces is an event nobody proved is written.
func TestMain(m *testing.M) {
	var mu sync.Mutex
	seen := map[string]bool{}
	recorded = func(ev string) {
		mu.Lock()
		seen[ev] = true
		mu.Unlock()
	}
	code := testsrv.Run(m)
	if f := flag.Lookup("test.run"); code == 0 && f != nil && f.Value.String() == "" && testing.Short() == false {
		var missing []string
		for _, ev := range allEvents {
			if !seen[ev] {
				missing = append(missing, ev)
			}
		}
		if len(missing) > 0 {
			fmt.Fprintf(os.Stderr, "FAIL: no test recorded these audit events: %v\n", missing)
			code = 1
		}
	}
	os.Exit(code)
}

// allEvents are the audit events of the portal.
var allEvents = []string{
	evSignIn + methodPassword, evSignIn + methodPasskey, evSignIn + methodLink, evSignIn + methodRecovery,
	evSignInFailed, evSignInLimited, evSignOut, evCloneWarning, evRegistered, evRenamed, evDeleted,
	evLinkIssued, evLinkUsed, evSessionRefused,
	evRecovery + recoveryEmail, evRecovery + recoveryTOTP, evRecovery + recoveryLink, evRecoveryFailed, evRecoveryLimit, evCodeSent, evMailFailed,
	evAdminSignIn, evAdminRevoke, evAdminRevokeAll, evAdminPolicy, evAdminLink, evAdminUnlink, evAdminSync, evAdminExport, evAdminEnded,
}

// logWriter sends log lines to the test's log.
type logWriter struct {
	mu sync.Mutex
	t  testing.TB
}

func (w *logWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.t.Logf("%s", bytes.TrimRight(p, "\n"))
	return len(p), nil
}

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(&logWriter{t: t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

// dirFixture is a real directory the portal checks passwords against.
type dirFixture interface {
	kind() string
	configure(cfg *config.Config, base string)
	newOU(t testing.TB) string
	// addUser adds an enabled user with the fixture's default password and
	// the mail <name>@corp.example, and returns its DN.
	addUser(t testing.TB, parent, name string) string
	disable(t testing.TB, dn string)
	enable(t testing.TB, dn string)
	// failedBinds is how many failed binds the directory counts for dn.
	failedBinds(t testing.TB, dn string) int
	password() string
	addGroup(t testing.TB, parent, cn string, members ...string) string
	addMember(t testing.TB, group, member string)
	removeMember(t testing.TB, group, member string)
}

type slapdDir struct{ s *testsrv.LDAP }

func (f slapdDir) kind() string { return "openldap" }
func (f slapdDir) configure(cfg *config.Config, base string) {
	cfg.Directory.URLs = []string{f.s.URL}
	cfg.Directory.StartTLS = true
	cfg.Directory.CAFile = f.s.CAFile
	cfg.Directory.BindDN = f.s.BindDN
	cfg.Directory.BindPassword = config.Secret(f.s.BindPassword)
	cfg.Directory.BaseDN = base
}
func (f slapdDir) newOU(t testing.TB) string { return f.s.NewOU(t) }
func (f slapdDir) addUser(t testing.TB, parent, name string) string {
	return f.s.AddUser(t, parent, name, map[string][]string{"displayName": {displayName(name)}})
}
func (f slapdDir) disable(t testing.TB, dn string) { f.s.Disable(t, dn) }
func (f slapdDir) enable(t testing.TB, dn string)  { f.s.Enable(t, dn) }

// ppolicy records each failed bind as a pwdFailureTime value.
func (f slapdDir) failedBinds(t testing.TB, dn string) int {
	return len(f.s.Entry(t, dn, "pwdFailureTime").GetAttributeValues("pwdFailureTime"))
}
func (f slapdDir) password() string { return testsrv.DefaultUserPassword }
func (f slapdDir) addGroup(t testing.TB, parent, cn string, members ...string) string {
	return f.s.AddGroup(t, parent, cn, members...)
}
func (f slapdDir) addMember(t testing.TB, g, m string)    { f.s.AddMember(t, g, m) }
func (f slapdDir) removeMember(t testing.TB, g, m string) { f.s.RemoveMember(t, g, m) }

type sambaDir struct{ s *testsrv.AD }

func (f sambaDir) kind() string { return "ad" }
func (f sambaDir) configure(cfg *config.Config, base string) {
	cfg.Directory.URLs = []string{f.s.LDAPSURL}
	cfg.Directory.CAFile = f.s.CAFile
	cfg.Directory.BindDN = f.s.BindUPN
	cfg.Directory.BindPassword = config.Secret(f.s.BindPassword)
	cfg.Directory.BaseDN = base
}
func (f sambaDir) newOU(t testing.TB) string { return f.s.NewOU(t) }
func (f sambaDir) addUser(t testing.TB, parent, name string) string {
	return f.s.AddUser(t, parent, name, map[string][]string{"displayName": {displayName(name)}})
}
func (f sambaDir) disable(t testing.TB, dn string) { f.s.Disable(t, dn) }
func (f sambaDir) enable(t testing.TB, dn string)  { f.s.Enable(t, dn) }

// AD counts failed binds in badPwdCount.
func (f sambaDir) failedBinds(t testing.TB, dn string) int {
	n, _ := strconv.Atoi(f.s.Entry(t, dn, "badPwdCount").GetAttributeValue("badPwdCount"))
	return n
}
func (f sambaDir) password() string { return testsrv.DefaultUserPassword }
func (f sambaDir) addGroup(t testing.TB, parent, cn string, members ...string) string {
	return f.s.AddGroup(t, parent, cn, members...)
}
func (f sambaDir) addMember(t testing.TB, g, m string)    { f.s.AddMember(t, g, m) }
func (f sambaDir) removeMember(t testing.TB, g, m string) { f.s.RemoveMember(t, g, m) }

func displayName(name string) string {
	first, _, _ := strings.Cut(name, "-")
	return strings.ToUpper(first[:1]) + first[1:] + " Tester"
}

// env is one portal on real servers: a directory, the application
// database with its users table, passbridge's tables, the daemon's
// router with the portal mounted, served on a loopback port and reached as
// http://localhost:PORT (the WebAuthn origin).
type env struct {
	t       testing.TB
	cfg     *config.Config
	db      *store.DB
	dir     dirFixture
	ou      string
	portal  *Portal
	metrics *metrics.Metrics
	syncer  *dirsync.Syncer
	// URL is the portal's origin, http://localhost:PORT; URLs are the
	// origins of every replica, URL first.
	URL  string
	URLs []string
	// echo is the first replica's router (its route list); daemon its
	// daemon.
	echo   *echo.Echo
	daemon *agent.Agent
	// smtp receives the portal's mail (envOptions.mail).
	smtp *testsrv.SMTP
}

type envOptions struct {
	driver string // sqlite (default) | postgres | mysql
	dir    string // openldap (default) | ad
	// configure adjusts the configuration before the portal is built.
	configure func(cfg *config.Config)
	// replicas is the number of extra portals on the same database, each
	// on its own port (all ports are origins of the RP).
	replicas int
	// quiet logs errors only (benchmarks).
	quiet bool
	// mail starts an SMTP server (STARTTLS and AUTH) for the portal.
	mail bool
	// logs, when set, also receives every log line of the portal and the
	// daemon, as JSON.
	logs io.Writer
	// replicaConfigure, when set, adjusts a copy of the configuration for
	// the portal of replica i (0 is the first): replicas that disagree,
	// as during a rolling change of policy.
	replicaConfigure func(i int, cfg *config.Config)
	// wrapDir, when set, wraps the real directory client the portals use
	// (to count its calls).
	wrapDir func(Directory) Directory
}

func newEnv(t testing.TB, o envOptions) *env {
	t.Helper()
	ctx := context.Background()
	log := testLogger(t)
	if o.quiet {
		log = slog.New(slog.NewTextHandler(&logWriter{t: t}, &slog.HandlerOptions{Level: slog.LevelError}))
	}
	if o.logs != nil {
		log = slog.New(slog.NewJSONHandler(io.MultiWriter(o.logs, &logWriter{t: t}), &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	e := &env{t: t}
	switch o.dir {
	case "", "openldap":
		e.dir = slapdDir{testsrv.Slapd(t)}
	case "ad":
		e.dir = sambaDir{testsrv.SambaDC(t)}
	default:
		t.Fatalf("unknown directory %q", o.dir)
	}
	driver := o.driver
	if driver == "" {
		driver = "sqlite"
	}
	dc := config.Database{Driver: driver, DSN: config.Secret(testsrv.DSN(t, driver)), ConnectTimeout: config.Duration(30 * time.Second)}
	db, err := store.Open(ctx, dc, log)
	if err != nil {
		t.Fatalf("open database: %v", err)
	}
	t.Cleanup(func() { db.Close() })
	e.db = db
	createUsersTable(t, db)

	var lns []net.Listener
	for range 1 + o.replicas {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns = append(lns, ln)
		e.URLs = append(e.URLs, "http://localhost:"+strconv.Itoa(ln.Addr().(*net.TCPAddr).Port))
	}
	e.URL = e.URLs[0]

	cfg := config.Default()
	cfg.Database = dc
	cfg.UsersTable = config.UsersTable{Name: "users", Key: "id", Username: "username", Email: "email",
		Password: "password_hash", Active: "is_active", TOTP: "totp_secret"}
	cfg.Directory.Kind = e.dir.kind()
	cfg.Directory.Timeout = config.Duration(20 * time.Second)
	cfg.Directory.ConnectTimeout = config.Duration(5 * time.Second)
	cfg.Directory.MaxDeletions = config.Threshold{Percent: 100, IsPct: true}
	e.ou = e.dir.newOU(t)
	e.dir.configure(&cfg, e.ou)
	cfg.Portal.RPID = "localhost"
	cfg.Portal.RPName = "Test Corp"
	cfg.Portal.Origins = e.URLs
	if o.mail {
		e.smtp = testsrv.StartSMTP(t, testsrv.SMTPOptions{Security: "starttls", Username: "passbridge", Password: "smtp-Secret-1"})
		cfg.Mail = config.Mail{Host: e.smtp.Host, Port: e.smtp.Port, Security: "starttls", Username: "passbridge", Password: "smtp-Secret-1",
			From: "Passkeys <passkeys@corp.example>", CAFile: e.smtp.CAFile, Timeout: config.Duration(10 * time.Second)}
	}
	if o.configure != nil {
		o.configure(&cfg)
	}
	if err := config.Finish(&cfg, nil); err != nil {
		t.Fatalf("config: %v", err)
	}
	e.cfg = &cfg
	if err := migrate.EnsureApplied(ctx, db, e.cfg, log); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	if e.syncer, err = dirsync.NewSyncer(e.cfg, db, log); err != nil {
		t.Fatal(err)
	}
	e.metrics = metrics.New()
	var dir Directory
	if o.wrapDir != nil {
		c, err := directory.NewClient(e.cfg.Directory, log)
		if err != nil {
			t.Fatal(err)
		}
		dir = o.wrapDir(c)
	}
	for i, ln := range lns {
		pcfg := e.cfg
		if o.replicaConfigure != nil {
			c := *e.cfg
			o.replicaConfigure(i, &c)
			pcfg = &c
		}
		p, err := New(pcfg, Options{DB: db, Log: log, Metrics: e.metrics, Directory: dir})
		if err != nil {
			t.Fatalf("portal: %v", err)
		}
		if i == 0 {
			e.portal = p
		}
		a, err := agent.NewDaemon(e.cfg, db, log, agent.Options{Mount: p.Mount, PortalErrors: p.ErrorHandler(), Metrics: e.metrics, NoCatchUp: true})
		if err != nil {
			t.Fatalf("daemon: %v", err)
		}
		p.SetSync(a)
		e.metrics.SetAdoption(adoption.Snapshot(db, e.cfg), log)
		if i == 0 {
			e.echo = a.Handler().(*echo.Echo)
			e.daemon = a
		}
		srv := &http.Server{Handler: a.Handler(), ReadHeaderTimeout: 10 * time.Second}
		go func() {
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				t.Errorf("serve: %v", err)
			}
		}()
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			srv.Shutdown(ctx)
		})
	}
	return e
}

// createUsersTable makes the application's legacy users table.
func createUsersTable(t testing.TB, db *store.DB) {
	t.Helper()
	d := db.Dialect()
	q := d.Quote
	ddl := "CREATE TABLE " + d.Table("", "users") + " (" + q("id") + " " + d.Types().ID + ", " +
		q("username") + " " + d.VarChar(255) + " NOT NULL, " + q("email") + " " + d.VarChar(320) + ", " +
		q("password_hash") + " " + d.VarChar(255) + ", " + q("totp_secret") + " " + d.VarChar(64) + ", " +
		q("is_active") + " " + d.Types().Bool + ")" + d.TableOptions()
	if _, err := db.ExecContext(context.Background(), ddl); err != nil {
		t.Fatalf("create users table: %v", err)
	}
}

// user is an employee of the test directory.
type user struct {
	name     string // the login name (uid / sAMAccountName)
	dn       string
	email    string
	password string
	key      int64 // the users row, 0 without one
}

// addUser adds an employee to the directory and, with row, to the
// application's users table (matched by email by the next sync). Names get
// a random suffix: sAMAccountName is unique across an AD domain.
func (e *env) addUser(prefix string, row bool) *user {
	e.t.Helper()
	name := prefix + "-" + strconv.FormatInt(time.Now().UnixNano()%1e6, 36)
	u := &user{name: name, email: name + "@corp.example", password: e.dir.password()}
	u.dn = e.dir.addUser(e.t, e.ou, name)
	if row {
		d := e.db.Dialect()
		q := d.Quote
		id, err := d.InsertID(context.Background(), e.db, "INSERT INTO "+d.Table("", "users")+" ("+q("username")+", "+q("email")+", "+q("password_hash")+", "+q("is_active")+") VALUES (?, ?, ?, ?)",
			"id", name, u.email, "$2a$10$legacy."+name, true)
		if err != nil {
			e.t.Fatal(err)
		}
		u.key = id
	}
	return u
}

// sync runs a full sync, as the daemon's schedule would.
func (e *env) sync() {
	e.t.Helper()
	if _, err := e.syncer.Run(context.Background(), dirsync.RunOptions{Full: true, Trigger: "test"}); err != nil {
		e.t.Fatalf("sync: %v", err)
	}
}

// count runs a COUNT(*) query (with ? placeholders).
func (e *env) count(query string, args ...any) int {
	e.t.Helper()
	var n int
	if err := store.Get(context.Background(), e.db, &n, query, args...); err != nil {
		e.t.Fatalf("%s: %v", query, err)
	}
	return n
}

// auditCount counts audit events of a kind (and success) about target.
func (e *env) auditCount(event string, success bool, target string) int {
	e.t.Helper()
	n := schema.NamesFor(e.cfg)
	q := e.db.Dialect().Quote
	return e.count("SELECT COUNT(*) FROM "+n.Audit+" WHERE "+q("event")+" = ? AND "+q("success")+" = ? AND "+q("target")+" = ?", event, success, target)
}

// passkeyState reads users.<prefix>passkey_state of a row.
func (e *env) passkeyState(u *user) string {
	e.t.Helper()
	n := schema.NamesFor(e.cfg)
	var s *string
	if err := store.Get(context.Background(), e.db, &s, "SELECT "+n.PasskeyState+" FROM "+n.Users+" WHERE "+n.UserKey+" = ?", u.key); err != nil {
		e.t.Fatal(err)
	}
	if s == nil {
		return "NULL"
	}
	return *s
}

// activePasskeys counts a user's active passkeys.
func (e *env) activePasskeys(u *user) int {
	e.t.Helper()
	n := schema.NamesFor(e.cfg)
	q := e.db.Dialect().Quote
	return e.count("SELECT COUNT(*) FROM "+n.Credentials+" WHERE "+q("user_key")+" = ? AND "+q("revoked_at")+" IS NULL", u.key)
}

// link issues an enrollment link for u as IT would.
func (e *env) link(u *user) string {
	e.t.Helper()
	l, err := IssueLink(context.Background(), e.db, e.cfg, u.name, LinkOptions{CreatedBy: "cli:test"})
	if err != nil {
		e.t.Fatalf("issue link: %v", err)
	}
	return l.URL
}
