package metrics

import (
	"context"
	"errors"
	"io"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// Every method works on a nil *Metrics, so callers without a registry
// (tests, CLI commands) need no special case.
func TestNilMetricsAreSafe(t *testing.T) {
	var m *Metrics
	m.SyncRun("full", ResultSucceeded, time.Second)
	m.SyncSkipped("delta", SkipBusy)
	m.SyncRetry("full")
	m.SyncRunning(true)
	m.LDAPError("sync")
	m.DBError("sync")
	m.Ceremony("login", "success")
	m.HTTPRequest("GET", "/", 200, time.Millisecond)
	m.SetSnapshot(nil, nil)
	if m.Registry() != nil {
		t.Fatal("nil metrics has a registry")
	}
}

func scrape(t *testing.T, m *Metrics) string {
	t.Helper()
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if rec.Code != 200 {
		t.Fatalf("scrape: %d", rec.Code)
	}
	b, _ := io.ReadAll(rec.Body)
	return string(b)
}

// A database that cannot be read at scrape time costs its own series and
// counts an error; every other series is still served.
func TestSnapshotFailureKeepsTheRest(t *testing.T) {
	m := New()
	m.SetSnapshot(func(context.Context) (Snapshot, error) { return Snapshot{}, errors.New("connection refused") }, nil)
	m.SyncRun("full", ResultSucceeded, 2*time.Second)
	out := scrape(t, m)
	// The error is counted while the scrape collects, so it shows from
	// the next scrape on; read the counter itself.
	if n := testutil.ToFloat64(m.dbErrors.WithLabelValues("query")); n != 1 {
		t.Errorf("database errors (query) = %v, want 1", n)
	}
	for _, want := range []string{
		`passbridge_sync_runs_total{kind="full",result="succeeded"} 1`,
		`passbridge_sync_runs_total{kind="delta",result="failed"} 0`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("scrape lacks %q", want)
		}
	}
	if strings.Contains(out, "passbridge_identities{") {
		t.Error("identities exported without a snapshot")
	}

	at := time.Date(2025, 3, 1, 2, 0, 0, 0, time.UTC)
	m.SetSnapshot(func(context.Context) (Snapshot, error) {
		return Snapshot{Identities: map[string]int{"active": 40, "disabled": 2}, LastSuccess: map[string]time.Time{"full": at}}, nil
	}, nil)
	out = scrape(t, m)
	for _, want := range []string{
		`passbridge_identities{state="active"} 40`,
		`passbridge_identities{state="disabled"} 2`,
		`passbridge_identities{state="deleted"} 0`,
		`passbridge_sync_last_success_timestamp_seconds{kind="full"} 1.7407944e+09`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("scrape lacks %q:\n%s", want, out)
		}
	}
}
