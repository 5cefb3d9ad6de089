// Package testdir is what the tests of the directory reader (directory),
// the sync engine (dirsync) and the identity admin layer (identity) share:
// real directories to drive (a Fixture over a throwaway OpenLDAP or Samba
// AD from testsrv), a fresh application database with its legacy users
// table, a configuration for both, and the identities as stored, read back
// independently of the code under test. Only tests import it.
package testdir

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-ldap/ldap/v3"

	"github.com/passbridge/passbridge/config"
	"github.com/passbridge/passbridge/internal/testsrv"
	"github.com/passbridge/passbridge/migrate"
	"github.com/passbridge/passbridge/schema"
	"github.com/passbridge/passbridge/store"
)

// TestLog is a logger's output written to the test's log, and a buffer to
// look into.
type TestLog struct {
	mu  sync.Mutex
	buf bytes.Buffer
	t   testing.TB
}

func (l *TestLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf.Write(p)
	l.t.Logf("%s", bytes.TrimRight(p, "\n"))
	return len(p), nil
}

func (l *TestLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// NewTestLog is a debug logger writing to the test's log and to the
// returned buffer.
func NewTestLog(t testing.TB) (*slog.Logger, *TestLog) {
	w := &TestLog{t: t}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug})), w
}

// Database opens a fresh database of the driver for one test, with the
// application's users table.
func Database(t testing.TB, driver string) (config.Database, *store.DB) {
	t.Helper()
	dc := config.Database{Driver: driver, DSN: config.Secret(testsrv.DSN(t, driver)), ConnectTimeout: config.Duration(30 * time.Second)}
	db, err := store.Open(context.Background(), dc, nil)
	if err != nil {
		t.Fatalf("open %s: %v", driver, err)
	}
	t.Cleanup(func() { db.Close() })
	CreateUsersTable(t, db, "users")
	return dc, db
}

