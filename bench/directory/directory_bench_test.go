// Package directorybench measures the directory sync at scale: a slapd
// seeded (slapadd) with 100,000 and with 1,000,000 users, and for each of
// SQLite, PostgreSQL and MariaDB, in one run: ldapsearch reading the scope
// (the read limit), go-ldap alone reading the same, passbridge's own
// reader alone (directory.Conn.Read, the read of a full sync), then the
// real `passbridge` binary's first full sync, a delta sync of 100 changed
// users, a delta with nothing changed and a full sync with nothing
// changed: wall time, the ratio to ldapsearch, peak RSS of the syncing
// process. Run it with
//
//	make bench    (or: go test -run '^$' -bench DirectorySync -benchtime 1x -timeout 60m ./bench/directory/)
//
// PASSBRIDGE_BENCH_DIRECTORY_USERS=100000 (a comma-separated list) picks
// the sizes. Figures and how to read them: bench/README.md. Timings are
// reported, never asserted.
package directorybench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/go-ldap/ldap/v3"

	"github.com/passbridge/passbridge/config"
	"github.com/passbridge/passbridge/directory"
	"github.com/passbridge/passbridge/dirsync"
	"github.com/passbridge/passbridge/internal/testsrv"
	"github.com/passbridge/passbridge/store"
)

func TestMain(m *testing.M) { os.Exit(testsrv.Run(m)) }

// changed is how many users the delta sync finds modified.
const changed = 100

// sizes are the directory sizes measured (PASSBRIDGE_BENCH_DIRECTORY_USERS).
func sizes(b *testing.B) []int {
	v := os.Getenv("PASSBRIDGE_BENCH_DIRECTORY_USERS")
	if v == "" {
		return []int{100_000, 1_000_000}
	}
	var out []int
	for _, f := range strings.Split(v, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 2*changed {
			b.Fatalf("PASSBRIDGE_BENCH_DIRECTORY_USERS=%q: want sizes of at least %d, comma-separated", v, 2*changed)
		}
		out = append(out, n)
	}
	return out
}

// The legacy users table holds a row for every user but each 20th (5 % of
// the identities stay unmatched, as employees who never used the
// application do); each 11th row has no email and links by username; each
// 7th has its email in another case. legacyOnly rows are former employees
// who are in no directory. Usernames are user%06d, as testsrv.SeedUID.
const (
	unmatchedEvery = 20
	noEmailEvery   = 11
	upperEvery     = 7
	legacyOnly     = 1_000
)

// syncRun is one `passbridge sync` process.
type syncRun struct {
	wall    time.Duration
	maxRSS  int64 // bytes
	summary dirsync.Summary
}

// figures is everything one benchmark run measured, per database.
type figures struct {
	users             int
	loadStart         string // /proc/loadavg when the run started, and ended
	loadEnd           string
	ldapsearch        map[string]time.Duration // before each first full sync
	goldap            map[string]time.Duration // go-ldap alone, same read
	reader            map[string]time.Duration // passbridge's reader alone (directory.Conn.Read)
	full, delta, idle map[string]syncRun
	renewed           map[string]syncRun // a second full sync: nothing changed
}

var measured = map[int]*figures{}

// BenchmarkDirectorySync measures each size (users=100000, users=1000000)
// as a sub-benchmark: for each database the first full sync, a delta sync
// after 100 users changed, a delta sync with nothing changed and a full
// sync with nothing changed (the nightly one), with ldapsearch, go-ldap and
// passbridge's reader reading the same scope beside them.
func BenchmarkDirectorySync(b *testing.B) {
	for _, n := range sizes(b) {
		b.Run(fmt.Sprintf("users=%d", n), func(b *testing.B) {
			// A run takes minutes: measure once, report the same
			// figures if the testing package asks again.
			if measured[n] == nil {
				measured[n] = measure(b, n)
			}
			report(b, measured[n])
		})
	}
}

func loadAverage() string {
	raw, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(raw))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

var drivers = []string{"sqlite", "postgres", "mysql"}

