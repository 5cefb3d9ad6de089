package main

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/passbridge/passbridge/internal/logging"
	"github.com/passbridge/passbridge/internal/testsrv"
)

// TestDemoRunsAndStopsCleanly is the README's first command: passbridge run
// with no configuration starts the demo, answers /healthz, and exits 0 on
// SIGTERM.
func TestDemoRunsAndStopsCleanly(t *testing.T) {
	bin := testsrv.Passbridge(t)
	dir := t.TempDir()
	addr := fmt.Sprintf("127.0.0.1:%d", testsrv.FreePort(t))
	var out testsrv.Buffer // written by the process's copier while the test reads it
	cmd := exec.Command(bin, "run", "--listen", addr, "--log-format", "json")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "HOME="+dir) // no passbridge.yaml anywhere it looks
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() { cmd.Process.Kill() })

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	healthy := false
	for !healthy {
		select {
		case err := <-exited:
			t.Fatalf("passbridge run exited early: %v\n%s", err, out.String())
		case <-ctx.Done():
			t.Fatalf("no healthy /healthz: %v\n%s", ctx.Err(), out.String())
		case <-time.After(50 * time.Millisecond):
		}
		resp, err := http.Get("http://" + addr + "/healthz")
		if err == nil {
			healthy = resp.StatusCode == http.StatusOK
			resp.Body.Close()
		}
	}

	if _, err := os.Stat(filepath.Join(dir, "passbridge-demo.db")); err != nil {
		t.Errorf("demo database not created in the working directory: %v", err)
	}
	for _, want := range []string{"passbridge demo is running", "northwind", "samuel.okafor"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("demo output lacks %q:\n%s", want, out.String())
		}
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v\n%s", err, out.String())
		}
	case <-ctx.Done():
		t.Fatalf("did not exit after SIGTERM\n%s", out.String())
	}
	if !strings.Contains(out.String(), `"msg":"stopped"`) {
		t.Errorf("no clean stop logged:\n%s", out.String())
	}
	// Every log line is one JSON object with each key once, durations in
	// milliseconds (the banner for the newcomer is the only other text).
	n := 0
	for _, line := range strings.Split(out.String(), "\n") {
		if !strings.HasPrefix(line, "{") {
			continue
		}
		n++
		if err := logging.CheckLine([]byte(line)); err != nil {
			t.Errorf("log line: %v: %s", err, line)
		}
		if strings.Contains(line, `"took":`) {
			t.Errorf("a duration not in milliseconds: %s", line)
		}
	}
	if n < 5 {
		t.Errorf("only %d JSON log lines:\n%s", n, out.String())
	}
}

func TestVersion(t *testing.T) {
	var out bytes.Buffer
	root := newRootCmd()
	root.SetOut(&out)
	root.SetArgs([]string{"version", "-o", "json"})
	if err := root.Execute(); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"version"`, `"commit"`, `"go_version": "go1.`} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("version output lacks %s: %s", want, out.String())
		}
	}
}

func TestConfigCheck(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "passbridge.yaml")
	os.WriteFile(p, []byte(`database: {driver: postgres, dsn: "postgres://app:hunter2@db/erp"}
directory: {urls: [ldaps://dc1.corp.example], base_dn: "DC=corp,DC=example"}
`), 0o600)
	var out, errOut bytes.Buffer
	root := newRootCmd()
	root.SetOut(&out)
	root.SetErr(&errOut)
	root.SetArgs([]string{"config", "check", "--config", p})
	if err := root.Execute(); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out.String(), "hunter2") || !strings.Contains(out.String(), "postgres://app:********@db/erp") {
		t.Errorf("config check output:\n%s", out.String())
	}

	os.WriteFile(p, []byte("database: {driver: postgres, dsn: x}\ndirectoy: {}\n"), 0o600)
	root = newRootCmd()
	root.SetOut(&out)
	root.SetErr(&errOut)
	root.SetArgs([]string{"config", "check", "--config", p})
	err := root.Execute()
	if err == nil || !strings.Contains(err.Error(), p+`:2: unknown key "directoy"`) {
		t.Errorf("err = %v", err)
	}
}

// TestRunRefusesPendingMigration: a real deployment never migrates behind
// the DBA's back; run names the command to run instead.
func TestRunRefusesPendingMigration(t *testing.T) {
	dir := t.TempDir()
	dbPath := filepath.Join(dir, "erp.db")
	seed := exec.Command("sqlite3", dbPath, "CREATE TABLE users (id INTEGER PRIMARY KEY, username TEXT, email TEXT, password_hash TEXT);")
	if testsrv.Binary(t, "sqlite3", "sqlite3") != "" {
		if out, err := seed.CombinedOutput(); err != nil {
			t.Fatalf("sqlite3: %v %s", err, out)
		}
	}
	cfgPath := filepath.Join(dir, "passbridge.yaml")
	os.WriteFile(cfgPath, []byte(fmt.Sprintf(`database: {driver: sqlite, dsn: %q}
directory: {kind: openldap, urls: ["ldap://127.0.0.1:1"], base_dn: "dc=corp,dc=example"}
portal: {listen: "127.0.0.1:%d"}
`, dbPath, testsrv.FreePort(t))), 0o600)

	root := newRootCmd()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs([]string{"run", "--config", cfgPath, "--log-format", "json"})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := root.ExecuteContext(ctx)
	if err == nil || !strings.Contains(err.Error(), "passbridge migrate apply") {
		t.Fatalf("run with pending migration steps: err = %v", err)
	}
}
