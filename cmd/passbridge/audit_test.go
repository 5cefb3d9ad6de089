package main

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/passbridge/passbridge/audit"
	"github.com/passbridge/passbridge/config"
	"github.com/passbridge/passbridge/internal/testsrv"
	"github.com/passbridge/passbridge/migrate"
	"github.com/passbridge/passbridge/schema"
	"github.com/passbridge/passbridge/store"
)

// appSetup writes a configuration (with extra YAML) for an SQLite
// application database holding a legacy users table, without passbridge's
// tables yet, and returns its path, the configuration and the open
// database.
func appSetup(t *testing.T, extra string) (string, *config.Config, *store.DB) {
	t.Helper()
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "passbridge.yaml")
	yaml := fmt.Sprintf(`database: {driver: sqlite, dsn: %q}
users_table: {name: users, key: id, username: username, email: email, password: password_hash}
log: {level: warn}
`, filepath.Join(dir, "app.db")) + extra
	if err := os.WriteFile(cfgPath, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(cfgPath, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	db, err := store.Open(ctx, cfg.Database, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if _, err := db.ExecContext(ctx, `CREATE TABLE users (id INTEGER PRIMARY KEY AUTOINCREMENT, username TEXT NOT NULL, email TEXT, password_hash TEXT)`); err != nil {
		t.Fatal(err)
	}
	return cfgPath, cfg, db
}

// auditSetup is appSetup with passbridge's tables made.
func auditSetup(t *testing.T, extra string) (string, *config.Config, *store.DB) {
	t.Helper()
	cfgPath, cfg, db := appSetup(t, extra)
	if err := migrate.EnsureApplied(context.Background(), db, cfg, nil); err != nil {
		t.Fatal(err)
	}
	return cfgPath, cfg, db
}

// exportJSON runs `audit export --format json` with args and decodes it.
func exportJSON(t *testing.T, args ...string) []audit.Event {
	t.Helper()
	out, stderr, err := execute(t, append([]string{"audit", "export", "--format", "json"}, args...)...)
	if err != nil {
		t.Fatalf("audit export %v: %v\n%s", args, err, stderr)
	}
	var evs []audit.Event
	if err := json.Unmarshal([]byte(out), &evs); err != nil {
		t.Fatalf("audit export %v: not JSON: %v\n%s", args, err, out)
	}
	return evs
}

func eventNames(evs []audit.Event) string {
	var out []string
	for _, e := range evs {
		out = append(out, e.Event)
	}
	return strings.Join(out, " ")
}

func TestAuditExportCommand(t *testing.T) {
	cfgPath, cfg, db := auditSetup(t, "directory: {kind: openldap, urls: [\"ldaps://ldap.invalid\"], base_dn: \"dc=corp,dc=example\"}\n")
	ctx := context.Background()
	n := schema.NamesFor(cfg)
	now := time.Now().UTC()
	for _, e := range []audit.Event{
		{At: now.Add(-50 * time.Hour), Event: "signin.password", Success: true, Actor: "alice", Target: "alice", IP: "192.0.2.7", UserAgent: "Firefox/140"},
		{At: now.Add(-2 * time.Hour), Event: "signin.failed", Actor: "alice", Target: "alice", IP: "192.0.2.7", Detail: audit.Detail(map[string]any{"reason": "bad password"})},
		{At: now.Add(-30 * time.Minute), Event: "passkey.register", Success: true, Actor: "Alice", Target: "ALICE", Detail: audit.Detail(map[string]any{"name": "=cmd|' /C calc'!A0"})},
		{At: now.Add(-10 * time.Minute), Event: "link.issue", Success: true, Actor: "cli:root", Target: "bob"},
	} {
		if err := audit.Record(ctx, db, n, e); err != nil {
			t.Fatal(err)
		}
	}

	// CSV on stdout, newest first.
	out, _, err := execute(t, "audit", "export", "--config", cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("passbridge audit export:\n%s", out)
	rows, err := csv.NewReader(strings.NewReader(out)).ReadAll()
	if err != nil || len(rows) != 5 || strings.Join(rows[0], ",") != "id,at,event,success,actor,target,ip,user_agent,detail" {
		t.Fatalf("CSV: %v\n%s", err, out)
	}
	if rows[1][2] != "link.issue" || rows[4][2] != "signin.password" || rows[4][6] != "192.0.2.7" || rows[4][7] != "Firefox/140" || rows[4][3] != "true" {
		t.Fatalf("CSV rows: %q", rows)
	}
	if _, err := time.Parse(time.RFC3339Nano, rows[1][1]); err != nil || !strings.HasSuffix(rows[1][1], "Z") {
		t.Fatalf("time %q: %v", rows[1][1], err)
	}

	// Filters.
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--event", "signin.*"}, "signin.failed signin.password"},
		{[]string{"--event", "signin.", "--failed"}, "signin.failed"},
		{[]string{"--user", "ALICE"}, "passkey.register signin.failed signin.password"},
		{[]string{"--user", "bob", "--since", "1h"}, "link.issue"},
		{[]string{"--since", "3h", "--until", "20m"}, "passkey.register signin.failed"},
		{[]string{"--since", now.Add(-3 * time.Hour).Format(time.RFC3339)}, "link.issue passkey.register signin.failed"},
		{[]string{"--since", "7d", "--limit", "2"}, "link.issue passkey.register"},
		{[]string{"--until", now.AddDate(0, 0, -2).Format(time.DateOnly)}, "signin.password"},
		{[]string{"--event", "nothing.*"}, ""},
	} {
		if got := eventNames(exportJSON(t, append(tc.args, "--config", cfgPath)...)); got != tc.want {
			t.Errorf("audit export %v: %q, want %q", tc.args, got, tc.want)
		}
	}
	// -o json means JSON too.
	out, _, err = execute(t, "audit", "export", "-o", "json", "--event", "passkey.register", "--config", cfgPath)
	var evs []audit.Event
	if err != nil || json.Unmarshal([]byte(out), &evs) != nil || len(evs) != 1 || !strings.Contains(string(evs[0].Detail), "=cmd") {
		t.Fatalf("-o json: %v\n%s", err, out)
	}
	// The formula in the detail cannot run: the cell starts with {; an
	// actor that starts with = gets a quote.
	out, _, err = execute(t, "audit", "export", "--event", "passkey.register", "--config", cfgPath)
	if err != nil || !strings.Contains(out, `"{""name"":""=cmd|' /C calc'!A0""}"`) {
		t.Fatalf("CSV detail: %v\n%s", err, out)
	}

	// --out: a new 0600 file, never overwritten without --force.
	file := filepath.Join(t.TempDir(), "audit.csv")
	_, stderr, err := execute(t, "audit", "export", "--out", file, "--config", cfgPath)
	if err != nil || !strings.Contains(stderr, "4 audit events written to "+file) {
		t.Fatalf("--out: %v\n%s", err, stderr)
	}
	st, err := os.Stat(file)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("--out file: %v, mode %v", err, st.Mode())
	}
	body, _ := os.ReadFile(file)
	if !strings.HasPrefix(string(body), "id,at,event,") || strings.Count(string(body), "\n") != 5 {
		t.Fatalf("--out file:\n%s", body)
	}
	if _, _, err := execute(t, "audit", "export", "--out", file, "--format", "json", "--config", cfgPath); err == nil || !strings.Contains(err.Error(), "--force") {
		t.Fatalf("existing --out: %v", err)
	}
	if b, _ := os.ReadFile(file); string(b) != string(body) {
		t.Fatal("an existing --out file was changed without --force")
	}
	if err := os.Chmod(file, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, err := execute(t, "audit", "export", "--out", file, "--format", "json", "--force", "--config", cfgPath); err != nil {
		t.Fatal(err)
	}
	st, _ = os.Stat(file)
	body, _ = os.ReadFile(file)
	if st.Mode().Perm() != 0o600 || !json.Valid(body) {
		t.Fatalf("--force: mode %v\n%s", st.Mode(), body)
	}

	// Bad flags: clear errors, before anything is read.
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--since", "yesterday"}, "--since: time \"yesterday\": expected a duration"},
		{[]string{"--until", "2026-02-30"}, "--until:"},
		{[]string{"--format", "xml"}, `--format "xml": expected csv or json`},
		{[]string{"--event", "*.failed"}, "--event: audit filter: event \"*.failed\": a * may only end the pattern"},
		{[]string{"--since", "1h", "--until", "2h"}, "until"},
		{[]string{"--force"}, "--force needs --out"},
		{[]string{"--limit", "-1"}, "--limit -1"},
		{[]string{"--out", filepath.Join(t.TempDir(), "missing", "x.csv")}, "no such file or directory"},
	} {
		if _, _, err := execute(t, append([]string{"audit", "export", "--config", cfgPath}, tc.args...)...); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("audit export %v: %v, want %q", tc.args, err, tc.want)
		}
	}
}

