package agent

import (
	"bufio"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/passbridge/passbridge/config"
	"github.com/passbridge/passbridge/dirsync"
	"github.com/passbridge/passbridge/internal/testsrv"
	"github.com/passbridge/passbridge/migrate"
	"github.com/passbridge/passbridge/schema"
	"github.com/passbridge/passbridge/store"
)

// replicaMain is the daemon a replica process runs (see replica_test.go).
var replicaMain func() int

// replicaEnv, set to a configuration file, makes the test binary a replica.
const replicaEnv = "PASSBRIDGE_TEST_AGENT_REPLICA"

func TestMain(m *testing.M) {
	if os.Getenv(replicaEnv) != "" && replicaMain != nil {
		os.Exit(replicaMain())
	}
	os.Exit(testsrv.Run(m))
}

// testLog writes the daemon's log into the test log.
func testLog(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// dbKind is one of the engines the tests run on.
type dbKind string

const (
	onSQLite   dbKind = "sqlite"
	onPostgres dbKind = "postgres"
	onMariaDB  dbKind = "mysql"
)

// newDatabase makes an empty database of kind for one test and returns its
// database section.
func newDatabase(t testing.TB, kind dbKind) config.Database {
	t.Helper()
	if kind == "" {
		kind = onSQLite
	}
	return config.Database{Driver: string(kind), DSN: config.Secret(testsrv.DSN(t, string(kind))), ConnectTimeout: config.Duration(10 * time.Second)}
}

// testConfig is a valid configuration for a directory OU on slapd (nil: a
// directory that is never contacted) and a database.
func testConfig(t testing.TB, db config.Database, dir *testsrv.LDAP, ou string) *config.Config {
	t.Helper()
	cfg := config.Default()
	cfg.Database = db
	cfg.Directory.Kind = "openldap"
	cfg.Directory.URLs = []string{"ldap://127.0.0.1:1"}
	cfg.Directory.BaseDN = "ou=nowhere,dc=corp,dc=example"
	cfg.Directory.BindDN = "cn=passbridge,ou=services,dc=corp,dc=example"
	cfg.Directory.BindPassword = "unused"
	if dir != nil {
		cfg.Directory.URLs = []string{dir.URL}
		cfg.Directory.BaseDN = ou
		cfg.Directory.BindDN = dir.BindDN
		cfg.Directory.BindPassword = config.Secret(dir.BindPassword)
	}
	cfg.Directory.ConnectTimeout = config.Duration(2 * time.Second)
	cfg.Directory.Timeout = config.Duration(20 * time.Second)
	cfg.Directory.MaxDeletions = config.Threshold{Percent: 100, IsPct: true}
	cfg.Schedule = config.Schedule{}
	cfg.Portal.Listen = "127.0.0.1:0"
	cfg.Portal.RPID = "localhost"
	cfg.Portal.Origins = []string{"http://localhost:8080"}
	cfg.Admin.Token = config.Secret(testToken)
	cfg.Admin.ShutdownGrace = config.Duration(5 * time.Second)
	if err := config.Finish(&cfg, nil); err != nil {
		t.Fatalf("test configuration: %v", err)
	}
	return &cfg
}

const testToken = "5028f49575315d239a10eb317a6974ff"

// usersDDL creates the application's legacy users table, per engine.
func usersDDL(driver string) string {
	switch driver {
	case "postgres":
		return `CREATE TABLE users (id BIGSERIAL PRIMARY KEY, username VARCHAR(255) NOT NULL, email VARCHAR(320), password_hash VARCHAR(255) NOT NULL)`
	case "mysql":
		return `CREATE TABLE users (id BIGINT AUTO_INCREMENT PRIMARY KEY, username VARCHAR(255) NOT NULL, email VARCHAR(320), password_hash VARCHAR(255) NOT NULL) ENGINE=InnoDB`
	}
	return `CREATE TABLE users (id INTEGER PRIMARY KEY AUTOINCREMENT, username TEXT NOT NULL, email TEXT, password_hash TEXT NOT NULL)`
}

// openApp opens the database of cfg, creating the legacy users table and
// passbridge's tables when they are not there yet.
func openApp(t testing.TB, cfg *config.Config) *store.DB {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	db, err := store.Open(ctx, cfg.Database, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("open database: %v", err)
	}
	t.Cleanup(func() { db.Close() })
	if err := prepareApp(ctx, db, cfg); err != nil {
		t.Fatal(err)
	}
	return db
}

func prepareApp(ctx context.Context, db *store.DB, cfg *config.Config) error {
	var n int
	err := store.Get(ctx, db, &n, "SELECT COUNT(*) FROM users")
	if err != nil {
		if _, err := db.ExecContext(ctx, usersDDL(cfg.Database.Driver)); err != nil {
			return fmt.Errorf("create users table: %w", err)
		}
	}
	if err := migrate.EnsureApplied(ctx, db, cfg, slog.New(slog.DiscardHandler)); err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	return nil
}

// runRows reads sync_runs, oldest first.
func runRows(t testing.TB, db *store.DB, cfg *config.Config) []dirsync.RunRecord {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	runs, err := NewDatabase(db, cfg).ListRuns(ctx, 0, 10000)
	if err != nil {
		t.Fatalf("read sync_runs: %v", err)
	}
	for i, j := 0, len(runs)-1; i < j; i, j = i+1, j-1 {
		runs[i], runs[j] = runs[j], runs[i]
	}
	return runs
}

// identityCounts counts identities per state.
func identityCounts(t testing.TB, db *store.DB, cfg *config.Config) map[string]int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	snap, err := NewDatabase(db, cfg).Snapshot(ctx)
	if err != nil {
		t.Fatalf("count identities: %v", err)
	}
	return snap.Identities
}

