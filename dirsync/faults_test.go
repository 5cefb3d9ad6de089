package dirsync

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/passbridge/passbridge/config"
	"github.com/passbridge/passbridge/directory"
	"github.com/passbridge/passbridge/internal/testsrv"
	"github.com/passbridge/passbridge/schema"
	"github.com/passbridge/passbridge/store"
)

// Fault tests: a fault is injected at a real mid-point of a sync (a
// directory frozen or emptied, the database connection cut inside a batch
// or on its COMMIT, an AD cursor from another DC), then a normal run, then
// checkInvariants: no identity wrongly disabled or deleted, none
// duplicated (by stable ID, by users row), no passkey lost, the cursor as a
// clean run stores it, the password hashes unchanged. (The directory killed
// mid-read and a database error mid-apply are TestKilledMidRun and
// TestDatabaseErrorMidApply.)

// world is one sync under test: a directory, the application's database
// with its users rows and some passkeys, and the syncer.
type world struct {
	t   *testing.T
	f   fixture
	cfg *config.Config
	db  *store.DB
	s   *Syncer
	// app are the users rows, in insertion order (a reference database
	// gets the same keys).
	app [][2]string
}

func newWorld(t *testing.T, f fixture, cfg *config.Config, db *store.DB) *world {
	s, _ := newSyncer(t, cfg, db)
	return &world{t: t, f: f, cfg: cfg, db: db, s: s}
}

// addApp adds a users row that links to the directory user name by email.
func (w *world) addApp(name, email string) int64 {
	w.app = append(w.app, [2]string{name, email})
	return addAppUser(w.t, w.db, name, email)
}

// addPasskeys stores n passkeys for each of the first linked identities,
// as the portal does.
func (w *world) addPasskeys(identities, n int) {
	w.t.Helper()
	var rows []struct {
		ID      int64 `db:"id"`
		UserKey int64 `db:"user_key"`
	}
	err := store.Select(context.Background(), w.db, &rows, "SELECT id, user_key FROM passbridge_identities WHERE user_key IS NOT NULL ORDER BY id")
	if err != nil || len(rows) < identities {
		w.t.Fatalf("%d linked identities (%v), want %d", len(rows), err, identities)
	}
	for _, r := range rows[:identities] {
		for i := range n {
			_, err := store.Exec(context.Background(), w.db, "INSERT INTO passbridge_credentials (user_key, identity_id, credential_id, public_key, user_handle, name, created_at, backup_eligible) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
				r.UserKey, r.ID, []byte(fmt.Sprintf("cred-%d-%d", r.ID, i)), []byte("pk"), []byte(fmt.Sprintf("h%d", r.ID)), fmt.Sprintf("key %d", i), time.Now().UTC(), false)
			if err != nil {
				w.t.Fatalf("add a passkey: %v", err)
			}
		}
	}
}

// snapshot is what a fault must not change.
type snapshot struct {
	passkeys  string // every passkey row, as text
	npasskeys int
	passwords string // SHA-256 over (key, password hash) of every users row
	cursor    *directory.Cursor
}

func (w *world) snapshot() snapshot {
	w.t.Helper()
	var sn snapshot
	var err error
	if sn.passkeys, sn.npasskeys, err = tableText(w.db, "SELECT id, user_key, identity_id, credential_id, public_key, name, revoked_at FROM passbridge_credentials ORDER BY id"); err != nil {
		w.t.Fatal(err)
	}
	pw, _, err := tableText(w.db, "SELECT id, password_hash FROM users ORDER BY id")
	if err != nil {
		w.t.Fatal(err)
	}
	sum := sha256.Sum256([]byte(pw))
	sn.passwords = hex.EncodeToString(sum[:])
	if sn.cursor, err = w.s.loadCursor(context.Background()); err != nil {
		w.t.Fatal(err)
	}
	return sn
}

