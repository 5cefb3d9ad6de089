package agent

import (
	"log/slog"
	"math"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/passbridge/passbridge/config"
	"github.com/passbridge/passbridge/dirsync"
	"github.com/passbridge/passbridge/internal/testsrv"
)

// /readyz turns unready when the directory dies and ready again when it is
// back; the body names the failing check.
func TestReadyzFollowsTheDirectory(t *testing.T) {
	s := testsrv.StartSlapd(t, testsrv.SlapdOptions{}) // dedicated: killed below
	ou := seedOU(t, s, 5)
	cfg := testConfig(t, newDatabase(t, onSQLite), s, ou)
	cfg.Schedule.Incremental = "*/5 * * * *"
	db := openApp(t, cfg)
	log := testLog(t)
	r := startAgent(t, cfg, db, nil, Options{
		NewSyncer: NewDirectorySyncer(db, log),
		Probe:     DirectoryProbe(log),
		ProbeTTL:  200 * time.Millisecond,
	})
	ready := func() (int, Readiness) {
		var rd Readiness
		code := getJSON(t, "GET", r.base+"/readyz", false, "", &rd)
		return code, rd
	}
	// The start-up catch-up sync makes it ready.
	waitFor(t, 60*time.Second, "ready after the start-up sync", func() bool { c, _ := ready(); return c == 200 })

	s.Kill(t)
	killed := time.Now()
	var rd Readiness
	waitFor(t, 30*time.Second, "unready with the directory down", func() bool {
		var c int
		c, rd = ready()
		return c == http.StatusServiceUnavailable
	})
	t.Logf("dead directory reported by /readyz after %s", time.Since(killed).Round(time.Millisecond))
	if c := rd.Checks["directory"]; c.OK || !strings.Contains(c.Error, "directory unreachable") {
		t.Fatalf("directory check: %+v", c)
	}
	if !rd.Checks["database"].OK || !rd.Checks["sync"].OK {
		t.Fatalf("only the directory is down, but: %+v", rd.Checks)
	}

	s.Restart(t)
	waitFor(t, 30*time.Second, "ready again after the directory restart", func() bool { c, _ := ready(); return c == 200 })
	if !r.a.probes.checked {
		t.Fatal("no probe ran")
	}
}