// TestAuditSyncRuns checks that writing sync runs, and only those, are in
// the audit trail, against a real slapd.
func TestAuditSyncRuns(t *testing.T) {
	srv := testsrv.Slapd(t)
	ou := srv.NewOU(t)
	alice := srv.AddUser(t, ou, "alice", nil)
	srv.AddUser(t, ou, "bob", nil)
	cfgPath, _, _ := auditSetup(t, srv.DirectoryYAML(ou, "max_deletions: 0"))

	if _, _, err := execute(t, "sync", "--dry-run", "--config", cfgPath); err != nil {
		t.Fatal(err)
	}
	if evs := exportJSON(t, "--config", cfgPath); len(evs) != 0 {
		t.Fatalf("a dry run is in the audit trail: %+v", evs)
	}
	if _, _, err := execute(t, "sync", "--config", cfgPath); err != nil {
		t.Fatal(err)
	}
	srv.Delete(t, alice)
	if _, _, err := execute(t, "sync", "--config", cfgPath); err == nil {
		t.Fatal("the deletion guard let the run through")
	}
	evs := exportJSON(t, "--event", "sync.*", "--config", cfgPath)
	if len(evs) != 2 {
		t.Fatalf("sync events: %+v", evs)
	}
	type detail struct {
		RunID   int64          `json:"run_id"`
		Mode    string         `json:"mode"`
		DryRun  *bool          `json:"dry_run"`
		Status  string         `json:"status"`
		Changes map[string]int `json:"changes"`
		Applied int            `json:"applied"`
		Error   string         `json:"error"`
	}
	var ok, refused detail
	if err := json.Unmarshal(evs[1].Detail, &ok); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(evs[0].Detail, &refused); err != nil {
		t.Fatal(err)
	}
	t.Logf("sync.run events: %s / %s", evs[1].Detail, evs[0].Detail)
	if e := evs[1]; e.Event != "sync.run" || !e.Success || e.Actor != "cli" || e.Target != "directory" || ok.RunID != 2 || ok.Mode != "full" ||
		ok.DryRun == nil || *ok.DryRun || ok.Status != "succeeded" || ok.Changes["create"] != 2 || ok.Applied != 2 || ok.Error != "" {
		t.Fatalf("succeeded run: %+v %+v", e, ok)
	}
	if e := evs[0]; e.Success || refused.RunID != 3 || refused.Status != "refused" || !strings.Contains(refused.Error, "refused") {
		t.Fatalf("refused run: %+v %+v", e, refused)
	}
	if evs := exportJSON(t, "--event", "sync.run", "--failed", "--user", "CLI", "--config", cfgPath); len(evs) != 1 || evs[0].Success {
		t.Fatalf("failed sync runs by cli: %+v", evs)
	}
}