func measure(b *testing.B, users int) *figures {
	ctx := context.Background()
	load := loadAverage()
	ldapsearch := testsrv.Binary(b, "ldapsearch", "ldap-utils")
	bin := testsrv.Passbridge(b)

	t0 := time.Now()
	srv := testsrv.StartSlapd(b, testsrv.SlapdOptions{Users: users})
	b.Logf("slapd seeded with %d users (slapadd) and started in %s", users, time.Since(t0).Round(100*time.Millisecond))

	// The scope and attributes exactly as the sync asks for them.
	preset := config.Presets["openldap"]
	dirCfg := config.Directory{Kind: "openldap", Attributes: preset.Attributes}
	attrs := directory.NewMapper(dirCfg).Attributes()
	filter, err := directory.ValidateFilter(preset.UserFilter)
	if err != nil {
		b.Fatal(err)
	}

	work := b.TempDir()
	f := &figures{users: users, loadStart: load, ldapsearch: map[string]time.Duration{}, goldap: map[string]time.Duration{}, reader: map[string]time.Duration{},
		full: map[string]syncRun{}, delta: map[string]syncRun{}, idle: map[string]syncRun{}, renewed: map[string]syncRun{}}
	cfgs := map[string]string{}
	for _, driver := range drivers {
		var dsn string
		switch driver {
		case "sqlite":
			dsn = filepath.Join(work, "app.db")
		case "postgres":
			dsn = testsrv.Postgres(b).NewDatabase(b)
		case "mysql":
			dsn = testsrv.MariaDB(b).NewDatabase(b)
		}
		t1 := time.Now()
		legacyUsers(ctx, b, driver, dsn, users)
		cfgs[driver] = writeConfig(b, work, driver, dsn, srv)
		passbridge(b, bin, "migrate", "apply", "--config", cfgs[driver])
		b.Logf("%s: legacy users table (%d rows) created and migrated in %s", driver, users-users/unmatchedEvery+legacyOnly, time.Since(t1).Round(100*time.Millisecond))

		f.ldapsearch[driver] = runLDAPSearch(b, ldapsearch, srv, filter, attrs)
		f.goldap[driver] = goldapRead(ctx, b, srv, filter, attrs, users)
		f.reader[driver] = readerRead(ctx, b, srv, users)
		f.full[driver] = runSync(b, bin, cfgs[driver], true)
		if s := f.full[driver].summary; s.Entries != users || s.Changes[dirsync.KindCreate] != users || s.Mode != "full" {
			b.Fatalf("%s: full sync summary %+v: want %d creates", driver, s, users)
		}
	}

	// 100 users change, spread over the directory: one in each of 100
	// equal slices, at the same place in each (an entry that exists for
	// any size from 100 users up).
	step := users / changed
	if step == 0 {
		b.Fatalf("the delta changes %d users: the directory needs at least as many (PASSBRIDGE_BENCH_DIRECTORY_USERS=%d)", changed, users)
	}
	for k := range changed {
		i := 1 + k*step + min(37, step-1)
		srv.Modify(b, "uid="+testsrv.SeedUID(i)+","+srv.PeopleDN, map[string][]string{"displayName": {fmt.Sprintf("Changed User %06d", i)}})
	}
	for _, driver := range drivers {
		f.delta[driver] = runSync(b, bin, cfgs[driver], false)
		s := f.delta[driver].summary
		if s.Mode != "delta" || s.Changes[dirsync.KindUpdate] != changed || len(s.Changes) != 1 {
			b.Fatalf("%s: delta sync summary %+v: want %d updates and nothing else", driver, s, changed)
		}
		f.idle[driver] = runSync(b, bin, cfgs[driver], false)
		if s := f.idle[driver].summary; s.Mode != "delta" || s.Changes.String() != "no changes" {
			b.Fatalf("%s: delta sync with nothing changed: %+v", driver, s)
		}
		f.renewed[driver] = runSync(b, bin, cfgs[driver], true)
		if s := f.renewed[driver].summary; s.Entries != users || s.Changes.String() != "no changes" {
			b.Fatalf("%s: second full sync: %+v", driver, s)
		}
	}
	f.loadEnd = loadAverage()
	return f
}

