package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/passbridge/passbridge/dirsync"
	"github.com/passbridge/passbridge/identity"
	"github.com/passbridge/passbridge/internal/testsrv"
	"github.com/passbridge/passbridge/migrate"
	"github.com/passbridge/passbridge/store"
)

// execute runs one passbridge command line in-process.
func execute(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	return executeContext(context.Background(), t, args...)
}

// executeContext is execute under ctx (a command such as run stops when ctx
// ends).
func executeContext(ctx context.Context, t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	root := newRootCmd()
	root.SetOut(&out)
	root.SetErr(&errOut)
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	return out.String(), errOut.String(), err
}

// TestSyncAndUsersCommands drives `passbridge sync` and `passbridge users`
// against a real slapd and an SQLite application database.
func TestSyncAndUsersCommands(t *testing.T) {
	srv := testsrv.Slapd(t)
	ou := srv.NewOU(t)
	alice := srv.AddUser(t, ou, "alice", map[string][]string{"displayName": {"Alice Liddell"}})
	srv.AddUser(t, ou, "bob", nil)
	cfgPath, cfg, db := appSetup(t, srv.DirectoryYAML(ou, "max_deletions: 0"))
	ctx := context.Background()
	if _, err := db.ExecContext(ctx, `INSERT INTO users (username, email, password_hash) VALUES ('alice', 'ALICE@corp.example', '$2y$10$x')`); err != nil {
		t.Fatal(err)
	}

	// Before the migration: a clear error.
	_, _, err := execute(t, "sync", "--config", cfgPath)
	if err == nil || !strings.Contains(err.Error(), "migrate") {
		t.Fatalf("sync before migrate: %v", err)
	}
	if err := migrate.EnsureApplied(ctx, db, cfg, nil); err != nil {
		t.Fatal(err)
	}

	out, _, err := execute(t, "sync", "--dry-run", "--config", cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("passbridge sync --dry-run:\n%s", out)
	for _, want := range []string{"create     alice: new identity uid=alice,", "linked: email alice@corp.example matches users row 1",
		"create     bob:", "dry run: nothing written", "changes    create=2 (0 applied)", "1 linked, 1 unmatched"} {
		if !strings.Contains(out, want) {
			t.Fatalf("sync --dry-run output lacks %q:\n%s", want, out)
		}
	}
	var n int
	if err := store.Get(ctx, db, &n, "SELECT COUNT(*) FROM passbridge_identities"); err != nil || n != 0 {
		t.Fatalf("a dry run wrote %d identities (%v)", n, err)
	}

	out, _, err = execute(t, "sync", "-o", "json", "--config", cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	var res struct {
		Summary dirsync.Summary `json:"summary"`
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("sync -o json: %v\n%s", err, out)
	}
	if res.Summary.Status != "succeeded" || res.Summary.Changes[dirsync.KindCreate] != 2 || res.Summary.Applied != 2 || res.Summary.Mode != "full" {
		t.Fatalf("summary %+v", res.Summary)
	}

	out, _, err = execute(t, "users", "list", "--config", cfgPath)
	if err != nil || !strings.Contains(out, "alice") || !strings.Contains(out, "bob") || !strings.Contains(out, "2 identities") {
		t.Fatalf("users list: %v\n%s", err, out)
	}
	out, _, err = execute(t, "users", "list", "--link", "unmatched", "-o", "json", "--config", cfgPath)
	var list []identity.IdentityInfo
	if err != nil || json.Unmarshal([]byte(out), &list) != nil || len(list) != 1 || list[0].Username != "bob" {
		t.Fatalf("users list --link unmatched: %v\n%s", err, out)
	}
	if _, _, err := execute(t, "users", "list", "--state", "gone", "--config", cfgPath); err == nil || !strings.Contains(err.Error(), "expected one of active, disabled, deleted") {
		t.Fatalf("bad --state: %v", err)
	}

	// A passkey, as the portal would store it.
	_, err = store.Exec(ctx, db, `INSERT INTO passbridge_credentials (user_key, credential_id, public_key, user_handle, name, created_at, backup_eligible) VALUES (?, ?, ?, ?, ?, ?, ?)`,
		1, []byte{1, 2, 3}, []byte{4, 5}, []byte("h"), "YubiKey 5", time.Now().UTC(), true)
	if err != nil {
		t.Fatal(err)
	}
	out, _, err = execute(t, "users", "show", "ALICE", "--config", cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("passbridge users show ALICE:\n%s", out)
	for _, want := range []string{"alice (Alice Liddell)", "dn            " + alice, "state         active", "link          linked",
		"users row     1 (username alice, email ALICE@corp.example)", "passkeys      1", `"YubiKey 5": active`, "synced passkey"} {
		if !strings.Contains(out, want) {
			t.Fatalf("users show lacks %q:\n%s", want, out)
		}
	}
	if _, _, err := execute(t, "users", "show", "nobody", "--config", cfgPath); err == nil || !strings.Contains(err.Error(), `no identity named "nobody"`) {
		t.Fatalf("users show nobody: %v", err)
	}

	// The guard: max_deletions 0 refuses a deletion, with exit status 3.
	srv.Delete(t, alice)
	out, stderr, err := execute(t, "sync", "--config", cfgPath)
	var ee exitError
	if !errors.As(err, &ee) || ee.code != exitRefused || !strings.Contains(stderr, "refused") || !strings.Contains(out, "sync run 3: refused") {
		t.Fatalf("refused run: %v\nstdout:\n%s\nstderr:\n%s", err, out, stderr)
	}
}

// TestSyncDryRunIsStable: two dry runs of the same state print the same
// text (the changes sorted by kind, then username; the not-linked list by
// state, then username), full and delta, so that a diff between two days
// shows only what changed; the JSON lists the same changes in the same
// order.
func TestSyncDryRunIsStable(t *testing.T) {
	srv := testsrv.Slapd(t)
	ou := srv.NewOU(t)
	// Added out of alphabetical order; every third has a users row.
	names := []string{"olga", "bruno", "zoe", "ada", "mia", "kai", "eve", "noor", "ivan", "lea", "tom", "cem"}
	for _, n := range names {
		srv.AddUser(t, ou, n, nil)
	}
	cfgPath, cfg, db := appSetup(t, srv.DirectoryYAML(ou))
	ctx := context.Background()
	for i, n := range names {
		if i%3 == 0 {
			if _, err := db.ExecContext(ctx, `INSERT INTO users (username, email, password_hash) VALUES (?, NULL, '$2y$10$x')`, n); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := migrate.EnsureApplied(ctx, db, cfg, nil); err != nil {
		t.Fatal(err)
	}
	dry := func(args ...string) string {
		t.Helper()
		out, _, err := execute(t, append([]string{"sync", "--dry-run", "--config", cfgPath}, args...)...)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	for _, mode := range [][]string{{"--full"}, nil} {
		first := dry(mode...)
		if second := dry(mode...); second != first {
			t.Fatalf("two dry runs (%s) differ:\n%s\n---\n%s", mode, first, second)
		}
		var creates, issues []string
		for _, l := range strings.Split(first, "\n") {
			if f := strings.Fields(l); len(f) > 1 && f[0] == "create" {
				creates = append(creates, strings.TrimSuffix(f[1], ":"))
			} else if len(f) > 1 && (f[0] == "unmatched" || f[0] == "ambiguous") {
				issues = append(issues, f[0]+" "+strings.TrimSuffix(f[1], ":"))
			}
		}
		if len(creates) != len(names) || !slices.IsSorted(creates) {
			t.Fatalf("creates not sorted by username (%s): %v\n%s", mode, creates, first)
		}
		if len(issues) != 8 || !slices.IsSorted(issues) {
			t.Fatalf("not-linked list not sorted (%s): %v\n%s", mode, issues, first)
		}
	}
	// The JSON's changes are in the same order.
	out, _, err := execute(t, "sync", "--dry-run", "-o", "json", "--config", cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	var res struct {
		Changes []dirsync.Change `json:"changes"`
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatal(err)
	}
	if !slices.IsSortedFunc(res.Changes, dirsync.CompareChanges) || len(res.Changes) != len(names) {
		t.Fatalf("JSON changes not sorted: %+v", res.Changes)
	}
}
