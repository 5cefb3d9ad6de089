package directory

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/passbridge/passbridge/config"
	"github.com/passbridge/passbridge/internal/testsrv"
	"github.com/passbridge/passbridge/migrate"
	"github.com/passbridge/passbridge/store"
)

func TestMain(m *testing.M) { os.Exit(testsrv.Run(m)) }

// testLog is a logger writing to the test's log, and a buffer to look into.
type testLog struct {
	mu  sync.Mutex
	buf bytes.Buffer
	t   testing.TB
}

func (l *testLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf.Write(p)
	l.t.Logf("%s", bytes.TrimRight(p, "\n"))
	return len(p), nil
}

func (l *testLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func newTestLog(t testing.TB) (*slog.Logger, *testLog) {
	w := &testLog{t: t}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug})), w
}

// database opens a fresh database of the driver for one test, with the
// application's users table and passbridge's tables.
func database(t testing.TB, driver string) (config.Database, *store.DB) {
	t.Helper()
	dc := config.Database{Driver: driver, DSN: config.Secret(testsrv.DSN(t, driver)), ConnectTimeout: config.Duration(30 * time.Second)}
	db, err := store.Open(context.Background(), dc, nil)
	if err != nil {
		t.Fatalf("open %s: %v", driver, err)
	}
	t.Cleanup(func() { db.Close() })
	createUsersTable(t, db, "users")
	return dc, db
}

// createUsersTable makes the application's legacy users table.
func createUsersTable(t testing.TB, db *store.DB, name string) {
	t.Helper()
	d := db.Dialect()
	q := d.Quote
	ddl := "CREATE TABLE " + d.Table("", name) + " (" + q("id") + " " + d.Types().ID + ", " +
		q("username") + " " + d.VarChar(255) + " NOT NULL, " + q("email") + " " + d.VarChar(320) + ", " +
		q("display_name") + " " + d.VarChar(255) + ", " + q("password_hash") + " " + d.VarChar(255) + ", " +
		q("is_active") + " " + d.Types().Bool + ")" + d.TableOptions()
	if _, err := db.ExecContext(context.Background(), ddl); err != nil {
		t.Fatalf("create users table: %v", err)
	}
}

// addAppUser inserts a row into the application's users table and returns
// its key.
func addAppUser(t testing.TB, db *store.DB, username, email string) int64 {
	t.Helper()
	d := db.Dialect()
	q := d.Quote
	var e any
	if email != "" {
		e = email
	}
	id, err := d.InsertID(context.Background(), db, "INSERT INTO "+d.Table("", "users")+" ("+q("username")+", "+q("email")+", "+q("password_hash")+", "+q("is_active")+") VALUES (?, ?, ?, ?)",
		"id", username, e, "$2y$10$legacyhash."+username, true)
	if err != nil {
		t.Fatalf("add app user %s: %v", username, err)
	}
	return id
}

// baseConfig is a configuration for db and a directory of kind, with the
// kind's presets applied.
func baseConfig(t testing.TB, dc config.Database, kind string) *config.Config {
	t.Helper()
	cfg := config.Default()
	cfg.Database = dc
	cfg.UsersTable = config.UsersTable{Name: "users", Key: "id", Username: "username", Email: "email",
		DisplayName: "display_name", Password: "password_hash", Active: "is_active"}
	cfg.Directory.Kind = kind
	p := config.Presets[kind]
	cfg.Directory.Attributes = p.Attributes
	cfg.Directory.UserFilter = p.UserFilter
	cfg.Directory.MaxDeletions = config.Threshold{Percent: 100, IsPct: true}
	cfg.Directory.Timeout = config.Duration(30 * time.Second)
	cfg.Directory.ConnectTimeout = config.Duration(5 * time.Second)
	return &cfg
}

// slapdConfig points cfg at the slapd, reading under base.
func slapdConfig(s *testsrv.LDAP, cfg *config.Config, base string) {
	cfg.Directory.URLs = []string{s.URL}
	cfg.Directory.StartTLS = true
	cfg.Directory.CAFile = s.CAFile
	cfg.Directory.BindDN = s.BindDN
	cfg.Directory.BindPassword = config.Secret(s.BindPassword)
	cfg.Directory.BaseDN = base
}