// A /metrics scrape after a scripted set of runs has every series with the
// values the runs imply.
func TestMetricsAfterScriptedRuns(t *testing.T) {
	s := testsrv.Slapd(t)
	ou := seedOU(t, s, 7)
	cfg := testConfig(t, newDatabase(t, onSQLite), s, ou)
	cfg.Admin.Listen = "127.0.0.1:0"
	db := openApp(t, cfg)
	log := testLog(t)
	r := startAgent(t, cfg, db, nil, Options{NewSyncer: NewDirectorySyncer(db, log), Probe: DirectoryProbe(log), NoCatchUp: true})
	post := func(body string, want int) {
		t.Helper()
		var out dirsync.SyncResponse
		if code := getJSON(t, "POST", r.ops+"/api/v1/sync", true, body, &out); code != want {
			t.Fatalf("POST /api/v1/sync %s: %d %+v, want %d", body, code, out, want)
		}
	}
	post(`{"full":true}`, 200)
	post(`{}`, 200)
	post(`{"full":true,"dry_run":true}`, 200)
	// Point the directory at a closed port: the next run fails on LDAP.
	broken := *cfg
	broken.Directory.URLs = []string{"ldap://127.0.0.1:1"}
	if err := r.a.Reload(&broken); err != nil {
		t.Fatal(err)
	}
	post(`{"full":true}`, http.StatusBadGateway)
	getJSON(t, "GET", r.ops+"/api/v1/runs", false, "", nil) // 401, measured too
	r.a.Metrics().Ceremony("registration", "success")
	r.a.Metrics().Ceremony("registration", "success")
	r.a.Metrics().Ceremony("login", "failure")

	fams := scrape(t, r.ops+"/metrics")
	expect := func(name string, labels map[string]string, want float64) {
		t.Helper()
		got, ok := fams[name].value(labels)
		if !ok {
			t.Errorf("%s%v: missing", name, labels)
			return
		}
		if got != want {
			t.Errorf("%s%v = %v, want %v", name, labels, got, want)
		}
	}
	expect("passbridge_sync_runs_total", map[string]string{"kind": "full", "result": "succeeded"}, 1)
	expect("passbridge_sync_runs_total", map[string]string{"kind": "delta", "result": "succeeded"}, 1)
	expect("passbridge_sync_runs_total", map[string]string{"kind": "full", "result": "failed"}, 1)
	expect("passbridge_sync_runs_total", map[string]string{"kind": "full", "result": "refused"}, 0)
	expect("passbridge_sync_duration_seconds", map[string]string{"kind": "full", "result": "succeeded"}, 1)
	expect("passbridge_sync_duration_seconds", map[string]string{"kind": "full", "result": "failed"}, 1)
	expect("passbridge_identities", map[string]string{"state": "active"}, 7)
	expect("passbridge_identities", map[string]string{"state": "deleted"}, 0)
	expect("passbridge_ldap_errors_total", map[string]string{"op": "sync"}, 1)
	expect("passbridge_database_errors_total", map[string]string{"op": "sync"}, 0)
	expect("passbridge_sync_running", nil, 0)
	expect("passbridge_portal_ceremonies_total", map[string]string{"kind": "registration", "result": "success"}, 2)
	expect("passbridge_portal_ceremonies_total", map[string]string{"kind": "login", "result": "failure"}, 1)
	expect("passbridge_http_request_duration_seconds", map[string]string{"method": "POST", "route": "/api/v1/sync", "code": "200"}, 3)
	expect("passbridge_http_request_duration_seconds", map[string]string{"method": "POST", "route": "/api/v1/sync", "code": "502"}, 1)
	expect("passbridge_http_request_duration_seconds", map[string]string{"method": "GET", "route": "/api/v1/runs", "code": "401"}, 1)

	// The last-success gauge is the finish time recorded in sync_runs.
	var full, delta time.Time
	for _, run := range runRows(t, db, cfg) {
		if run.Status == "succeeded" && !run.DryRun && run.FinishedAt != nil {
			if run.Kind == KindFull {
				full = *run.FinishedAt
			} else {
				delta = *run.FinishedAt
			}
		}
	}
	for kind, want := range map[string]time.Time{"full": full, "delta": delta} {
		got, ok := fams["passbridge_sync_last_success_timestamp_seconds"].value(map[string]string{"kind": kind})
		if !ok || want.IsZero() || math.Abs(got-float64(want.UnixNano())/1e9) > 1e-3 {
			t.Errorf("last success %s = %v, want %v (%s)", kind, got, float64(want.UnixNano())/1e9, want)
		}
	}
	for _, name := range []string{"passbridge_build_info", "process_resident_memory_bytes", "go_goroutines", "passbridge_sync_ticks_skipped_total"} {
		if _, ok := fams[name]; !ok && name != "passbridge_sync_ticks_skipped_total" {
			t.Errorf("%s missing", name)
		}
	}
	// With admin.listen, /metrics and the API are not on the portal.
	if code := getJSON(t, "GET", r.base+"/api/v1/runs", true, "", nil); code != 404 {
		t.Errorf("admin API on the portal listener: %d, want 404", code)
	}
	resp, err := http.Get(r.base + "/metrics")
	if err == nil {
		resp.Body.Close()
		if resp.StatusCode != 404 {
			t.Errorf("/metrics on the portal listener: %d, want 404", resp.StatusCode)
		}
	}
	_ = slog.Default
	_ = config.Default
}

// A hung directory (it accepts connections and never answers) turns
// /readyz unready within the connect timeout, and /readyz itself never
// hangs on it.
func TestReadyzHungDirectory(t *testing.T) {
	s := testsrv.StartSlapd(t, testsrv.SlapdOptions{})
	ou := seedOU(t, s, 3)
	cfg := testConfig(t, newDatabase(t, onSQLite), s, ou)
	cfg.Schedule.Incremental = "*/5 * * * *"
	db := openApp(t, cfg)
	log := testLog(t)
	r := startAgent(t, cfg, db, nil, Options{NewSyncer: NewDirectorySyncer(db, log), Probe: DirectoryProbe(log), ProbeTTL: 200 * time.Millisecond})
	waitFor(t, 60*time.Second, "ready", func() bool { return getJSON(t, "GET", r.base+"/readyz", false, "", nil) == 200 })
	s.Freeze(t)
	defer s.Thaw(t)
	time.Sleep(300 * time.Millisecond) // past the probe cache
	client := &http.Client{Timeout: 30 * time.Second}
	start := time.Now()
	resp, err := client.Get(r.base + "/readyz")
	if err != nil {
		t.Fatalf("/readyz with a hung directory: %v", err)
	}
	resp.Body.Close()
	took := time.Since(start)
	t.Logf("hung directory reported by /readyz in %s", took.Round(time.Millisecond))
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("/readyz = %d with a hung directory", resp.StatusCode)
	}
	// Liveness does not depend on the directory.
	if code := getJSON(t, "GET", r.base+"/healthz", false, "", nil); code != 200 {
		t.Fatalf("/healthz = %d", code)
	}
}