// CreateUsersTable makes the application's legacy users table.
func CreateUsersTable(t testing.TB, db *store.DB, name string) {
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

// AddAppUser inserts a row into the application's users table and returns
// its key.
func AddAppUser(t testing.TB, db *store.DB, username, email string) int64 {
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

// BaseConfig is a configuration for db and a directory of kind, with the
// kind's presets applied.
func BaseConfig(t testing.TB, dc config.Database, kind string) *config.Config {
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

// SlapdConfig points cfg at the slapd, reading under base.
func SlapdConfig(s *testsrv.LDAP, cfg *config.Config, base string) {
	cfg.Directory.URLs = []string{s.URL}
	cfg.Directory.StartTLS = true
	cfg.Directory.CAFile = s.CAFile
	cfg.Directory.BindDN = s.BindDN
	cfg.Directory.BindPassword = config.Secret(s.BindPassword)
	cfg.Directory.BaseDN = base
}

// SambaConfig points cfg at the Samba DC (LDAPS), reading under base.
func SambaConfig(s *testsrv.AD, cfg *config.Config, base string) {
	cfg.Directory.URLs = []string{s.LDAPSURL}
	cfg.Directory.CAFile = s.CAFile
	cfg.Directory.BindDN = s.BindUPN
	cfg.Directory.BindPassword = config.Secret(s.BindPassword)
	cfg.Directory.BaseDN = base
}

// Fixture drives one kind of real directory for the tests.
type Fixture interface {
	Kind() string
	Configure(cfg *config.Config, base string)
	NewOU(t *testing.T) string
	AddOU(t *testing.T, parent, name string) string
	// AddUser adds an enabled user with the given login name and mail.
	AddUser(t *testing.T, parent, name string, attrs map[string][]string) string
	Modify(t *testing.T, dn string, attrs map[string][]string)
	// Rename changes the RDN value (the login name stays on AD).
	Rename(t *testing.T, dn, newValue string) string
	Move(t *testing.T, dn, parent string) string
	Disable(t *testing.T, dn string)
	Enable(t *testing.T, dn string)
	// Remove deletes the user and returns what restore needs.
	Remove(t *testing.T, dn string) func(t *testing.T) string
	ID(t *testing.T, dn string) string
	AddGroup(t *testing.T, parent, name string, members ...string) string
	AddMember(t *testing.T, group, member string)
	RemoveMember(t *testing.T, group, member string)
	// RenamesLogin reports whether Rename changes the username.
	RenamesLogin() bool
}

// Slapd is the Fixture of an OpenLDAP server.
type Slapd struct{ S *testsrv.LDAP }

func (f Slapd) Kind() string { return "openldap" }
func (f Slapd) Configure(cfg *config.Config, base string) {
	SlapdConfig(f.S, cfg, base)
}
func (f Slapd) NewOU(t *testing.T) string { return f.S.NewOU(t) }
func (f Slapd) AddOU(t *testing.T, parent, name string) string {
	return f.S.AddOU(t, parent, name)
}
func (f Slapd) AddUser(t *testing.T, parent, name string, attrs map[string][]string) string {
	return f.S.AddUser(t, parent, name, attrs)
}
func (f Slapd) Modify(t *testing.T, dn string, attrs map[string][]string) {
	f.S.Modify(t, dn, attrs)
}
func (f Slapd) Rename(t *testing.T, dn, v string) string {
	return f.S.Rename(t, dn, "uid="+ldap.EscapeDN(v))
}
func (f Slapd) Move(t *testing.T, dn, parent string) string { return f.S.Move(t, dn, parent) }
func (f Slapd) Disable(t *testing.T, dn string)             { f.S.Disable(t, dn) }
func (f Slapd) Enable(t *testing.T, dn string)              { f.S.Enable(t, dn) }
func (f Slapd) ID(t *testing.T, dn string) string           { return f.S.UUID(t, dn) }
func (f Slapd) RenamesLogin() bool                          { return true }
func (f Slapd) AddGroup(t *testing.T, parent, name string, members ...string) string {
	return f.S.AddGroup(t, parent, name, members...)
}
func (f Slapd) AddMember(t *testing.T, g, m string)    { f.S.AddMember(t, g, m) }
func (f Slapd) RemoveMember(t *testing.T, g, m string) { f.S.RemoveMember(t, g, m) }

// Remove deletes the entry; restore adds it back with the same entryUUID,
// as an LDIF restore from backup does (slapadd or ldapadd with the Relax
// Rules control keep operational attributes).
func (f Slapd) Remove(t *testing.T, dn string) func(t *testing.T) string {
	e := f.S.Entry(t, dn, "*", "entryUUID")
	f.S.Delete(t, dn)
	return func(t *testing.T) string {
		t.Helper()
		c := f.S.Conn(t)
		req := ldap.NewAddRequest(dn, []ldap.Control{ldap.NewControlString("1.3.6.1.4.1.4203.666.5.12", true, "")})
		for _, a := range e.Attributes {
			req.Attribute(a.Name, a.Values)
		}
		if err := c.Add(req); err != nil {
			t.Fatalf("restore %s with its entryUUID: %v", dn, err)
		}
		return dn
	}
}

// Samba is the Fixture of a Samba AD domain controller.
type Samba struct{ S *testsrv.AD }

func (f Samba) Kind() string { return "ad" }
func (f Samba) Configure(cfg *config.Config, base string) {
	SambaConfig(f.S, cfg, base)
}
func (f Samba) NewOU(t *testing.T) string { return f.S.NewOU(t) }
func (f Samba) AddOU(t *testing.T, parent, name string) string {
	return f.S.AddOU(t, parent, name)
}
func (f Samba) AddUser(t *testing.T, parent, name string, attrs map[string][]string) string {
	return f.S.AddUser(t, parent, name, attrs)
}
func (f Samba) Modify(t *testing.T, dn string, attrs map[string][]string) {
	f.S.Modify(t, dn, attrs)
}
func (f Samba) Rename(t *testing.T, dn, v string) string {
	return f.S.Rename(t, dn, "CN="+ldap.EscapeDN(v))
}
func (f Samba) Move(t *testing.T, dn, parent string) string { return f.S.Move(t, dn, parent) }
func (f Samba) Disable(t *testing.T, dn string)             { f.S.Disable(t, dn) }
func (f Samba) Enable(t *testing.T, dn string)              { f.S.Enable(t, dn) }
func (f Samba) RenamesLogin() bool                          { return false }

// ID is the objectGUID as the directory reader writes it (GUID returns 16
// bytes or fails the test).
func (f Samba) ID(t *testing.T, dn string) string { return testsrv.FormatGUID(f.S.GUID(t, dn)) }
func (f Samba) AddGroup(t *testing.T, parent, name string, members ...string) string {
	return f.S.AddGroup(t, parent, name, members...)
}
func (f Samba) AddMember(t *testing.T, g, m string)    { f.S.AddMember(t, g, m) }
func (f Samba) RemoveMember(t *testing.T, g, m string) { f.S.RemoveMember(t, g, m) }
func (f Samba) Remove(t *testing.T, dn string) func(t *testing.T) string {
	e := f.S.Entry(t, dn, "objectGUID", "mail", "displayName")
	guid := e.GetRawAttributeValue("objectGUID")
	f.S.Delete(t, dn)
	return func(t *testing.T) string {
		t.Helper()
		f.S.Restore(t, guid, dn)
		// Reanimation keeps few attributes: put back what IT would.
		f.S.Modify(t, dn, map[string][]string{"mail": e.GetAttributeValues("mail"), "displayName": e.GetAttributeValues("displayName")})
		f.S.SetPassword(t, dn, testsrv.DefaultUserPassword)
		f.S.Enable(t, dn)
		return dn
	}
}

// Fixtures are the real directories every test that can runs against.
func Fixtures(t *testing.T) map[string]func(t *testing.T) Fixture {
	return map[string]func(t *testing.T) Fixture{
		"openldap": func(t *testing.T) Fixture { return Slapd{testsrv.Slapd(t)} },
		"ad":       func(t *testing.T) Fixture { return Samba{testsrv.SambaDC(t)} },
	}
}

// Row is an identity as stored, for assertions.
type Row struct {
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

// Identities reads every stored identity, by directory ID, straight from
// the table.
func Identities(t testing.TB, db *store.DB, cfg *config.Config) map[string]Row {
	t.Helper()
	n := schema.NamesFor(cfg)
	var rows []struct {
		ID          int64          `db:"id"`
		DirectoryID string         `db:"directory_id"`
		DN          string         `db:"dn"`
		Username    string         `db:"username"`
		Email       sql.NullString `db:"email"`
		DisplayName sql.NullString `db:"display_name"`
		State       string         `db:"state"`
		StateReason sql.NullString `db:"state_reason"`
		UserKey     any            `db:"user_key"`
		LinkState   string         `db:"link_state"`
		LinkDetail  sql.NullString `db:"link_detail"`
	}
	cols := []string{"id", "directory_id", "dn", "username", "email", "display_name", "state", "state_reason", "user_key", "link_state", "link_detail"}
	for i, c := range cols {
		cols[i] = n.Column(c)
	}
	if err := store.Select(context.Background(), db, &rows, "SELECT "+strings.Join(cols, ", ")+" FROM "+n.Identities+" ORDER BY "+n.Column("id")); err != nil {
		t.Fatal(err)
	}
	out := map[string]Row{}
	for _, r := range rows {
		out[r.DirectoryID] = Row{ID: r.ID, DirectoryID: r.DirectoryID, DN: r.DN, Username: r.Username, Email: r.Email.String,
			DisplayName: r.DisplayName.String, State: r.State, StateReason: r.StateReason.String, UserKey: schema.KeyString(schema.NormKey(r.UserKey)),
			LinkState: r.LinkState, LinkDetail: r.LinkDetail.String}
	}
	return out
}

// Identity is one stored identity by its directory ID; the test fails when
// there is none.
func Identity(t testing.TB, db *store.DB, cfg *config.Config, id string) Row {
	t.Helper()
	r, ok := Identities(t, db, cfg)[id]
	if !ok {
		t.Fatalf("no identity %s in the database", id)
	}
	return r
}

// Dump is every passbridge-owned and users row as text, to compare the
// database before and after a run that must not write.
func Dump(t testing.TB, db *store.DB, cfg *config.Config) string {
	t.Helper()
	n := schema.NamesFor(cfg)
	var b strings.Builder
	for _, table := range []string{n.Identities, n.Users, n.SyncState} {
		rows, err := db.QueryxContext(context.Background(), "SELECT * FROM "+table)
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

// Migrate creates passbridge's tables in db, as `passbridge migrate apply`
// does.
func Migrate(t testing.TB, db *store.DB, cfg *config.Config, log *slog.Logger) {
	t.Helper()
	if err := migrate.EnsureApplied(context.Background(), db, cfg, log); err != nil {
		t.Fatalf("create passbridge tables: %v", err)
	}
}