func report(b *testing.B, f *figures) {
	var sb strings.Builder
	w := tabwriter.NewWriter(&sb, 2, 8, 2, ' ', 0)
	fmt.Fprintf(w, "\n%d users; load average %s at the start, %s at the end\n", f.users, f.loadStart, f.loadEnd)
	fmt.Fprintf(w, "figure\tSQLite\tPostgreSQL 15\tMariaDB\n")
	row := func(label string, fn func(driver string) string) {
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", label, fn("sqlite"), fn("postgres"), fn("mysql"))
	}
	secs := func(d time.Duration) string { return fmt.Sprintf("%.2f s", d.Seconds()) }
	mib := func(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }
	ratio := func(d string, t time.Duration) string {
		return fmt.Sprintf("%s (%.2fx)", secs(t), t.Seconds()/f.ldapsearch[d].Seconds())
	}
	split := func(r syncRun) string {
		return fmt.Sprintf("LDAP %s, DB %s", ms(r.summary.LDAPMillis), ms(r.summary.DBMillis))
	}
	row("ldapsearch -E pr=1000/noprompt, same scope and attributes (the read limit)", func(d string) string { return secs(f.ldapsearch[d]) })
	row("go-ldap alone, same read, paged, entries discarded (x ldapsearch)", func(d string) string { return ratio(d, f.goldap[d]) })
	row("passbridge's reader alone: a full sync's read, entries mapped (x ldapsearch)", func(d string) string { return ratio(d, f.reader[d]) })
	row("full sync, first: wall time (x ldapsearch; target <= 2x)", func(d string) string { return ratio(d, f.full[d].wall) })
	row("  inside the run (summary)", func(d string) string { return split(f.full[d]) })
	row("  peak RSS (target: flat, < 100 MB)", func(d string) string { return mib(f.full[d].maxRSS) })
	row("  linked / unmatched", func(d string) string {
		return fmt.Sprintf("%d / %d", f.full[d].summary.Linked, f.full[d].summary.Unmatched)
	})
	row("full sync, nothing changed: wall time (x ldapsearch; target <= 2x)", func(d string) string { return ratio(d, f.renewed[d].wall) })
	row("  inside the run (summary)", func(d string) string { return split(f.renewed[d]) })
	row("  peak RSS", func(d string) string { return mib(f.renewed[d].maxRSS) })
	row("delta sync, 100 users changed: wall time", func(d string) string { return secs(f.delta[d].wall) })
	row("  peak RSS", func(d string) string { return mib(f.delta[d].maxRSS) })
	row("delta sync, nothing changed: wall time", func(d string) string { return secs(f.idle[d].wall) })
	w.Flush()
	fmt.Print(sb.String())
	b.Log(sb.String())

	for _, d := range drivers {
		b.ReportMetric(f.ldapsearch[d].Seconds(), d+"-ldapsearch-s")
		b.ReportMetric(f.goldap[d].Seconds(), d+"-goldap-read-s")
		b.ReportMetric(f.reader[d].Seconds(), d+"-reader-s")
		b.ReportMetric(f.full[d].wall.Seconds(), d+"-full-s")
		b.ReportMetric(float64(f.full[d].maxRSS)/(1<<20), d+"-full-MiB")
		b.ReportMetric(f.delta[d].wall.Seconds(), d+"-delta100-s")
		b.ReportMetric(f.idle[d].wall.Seconds(), d+"-delta0-s")
		b.ReportMetric(f.renewed[d].wall.Seconds(), d+"-refull-s")
		b.ReportMetric(float64(f.renewed[d].maxRSS)/(1<<20), d+"-refull-MiB")
	}
}

func ms(n int64) string { return fmt.Sprintf("%.2f s", float64(n)/1000) }

// passbridge runs the binary to completion and returns its stdout.
func passbridge(b *testing.B, bin string, args ...string) []byte {
	out, _ := passbridgeRusage(b, bin, args...)
	return out
}

