package demo

import (
	"context"
	"database/sql"
	"encoding/base32"
	"fmt"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-ldap/ldap/v3"
	"golang.org/x/crypto/bcrypt"
	_ "modernc.org/sqlite"
)

func openSQLite(t testing.TB, path string) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(10000)")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

type row struct {
	ID                int64
	Username          string
	Email, Hash, TOTP sql.NullString
	Active            int
}

func dump(t *testing.T, db *sql.DB) []row {
	t.Helper()
	rs, err := db.Query("SELECT id, username, email, password_hash, totp_secret, is_active FROM users ORDER BY id")
	if err != nil {
		t.Fatal(err)
	}
	defer rs.Close()
	var out []row
	for rs.Next() {
		var r row
		if err := rs.Scan(&r.ID, &r.Username, &r.Email, &r.Hash, &r.TOTP, &r.Active); err != nil {
			t.Fatal(err)
		}
		out = append(out, r)
	}
	if err := rs.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestSeedLegacyUsers(t *testing.T) {
	ctx := context.Background()
	db := openSQLite(t, filepath.Join(t.TempDir(), "demo.db"))
	if err := SeedLegacyUsers(ctx, db); err != nil {
		t.Fatal(err)
	}

	// The schema of the task, column by column.
	cols, err := db.Query("SELECT name, type, pk FROM pragma_table_info('users') ORDER BY cid")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for cols.Next() {
		var name, typ string
		var pk int
		if err := cols.Scan(&name, &typ, &pk); err != nil {
			t.Fatal(err)
		}
		got = append(got, fmt.Sprintf("%s %s %d", name, typ, pk))
	}
	cols.Close()
	want := []string{"id INTEGER 1", "username TEXT 0", "email TEXT 0", "password_hash TEXT 0", "totp_secret TEXT 0", "is_active INTEGER 0"}
	if !slices.Equal(got, want) {
		t.Errorf("columns %v, want %v", got, want)
	}
	if _, err := db.Exec("INSERT INTO users (id, username) VALUES (999, 'jsmith')"); err == nil {
		t.Error("username is not UNIQUE")
	}

	rows := dump(t, db)
	if len(rows) != len(LegacyUsers()) {
		t.Fatalf("%d rows, want %d", len(rows), len(LegacyUsers()))
	}
	withTOTP := 0
	for i, r := range rows {
		u := LegacyUsers()[i]
		if r.ID != u.ID || r.Username != u.Username || r.Email.String != u.Email || r.Email.Valid != (u.Email != "") ||
			r.TOTP.Valid != (u.TOTPSecret != "") || (r.Active == 1) != u.Active {
			t.Errorf("row %+v does not hold %+v", r, u)
		}
		if cost, err := bcrypt.Cost([]byte(r.Hash.String)); err != nil || cost != 10 {
			t.Errorf("%s: bcrypt cost %d, %v", r.Username, cost, err)
		}
		if err := bcrypt.CompareHashAndPassword([]byte(r.Hash.String), []byte(LegacyPassword)); err != nil {
			t.Errorf("%s: the hash is not of LegacyPassword: %v", r.Username, err)
		}
		if r.TOTP.Valid {
			withTOTP++
			key, err := base32.StdEncoding.WithPadding(base32.NoPadding).DecodeString(r.TOTP.String)
			if err != nil || len(key) != 20 {
				t.Errorf("%s: TOTP secret %q is not 160 bits of base32: %v", r.Username, r.TOTP.String, err)
			}
		}
	}
	if withTOTP < 5 || withTOTP == len(rows) {
		t.Errorf("%d of %d rows have a TOTP secret; want some with and some without", withTOTP, len(rows))
	}

	// Idempotent: a second run changes nothing, and leaves the table alone
	// once the application (or passbridge) has changed it.
	if err := SeedLegacyUsers(ctx, db); err != nil {
		t.Fatal(err)
	}
	if again := dump(t, db); !slices.Equal(again, rows) {
		t.Error("a second seed changed the table")
	}
	if _, err := db.Exec("DELETE FROM users WHERE username = 'rbaxter'"); err != nil {
		t.Fatal(err)
	}
	if err := SeedLegacyUsers(ctx, db); err != nil {
		t.Fatal(err)
	}
	if n := len(dump(t, db)); n != len(rows)-1 {
		t.Errorf("seeding an existing table restored rows: %d rows", n)
	}
}

// TestLegacyRowsMatchTheDirectory checks the doc comment of
// SeedLegacyUsers against the LDIF.
func TestLegacyRowsMatchTheDirectory(t *testing.T) {
	d, err := Directory()
	if err != nil {
		t.Fatal(err)
	}
	type person struct{ uid, mail string }
	var people []person
	for _, e := range d.Entries() {
		if slices.Contains(e.Get("objectClass"), "inetOrgPerson") {
			people = append(people, person{e.First("uid"), e.First("mail")})
		}
	}
	byUsername, byEmail, byEmailFold := map[string]bool{}, map[string]bool{}, map[string]bool{}
	var orphans, emailOnly, usernameOnly, otherCase []string
	for _, u := range LegacyUsers() {
		var user, mail, fold bool
		for _, p := range people {
			if p.uid == u.Username {
				user = true
				byUsername[p.uid] = true
			}
			if p.mail == u.Email {
				mail = true
				byEmail[p.uid] = true
			}
			if u.Email != "" && strings.EqualFold(p.mail, u.Email) {
				fold = true
				byEmailFold[p.uid] = true
			}
		}
		switch {
		case !user && !fold:
			orphans = append(orphans, u.Username)
		case !user:
			emailOnly = append(emailOnly, u.Username)
		case !fold:
			usernameOnly = append(usernameOnly, u.Username)
		}
		if fold && !mail {
			otherCase = append(otherCase, u.Username)
		}
	}
	var noRow []string
	for _, p := range people {
		if !byUsername[p.uid] && !byEmailFold[p.uid] {
			noRow = append(noRow, p.uid)
		}
	}
	sort.Strings(noRow)
	check := func(what string, got, want []string) {
		t.Helper()
		if !slices.Equal(got, want) {
			t.Errorf("%s: %v, want %v (update the doc comment of SeedLegacyUsers)", what, got, want)
		}
	}
	check("directory people without a row", noRow, []string{"carlos.mendes", "priya.nair", "sofia.lindqvist"})
	check("rows that match nobody", orphans, []string{"rbaxter"})
	check("rows that match by email only", emailOnly, []string{"tnowak"})
	check("rows that match by username only", usernameOnly, []string{"kenji.watanabe", "dmitri.volkov"})
	check("rows whose email differs in case", otherCase, []string{"ava.chen", "lena.fischer"})
	if len(people)-len(noRow) < len(people)*3/4 {
		t.Errorf("only %d of %d people have a row; want most", len(people)-len(noRow), len(people))
	}
}

func TestSeedConcurrently(t *testing.T) {
	path := filepath.Join(t.TempDir(), "demo.db")
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		db := openSQLite(t, path)
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = SeedLegacyUsers(context.Background(), db)
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	if n := len(dump(t, openSQLite(t, path))); n != len(LegacyUsers()) {
		t.Errorf("%d rows after concurrent seeds, want %d", n, len(LegacyUsers()))
	}
}

func TestSeedFailureChangesNothing(t *testing.T) {
	ctx := context.Background()
	db := openSQLite(t, filepath.Join(t.TempDir(), "demo.db"))
	// One connection, so that the pragmas below hold for the seed. Small
	// pages and a cap of three (the schema, the new table and its unique index) make
	// the seed run out of space after a few rows: a failure half-way.
	db.SetMaxOpenConns(1)
	for _, pragma := range []string{"PRAGMA page_size = 512", "PRAGMA max_page_count = 3"} {
		if _, err := db.Exec(pragma); err != nil {
			t.Fatal(err)
		}
	}
	err := SeedLegacyUsers(ctx, db)
	if err == nil || !strings.Contains(err.Error(), "seed legacy users: insert") {
		t.Fatalf("seed into a full database: %v, want an insert error", err)
	}
	t.Logf("failed half-way, as intended: %v", err)
	var n int
	if err := db.QueryRow("SELECT count(*) FROM sqlite_master WHERE name = 'users'").Scan(&n); err != nil || n != 0 {
		t.Fatalf("a failed seed left a users table (%d, %v)", n, err)
	}
	// With room, the next start seeds everything.
	if _, err := db.Exec("PRAGMA max_page_count = 1000"); err != nil {
		t.Fatal(err)
	}
	if err := SeedLegacyUsers(ctx, db); err != nil {
		t.Fatal(err)
	}
	if got := len(dump(t, db)); got != len(LegacyUsers()) {
		t.Errorf("%d rows after the retry", got)
	}

	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := SeedLegacyUsers(cctx, openSQLite(t, filepath.Join(t.TempDir(), "other.db"))); err == nil {
		t.Error("seed with a cancelled context succeeded")
	}
	other := openSQLite(t, filepath.Join(t.TempDir(), "view.db"))
	if _, err := other.Exec("CREATE VIEW users AS SELECT 1 AS id"); err != nil {
		t.Fatal(err)
	}
	if err := SeedLegacyUsers(ctx, other); err == nil || !strings.Contains(err.Error(), "seed legacy users: create table") {
		t.Fatalf("seed over a view named users: %v", err)
	}
}

func TestDemoDirectoryAndBanner(t *testing.T) {
	ctx := context.Background()
	s, err := StartDirectory(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		if err := s.Stop(sctx); err != nil {
			t.Error(err)
		}
	}()
	banner := Banner(s.URL())
	for _, want := range []string{s.URL(), ServiceDN, ServicePassword, EmployeePassword, LegacyPassword} {
		if !strings.Contains(banner, want) {
			t.Errorf("banner lacks %q:\n%s", want, banner)
		}
	}

	c, err := ldap.DialURL(s.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Bind(ServiceDN, ServicePassword); err != nil {
		t.Fatalf("service account: %v", err)
	}
	member := func(uid, group string) bool {
		t.Helper()
		filter := fmt.Sprintf("(&%s(uid=%s)(memberOf:1.2.840.113556.1.4.1941:=%s))", UserFilter, ldap.EscapeFilter(uid), ldap.EscapeFilter(group))
		res, err := c.SearchWithPaging(ldap.NewSearchRequest(PeopleDN, ldap.ScopeWholeSubtree, ldap.NeverDerefAliases, 0, 0, false, filter, []string{"1.1"}, nil), 100)
		if err != nil {
			t.Fatal(err)
		}
		return len(res.Entries) == 1
	}
	login := func(uid string) error {
		res, err := c.Search(ldap.NewSearchRequest(BaseDN, ldap.ScopeWholeSubtree, ldap.NeverDerefAliases, 0, 0, false, "(uid="+ldap.EscapeFilter(uid)+")", []string{"1.1"}, nil))
		if err != nil || len(res.Entries) != 1 {
			t.Fatalf("find %s: %v", uid, err)
		}
		uc, err := ldap.DialURL(s.URL())
		if err != nil {
			t.Fatal(err)
		}
		defer uc.Close()
		return uc.Bind(res.Entries[0].DN, EmployeePassword)
	}
	// What the banner promises.
	if !member("samuel.okafor", AdminGroupDN) || login("samuel.okafor") != nil {
		t.Error("samuel.okafor is not an admin who can log in")
	}
	if !member("zoe.orsted", PilotGroupDN) || login("zoe.orsted") != nil {
		t.Error("zoe.orsted is not in the pilot")
	}
	if !member("ingrid.bakke", PilotGroupDN) || login("ingrid.bakke") != nil {
		t.Error("ingrid.bakke is not in the pilot through the nested group")
	}
	if member("grace.liu", PilotGroupDN) || login("grace.liu") != nil {
		t.Error("grace.liu is in the pilot or cannot log in")
	}
	if err := login("oliver.grant"); !ldap.IsErrorWithCode(err, ldap.LDAPResultInvalidCredentials) {
		t.Errorf("oliver.grant logs in: %v", err)
	}
}

// BenchmarkDemoStart measures what the demo adds to `passbridge run`'s
// start: loading and serving the directory, and seeding a fresh database.
func BenchmarkDemoStart(b *testing.B) {
	ctx := context.Background()
	for i := 0; i < b.N; i++ {
		s, err := StartDirectory(ctx, nil)
		if err != nil {
			b.Fatal(err)
		}
		db := openSQLite(b, filepath.Join(b.TempDir(), "demo.db"))
		if err := SeedLegacyUsers(ctx, db); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		if err := s.Stop(ctx); err != nil {
			b.Fatal(err)
		}
		db.Close()
		b.StartTimer()
	}
}