// tableText is every row of a query as text, and the row count.
func tableText(db *store.DB, query string) (string, int, error) {
	rows, err := db.QueryxContext(context.Background(), query)
	if err != nil {
		return "", 0, fmt.Errorf("%s: %w", query, err)
	}
	defer rows.Close()
	var b strings.Builder
	n := 0
	for rows.Next() {
		vals, err := rows.SliceScan()
		if err != nil {
			return "", 0, err
		}
		for i, v := range vals {
			switch x := v.(type) {
			case []byte:
				vals[i] = string(x)
			case time.Time:
				vals[i] = x.UTC().Format(time.RFC3339Nano)
			}
		}
		fmt.Fprintf(&b, "%v\n", vals)
		n++
	}
	return b.String(), n, rows.Err()
}

// reference syncs the directory, as it is now, into a fresh database with
// the same users rows: what a clean run stores.
func (w *world) reference() (map[string]row, *directory.Cursor) {
	w.t.Helper()
	dc, db := database(w.t, "sqlite")
	for _, u := range w.app {
		addAppUser(w.t, db, u[0], u[1])
	}
	cfg := *w.cfg
	cfg.Database = dc
	cfg.Directory.MaxDeletions = config.Threshold{Percent: 100, IsPct: true}
	s, _ := newSyncer(w.t, &cfg, db)
	run(w.t, s, RunOptions{Full: true})
	c, err := s.loadCursor(context.Background())
	if err != nil {
		w.t.Fatal(err)
	}
	return identities(w.t, s), c
}

// checkInvariants fails the test with every broken invariant; before is
// the snapshot taken before the fault.
func (w *world) checkInvariants(before snapshot) {
	w.t.Helper()
	if problems := w.invariantProblems(before); len(problems) > 0 {
		w.t.Fatalf("after the fault and a normal run:\n  %s", strings.Join(problems, "\n  "))
	}
}

func (w *world) invariantProblems(before snapshot) []string {
	w.t.Helper()
	ctx := context.Background()
	var problems []string
	bad := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }

	// Every identity as a clean run stores it: same state (none wrongly
	// disabled or deleted), same DN and attributes, same link.
	want, wantCursor := w.reference()
	got := identities(w.t, w.s)
	for id, r := range want {
		g, ok := got[id]
		switch {
		case !ok:
			bad("identity %s (%s) is missing", id, r.Username)
		case g.State != r.State:
			bad("identity %s (%s) is %s (%s), a clean run says %s", id, r.Username, g.State, g.StateReason, r.State)
		case g.DN != r.DN || g.Username != r.Username || g.Email != r.Email || g.DisplayName != r.DisplayName:
			bad("identity %s: %+v, a clean run stores %+v", id, g, r)
		case g.UserKey != r.UserKey || g.LinkState != r.LinkState:
			bad("identity %s (%s) linked %s to row %q, a clean run links %s to row %q", id, r.Username, g.LinkState, g.UserKey, r.LinkState, r.UserKey)
		}
	}
	for id, g := range got {
		if _, ok := want[id]; !ok && g.State != schema.StateDeleted {
			bad("identity %s (%s) is %s but not in the directory's scope", id, g.Username, g.State)
		}
	}
	// No duplicates, by stable ID or by users row.
	for _, q := range []string{
		"SELECT directory_id, COUNT(*) FROM passbridge_identities GROUP BY directory_id HAVING COUNT(*) > 1",
		"SELECT user_key, COUNT(*) FROM passbridge_identities WHERE user_key IS NOT NULL GROUP BY user_key HAVING COUNT(*) > 1",
	} {
		if dups, n, err := tableText(w.db, q); err != nil || n > 0 {
			bad("duplicates (%v): %s", err, dups)
		}
	}
	// No passkey lost or changed, no password hash changed.
	now := w.snapshot()
	if now.npasskeys != before.npasskeys || now.passkeys != before.passkeys {
		bad("passkeys changed: %d before, %d after:\n%s---\n%s", before.npasskeys, now.npasskeys, before.passkeys, now.passkeys)
	}
	if now.passwords != before.passwords {
		bad("the users table's password hashes changed (checksum %s, was %s)", now.passwords, before.passwords)
	}
	// The cursor a clean run stores.
	if !sameCursor(now.cursor, wantCursor) {
		a, _ := json.Marshal(now.cursor)
		b, _ := json.Marshal(wantCursor)
		bad("cursor %s, a clean run stores %s", a, b)
	}
	// No run left running.
	var running int
	if err := store.Get(ctx, w.db, &running, "SELECT COUNT(*) FROM passbridge_sync_runs WHERE status = ?", StatusRunning); err != nil || running != 0 {
		bad("%d runs left running (%v)", running, err)
	}
	// And one more run has nothing left to do.
	var changes []Change
	if _, err := w.s.Run(ctx, RunOptions{Trigger: "test", OnChange: func(c Change) { changes = append(changes, c) }}); err != nil || len(changes) > 0 {
		bad("a further run: %v, changes %v", err, countKinds(changes))
	}
	sort.Strings(problems)
	return problems
}

