package enroll

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/passbridge/passbridge/internal/testsrv"
	"github.com/passbridge/passbridge/schema"
	"github.com/passbridge/passbridge/store"
)

// TestLinkSecretNotLogged: a link redeemed while the database fails (a 5xx
// on /link/<token>, opened and used) leaves no trace of its secret in any
// log line or audit entry; the log names the link by a fingerprint of its
// stored hash instead, and the link still works once the database is back.
func TestLinkSecretNotLogged(t *testing.T) {
	var logs testsrv.Buffer
	e := newEnv(t, envOptions{logs: &logs})
	u := e.addUser("redact", true)
	e.sync()
	link := e.link(u)
	secret := link[strings.LastIndex(link, "/")+1:]
	path := "/link/" + secret

	// The tokens table goes away: reading the link fails inside the
	// portal, a fault the visitor did not cause.
	n := schema.NamesFor(e.cfg)
	q := e.db.Dialect().Quote
	ctx := context.Background()
	if _, err := store.Exec(ctx, e.db, "ALTER TABLE "+n.Tokens+" RENAME TO "+q("tokens_away")); err != nil {
		t.Fatal(err)
	}
	c := e.client()
	if r := c.get(path); r.status != http.StatusInternalServerError {
		t.Fatalf("GET %s with the tokens table gone: %d, want 500", "/link/<secret>", r.status)
	}
	if r := c.form(path, url.Values{}); r.status != http.StatusInternalServerError {
		t.Fatalf("POST %s with the tokens table gone: %d, want 500", "/link/<secret>", r.status)
	}
	if _, err := store.Exec(ctx, e.db, "ALTER TABLE "+q("tokens_away")+" RENAME TO "+n.Tokens); err != nil {
		t.Fatal(err)
	}

	out := logs.String()
	if !strings.Contains(out, "portal request failed") {
		t.Fatalf("the 5xx was not logged:\n%s", out)
	}
	if strings.Contains(out, secret) {
		t.Errorf("the link's secret is in the log:\n%s", out)
	}
	want := "/link/[redacted:" + hashSecret(secret)[:8] + "]"
	if !strings.Contains(out, want) {
		t.Errorf("the log does not name the link as %s:\n%s", want, out)
	}
	var leaks int
	if err := store.Get(ctx, e.db, &leaks, "SELECT COUNT(*) FROM "+n.Audit+" WHERE "+q("detail")+" LIKE ? OR "+q("target")+" LIKE ? OR "+q("user_agent")+" LIKE ?",
		"%"+secret+"%", "%"+secret+"%", "%"+secret+"%"); err != nil {
		t.Fatal(err)
	}
	if leaks != 0 {
		t.Errorf("%d audit entries hold the link's secret", leaks)
	}
	// Nothing was used up: the link works now.
	if r := c.form(path, url.Values{}); r.status != http.StatusSeeOther {
		t.Errorf("the link after the fault: %d %s", r.status, strip(r.body))
	}
}
