package enroll

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/passbridge/passbridge/config"
	"github.com/passbridge/passbridge/dirsync"
	"github.com/passbridge/passbridge/internal/testsrv"
	"github.com/passbridge/passbridge/migrate"
	"github.com/passbridge/passbridge/store"
)

// TestFaultKillDuringRegistration: `passbridge run`, the real binary,
// killed with SIGKILL in the middle of a passkey registration: its finish
// request has inserted the passkey and set the users row's passkey state
// on PostgreSQL, and the transaction's COMMIT is held by a TCP proxy when
// the process dies. Nothing of the passkey is stored, the user's existing
// passkey stays as it was, the password hashes are unchanged, and the
// ceremony cannot be replayed; restarted, the portal signs the user in
// with the existing passkey and registers the new one.
func TestFaultKillDuringRegistration(t *testing.T) {
	bin := testsrv.Passbridge(t)
	ctx := context.Background()
	slapd := testsrv.Slapd(t)
	ou := slapd.NewOU(t)
	name := "reg-" + fmt.Sprint(time.Now().UnixNano()%1e6)
	slapd.AddUser(t, ou, name, nil)
	email := name + "@" + slapd.MailDomain

	pgDSN := testsrv.Postgres(t).NewDatabase(t)
	direct := openPG(t, pgDSN)
	createUsersTable(t, direct)
	if _, err := store.Exec(ctx, direct, "INSERT INTO users (username, email, password_hash, is_active) VALUES (?, ?, ?, ?)", name, email, "$2a$10$legacy."+name, true); err != nil {
		t.Fatal(err)
	}
	host := pgDSN[strings.Index(pgDSN, "@")+1:]
	proxy := testsrv.StartProxy(t, host[:strings.Index(host, "/")])

	port := testsrv.FreePort(t)
	origin := fmt.Sprintf("http://localhost:%d", port)
	conf := filepath.Join(t.TempDir(), "passbridge.yaml")
	yaml := fmt.Sprintf(`database: {driver: postgres, dsn: %q}
users_table: {name: users, key: id, username: username, email: email, password: password_hash, active: is_active, totp: totp_secret}
%sportal: {listen: "127.0.0.1:%d", rp_id: localhost, rp_name: Test Corp, origins: [%q]}
admin: {listen: "127.0.0.1:%d"}
log: {level: warn}
`, proxy.RewriteDSN(pgDSN), slapd.DirectoryYAML(ou), port, origin, testsrv.FreePort(t))
	if err := os.WriteFile(conf, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(conf, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := migrate.EnsureApplied(ctx, direct, cfg, nil); err != nil {
		t.Fatal(err)
	}
	dcfg := *cfg
	dcfg.Database.DSN = config.Secret(pgDSN)
	s, err := dirsync.NewSyncer(&dcfg, direct, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Run(ctx, dirsync.RunOptions{Full: true, Trigger: "test"}); err != nil {
		t.Fatal(err)
	}

	start := func() (*exec.Cmd, chan error, *bytes.Buffer) {
		t.Helper()
		cmd := exec.Command(bin, "run", "--config", conf)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		t.Cleanup(func() { cmd.Process.Kill(); <-exited; exited <- nil })
		for deadline := time.Now().Add(60 * time.Second); ; {
			if res, err := http.Get(origin + "/healthz"); err == nil {
				res.Body.Close()
				if res.StatusCode == http.StatusOK {
					return cmd, exited, &out
				}
			}
			select {
			case err := <-exited:
				exited <- err // for the cleanup, which waits for it
				t.Fatalf("passbridge run exited: %v\n%s", err, out.String())
			case <-time.After(100 * time.Millisecond):
			}
			if time.Now().After(deadline) {
				t.Fatalf("passbridge run not healthy\n%s", out.String())
			}
		}
	}
	cmd, exited, out := start()
	c := newClient(t, origin)
	c.mustSignIn(name, testsrv.DefaultUserPassword)
	existing := c.register("Existing key")
	passkeys := func() string {
		t.Helper()
		rows, err := direct.QueryxContext(ctx, "SELECT id, user_key, identity_id, credential_id, public_key, sign_count, name, revoked_at FROM passbridge_credentials ORDER BY id")
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		var b strings.Builder
		for rows.Next() {
			v, err := rows.SliceScan()
			if err != nil {
				t.Fatal(err)
			}
			fmt.Fprintf(&b, "%v\n", v)
		}
		return b.String()
	}
	checksum := func(q string) string {
		t.Helper()
		var vals []string
		if err := store.Select(ctx, direct, &vals, q); err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256([]byte(strings.Join(vals, "\n")))
		return hex.EncodeToString(sum[:])
	}
	const passwords = "SELECT id || ':' || coalesce(password_hash, 'NULL') FROM users ORDER BY id"
	const state = "SELECT id || ':' || coalesce(passbridge_passkey_state, 'NULL') FROM users ORDER BY id"
	beforeKeys, beforePasswords, beforeState := passkeys(), checksum(passwords), checksum(state)
	if strings.Count(beforeKeys, "\n") != 1 {
		t.Fatalf("passkeys before: %s", beforeKeys)
	}

	// The second registration, killed in its COMMIT.
	ceremony, options := c.begin("/webauthn/register/begin", nil)
	cred, att := c.attest(options)
	// The first COMMIT from now on: the finish's transaction (pgx sends
	// cached statements without their SQL, but BEGIN and COMMIT as text).
	proxy.SetRule(testsrv.HoldOn(testsrv.Upstream, "commit"))
	finished := make(chan error, 1)
	go func() {
		body, _ := json.Marshal(map[string]any{"ceremony": ceremony, "name": "In flight", "credential": json.RawMessage(att)})
		req, _ := http.NewRequest(http.MethodPost, origin+"/webauthn/register/finish", bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set(csrfHeader, c.csrf)
		res, err := c.http.Do(req)
		if err == nil {
			res.Body.Close()
			err = fmt.Errorf("answered %s", res.Status)
		}
		finished <- err
	}()
	select {
	case <-proxy.Held():
	case err := <-finished:
		t.Fatalf("the finish ended before its COMMIT: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatalf("no COMMIT held\n%s", out.String())
	}
	// Mid-transaction on the server: the passkey inserted, not committed.
	var open int
	if err := store.Get(ctx, direct, &open, "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database() AND state = 'idle in transaction' AND query ILIKE 'UPDATE%passkey_state%'"); err != nil || open != 1 {
		t.Fatalf("%d transactions held after the passkey state update (%v)", open, err)
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-exited
	exited <- nil
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("passbridge run was not killed by SIGKILL: %v", cmd.ProcessState)
	}
	proxy.SetRule(nil)
	proxy.Cut()
	proxy.Release()
	for deadline := time.Now().Add(30 * time.Second); ; {
		var n int
		if err := store.Get(ctx, direct, &n, "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() AND state <> 'idle'"); err == nil && n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the killed portal's transaction did not end")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := <-finished; err == nil || strings.Contains(err.Error(), "answered") {
		t.Fatalf("the browser's finish request: %v, want its connection lost with the process", err)
	}
	if got := passkeys(); got != beforeKeys {
		t.Fatalf("passkeys after kill -9 mid-registration:\n%s\nwant:\n%s", got, beforeKeys)
	}
	if checksum(passwords) != beforePasswords || checksum(state) != beforeState {
		t.Fatal("the users rows changed (password hash or passkey state)")
	}
	var n int
	if err := store.Get(ctx, direct, &n, "SELECT COUNT(*) FROM passbridge_credentials WHERE credential_id = ?", cred.ID); err != nil || n != 0 {
		t.Fatalf("the in-flight passkey is stored (%d, %v)", n, err)
	}

	// Restarted: the ceremony is spent, the existing passkey signs in,
	// a new registration works.
	_, _, _ = start()
	if r := c.post("/webauthn/register/finish", map[string]any{"ceremony": ceremony, "name": "Replay", "credential": json.RawMessage(att)}); r.status == http.StatusOK {
		t.Fatalf("the killed ceremony was finished after the restart: %s", r.body)
	}
	c2 := newClient(t, origin)
	c2.auth = c.auth
	if r := c2.passkeySignIn(&existing); r.status != http.StatusOK {
		t.Fatalf("sign-in with the existing passkey after the restart: %d %s", r.status, r.body)
	}
	c2.register("After the restart")
	var active int
	if err := store.Get(ctx, direct, &active, "SELECT COUNT(*) FROM passbridge_credentials WHERE revoked_at IS NULL"); err != nil || active != 2 {
		t.Fatalf("%d active passkeys after the restart, want 2 (%v)", active, err)
	}
	if checksum(passwords) != beforePasswords {
		t.Fatal("the password hashes changed")
	}
}

func openPG(t *testing.T, dsn string) *store.DB {
	t.Helper()
	db, err := store.Open(context.Background(), config.Database{Driver: "postgres", DSN: config.Secret(dsn), ConnectTimeout: config.Duration(30 * time.Second)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}