// waitFor polls cond until it holds or the deadline passes. It checks a
// condition, it does not time anything.
func waitFor(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", within, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// getJSON fetches url (with the admin token when auth) and decodes the body.
func getJSON(t testing.TB, method, url string, auth bool, body string, v any) int {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	if auth {
		req.Header.Set("Authorization", "Bearer "+testToken)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if v != nil {
		if err := json.Unmarshal(raw, v); err != nil {
			t.Fatalf("%s %s: status %d, body not JSON: %v\n%s", method, url, resp.StatusCode, err, raw)
		}
	}
	return resp.StatusCode
}

// scrape reads /metrics into metric families.
func scrape(t testing.TB, url string) map[string]*familyView {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("scrape: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("scrape: status %d", resp.StatusCode)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(bufio.NewReader(resp.Body))
	if err != nil {
		t.Fatalf("scrape: parse: %v", err)
	}
	out := map[string]*familyView{}
	for name, f := range fams {
		fv := &familyView{}
		for _, m := range f.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			v := 0.0
			switch {
			case m.Counter != nil:
				v = m.GetCounter().GetValue()
			case m.Gauge != nil:
				v = m.GetGauge().GetValue()
			case m.Histogram != nil:
				v = float64(m.GetHistogram().GetSampleCount())
			}
			fv.samples = append(fv.samples, sample{labels, v})
		}
		out[name] = fv
	}
	return out
}

type sample struct {
	labels map[string]string
	value  float64
}

type familyView struct{ samples []sample }

// value returns the sample whose labels include want, and whether it exists.
func (f *familyView) value(want map[string]string) (float64, bool) {
	if f == nil {
		return 0, false
	}
next:
	for _, s := range f.samples {
		for k, v := range want {
			if s.labels[k] != v {
				continue next
			}
		}
		return s.value, true
	}
	return 0, false
}

// gateSyncer is a controllable sync job for the scheduling tests: it
// records its run in sync_runs exactly as the directory engine does
// (running, then succeeded), then waits for the test to open the gate.
type gateSyncer struct {
	db   *store.DB
	cfg  *config.Config
	node string

	mu      sync.Mutex
	gate    chan struct{} // nil: runs pass straight through
	started chan struct{} // receives one value per run started
}

func newGateSyncer(db *store.DB, cfg *config.Config, node string) *gateSyncer {
	return &gateSyncer{db: db, cfg: cfg, node: node, started: make(chan struct{}, 1000)}
}

// hold makes the next runs block until release is called.
func (g *gateSyncer) hold() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.gate = make(chan struct{})
}

func (g *gateSyncer) release() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.gate != nil {
		close(g.gate)
		g.gate = nil
	}
}

func (g *gateSyncer) Sync(ctx context.Context, req SyncRequest) (Outcome, error) {
	n := schema.NamesFor(g.cfg)
	d := g.db.Dialect()
	start := time.Now().UTC()
	q := fmt.Sprintf("INSERT INTO %s (%s, %s, %s, %s, %s, %s, %s) VALUES (?, ?, ?, ?, ?, ?, ?)", n.SyncRuns,
		d.Quote("kind"), d.Quote("trigger"), d.Quote("dry_run"), d.Quote("status"), d.Quote("node"), d.Quote("started_at"), d.Quote("entries"))
	if _, err := store.Exec(ctx, g.db, q, req.Kind(), req.Trigger, req.DryRun, "running", g.node, start, 0); err != nil {
		return Outcome{Cause: "database"}, err
	}
	var id int64
	if err := store.Get(ctx, g.db, &id, fmt.Sprintf("SELECT MAX(%s) FROM %s WHERE %s = ?", d.Quote("id"), n.SyncRuns, d.Quote("node")), g.node); err != nil {
		return Outcome{Cause: "database"}, err
	}
	g.started <- struct{}{}
	g.mu.Lock()
	gate := g.gate
	g.mu.Unlock()
	status, errText := "succeeded", sql.NullString{}
	var err error
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			status, err = "failed", ctx.Err()
			errText = sql.NullString{String: err.Error(), Valid: true}
		}
	}
	up := fmt.Sprintf("UPDATE %s SET %s = ?, %s = ?, %s = ? WHERE %s = ?", n.SyncRuns, d.Quote("status"), d.Quote("finished_at"), d.Quote("error"), d.Quote("id"))
	uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if _, uerr := store.Exec(uctx, g.db, up, status, time.Now().UTC(), errText, id); uerr != nil && err == nil {
		return Outcome{Cause: "database"}, uerr
	}
	return Outcome{Status: status, Summary: map[string]any{"run_id": id, "kind": req.Kind()}}, err
}
