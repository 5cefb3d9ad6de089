package enroll

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/url"
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

// bearer is a GET with the admin token as a Bearer token.
func (c *client) bearer(path, token string) response {
	c.t.Helper()
	req, _ := http.NewRequest(http.MethodGet, c.base+path, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	return c.do(req)
}

// TestAdminTokenRotation: a reload (SIGHUP) that brings a new admin.token
// reaches the console at once: the old token no longer signs in nor reads
// /admin with Bearer, and the console sessions opened with it end (they
// are bound to the token's hash); the new one works everywhere.
func TestAdminTokenRotation(t *testing.T) {
	e, _ := adminEnv(t)
	// The old token is tried three times below, from one address: not a
	// test of the limit of wrong tokens (TestAdminTokenLimited).
	e.cfg.Portal.RateLimits.PasswordPerUser = 100
	old := e.client()
	if r := old.form("/signin/admin-token", url.Values{"token": {testAdminToken}}); r.status != http.StatusSeeOther {
		t.Fatalf("token sign-in: %d %s", r.status, strip(r.body))
	}
	if r := old.get("/admin"); r.status != http.StatusOK {
		t.Fatalf("console with the token session: %d", r.status)
	}
	const rotated = "b8e2f61d09a47c35e1d2b9a0f4c7e368"
	next := *e.cfg
	next.Admin.Token = config.Secret(rotated)
	// The env's daemon is not Run, so nothing else starts or stops its
	// cron: a reload with the default schedule would start it, and its
	// syncs would outlive the test.
	next.Schedule = config.Schedule{}
	if err := e.daemon.Reload(&next); err != nil {
		t.Fatal(err)
	}
	if r := old.get("/admin"); r.status != http.StatusForbidden {
		t.Errorf("the old token's session after the rotation: %d, want 403", r.status)
	}
	if n := e.auditCount(evSessionRefused, false, "admin-token"); n != 1 {
		t.Errorf("%d session.refused entries for the rotated token's session, want 1", n)
	}
	c := e.client()
	if r := c.bearer("/admin/audit", testAdminToken); r.status != http.StatusForbidden {
		t.Errorf("Bearer with the old token: %d, want 403", r.status)
	}
	if r := c.bearer("/api/v1/schedule", testAdminToken); r.status != http.StatusUnauthorized {
		t.Errorf("/api/v1 with the old token: %d, want 401", r.status)
	}
	if r := c.form("/signin/admin-token", url.Values{"token": {testAdminToken}}); r.status != http.StatusUnauthorized {
		t.Errorf("sign-in with the old token: %d, want 401", r.status)
	}
	fresh := e.client()
	if r := fresh.bearer("/admin/audit", rotated); r.status != http.StatusOK {
		t.Errorf("Bearer with the new token: %d", r.status)
	}
	if r := fresh.form("/signin/admin-token", url.Values{"token": {rotated}}); r.status != http.StatusSeeOther {
		t.Fatalf("sign-in with the new token: %d %s", r.status, strip(r.body))
	}
	if r := fresh.get("/admin"); r.status != http.StatusOK {
		t.Errorf("console with the new token's session: %d", r.status)
	}
}

// TestAdminTokenLimited: wrong admin tokens count per client address
// wherever they are tried (the token sign-in, Bearer on /admin, /api/v1),
// each one audited; past the limit even the right token waits.
func TestAdminTokenLimited(t *testing.T) {
	e, _ := adminEnv(t)
	c := e.client()
	wrong := "0f1e2d3c4b5a69788796a5b4c3d2e1f0"
	if r := c.form("/signin/admin-token", url.Values{"token": {wrong}}); r.status != http.StatusUnauthorized {
		t.Fatalf("wrong token sign-in: %d", r.status)
	}
	if r := c.bearer("/admin/users", wrong); r.status != http.StatusForbidden {
		t.Fatalf("wrong Bearer on /admin: %d", r.status)
	}
	if r := c.bearer("/api/v1/runs", wrong); r.status != http.StatusUnauthorized {
		t.Fatalf("wrong Bearer on /api/v1: %d", r.status)
	}
	// portal.rate_limits.password_per_user (3) wrong tokens: the address waits.
	if r := c.form("/signin/admin-token", url.Values{"token": {testAdminToken}}); r.status != http.StatusTooManyRequests {
		t.Errorf("the right token after 3 wrong ones: %d %s, want 429", r.status, strip(r.body))
	}
	if r := c.bearer("/api/v1/runs", testAdminToken); r.status != http.StatusTooManyRequests {
		t.Errorf("/api/v1 with the right token after 3 wrong ones: %d, want 429", r.status)
	}
	if r := c.bearer("/admin", testAdminToken); r.status != http.StatusTooManyRequests {
		t.Errorf("Bearer /admin with the right token after 3 wrong ones: %d, want 429", r.status)
	}
	if n := e.auditCount("admin.token_refused", false, "admin-token"); n != 6 {
		t.Errorf("%d admin.token_refused entries, want 6 (3 wrong, 3 limited)", n)
	}
}

// TestAdminTokenRotationBySIGHUP: `passbridge run`, the real binary, with
// admin.token_file; the file gets a new token and the process a SIGHUP.
// From then on the old token opens nothing (the console's token session
// ended, Bearer and the token sign-in refused) and the new one does; a
// reload with a weak token is not applied and changes nothing.
func TestAdminTokenRotationBySIGHUP(t *testing.T) {
	bin := testsrv.Passbridge(t)
	ctx := context.Background()
	slapd := testsrv.Slapd(t)
	dir := t.TempDir()
	dbPath := filepath.Join(dir, "app.db")
	direct, err := store.Open(ctx, config.Database{Driver: "sqlite", DSN: config.Secret(dbPath), ConnectTimeout: config.Duration(10 * time.Second)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer direct.Close()
	createUsersTable(t, direct)
	tokenFile := filepath.Join(dir, "admin-token")
	writeToken := func(tok string) {
		t.Helper()
		if err := os.WriteFile(tokenFile, []byte(tok+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	const first, second = "4c1e8b2f9d07a6e35b1c0d9f8e7a6b5c", "e09d7c3b1a5f4e2d6c8b0a9f7e3d1c2b"
	writeToken(first)
	port := testsrv.FreePort(t)
	origin := fmt.Sprintf("http://localhost:%d", port)
	conf := filepath.Join(dir, "passbridge.yaml")
	yaml := fmt.Sprintf(`database: {driver: sqlite, dsn: %q}
users_table: {name: users, key: id, username: username, email: email, password: password_hash, active: is_active}
%sschedule: {incremental: "", full: ""}
portal: {listen: "127.0.0.1:%d", rp_id: localhost, rp_name: Test Corp, origins: [%q]}
admin: {token_file: %q}
log: {format: json}
`, dbPath, slapd.DirectoryYAML(slapd.NewOU(t)), port, origin, tokenFile)
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
	var out testsrv.Buffer
	cmd := exec.Command(bin, "run", "--config", conf)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() { cmd.Process.Kill(); <-exited })
	waitFor := func(what string, ok func() bool) {
		t.Helper()
		for deadline := time.Now().Add(30 * time.Second); !ok(); {
			select {
			case err := <-exited:
				t.Fatalf("passbridge run exited: %v\n%s", err, out.String())
			case <-time.After(50 * time.Millisecond):
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: timed out\n%s", what, out.String())
			}
		}
	}
	// api calls /api/v1 from a loopback address of its own: the old
	// token's attempts below use up 127.0.0.1's allowance of wrong ones.
	api := func(from, token string) int {
		d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}, Timeout: 5 * time.Second}
		hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: d.DialContext}}
		req, _ := http.NewRequest(http.MethodGet, fmt.Sprintf("http://127.0.0.1:%d/api/v1/schedule", port), nil)
		req.Header.Set("Authorization", "Bearer "+token)
		res, err := hc.Do(req)
		if err != nil {
			return 0
		}
		res.Body.Close()
		return res.StatusCode
	}
	waitFor("the daemon to serve", func() bool { return api("127.0.0.2", first) == http.StatusOK })

	session := newClient(t, origin)
	if r := session.form("/signin/admin-token", url.Values{"token": {first}}); r.status != http.StatusSeeOther {
		t.Fatalf("token sign-in: %d %s", r.status, strip(r.body))
	}
	if r := session.get("/admin"); r.status != http.StatusOK {
		t.Fatalf("console: %d", r.status)
	}

	writeToken(second)
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	// Wait for the reload before trying the new token: tried earlier, it
	// is a wrong token, and the address's allowance of those is small.
	waitFor("the reload", func() bool { return strings.Contains(out.String(), `"msg":"configuration reloaded"`) })
	if code := api("127.0.0.2", second); code != http.StatusOK {
		t.Fatalf("/api/v1 with the new token after SIGHUP: %d", code)
	}
	if r := session.get("/admin"); r.status != http.StatusForbidden {
		t.Errorf("the old token's console session after SIGHUP: %d, want 403", r.status)
	}
	c := newClient(t, origin)
	if r := c.bearer("/admin", first); r.status != http.StatusForbidden {
		t.Errorf("Bearer /admin with the old token: %d, want 403", r.status)
	}
	if r := c.form("/signin/admin-token", url.Values{"token": {first}}); r.status != http.StatusUnauthorized {
		t.Errorf("sign-in with the old token: %d, want 401", r.status)
	}
	if code := api("127.0.0.1", first); code != http.StatusUnauthorized {
		t.Errorf("/api/v1 with the old token: %d, want 401", code)
	}
	// Three wrong tokens from 127.0.0.1, on three surfaces: it waits now.
	if code := api("127.0.0.1", second); code != http.StatusTooManyRequests {
		t.Errorf("/api/v1 from an address past the limit: %d, want 429", code)
	}

	// A weak token is refused by the reload: the running one stays.
	weak := strings.Repeat("ab", 16)
	writeToken(weak)
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitFor("the refused reload", func() bool {
		return strings.Contains(out.String(), "configuration not reloaded") && strings.Contains(out.String(), "admin.token")
	})
	for _, tok := range []string{first, second, weak} {
		if strings.Contains(out.String(), tok) {
			t.Errorf("the token %s... is in the log", tok[:4])
		}
	}
	if code := api("127.0.0.2", second); code != http.StatusOK {
		t.Errorf("the running token after a refused reload: %d", code)
	}
	if code := api("127.0.0.2", weak); code != http.StatusUnauthorized {
		t.Errorf("the refused weak token: %d, want 401", code)
	}
}
