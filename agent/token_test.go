package agent

import (
	"context"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/passbridge/passbridge/admintoken"
	"github.com/passbridge/passbridge/schema"
	"github.com/passbridge/passbridge/store"
)

// clientFrom is an HTTP client whose connections come from a loopback
// address of its own (127.0.0.x), another client address for the server.
func clientFrom(ip string) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 5 * time.Second}
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: d.DialContext}}
}

// TestAdminTokenWrongLimited: wrong admin tokens on /api/v1 are counted per
// client address (portal.rate_limits.password_per_user per password_window)
// and audited; past the limit the address is refused with 429 even with the
// right token, while another address is not; a forged X-Forwarded-For on
// the admin listener changes nothing (no proxy is trusted there), and a
// reloaded token is the only one that works.
func TestAdminTokenWrongLimited(t *testing.T) {
	cfg := testConfig(t, newDatabase(t, onSQLite), nil, "")
	cfg.Admin.Listen = "127.0.0.1:0"
	db := openApp(t, cfg)
	r := startAgent(t, cfg, db, newGateSyncer(db, cfg, "n1"), Options{NoCatchUp: true})
	try := func(c *http.Client, token, xff string) *http.Response {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, r.ops+"/api/v1/schedule", nil)
		req.Header.Set("Authorization", "Bearer "+token)
		if xff != "" {
			req.Header.Set("X-Forwarded-For", xff)
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	here, there := clientFrom("127.0.0.1"), clientFrom("127.0.0.2")
	wrong := strings.Repeat("0", 31) + "1"
	for i, xff := range []string{"", "198.51.100.1", "198.51.100.2"} {
		if resp := try(here, wrong, xff); resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("wrong token %d: %d", i+1, resp.StatusCode)
		}
	}
	resp := try(here, wrong, "198.51.100.3")
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("4th wrong token: %d (Retry-After %q), want 429 with Retry-After", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	if resp := try(here, testToken, ""); resp.StatusCode != http.StatusTooManyRequests {
		t.Errorf("the right token from a limited address: %d, want 429", resp.StatusCode)
	}
	if resp := try(there, testToken, ""); resp.StatusCode != http.StatusOK {
		t.Errorf("the right token from another address: %d", resp.StatusCode)
	}

	n := schema.NamesFor(cfg)
	c := n.Column
	count := func(reason string) int {
		var k int
		if err := store.Get(context.Background(), db, &k, "SELECT COUNT(*) FROM "+n.Audit+" WHERE "+c("event")+" = ? AND "+c("success")+" = ? AND "+c("ip")+" = ? AND "+c("detail")+" LIKE ?",
			admintoken.EventRefused, false, "127.0.0.1", `%"reason":"`+reason+`"%`); err != nil {
			t.Fatal(err)
		}
		return k
	}
	if w, l := count("wrong"), count("limited"); w != 3 || l != 2 {
		t.Errorf("audit: %d wrong and %d limited admin tokens from 127.0.0.1, want 3 and 2", w, l)
	}

	// A reload brings a new token: the old one is wrong from then on.
	next := *cfg
	next.Admin.Token = "7d1c4e9a0b3f5e2d8c6a1b0f9e4d3c2a"
	if err := r.a.Reload(&next); err != nil {
		t.Fatal(err)
	}
	if resp := try(there, testToken, ""); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("the old token after a reload: %d", resp.StatusCode)
	}
	if resp := try(there, string(next.Admin.Token), ""); resp.StatusCode != http.StatusOK {
		t.Errorf("the new token after a reload: %d", resp.StatusCode)
	}
}
