package main

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	_ "modernc.org/sqlite"
)

// TestCommandsRunOnTheirSmallestConfig gives each command the smallest
// configuration that serves it: a DBA's file with the database and the users
// table alone (a table without an e-mail column, so the default match rules
// cannot apply) runs every migrate command, users list and audit export; sync
// and run refuse it with an error that names the missing directory key and
// the command that needs it.
func TestCommandsRunOnTheirSmallestConfig(t *testing.T) {
	dir := t.TempDir()
	dbPath := filepath.Join(dir, "erp.db")
	raw, err := sql.Open("sqlite", dbPath)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := raw.Exec(`CREATE TABLE accounts (id INTEGER PRIMARY KEY, login TEXT NOT NULL, pw TEXT);
INSERT INTO accounts (login, pw) VALUES ('alice', '$2y$10$a'), ('bob', '$2y$10$b');`); err != nil {
		t.Fatal(err)
	}
	raw.Close()
	conf := filepath.Join(dir, "dba.yaml")
	yaml := fmt.Sprintf(`database: {driver: sqlite, dsn: %q}
users_table: {name: accounts, key: id, username: login, email: "", password: pw}
`, dbPath)
	if err := os.WriteFile(conf, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}

	for _, args := range [][]string{
		{"migrate", "plan"},
		{"migrate", "apply"},
		{"migrate", "status"},
		{"migrate", "verify"},
		{"users", "list"},
		{"audit", "export"},
		{"config", "check", "--for", "migrate"},
	} {
		out, errOut, err := execute(t, append(args, "--config", conf, "--log-level", "warn")...)
		if err != nil {
			t.Fatalf("passbridge %s with a database-only config: %v\n%s%s", strings.Join(args, " "), err, out, errOut)
		}
	}

	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"sync", "--dry-run"}, []string{"passbridge sync", "directory.urls", "directory.base_dn"}},
		{[]string{"run"}, []string{"passbridge run", "directory.urls", "directory.base_dn"}},
		{[]string{"config", "check"}, []string{"passbridge run", "directory.urls"}},
	} {
		ctx, cancel := context.WithCancel(context.Background())
		_, _, err := executeContext(ctx, t, append(tc.args, "--config", conf, "--log-level", "warn")...)
		cancel()
		if err == nil {
			t.Fatalf("passbridge %s with a database-only config: no error", strings.Join(tc.args, " "))
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("passbridge %s: the error does not name %q:\n%v", strings.Join(tc.args, " "), w, err)
			}
		}
		// Only the directory is missing: the database keys are not blamed.
		if strings.Contains(err.Error(), "database.") || strings.Contains(err.Error(), "users_table") {
			t.Errorf("passbridge %s: the error blames keys that are set:\n%v", strings.Join(tc.args, " "), err)
		}
	}

	// A match rule on a column the table does not have is still an error for
	// the command that matches, and says so.
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte(yaml+`directory:
  kind: openldap
  urls: [ldap://127.0.0.1:1]
  base_dn: dc=corp,dc=example
  match: [email]
`), 0o600); err != nil {
		t.Fatal(err)
	}
	_, _, err = execute(t, "sync", "--config", bad)
	if err == nil || !strings.Contains(err.Error(), "directory.match[0]") || !strings.Contains(err.Error(), "users_table.email is empty") {
		t.Fatalf("sync with match on a missing e-mail column: %v", err)
	}
	// The same file is fine for migrate: it does not match.
	if _, _, err := execute(t, "migrate", "status", "--config", bad); err != nil {
		t.Fatalf("migrate status with a directory block migrate does not read: %v", err)
	}
}