// sambaConfig points cfg at the Samba DC (LDAPS), reading under base.
func sambaConfig(s *testsrv.AD, cfg *config.Config, base string) {
	cfg.Directory.URLs = []string{s.LDAPSURL}
	cfg.Directory.CAFile = s.CAFile
	cfg.Directory.BindDN = s.BindUPN
	cfg.Directory.BindPassword = config.Secret(s.BindPassword)
	cfg.Directory.BaseDN = base
}

func newSyncer(t testing.TB, cfg *config.Config, db *store.DB) (*Syncer, *testLog) {
	t.Helper()
	log, buf := newTestLog(t)
	if err := migrate.EnsureApplied(context.Background(), db, cfg, log); err != nil {
		t.Fatalf("create passbridge tables: %v", err)
	}
	s, err := NewSyncer(cfg, db, log)
	if err != nil {
		t.Fatalf("NewSyncer: %v", err)
	}
	return s, buf
}

// run runs a sync and fails the test on error.
func run(t testing.TB, s *Syncer, opts RunOptions) (*Summary, []Change) {
	t.Helper()
	var changes []Change
	opts.OnChange = func(c Change) { changes = append(changes, c) }
	if opts.Trigger == "" {
		opts.Trigger = "test"
	}
	sum, err := s.Run(context.Background(), opts)
	if err != nil {
		t.Fatalf("sync (full=%v dry=%v): %v", opts.Full, opts.DryRun, err)
	}
	return sum, changes
}

// row is an identity as stored, for assertions.
type row struct {
	ID          int64
	DirectoryID string
	DN          string
	Username    string
	Email       string
	DisplayName string
	State       string
	StateReason string
	UserKey     string
	LinkState   string
	LinkDetail  string
}

func identities(t testing.TB, s *Syncer) map[string]row {
	t.Helper()
	out := map[string]row{}
	err := s.eachIdentity(context.Background(), "", func(rows []*identityRow) error {
		for _, r := range rows {
			out[r.DirectoryID] = row{ID: r.ID, DirectoryID: r.DirectoryID, DN: r.DN, Username: r.Username, Email: r.Email.String,
				DisplayName: r.DisplayName.String, State: r.State, StateReason: r.StateReason.String, UserKey: keyString(r.UserKey),
				LinkState: r.LinkState, LinkDetail: r.LinkDetail.String}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func identity(t testing.TB, s *Syncer, id string) row {
	t.Helper()
	r, ok := identities(t, s)[id]
	if !ok {
		t.Fatalf("no identity %s in the database", id)
	}
	return r
}

// dump is every passbridge-owned and users row as text, to compare the
// database before and after a run that must not write.
func dump(t testing.TB, s *Syncer) string {
	t.Helper()
	var b strings.Builder
	for _, table := range []string{s.n.Identities, s.n.Users, s.n.SyncState} {
		rows, err := s.db.QueryxContext(context.Background(), "SELECT * FROM "+table)
		if err != nil {
			t.Fatalf("dump %s: %v", table, err)
		}
		for rows.Next() {
			m := map[string]any{}
			if err := rows.MapScan(m); err != nil {
				t.Fatal(err)
			}
			fmt.Fprintf(&b, "%s %v\n", table, normMap(m))
		}
		if err := rows.Err(); err != nil && !errors.Is(err, sql.ErrNoRows) {
			t.Fatal(err)
		}
		rows.Close()
	}
	return b.String()
}

func normMap(m map[string]any) map[string]any {
	for k, v := range m {
		if b, ok := v.([]byte); ok {
			m[k] = string(b)
		}
		if tm, ok := v.(time.Time); ok {
			m[k] = tm.UTC().Format(time.RFC3339Nano)
		}
	}
	return m
}

func countKinds(changes []Change) map[string]int {
	out := map[string]int{}
	for _, c := range changes {
		out[c.Kind]++
	}
	return out
}

func kindsOf(changes []Change, id string) []string {
	var out []string
	for _, c := range changes {
		if c.DirectoryID == id {
			out = append(out, c.Kind)
		}
	}
	return out
}
