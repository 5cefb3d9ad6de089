package campaign_test

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"regexp"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/passbridge/passbridge/campaign"
	"github.com/passbridge/passbridge/config"
	"github.com/passbridge/passbridge/directory"
	"github.com/passbridge/passbridge/dirsync"
	"github.com/passbridge/passbridge/enroll"
	"github.com/passbridge/passbridge/enroll/mail"
	"github.com/passbridge/passbridge/internal/testsrv"
	"github.com/passbridge/passbridge/migrate"
	"github.com/passbridge/passbridge/schema"
	"github.com/passbridge/passbridge/store"
)

func TestMain(m *testing.M) { os.Exit(testsrv.Run(m)) }

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

// env is a directory (a slapd OU), the application database with its
// users table and passbridge's tables, the portal (which makes the links),
// an SMTP server, and the campaign clock. The clock starts four days
// behind real time, so that a test can step it up to now and what real
// components stamp (passkeys, ceremonies) comes after the mail it sent.
type env struct {
	t      testing.TB
	ldap   *testsrv.LDAP
	ou     string
	db     *store.DB
	cfg    *config.Config
	portal *enroll.Portal
	smtp   *testsrv.SMTP
	clock  *testsrv.Clock
	log    *slog.Logger
	syncer *dirsync.Syncer
}