// sameCursor compares what a cursor resumes from (not when the last full
// read was).
func sameCursor(a, b *directory.Cursor) bool {
	if a == nil || b == nil {
		return a == b
	}
	x, y := *a, *b
	x.FullAt, y.FullAt = time.Time{}, time.Time{}
	j1, _ := json.Marshal(x)
	j2, _ := json.Marshal(y)
	return string(j1) == string(j2)
}

// populate adds n directory users under ou, the first half with a users
// row, synced, and 2 passkeys for each of the first 3 linked identities.
func (w *world) populate(ou, prefix string, n int) []string {
	w.t.Helper()
	var dns []string
	for i := range n {
		name := fmt.Sprintf("%s%02d", prefix, i)
		dns = append(dns, w.f.AddUser(w.t, ou, name, nil))
		if i%2 == 0 {
			w.addApp(name, w.mail(dns[i]))
		}
	}
	run(w.t, w.s, RunOptions{})
	w.addPasskeys(3, 2)
	return dns
}

// mail is the directory's mail of dn, as the fixture set it.
func (w *world) mail(dn string) string {
	w.t.Helper()
	switch f := w.f.(type) {
	case slapdFixture:
		return f.S.Entry(w.t, dn, "mail").GetAttributeValue("mail")
	case sambaFixture:
		return f.S.Entry(w.t, dn, "mail").GetAttributeValue("mail")
	}
	w.t.Fatalf("fixture %T", w.f)
	return ""
}

// deleteEntry deletes any entry (an OU) from the fixture's directory.
func deleteEntry(t *testing.T, f fixture, dn string) {
	switch f := f.(type) {
	case slapdFixture:
		f.S.Delete(t, dn)
	case sambaFixture:
		f.S.Delete(t, dn)
	default:
		t.Fatalf("fixture %T", f)
	}
}

