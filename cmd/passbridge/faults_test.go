package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/passbridge/passbridge/config"
	"github.com/passbridge/passbridge/internal/testsrv"
	"github.com/passbridge/passbridge/migrate"
	"github.com/passbridge/passbridge/store"
)

// TestFaultKillSyncMidApply: `passbridge sync`, the real binary, killed
// with SIGKILL in the middle of applying 3,000 changes to PostgreSQL: the
// first batch committed, the second executed on the server and its COMMIT
// held (a TCP proxy between passbridge and the database) when the process
// dies. Then a normal `passbridge sync`, then the invariants against a
// clean run: every identity as a clean run stores it, no duplicates, no
// passkey lost, the password hashes unchanged, the clean run's cursor, the
// killed run marked interrupted.
func TestFaultKillSyncMidApply(t *testing.T) {
	t0 := time.Now()
	bin := testsrv.Passbridge(t)
	t.Logf("built in %s", time.Since(t0).Round(time.Millisecond))
	const users = 3000
	srv := testsrv.StartSlapd(t, testsrv.SlapdOptions{Users: users})
	pgDSN := testsrv.Postgres(t).NewDatabase(t)
	u := mustParseHost(t, pgDSN)
	proxy := testsrv.StartProxy(t, u)
	ctx := context.Background()
	dir := t.TempDir()

	writeConfig := func(path, driver, dsn, displayAttr string) {
		t.Helper()
		yaml := fmt.Sprintf(`database: {driver: %s, dsn: %q}
users_table: {name: users, key: id, username: username, email: email, password: password_hash}
%s  attributes: {display_name: %s}
log: {level: warn}
`, driver, dsn, srv.DirectoryYAML(srv.PeopleDN, "max_deletions: 5%"), displayAttr)
		if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	conf := filepath.Join(dir, "passbridge.yaml")
	writeConfig(conf, "postgres", proxy.RewriteDSN(pgDSN), "displayName")
	cfg, err := config.Load(conf, nil)
	if err != nil {
		t.Fatal(err)
	}
	db := openStore(t, cfg.Database)
	appUsers := func(db *store.DB) {
		t.Helper()
		if _, err := db.ExecContext(ctx, "CREATE TABLE users (id "+db.Dialect().Types().ID+", username varchar(255) NOT NULL, email varchar(320), password_hash varchar(255))"); err != nil {
			t.Fatal(err)
		}
		for i := 1; i <= users; i += 7 {
			if _, err := store.Exec(ctx, db, "INSERT INTO users (username, email, password_hash) VALUES (?, ?, ?)",
				testsrv.SeedUID(i), testsrv.SeedUID(i)+"@"+srv.MailDomain, fmt.Sprintf("$2y$10$legacy.%06d", i)); err != nil {
				t.Fatal(err)
			}
		}
		if err := migrate.EnsureApplied(ctx, db, cfg, nil); err != nil {
			t.Fatal(err)
		}
	}
	appUsers(db)

	sync := func(conf string) (string, error) {
		cmd := exec.Command(bin, "sync", "--config", conf)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		err := cmd.Run()
		return out.String(), err
	}
	if out, err := sync(conf); err != nil {
		t.Fatalf("first sync: %v\n%s", err, out)
	}
	// Passkeys of 5 linked users, as the portal stores them.
	if _, err := store.Exec(ctx, db, "INSERT INTO passbridge_credentials (user_key, identity_id, credential_id, public_key, user_handle, name, created_at, backup_eligible) "+
		"SELECT user_key, id, convert_to('cred-' || id, 'UTF8'), '\\x706b'::bytea, '\\x68'::bytea, 'YubiKey', now(), false FROM passbridge_identities WHERE user_key IS NOT NULL ORDER BY id LIMIT 5"); err != nil {
		t.Fatal(err)
	}
	t.Logf("first sync done at %s", time.Since(t0).Round(time.Millisecond))
	before := faultSnapshot(t, db)
	if before.passkeys == 0 {
		t.Fatal("no passkeys")
	}

	// The display name now comes from sn: 3,000 updates, three batches.
	writeConfig(conf, "postgres", proxy.RewriteDSN(pgDSN), "sn")
	var sawUpdate bool
	commits := 0
	proxy.SetRule(func(d testsrv.Direction, chunk []byte) testsrv.Action {
		low := bytes.ToLower(chunk)
		if d != testsrv.Upstream {
			return testsrv.Forward
		}
		if bytes.Contains(low, []byte("update")) && bytes.Contains(low, []byte("passbridge_identities")) {
			sawUpdate = true
		}
		if sawUpdate && bytes.Contains(low, []byte("commit")) {
			if commits++; commits == 2 {
				return testsrv.Hold
			}
		}
		return testsrv.Forward
	})
	cmd := exec.Command(bin, "sync", "--config", conf)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	select {
	case <-proxy.Held():
	case err := <-exited:
		t.Fatalf("the sync ended before its second COMMIT: %v\n%s", err, out.String())
	case <-time.After(2 * time.Minute):
		cmd.Process.Kill()
		t.Fatalf("no second COMMIT within 2 minutes\n%s", out.String())
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-exited
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("passbridge sync was not killed by SIGKILL: %v", cmd.ProcessState)
	}
	// The kernel closed the dead process's sockets; the proxy passes that
	// on to the server, which rolls the held transaction back.
	proxy.SetRule(nil)
	proxy.Cut()
	proxy.Release()
	var updated, running int
	waitFor(t, "the killed run's connections to end", func() bool {
		var n int
		err := store.Get(ctx, directStore(t, pgDSN), &n, "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()")
		return err == nil && n == 0
	})
	mustGet(t, db, &updated, "SELECT COUNT(*) FROM passbridge_identities WHERE display_name LIKE 'User%'")
	mustGet(t, db, &running, "SELECT COUNT(*) FROM passbridge_sync_runs WHERE status = 'running'")
	t.Logf("after kill -9: %d identities updated (batch 1 committed, batch 2 rolled back), %d run left running", updated, running)
	if updated != 1000 || running != 1 {
		t.Fatalf("after kill -9 in batch 2: %d updated, want the 1000 of batch 1; %d runs running, want 1", updated, running)
	}
	if c := faultSnapshot(t, db); c.cursor != before.cursor {
		t.Fatal("the killed run moved the cursor")
	}

	t.Logf("killed at %s", time.Since(t0).Round(time.Millisecond))
	// The normal run.
	if out, err := sync(conf); err != nil {
		t.Fatalf("the sync after the kill: %v\n%s", err, out)
	} else if !strings.Contains(out, "succeeded") {
		t.Fatalf("the sync after the kill:\n%s", out)
	}
	var interrupted int
	mustGet(t, db, &interrupted, "SELECT COUNT(*) FROM passbridge_sync_runs WHERE status = 'failed' AND error LIKE '%interrupted%'")
	if interrupted != 1 {
		t.Fatalf("the killed run is not marked interrupted (%d)", interrupted)
	}

	// The clean run: the same directory and users rows into a fresh
	// SQLite database, in-process.
	refConf := filepath.Join(dir, "reference.yaml")
	writeConfig(refConf, "sqlite", filepath.Join(dir, "reference.db"), "sn")
	refCfg, err := config.Load(refConf, nil)
	if err != nil {
		t.Fatal(err)
	}
	ref := openStore(t, refCfg.Database)
	appUsers(ref)
	if _, _, err := execute(t, "sync", "--config", refConf); err != nil {
		t.Fatalf("reference sync: %v", err)
	}
	t.Logf("normal and reference runs done at %s", time.Since(t0).Round(time.Millisecond))
	got, want := identityRows(t, db), identityRows(t, ref)
	if got != want {
		t.Fatalf("identities differ from a clean run's:\n%s", firstDiff(got, want))
	}
	after := faultSnapshot(t, db)
	if after.passkeys != before.passkeys || after.passkeyRows != before.passkeyRows {
		t.Fatalf("passkeys: %d before, %d after", before.passkeys, after.passkeys)
	}
	if after.passwords != before.passwords {
		t.Fatal("the users table's password hashes changed")
	}
	if refCursor := faultSnapshot(t, ref).cursor; after.cursor != refCursor {
		t.Fatalf("cursor %s, a clean run stores %s", after.cursor, refCursor)
	}
	for _, q := range []string{
		"SELECT COUNT(*) FROM (SELECT directory_id FROM passbridge_identities GROUP BY directory_id HAVING COUNT(*) > 1) d",
		"SELECT COUNT(*) FROM (SELECT user_key FROM passbridge_identities WHERE user_key IS NOT NULL GROUP BY user_key HAVING COUNT(*) > 1) d",
		"SELECT COUNT(*) FROM passbridge_identities WHERE state <> 'active'",
	} {
		var n int
		if mustGet(t, db, &n, q); n != 0 {
			t.Fatalf("%s: %d", q, n)
		}
	}
}

type snap struct {
	passkeys    int
	passkeyRows string
	passwords   string
	cursor      string // the stored cursor without full_at
}

func faultSnapshot(t *testing.T, db *store.DB) snap {
	t.Helper()
	var s snap
	s.passkeyRows = rowsText(t, db, "SELECT id, user_key, identity_id, credential_id, revoked_at FROM passbridge_credentials ORDER BY id")
	s.passkeys = strings.Count(s.passkeyRows, "\n")
	sum := sha256.Sum256([]byte(rowsText(t, db, "SELECT id, password_hash FROM users ORDER BY id")))
	s.passwords = hex.EncodeToString(sum[:])
	var cur []string
	if err := store.Select(context.Background(), db, &cur, "SELECT cursor FROM passbridge_sync_state"); err != nil {
		t.Fatal(err)
	}
	for _, c := range cur {
		var m map[string]any
		if err := json.Unmarshal([]byte(c), &m); err != nil {
			t.Fatal(err)
		}
		delete(m, "full_at")
		b, _ := json.Marshal(m)
		s.cursor += string(b)
	}
	return s
}

// identityRows is every identity as text, by directory ID.
func identityRows(t *testing.T, db *store.DB) string {
	return rowsText(t, db, "SELECT directory_id, dn, username, email, display_name, state, link_state, user_key FROM passbridge_identities ORDER BY directory_id")
}

func rowsText(t *testing.T, db *store.DB, q string) string {
	t.Helper()
	rows, err := db.QueryxContext(context.Background(), q)
	if err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	defer rows.Close()
	var b strings.Builder
	for rows.Next() {
		vals, err := rows.SliceScan()
		if err != nil {
			t.Fatal(err)
		}
		for i, v := range vals {
			switch x := v.(type) {
			case []byte:
				vals[i] = string(x)
			case time.Time:
				vals[i] = x.UTC().Format(time.RFC3339Nano)
			case nil:
				vals[i] = "NULL"
			default:
				vals[i] = fmt.Sprint(x)
			}
		}
		fmt.Fprintln(&b, vals...)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

func firstDiff(a, b string) string {
	sa, sb := bufio.NewScanner(strings.NewReader(a)), bufio.NewScanner(strings.NewReader(b))
	for i := 1; ; i++ {
		oa, ob := sa.Scan(), sb.Scan()
		if !oa && !ob {
			return "(no difference)"
		}
		if sa.Text() != sb.Text() || oa != ob {
			return fmt.Sprintf("line %d:\n  got  %s\n  want %s", i, sa.Text(), sb.Text())
		}
	}
}

func openStore(t *testing.T, d config.Database) *store.DB {
	t.Helper()
	d.ConnectTimeout = config.Duration(30 * time.Second)
	db, err := store.Open(context.Background(), d, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// directStore opens the database without the proxy (once per DSN).
var directStores = map[string]*store.DB{}

func directStore(t *testing.T, dsn string) *store.DB {
	t.Helper()
	if db, ok := directStores[dsn]; ok {
		return db
	}
	db := openStore(t, config.Database{Driver: "postgres", DSN: config.Secret(dsn)})
	directStores[dsn] = db
	t.Cleanup(func() { delete(directStores, dsn) })
	return db
}

func mustGet(t *testing.T, db *store.DB, dest any, q string, args ...any) {
	t.Helper()
	if err := store.Get(context.Background(), db, dest, q, args...); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
}

func waitFor(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func mustParseHost(t *testing.T, dsn string) string {
	t.Helper()
	i := strings.Index(dsn, "@")
	j := strings.Index(dsn[i+1:], "/")
	if i < 0 || j < 0 {
		t.Fatalf("DSN %s", dsn)
	}
	return dsn[i+1 : i+1+j]
}