func newEnv(t testing.TB, driver string, configure func(*config.Config)) *env {
	t.Helper()
	ctx := context.Background()
	e := &env{t: t, ldap: testsrv.Slapd(t), clock: testsrv.NewClock(time.Now().Add(-4 * 24 * time.Hour))}
	e.log = slog.New(slog.NewTextHandler(&logWriter{t: t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
	dc := config.Database{Driver: driver, DSN: config.Secret(testsrv.DSN(t, driver)), ConnectTimeout: config.Duration(30 * time.Second)}
	db, err := store.Open(ctx, dc, e.log)
	if err != nil {
		t.Fatalf("open database: %v", err)
	}
	t.Cleanup(func() { db.Close() })
	e.db = db
	d := db.Dialect()
	q := d.Quote
	if _, err := db.ExecContext(ctx, "CREATE TABLE "+d.Table("", "users")+" ("+q("id")+" "+d.Types().ID+", "+q("username")+" "+d.VarChar(255)+" NOT NULL, "+
		q("email")+" "+d.VarChar(320)+", "+q("password_hash")+" "+d.VarChar(255)+")"+d.TableOptions()); err != nil {
		t.Fatal(err)
	}
	e.ou = e.ldap.NewOU(t)
	e.smtp = testsrv.StartSMTP(t, testsrv.SMTPOptions{Security: "starttls", Username: "passbridge", Password: "smtp-Secret-1"})
	cfg := config.Default()
	cfg.Database = dc
	cfg.UsersTable = config.UsersTable{Name: "users", Key: "id", Username: "username", Email: "email", Password: "password_hash"}
	cfg.Directory.Kind = "openldap"
	cfg.Directory.URLs = []string{e.ldap.URL}
	cfg.Directory.StartTLS = true
	cfg.Directory.CAFile = e.ldap.CAFile
	cfg.Directory.BindDN = e.ldap.BindDN
	cfg.Directory.BindPassword = config.Secret(e.ldap.BindPassword)
	cfg.Directory.BaseDN = e.ou
	cfg.Directory.MaxDeletions = config.Threshold{Percent: 100, IsPct: true}
	cfg.Portal.RPID = "localhost"
	cfg.Portal.RPName = "Test Corp"
	cfg.Portal.Origins = []string{"http://localhost:8443"}
	cfg.Campaign.PerMinute = 60000
	cfg.Campaign.Retry = config.Duration(time.Minute)
	cfg.Campaign.MaxAttempts = 3
	e.useSMTP(&cfg, e.smtp)
	if configure != nil {
		configure(&cfg)
	}
	if err := config.Finish(&cfg, nil); err != nil {
		t.Fatalf("config: %v", err)
	}
	e.cfg = &cfg
	if err := migrate.EnsureApplied(ctx, db, e.cfg, e.log); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	if e.syncer, err = dirsync.NewSyncer(e.cfg, db, e.log); err != nil {
		t.Fatal(err)
	}
	if e.portal, err = enroll.New(e.cfg, enroll.Options{DB: db, Log: e.log}); err != nil {
		t.Fatal(err)
	}
	return e
}

func (e *env) useSMTP(cfg *config.Config, s *testsrv.SMTP) {
	cfg.Mail = config.Mail{Host: s.Host, Port: s.Port, Security: "starttls", Username: "passbridge", Password: "smtp-Secret-1",
		From: "Passkeys <passkeys@corp.example>", CAFile: s.CAFile, Timeout: config.Duration(5 * time.Second)}
}

// engineOptions shape an engine of the test.
type engineOptions struct {
	node   string
	db     *store.DB   // default the env's
	mail   mail.Sender // default one to the env's SMTP server
	config *config.Config
}

func (e *env) engine(o engineOptions) *campaign.Engine {
	e.t.Helper()
	cfg := e.cfg
	if o.config != nil {
		cfg = o.config
	}
	if o.db == nil {
		o.db = e.db
	}
	if o.mail == nil {
		s, err := mail.New(cfg.Mail, e.log)
		if err != nil {
			e.t.Fatal(err)
		}
		o.mail = s
	}
	dir, err := directory.NewClient(cfg.Directory, e.log)
	if err != nil {
		e.t.Fatal(err)
	}
	eng, err := campaign.New(cfg, campaign.Options{DB: o.db, Links: e.portal, Mail: o.mail, Directory: dir, Log: e.log.With("node", o.node), Now: e.clock.Now, Node: o.node})
	if err != nil {
		e.t.Fatal(err)
	}
	return eng
}

// person is an employee in the directory with a users row.
type person struct {
	name, dn, email string
	key             int64
}

func (e *env) person(prefix string) *person {
	e.t.Helper()
	name := prefix + "-" + strconv.FormatInt(time.Now().UnixNano()%1e7, 36)
	p := &person{name: name, email: name + "@corp.example"}
	p.dn = e.ldap.AddUser(e.t, e.ou, name, map[string][]string{"displayName": {prefix + " Tester"}})
	d := e.db.Dialect()
	id, err := d.InsertID(context.Background(), e.db, "INSERT INTO "+d.Table("", "users")+" ("+d.Quote("username")+", "+d.Quote("email")+", "+d.Quote("password_hash")+") VALUES (?, ?, ?)",
		"id", name, p.email, "$2a$10$legacy")
	if err != nil {
		e.t.Fatal(err)
	}
	p.key = id
	return p
}

func (e *env) sync() {
	e.t.Helper()
	if _, err := e.syncer.Run(context.Background(), dirsync.RunOptions{Full: true, Trigger: "test"}); err != nil {
		e.t.Fatalf("sync: %v", err)
	}
}

// enroll gives p a passkey, as the portal stores one (the portal's own
// ceremonies are tested end to end in enroll).
func (e *env) enroll(p *person) {
	e.t.Helper()
	n := schema.NamesFor(e.cfg)
	q := e.db.Dialect().Quote
	_, err := store.Exec(context.Background(), e.db, "INSERT INTO "+n.Credentials+" ("+q("user_key")+", "+q("credential_id")+", "+q("public_key")+", "+q("user_handle")+", "+q("name")+", "+q("created_at")+") VALUES (?, ?, ?, ?, ?, ?)",
		p.key, []byte("cred-"+p.name), []byte("cose"), []byte("handle-"+p.name), "Passkey", time.Now().UTC().Truncate(time.Microsecond))
	if err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) pass(eng *campaign.Engine) campaign.Stats {
	e.t.Helper()
	st, err := eng.Pass(context.Background())
	if err != nil {
		e.t.Fatalf("pass: %v", err)
	}
	return st
}

func (e *env) create(sp campaign.Spec) *campaign.Campaign {
	e.t.Helper()
	if sp.StartsAt.IsZero() {
		sp.StartsAt = e.clock.Now()
	}
	c, err := campaign.Create(context.Background(), e.db, e.cfg, sp, "cli:test")
	if err != nil {
		e.t.Fatalf("create: %v", err)
	}
	return c
}

func (e *env) funnel(c *campaign.Campaign) *campaign.Funnel {
	e.t.Helper()
	f, err := campaign.ComputeFunnel(context.Background(), e.db, e.cfg, c)
	if err != nil {
		e.t.Fatal(err)
	}
	return f
}

// mails counts the mail each address received, by subject kind.
func (e *env) mails() map[string]int {
	out := map[string]int{}
	for _, m := range e.smtp.Messages() {
		out[m.To]++
	}
	return out
}

func (e *env) count(query string, args ...any) int {
	e.t.Helper()
	var n int
	if err := store.Get(context.Background(), e.db, &n, query, args...); err != nil {
		e.t.Fatalf("%s: %v", query, err)
	}
	return n
}

var linkRE = regexp.MustCompile(`http://localhost:8443/link/[A-Za-z0-9_-]{43}`)