// TestFaultInvariantsCatchBrokenState: the invariant checker is not
// vacuous: each broken state it is meant to catch, made by hand, is
// reported.
func TestFaultInvariantsCatchBrokenState(t *testing.T) {
	f := fixtures(t)["openldap"](t)
	dc, db := database(t, "sqlite")
	cfg := baseConfig(t, dc, f.Kind())
	ou := f.NewOU(t)
	f.Configure(cfg, ou)
	w := newWorld(t, f, cfg, db)
	w.populate(ou, "inv", 6)
	before := w.snapshot()
	if p := w.invariantProblems(before); len(p) > 0 {
		t.Fatalf("a clean state reported broken: %v", p)
	}
	ctx := context.Background()
	for _, c := range []struct{ name, want, break_ string }{
		{"wrongly disabled", "a clean run says active", "UPDATE passbridge_identities SET state = 'disabled' WHERE id = 2"},
		{"wrongly deleted", "a clean run says active", "UPDATE passbridge_identities SET state = 'deleted' WHERE id = 3"},
		{"duplicate link", "duplicates",
			// Two linked identities, whatever the order their rows were made in.
			"UPDATE passbridge_identities SET user_key = (SELECT MIN(user_key) FROM passbridge_identities), link_state = 'manual' " +
				"WHERE id = (SELECT MAX(id) FROM passbridge_identities WHERE user_key IS NOT NULL)"},
		{"passkey lost", "passkeys changed", "DELETE FROM passbridge_credentials WHERE id = (SELECT MAX(id) FROM passbridge_credentials)"},
		{"password hash changed", "password hashes changed", "UPDATE users SET password_hash = 'tampered' WHERE id = 1"},
		{"cursor", "a clean run stores",
			"UPDATE passbridge_sync_state SET cursor = REPLACE(cursor, '\"mechanism\":\"syncrepl\"', '\"mechanism\":\"timestamp\"')"},
		{"run left running", "left running", "UPDATE passbridge_sync_runs SET status = 'running' WHERE id = 1"},
	} {
		t.Run(c.name, func(t *testing.T) {
			// Each case on a fresh copy of the world.
			dc2, db2 := database(t, "sqlite")
			cfg2 := *cfg
			cfg2.Database = dc2
			w2 := newWorld(t, f, &cfg2, db2)
			w2.app = nil
			for _, u := range w.app {
				w2.addApp(u[0], u[1])
			}
			run(t, w2.s, RunOptions{})
			w2.addPasskeys(3, 2)
			b2 := w2.snapshot()
			if _, err := store.Exec(ctx, db2, c.break_); err != nil {
				t.Fatal(err)
			}
			p := w2.invariantProblems(b2)
			if !strings.Contains(strings.Join(p, "\n"), c.want) {
				t.Fatalf("broken state %q not caught: %v", c.name, p)
			}
		})
	}
}

// TestFaultDirectoryFrozenMidSync: slapd suspended (SIGSTOP) between two
// pages of a paged full read (the ID is employeeNumber, so the reads are
// paged searches: a syncrepl refresh is one stream that a small directory
// sends whole before the freeze): the run fails within directory.timeout,
// writes nothing; thawed, a normal run applies what changed.
func TestFaultDirectoryFrozenMidSync(t *testing.T) {
	srv := testsrv.StartSlapd(t, testsrv.SlapdOptions{Users: 400})
	f := slapdFixture{S: srv}
	dc, db := database(t, "sqlite")
	cfg := baseConfig(t, dc, "openldap")
	slapdConfig(srv, cfg, srv.PeopleDN)
	cfg.Directory.Attributes.ID = "employeeNumber"
	cfg.Directory.PageSize = 50
	cfg.Directory.Timeout = config.Duration(2 * time.Second)
	cfg.Directory.MaxDeletions = config.Threshold{Percent: 5, IsPct: true}
	w := newWorld(t, f, cfg, db)
	for i := 1; i <= 400; i += 3 {
		w.addApp(testsrv.SeedUID(i), testsrv.SeedUID(i)+"@"+srv.MailDomain)
	}
	run(t, w.s, RunOptions{})
	w.addPasskeys(5, 2)
	before := w.snapshot()
	for i := 1; i <= 6; i++ {
		srv.Modify(t, "uid="+testsrv.SeedUID(i)+","+srv.PeopleDN, map[string][]string{"displayName": {fmt.Sprintf("Frozen %d", i)}})
	}
	srv.Disable(t, "uid="+testsrv.SeedUID(7)+","+srv.PeopleDN)
	srv.Delete(t, "uid="+testsrv.SeedUID(8)+","+srv.PeopleDN)
	dumped := dump(t, w.s)

	frozen := false
	w.s.hookPage = func(page int) {
		if page == 2 && !frozen {
			frozen = true
			srv.Freeze(t)
		}
	}
	t0 := time.Now()
	_, err := w.s.Run(context.Background(), RunOptions{Full: true, Trigger: "test"})
	took := time.Since(t0)
	srv.Thaw(t)
	w.s.hookPage = nil
	if !frozen || err == nil {
		t.Fatalf("frozen=%v: the run must fail when the server hangs mid-read: %v", frozen, err)
	}
	t.Logf("frozen mid-read: failed after %s: %v", took.Round(time.Millisecond), err)
	if took > 20*time.Second {
		t.Fatalf("a hung server held the run %s: directory.timeout is 2s", took)
	}
	if after := dump(t, w.s); after != dumped {
		t.Fatal("a run whose directory hung mid-read wrote to the database")
	}
	if sn := w.snapshot(); !sameCursor(sn.cursor, before.cursor) {
		t.Fatal("the cursor moved")
	}
	// The normal run: full (a timestamp delta cannot see the deletion).
	_, changes := run(t, w.s, RunOptions{Full: true})
	if c := countKinds(changes); c[KindUpdate] != 6 || c[KindDisable] != 1 || c[KindDelete] != 1 || len(changes) != 8 {
		t.Fatalf("the normal run after: %v", c)
	}
	w.checkInvariants(before)
}

