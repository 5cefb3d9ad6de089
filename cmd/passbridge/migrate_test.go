package main

import (
	"bytes"
	"database/sql"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	_ "modernc.org/sqlite"

	"github.com/passbridge/passbridge/internal/testsrv"
)

// TestMigrateCommands drives the real binary through the DBA's commands on
// a Gitea-style SQLite database: plan, apply --dry-run, apply, status -o
// json, verify (exit 0, then 2 after a hash is changed), rollback refused
// with an enrolled passkey, rollback --force --export.
func TestMigrateCommands(t *testing.T) {
	bin := testsrv.Passbridge(t)
	dir := t.TempDir()
	dbPath := filepath.Join(dir, "gitea.db")
	fixture, err := os.ReadFile("../../migrate/testdata/gitea_sqlite.sql")
	if err != nil {
		t.Fatal(err)
	}
	raw, err := sql.Open("sqlite", dbPath)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	if _, err := raw.Exec(string(fixture)); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "passbridge.yaml")
	err = os.WriteFile(conf, []byte(`database: {driver: sqlite, dsn: `+dbPath+`}
users_table: {name: user, key: id, username: name, email: email, password: passwd, active: is_active}
directory:
  kind: openldap
  urls: [ldap://127.0.0.1:3890]
  base_dn: ou=people,dc=corp,dc=example
migrate: {prefix: pb_, lock_timeout: 1s, retries: 2}
`), 0o600)
	if err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) (string, int) {
		t.Helper()
		cmd := exec.Command(bin, append([]string{"--config", conf, "--log-level", "warn"}, args...)...)
		cmd.Dir = dir
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		err := cmd.Run()
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return out.String(), ee.ExitCode()
		}
		if err != nil {
			t.Fatalf("%v: %v", args, err)
		}
		return out.String(), 0
	}

	// status --exit-code: 1 while anything is pending, for scripts.
	out, code := run("migrate", "status", "--exit-code")
	if code != 1 || !strings.Contains(out, "pending") {
		t.Fatalf("status --exit-code with everything pending (exit %d):\n%s", code, out)
	}
	out, code = run("migrate", "plan")
	if code != 0 || !strings.Contains(out, `ALTER TABLE "user" ADD COLUMN "pb_passkey_state" TEXT;`) || !strings.Contains(out, "(pending)") {
		t.Fatalf("plan (exit %d):\n%s", code, out)
	}
	out, code = run("migrate", "apply", "--dry-run")
	if code != 0 || !strings.Contains(out, "would apply") || !strings.Contains(out, "CREATE TABLE") {
		t.Fatalf("apply --dry-run (exit %d):\n%s", code, out)
	}
	out, code = run("migrate", "apply")
	if code != 0 || !strings.Contains(out, "applied") {
		t.Fatalf("apply (exit %d):\n%s", code, out)
	}
	out, code = run("migrate", "status", "-o", "json")
	var st struct {
		Steps []struct {
			ID    string `json:"id"`
			State string `json:"state"`
		} `json:"steps"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &st) != nil || len(st.Steps) < 30 {
		t.Fatalf("status -o json (exit %d):\n%s", code, out)
	}
	for _, s := range st.Steps {
		if s.State != "applied" {
			t.Fatalf("status: %s is %s", s.ID, s.State)
		}
	}
	out, code = run("migrate", "verify")
	if code != 0 || !strings.Contains(out, "verify: OK") {
		t.Fatalf("verify (exit %d):\n%s", code, out)
	}
	out, code = run("migrate", "status", "--exit-code")
	if code != 0 || !strings.Contains(out, "no drift") {
		t.Fatalf("status --exit-code with everything applied (exit %d):\n%s", code, out)
	}
	// Drift: an index recorded as applied, dropped by hand.
	if _, err := raw.Exec(`DROP INDEX pb_user_email`); err != nil {
		t.Fatal(err)
	}
	out, code = run("migrate", "status", "--exit-code", "-o", "json")
	type stepDrift struct {
		ID    string `json:"id"`
		Drift string `json:"drift"`
	}
	var drifted struct {
		Steps []stepDrift `json:"steps"`
	}
	if code != 1 || json.Unmarshal([]byte(out), &drifted) != nil || !slices.ContainsFunc(drifted.Steps, func(s stepDrift) bool {
		return s.ID == "create-index pb_user_email" && s.Drift != ""
	}) {
		t.Fatalf("status --exit-code -o json with drift (exit %d):\n%s", code, out)
	}
	if out, code = run("migrate", "status"); code != 0 {
		t.Fatalf("status without --exit-code exits 0 whatever the state (exit %d):\n%s", code, out)
	}
	if out, code = run("migrate", "apply"); code != 0 {
		t.Fatalf("apply after the drift (exit %d):\n%s", code, out)
	}
	if out, code = run("migrate", "status", "--exit-code"); code != 0 {
		t.Fatalf("status --exit-code once apply made the index again (exit %d):\n%s", code, out)
	}

	// A changed hash: verify names the row and exits 2.
	if _, err := raw.Exec(`UPDATE "user" SET passwd = 'x' WHERE id = 2`); err != nil {
		t.Fatal(err)
	}
	out, code = run("migrate", "verify", "-o", "json")
	var v struct {
		OK        bool `json:"ok"`
		Passwords struct {
			Changed int `json:"changed"`
			Rows    []struct {
				Key  string `json:"key"`
				Kind string `json:"kind"`
			} `json:"rows"`
		} `json:"passwords"`
	}
	if code != exitVerifyFailed || json.Unmarshal([]byte(out), &v) != nil || v.OK || v.Passwords.Changed != 1 || v.Passwords.Rows[0].Key != "2" {
		t.Fatalf("verify after a change (exit %d):\n%s", code, out)
	}

	// A passkey: rollback refuses, --force exports then removes.
	if _, err := raw.Exec(`INSERT INTO pb_credentials (user_key, credential_id, public_key, user_handle, name, created_at) VALUES (1, x'0102', x'a501', x'75', 'key', '2025-01-01 00:00:00+00:00')`); err != nil {
		t.Fatal(err)
	}
	out, code = run("migrate", "rollback")
	if code != 1 || !strings.Contains(out, "--force") {
		t.Fatalf("rollback with a passkey (exit %d):\n%s", code, out)
	}
	export := filepath.Join(dir, "keys.json")
	out, code = run("migrate", "rollback", "--force", "--export", export)
	if code != 0 || !strings.Contains(out, "passkeys exported: 1 to "+export) {
		t.Fatalf("rollback --force (exit %d):\n%s", code, out)
	}
	if _, err := os.Stat(export); err != nil {
		t.Fatal(err)
	}
	out, code = run("migrate", "status")
	if code != 0 || !strings.Contains(out, "0 applied") {
		t.Fatalf("status after rollback (exit %d):\n%s", code, out)
	}
	if out, code = run("migrate", "status", "--exit-code"); code != 1 {
		t.Fatalf("status --exit-code after rollback (exit %d):\n%s", code, out)
	}
}