func passbridgeRusage(b *testing.B, bin string, args ...string) ([]byte, *os.ProcessState) {
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(bin, args...)
	// The benchmark's own knobs (PASSBRIDGE_BENCH_DIRECTORY_USERS) are
	// not configuration keys: passbridge refuses unknown PASSBRIDGE_ ones.
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PASSBRIDGE_BENCH_") {
			env = append(env, kv)
		}
	}
	cmd.Env = append(env, "PASSBRIDGE_CONFIG=")
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Run(); err != nil {
		b.Fatalf("passbridge %s: %v\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	if stderr.Len() > 0 {
		b.Logf("passbridge %s (stderr):\n%s", strings.Join(args, " "), strings.TrimSpace(stderr.String()))
	}
	return stdout.Bytes(), cmd.ProcessState
}

// runSync runs `passbridge sync [--full] -o json` as its own process: its
// wall time, the summary it prints, and its peak RSS from rusage.
func runSync(b *testing.B, bin, cfg string, full bool) syncRun {
	args := []string{"sync", "-o", "json", "--config", cfg}
	if full {
		args = append(args, "--full")
	}
	t0 := time.Now()
	out, st := passbridgeRusage(b, bin, args...)
	wall := time.Since(t0)
	var res struct {
		Summary dirsync.Summary `json:"summary"`
		Error   string          `json:"error"`
	}
	if err := json.Unmarshal(out, &res); err != nil {
		b.Fatalf("sync output: %v\n%s", err, out)
	}
	if res.Error != "" || res.Summary.Status != dirsync.StatusSucceeded {
		b.Fatalf("sync: %s %s", res.Summary.Status, res.Error)
	}
	ru, ok := st.SysUsage().(*syscall.Rusage)
	if !ok {
		b.Fatal("no rusage for the sync process")
	}
	r := syncRun{wall: wall, maxRSS: ru.Maxrss * 1024, summary: res.Summary}
	b.Logf("sync full=%v: %s, %d entries, %s, peak RSS %.1f MiB (ldap %d ms, db %d ms)", full, wall.Round(time.Millisecond),
		r.summary.Entries, r.summary.Changes, float64(r.maxRSS)/(1<<20), r.summary.LDAPMillis, r.summary.DBMillis)
	return r
}

// runLDAPSearch dumps the scope with ldapsearch over StartTLS, as the sync
// reads it, to /dev/null.
func runLDAPSearch(b *testing.B, bin string, srv *testsrv.LDAP, filter string, attrs []string) time.Duration {
	args := append([]string{"-LLL", "-x", "-ZZ", "-H", srv.URL, "-D", srv.BindDN, "-w", srv.BindPassword,
		"-b", srv.PeopleDN, "-s", "sub", "-E", "pr=1000/noprompt", filter}, attrs...)
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), "LDAPTLS_CACERT="+srv.CAFile, "LDAPTLS_REQCERT=demand")
	devnull, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		b.Fatal(err)
	}
	defer devnull.Close()
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = devnull, &stderr
	t0 := time.Now()
	if err := cmd.Run(); err != nil {
		b.Fatalf("ldapsearch: %v\n%s", err, stderr.String())
	}
	d := time.Since(t0)
	b.Logf("ldapsearch %s %s: %s", filter, strings.Join(attrs, " "), d.Round(time.Millisecond))
	return d
}

