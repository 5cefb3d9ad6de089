package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/passbridge/passbridge/enroll"
	"github.com/passbridge/passbridge/internal/testsrv"
	"github.com/passbridge/passbridge/migrate"
	"github.com/passbridge/passbridge/schema"
	"github.com/passbridge/passbridge/store"
)

// TestEnrollLinkCommand drives `passbridge enroll link` on a real slapd and
// an SQLite application database.
func TestEnrollLinkCommand(t *testing.T) {
	srv := testsrv.Slapd(t)
	ou := srv.NewOU(t)
	srv.AddUser(t, ou, "alice", map[string][]string{"displayName": {"Alice Liddell"}})
	srv.AddUser(t, ou, "bob", nil) // no users row: cannot use the portal
	cfgPath, cfg, db := appSetup(t, srv.DirectoryYAML(ou)+`portal: {rp_id: passkeys.corp.example, origins: ["https://passkeys.corp.example"], link_lifetime: 24h}
`)
	ctx := context.Background()
	if _, err := db.ExecContext(ctx, `INSERT INTO users (username, email, password_hash) VALUES ('alice', 'alice@corp.example', '$2y$10$x')`); err != nil {
		t.Fatal(err)
	}
	if err := migrate.EnsureApplied(ctx, db, cfg, nil); err != nil {
		t.Fatal(err)
	}
	if _, _, err := execute(t, "sync", "--config", cfgPath); err != nil {
		t.Fatal(err)
	}

	out, _, err := execute(t, "enroll", "link", "ALICE@corp.example", "--qr", "--config", cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("passbridge enroll link --qr:\n%s", out)
	for _, want := range []string{"Enrollment link for Alice Liddell <alice@corp.example> (alice)", "https://passkeys.corp.example/link/", "█▀"} {
		if !strings.Contains(out, want) {
			t.Fatalf("output lacks %q:\n%s", want, out)
		}
	}
	out, _, err = execute(t, "enroll", "link", "alice", "--expires", "2h", "-o", "json", "--config", cfgPath)
	var l enroll.Link
	if err != nil || json.Unmarshal([]byte(out), &l) != nil {
		t.Fatalf("-o json: %v\n%s", err, out)
	}
	if l.Username != "alice" || !strings.HasPrefix(l.URL, "https://passkeys.corp.example/link/") || time.Until(l.ExpiresAt) > 2*time.Hour || time.Until(l.ExpiresAt) < time.Hour {
		t.Errorf("link %+v, want alice's, valid 2h", l)
	}
	var valid int
	n := schema.NamesFor(cfg)
	if err := store.Get(ctx, db, &valid, "SELECT COUNT(*) FROM "+n.Tokens+" WHERE used_at IS NULL AND expires_at > ?", time.Now().UTC()); err != nil || valid != 1 {
		t.Errorf("%d valid links after two issues (%v): the newer must replace the older", valid, err)
	}
	var who string
	if err := store.Get(ctx, db, &who, "SELECT actor FROM "+n.Audit+" WHERE event = 'link.issue' ORDER BY id DESC LIMIT 1"); err != nil || !strings.HasPrefix(who, "cli:") {
		t.Errorf("audit actor %q (%v), want cli:<operator>", who, err)
	}
	for _, tc := range []struct{ user, want string }{
		{"bob", "not linked to an application account"},
		{"nobody", `no identity "nobody"`},
	} {
		if _, _, err := execute(t, "enroll", "link", tc.user, "--config", cfgPath); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("enroll link %s: %v, want %q", tc.user, err, tc.want)
		}
	}
	if _, _, err := execute(t, "enroll", "link", "alice", "--expires", "1000h", "--config", cfgPath); err == nil || !strings.Contains(err.Error(), "between 1m and 720h") {
		t.Errorf("--expires 1000h: %v", err)
	}
}