// TestFaultDatabaseCutMidSync: the PostgreSQL connection cut (through a
// proxy) inside the second batch's transaction, then on the COMMIT of the
// last batch (the server commits, the client never hears it): each time a
// normal run finishes the job and the state is a clean run's.
func TestFaultDatabaseCutMidSync(t *testing.T) {
	f := fixtures(t)["openldap"](t)
	pgDSN := testsrv.Postgres(t).NewDatabase(t)
	proxy := testsrv.StartProxy(t, hostPort(t, pgDSN))
	dc := config.Database{Driver: "postgres", DSN: config.Secret(proxy.RewriteDSN(pgDSN)), ConnectTimeout: config.Duration(10 * time.Second)}
	ctx := context.Background()
	db, err := store.Open(ctx, dc, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	createUsersTable(t, db, "users")
	cfg := baseConfig(t, dc, f.Kind())
	ou := f.NewOU(t)
	f.Configure(cfg, ou)
	w := newWorld(t, f, cfg, db)
	w.s.BatchSize = 5
	dns := w.populate(ou, "cut", 16)
	before := w.snapshot()

	// 1. Cut inside batch 2: 4 updates, 2 deletes, 10 creates to apply.
	for _, dn := range dns[:4] {
		f.Modify(t, dn, map[string][]string{"displayName": {"Cut " + dn[:8]}})
	}
	for _, dn := range dns[4:6] {
		f.Remove(t, dn)
	}
	for i := range 10 {
		name := fmt.Sprintf("new%02d", i)
		dn := f.AddUser(t, ou, name, nil)
		if i%3 == 0 {
			w.addApp(name, w.mail(dn))
		}
	}
	before = w.snapshot() // the users rows just added
	w.s.hookBatch = func(n int) error {
		if n == 2 {
			// The batch's statements start; the connection dies after
			// its first few hundred bytes.
			proxy.SetRule(testsrv.DropAfter(testsrv.Upstream, 300))
		}
		return nil
	}
	_, err = w.s.Run(ctx, RunOptions{Trigger: "test"})
	proxy.SetRule(nil)
	w.s.hookBatch = nil
	if err == nil || proxy.Cuts() == 0 {
		t.Fatalf("the run must fail with its connection cut in batch 2 (cuts %d): %v", proxy.Cuts(), err)
	}
	t.Logf("cut in batch 2: %v", err)
	t.Logf("%d identities after the cut (batch 1 committed, batch 2 rolled back)", len(identities(t, w.s)))
	if sn := w.snapshot(); !sameCursor(sn.cursor, before.cursor) {
		t.Fatal("the cursor moved in a run that failed in batch 2")
	}
	sum, _ := run(t, w.s, RunOptions{})
	if sum.Mode != "delta" {
		t.Fatalf("the run after the cut: mode %s (%s)", sum.Mode, sum.FullReason)
	}
	w.checkInvariants(before)

	// 2. Cut right after the COMMIT of the last batch (the one that saves
	// the cursor) has gone out.
	f.Modify(t, dns[6], map[string][]string{"displayName": {"Written blind"}})
	f.Disable(t, dns[7])
	before = w.snapshot()
	w.s.hookBatch = func(n int) error {
		// The server's answer to the COMMIT is lost, not the COMMIT: cutting
		// right after forwarding the COMMIT races with that answer.
		proxy.SetRule(testsrv.CutOn(testsrv.Downstream, "COMMIT", testsrv.Drop))
		return nil
	}
	cuts := proxy.Cuts()
	_, err = w.s.Run(ctx, RunOptions{Trigger: "test"})
	proxy.SetRule(nil)
	w.s.hookBatch = nil
	if err == nil || proxy.Cuts() == cuts {
		t.Fatalf("the run must fail with its COMMIT unanswered: %v", err)
	}
	t.Logf("cut after COMMIT: %v", err)
	// Recorded as unknown, not failed: the server did commit.
	runStatus := func() (string, string) {
		t.Helper()
		var r struct {
			Status string         `db:"status"`
			Error  sql.NullString `db:"error"`
		}
		if err := store.Get(ctx, db, &r, "SELECT status, error FROM passbridge_sync_runs WHERE id = (SELECT MAX(id) FROM passbridge_sync_runs WHERE dry_run = ?)", false); err != nil {
			t.Fatal(err)
		}
		return r.Status, r.Error.String
	}
	blind, _ := runStatus()
	if blind != StatusUnknown {
		t.Fatalf("the run whose COMMIT was never answered is recorded %q, want %q", blind, StatusUnknown)
	}
	sum, _ = run(t, w.s, RunOptions{})
	w.checkInvariants(before)
	var st struct {
		Status string         `db:"status"`
		Error  sql.NullString `db:"error"`
	}
	if err := store.Get(ctx, db, &st, "SELECT status, error FROM passbridge_sync_runs WHERE id = ?", sum.RunID-1); err != nil {
		t.Fatal(err)
	}
	if st.Status != StatusSucceeded || !strings.Contains(st.Error.String, "had committed") {
		t.Fatalf("the blind run after the next one: %q (%s), want succeeded: it had committed", st.Status, st.Error.String)
	}
}

// hostPort is the host:port of a postgres:// DSN.
func hostPort(t *testing.T, dsn string) string {
	i := strings.Index(dsn, "@")
	j := strings.Index(dsn[i:], "/")
	if i < 0 || j < 0 {
		t.Fatalf("DSN %s", dsn)
	}
	return dsn[i+1 : i+j]
}

// TestFaultEmptyScope: a directory whose scope is suddenly empty (every
// user gone from the base DN), and one whose base DN itself vanished
// (noSuchObject), never disable anyone: the empty read is refused by the
// guard, the vanished base fails the run, in full and delta syncs, and
// nothing changes; with the users back, a normal run restores the state.
func TestFaultEmptyScope(t *testing.T) {
	for name, mk := range fixtures(t) {
		t.Run(name, func(t *testing.T) {
			f := mk(t)
			dc, db := database(t, "sqlite")
			cfg := baseConfig(t, dc, f.Kind())
			parent := f.NewOU(t)
			base := f.AddOU(t, parent, "scope")
			f.Configure(cfg, base)
			cfg.Directory.MaxDeletions = config.Threshold{Percent: 5, IsPct: true} // the default
			w := newWorld(t, f, cfg, db)
			dns := w.populate(base, "e"+name[:2], 6)
			before := w.snapshot()
			dumped := dump(t, w.s)
			ctx := context.Background()

			var restores []func(t *testing.T) string
			for _, dn := range dns {
				restores = append(restores, f.Remove(t, dn))
			}
			for _, full := range []bool{false, true} {
				// A delta reports the 6 deleted; a full read finds nobody,
				// and the refusal says so.
				sum, err := w.s.Run(ctx, RunOptions{Full: full, Trigger: "test"})
				if !errors.Is(err, ErrRefused) || sum.Status != StatusRefused || !strings.Contains(err.Error(), "6 identities deleted or disabled") {
					t.Fatalf("empty scope, full=%v: %v (%+v)", full, err, sum)
				}
				if full && (!strings.Contains(err.Error(), "returned NO users in scope") || !strings.Contains(err.Error(), base)) {
					t.Fatalf("empty scope, full read: the refusal does not say the scope is empty: %v", err)
				}
				if after := dump(t, w.s); after != dumped {
					t.Fatalf("empty scope, full=%v: the refused run wrote", full)
				}
			}

			deleteEntry(t, f, base)
			for _, full := range []bool{false, true} {
				_, err := w.s.Run(ctx, RunOptions{Full: full, Trigger: "test"})
				if err == nil || errors.Is(err, ErrRefused) {
					t.Fatalf("vanished base DN, full=%v: %v, want a failed run", full, err)
				}
				t.Logf("vanished base DN, full=%v: %v", full, err)
				if after := dump(t, w.s); after != dumped {
					t.Fatalf("vanished base DN, full=%v: the run wrote", full)
				}
			}

			if got := f.AddOU(t, parent, "scope"); !strings.EqualFold(got, base) {
				t.Fatalf("the base DN came back as %s", got)
			}
			for _, restore := range restores {
				restore(t)
			}
			run(t, w.s, RunOptions{})
			w.checkInvariants(before)
		})
	}
}

// TestFaultDCSwitch: AD delta syncs across a change of domain controller
// (another invocationId in the cursor, with a USN far above this DC's: a
// delta on this DC from it would miss everything), and across this DC
// restored from a backup (same invocationId, its USN now below the
// cursor's): with users changed in between, the next run reads everything
// and misses nothing, the delta after it is a delta again.
func TestFaultDCSwitch(t *testing.T) {
	ad := testsrv.SambaDC(t)
	f := sambaFixture{S: ad}
	for _, c := range []struct {
		name    string
		forge   func(c *directory.Cursor)
		because string
	}{
		{"another DC", func(c *directory.Cursor) {
			c.InvocationID = "6f9619ff-8b86-d011-b42d-00c04fc964ff"
			c.USN += 1 << 20
		}, "invocationId"},
		{"restored from backup", func(c *directory.Cursor) { c.USN += 1 << 20 }, "USN"},
	} {
		t.Run(c.name, func(t *testing.T) {
			dc, db := database(t, "sqlite")
			cfg := baseConfig(t, dc, "ad")
			ou := f.NewOU(t)
			f.Configure(cfg, ou)
			w := newWorld(t, f, cfg, db)
			dns := w.populate(ou, "dc", 6)
			before := w.snapshot()
			ctx := context.Background()
			cur, err := w.s.loadCursor(ctx)
			if err != nil || cur == nil || cur.Mechanism != directory.MechUSN {
				t.Fatalf("cursor %+v %v", cur, err)
			}
			c.forge(cur)
			body, _ := json.Marshal(cur)
			if _, err := store.Exec(ctx, db, "UPDATE passbridge_sync_state SET cursor = ?", string(body)); err != nil {
				t.Fatal(err)
			}
			f.Modify(t, dns[0], map[string][]string{"displayName": {"Switched"}})
			f.Disable(t, dns[1])
			f.Remove(t, dns[2])
			f.AddUser(t, ou, "dcnew"+strings.ReplaceAll(c.name, " ", "")[:4], nil)
			sum, changes := run(t, w.s, RunOptions{})
			k := countKinds(changes)
			if sum.Mode != "full" || !strings.Contains(sum.FullReason, c.because) || k[KindUpdate] != 1 || k[KindDisable] != 1 || k[KindDelete] != 1 || k[KindCreate] != 1 {
				t.Fatalf("the run after the switch: mode %s (%s), %v", sum.Mode, sum.FullReason, k)
			}
			w.checkInvariants(before)
			f.Modify(t, dns[3], map[string][]string{"displayName": {"After the switch"}})
			sum, changes = run(t, w.s, RunOptions{})
			if sum.Mode != "delta" || len(changes) != 1 {
				t.Fatalf("the next run: mode %s (%s), %v", sum.Mode, sum.FullReason, countKinds(changes))
			}
		})
	}
}