// goldapRead reads the same scope with go-ldap alone (its own dial and
// StartTLS, a paged search through SearchAsync) and discards the entries.
func goldapRead(ctx context.Context, b *testing.B, srv *testsrv.LDAP, filter string, attrs []string, users int) time.Duration {
	t0 := time.Now()
	l, err := ldap.DialURL(srv.URL)
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	if err := l.StartTLS(srv.TLSConfig()); err != nil {
		b.Fatal(err)
	}
	if err := l.Bind(srv.BindDN, srv.BindPassword); err != nil {
		b.Fatal(err)
	}
	paging := ldap.NewControlPaging(1000)
	req := ldap.NewSearchRequest(srv.PeopleDN, ldap.ScopeWholeSubtree, ldap.NeverDerefAliases, 0, 0, false, filter, attrs, []ldap.Control{paging})
	n := 0
	for {
		resp := l.SearchAsync(ctx, req, 64)
		var done []ldap.Control
		for resp.Next() {
			if resp.Entry() != nil {
				n++
			} else if len(resp.Controls()) > 0 {
				done = resp.Controls()
			}
		}
		if err := resp.Err(); err != nil {
			b.Fatal(err)
		}
		ctrl, ok := ldap.FindControl(done, ldap.ControlTypePaging).(*ldap.ControlPaging)
		if !ok || len(ctrl.Cookie) == 0 {
			break
		}
		paging.SetCookie(ctrl.Cookie)
	}
	d := time.Since(t0)
	if n != users {
		b.Fatalf("go-ldap read: %d entries, want %d", n, users)
	}
	b.Logf("go-ldap alone, paged read: %s", d.Round(time.Millisecond))
	return d
}

// readerRead reads the scope as a full sync does (directory.Conn.Read of
// the OpenLDAP preset: a syncrepl refresh, every entry mapped to an
// identity) into a sink that only counts.
func readerRead(ctx context.Context, b *testing.B, srv *testsrv.LDAP, users int) time.Duration {
	p := config.Presets["openldap"]
	d := config.Directory{Kind: "openldap", URLs: []string{srv.URL}, StartTLS: true, CAFile: srv.CAFile, BindDN: srv.BindDN,
		BindPassword: config.Secret(srv.BindPassword), BaseDN: srv.PeopleDN, Attributes: p.Attributes, UserFilter: p.UserFilter,
		Timeout: config.Duration(time.Minute)}
	c, err := directory.NewClient(d, nil)
	if err != nil {
		b.Fatal(err)
	}
	m := directory.NewMapper(d)
	t0 := time.Now()
	conn, err := c.Connect(ctx)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	scope, err := conn.ResolveScope(ctx, d, m, directory.ScopeOptions{})
	if err != nil {
		b.Fatal(err)
	}
	var s countSink
	if _, err := conn.Read(ctx, directory.ReadRequest{Dir: d, Mapper: m, Scope: scope, Out: &s, Log: slog.New(slog.DiscardHandler), Now: time.Now, Full: true}); err != nil {
		b.Fatal(err)
	}
	el := time.Since(t0)
	if s.upserted != users || s.invalid != 0 {
		b.Fatalf("reader: %d identities (%d invalid), want %d", s.upserted, s.invalid, users)
	}
	b.Logf("passbridge's reader, full read: %s", el.Round(time.Millisecond))
	return el
}

// countSink counts what a read hands over and keeps nothing.
type countSink struct{ upserted, invalid int }

func (s *countSink) Upsert(_ context.Context, page []directory.Identity) error {
	s.upserted += len(page)
	return nil
}
func (s *countSink) Present(context.Context, []string) error      { return nil }
func (s *countSink) Gone(context.Context, []string, string) error { return nil }
func (s *countSink) Invalid(string, error)                        { s.invalid++ }

// writeConfig writes the passbridge configuration of one database.
func writeConfig(b testing.TB, dir, driver, dsn string, srv *testsrv.LDAP) string {
	path := filepath.Join(dir, driver+".yaml")
	yaml := fmt.Sprintf(`database: {driver: %s, dsn: %q}
users_table: {name: users, key: id, username: username, email: email, password: password_hash}
%slog: {level: warn}
`, driver, dsn, srv.DirectoryYAML(srv.PeopleDN, "max_deletions: 5%"))
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		b.Fatal(err)
	}
	return path
}

// legacyUsers creates the application's users table and fills it.
func legacyUsers(ctx context.Context, b testing.TB, driver, dsn string, users int) {
	db, err := store.Open(ctx, config.Database{Driver: driver, DSN: config.Secret(dsn), ConnectTimeout: config.Duration(time.Minute)}, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	var stmts []string
	switch driver {
	case "sqlite":
		stmts = []string{
			`CREATE TABLE users (id INTEGER PRIMARY KEY AUTOINCREMENT, username TEXT NOT NULL UNIQUE, email TEXT, password_hash TEXT NOT NULL)`,
			fmt.Sprintf(`WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < %d)
			INSERT INTO users (username, email, password_hash)
			SELECT printf('user%%06d', i),
			       CASE WHEN i %% %d = 0 THEN NULL
			            WHEN i %% %d = 0 THEN printf('USER%%06d@Corp.Example', i)
			            ELSE printf('user%%06d@corp.example', i) END,
			       printf('$2y$10$legacy.hash.%%06d', i)
			FROM s WHERE i %% %d <> 0`, users, noEmailEvery, upperEvery, unmatchedEvery),
			fmt.Sprintf(`WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < %d)
			INSERT INTO users (username, email, password_hash)
			SELECT printf('former%%04d', i), printf('former%%04d@corp.example', i), '$2y$10$former' FROM s`, legacyOnly),
		}
	case "postgres":
		stmts = []string{
			`CREATE TABLE users (id bigserial PRIMARY KEY, username varchar(150) NOT NULL UNIQUE, email varchar(254), password_hash varchar(255) NOT NULL)`,
			fmt.Sprintf(`INSERT INTO users (username, email, password_hash)
			SELECT 'user' || lpad(i::text, greatest(6, length(i::text)), '0'),
			       CASE WHEN i %% %d = 0 THEN NULL
			            WHEN i %% %d = 0 THEN 'USER' || lpad(i::text, greatest(6, length(i::text)), '0') || '@Corp.Example'
			            ELSE 'user' || lpad(i::text, greatest(6, length(i::text)), '0') || '@corp.example' END,
			       '$2y$10$legacy.hash.' || lpad(i::text, greatest(6, length(i::text)), '0')
			FROM generate_series(1, %d) AS i WHERE i %% %d <> 0`, noEmailEvery, upperEvery, users, unmatchedEvery),
			fmt.Sprintf(`INSERT INTO users (username, email, password_hash)
			SELECT 'former' || lpad(i::text, 4, '0'), 'former' || lpad(i::text, 4, '0') || '@corp.example', '$2y$10$former'
			FROM generate_series(1, %d) AS i`, legacyOnly),
			`ANALYZE users`,
		}
	case "mysql":
		// The usual legacy MySQL table: a case-insensitive collation.
		stmts = []string{
			`CREATE TABLE users (id BIGINT AUTO_INCREMENT PRIMARY KEY, username VARCHAR(150) NOT NULL UNIQUE, email VARCHAR(254), password_hash VARCHAR(255) NOT NULL) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci`,
			fmt.Sprintf(`INSERT INTO users (username, email, password_hash)
			SELECT CONCAT('user', LPAD(seq, GREATEST(6, LENGTH(seq)), '0')),
			       CASE WHEN seq %% %d = 0 THEN NULL
			            WHEN seq %% %d = 0 THEN CONCAT('USER', LPAD(seq, GREATEST(6, LENGTH(seq)), '0'), '@Corp.Example')
			            ELSE CONCAT('user', LPAD(seq, GREATEST(6, LENGTH(seq)), '0'), '@corp.example') END,
			       CONCAT('$2y$10$legacy.hash.', LPAD(seq, GREATEST(6, LENGTH(seq)), '0'))
			FROM seq_1_to_%d WHERE seq %% %d <> 0`, noEmailEvery, upperEvery, users, unmatchedEvery),
			fmt.Sprintf(`INSERT INTO users (username, email, password_hash)
			SELECT CONCAT('former', LPAD(seq, 4, '0')), CONCAT('former', LPAD(seq, 4, '0'), '@corp.example'), '$2y$10$former'
			FROM seq_1_to_%d`, legacyOnly),
			`ANALYZE TABLE users`,
		}
	}
	for _, q := range stmts {
		if _, err := db.ExecContext(ctx, q); err != nil {
			b.Fatalf("%s: %v\n%s", driver, err, q)
		}
	}
}
