package agent

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/passbridge/passbridge/agent/metrics"
	"github.com/passbridge/passbridge/config"
	"github.com/passbridge/passbridge/dirsync"
	"github.com/passbridge/passbridge/store"
)

// running is an Agent started by a test.
type running struct {
	a     *Agent
	addrs Addrs
	base  string // http://portal
	ops   string // http://admin listener, or the portal without one
	stop  func() error
}

func startAgent(t testing.TB, cfg *config.Config, db *store.DB, s Syncer, opts Options) *running {
	t.Helper()
	opts.DB = NewDatabase(db, cfg)
	if opts.NewSyncer == nil {
		opts.NewSyncer = func(*config.Config) (Syncer, error) { return s, nil }
	}
	a, err := New(cfg, testLog(t), opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	addrc := make(chan Addrs, 1)
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx, func(ad Addrs) { addrc <- ad }) }()
	var ad Addrs
	select {
	case ad = <-addrc:
	case err := <-done:
		cancel()
		t.Fatalf("agent did not start: %v", err)
	}
	r := &running{a: a, addrs: ad, base: "http://" + ad.Portal.String()}
	r.ops = r.base
	if ad.Admin != nil {
		r.ops = "http://" + ad.Admin.String()
	}
	var stopped bool
	var stopErr error
	r.stop = func() error {
		if !stopped {
			stopped = true
			cancel()
			stopErr = <-done
		}
		return stopErr
	}
	t.Cleanup(func() { r.stop() })
	return r
}

// A schedule with a fast spec fires; ticks that find a sync running are
// skipped (and counted), never queued or run beside it.
func TestScheduleFiresAndSkipsOverlap(t *testing.T) {
	cfg := testConfig(t, newDatabase(t, onSQLite), nil, "")
	cfg.Schedule.Incremental = "@every 1s"
	db := openApp(t, cfg)
	g := newGateSyncer(db, cfg, "n1")
	g.hold()
	r := startAgent(t, cfg, db, g, Options{NoCatchUp: true})

	<-g.started // the first tick's run, now blocked
	waitFor(t, 20*time.Second, "two ticks skipped while a sync runs", func() bool {
		v, _ := scrape(t, r.ops+"/metrics")["passbridge_sync_ticks_skipped_total"].value(map[string]string{"kind": "delta", "reason": "busy"})
		return v >= 2
	})
	if n := len(runRows(t, db, cfg)); n != 1 {
		t.Fatalf("%d runs while the first was still running, want 1", n)
	}
	g.release()
	waitFor(t, 20*time.Second, "the schedule to fire again after the run ended", func() bool {
		return len(runRows(t, db, cfg)) >= 3
	})
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}
	runs := runRows(t, db, cfg)
	for i, run := range runs {
		if run.Status != "succeeded" || run.Trigger != TriggerSchedule || run.Kind != KindDelta {
			t.Errorf("run %d: %+v", i, run)
		}
		if i > 0 && runs[i-1].FinishedAt != nil && run.StartedAt.Before(*runs[i-1].FinishedAt) {
			t.Errorf("run %d started at %s, before run %d finished at %s: overlap", i, run.StartedAt, i-1, *runs[i-1].FinishedAt)
		}
	}
	// Each tick (a whole second for @every 1s) served at most once.
	seen := map[int64]bool{}
	for _, run := range runs {
		s := run.StartedAt.Unix()
		if seen[s] {
			t.Errorf("two runs in the tick of %s", run.StartedAt)
		}
		seen[s] = true
	}
}

// A full and a delta sync never overlap either, and an API request while a
// scheduled sync runs gets 409.
func TestFullAndDeltaNeverOverlap(t *testing.T) {
	cfg := testConfig(t, newDatabase(t, onSQLite), nil, "")
	cfg.Schedule.Full = "@every 1s"
	db := openApp(t, cfg)
	g := newGateSyncer(db, cfg, "n1")
	g.hold()
	r := startAgent(t, cfg, db, g, Options{NoCatchUp: true})
	<-g.started

	var body APIError
	code := getJSON(t, "POST", r.ops+"/api/v1/sync", true, `{"full":false}`, &body)
	if code != http.StatusConflict || !strings.Contains(body.Error, "already running") {
		t.Fatalf("delta during a full sync: %d %+v, want 409", code, body)
	}
	var sched dirsync.Schedule
	getJSON(t, "GET", r.ops+"/api/v1/schedule", true, "", &sched)
	if sched.Running == nil || sched.Running.Kind != KindFull {
		t.Errorf("schedule does not show the running full sync: %+v", sched.Running)
	}
	g.release()
	var out map[string]any
	waitFor(t, 20*time.Second, "the API sync to run once the full sync ended", func() bool {
		return getJSON(t, "POST", r.ops+"/api/v1/sync", true, `{"full":false}`, &out) == http.StatusOK
	})
	if out["status"] != "succeeded" {
		t.Fatalf("API sync: %+v", out)
	}
}

// When both schedules name the same instant, only the full sync runs.
func TestDeltaYieldsToFullOnTheSameTick(t *testing.T) {
	plans, err := plansFrom(config.Schedule{Incremental: "*/5 * * * *", Full: "0 2 * * *"})
	if err != nil {
		t.Fatal(err)
	}
	s := &scheduler{plans: plans}
	at2 := time.Date(2025, 3, 1, 2, 0, 0, 0, time.Local)
	if !s.fullDueAt(at2) {
		t.Error("02:00: full sync not seen as due")
	}
	if s.fullDueAt(at2.Add(5 * time.Minute)) {
		t.Error("02:05: full sync seen as due")
	}
}

// A failed scheduled run is retried with backoff until one succeeds.
func TestFailedScheduledRunIsRetried(t *testing.T) {
	cfg := testConfig(t, newDatabase(t, onSQLite), nil, "")
	cfg.Schedule.Full = "0 0 1 1 *" // once a year: only retries can run it again
	db := openApp(t, cfg)
	g := newGateSyncer(db, cfg, "n1")
	fail := &failingSyncer{inner: g, failures: 2}
	r := startAgent(t, cfg, db, fail, Options{NoCatchUp: true, RetryBase: 50 * time.Millisecond})

	// Fire the tick by hand (the spec is far away).
	plan := r.a.sched.currentPlans()[1]
	go r.a.sched.fire(plan)
	waitFor(t, 20*time.Second, "a successful retry", func() bool {
		for _, run := range runRows(t, db, cfg) {
			if run.Status == "succeeded" {
				return true
			}
		}
		return false
	})
	fams := scrape(t, r.ops+"/metrics")
	if v, _ := fams["passbridge_sync_retries_total"].value(map[string]string{"kind": "full"}); v != 2 {
		t.Errorf("retries = %v, want 2", v)
	}
	if v, _ := fams["passbridge_sync_runs_total"].value(map[string]string{"kind": "full", "result": "failed"}); v != 2 {
		t.Errorf("failed runs = %v, want 2", v)
	}
	if v, _ := fams["passbridge_ldap_errors_total"].value(map[string]string{"op": "sync"}); v != 2 {
		t.Errorf("ldap errors = %v, want 2", v)
	}
}

// failingSyncer fails its first runs as an unreachable directory would.
type failingSyncer struct {
	inner    Syncer
	failures int
}

func (f *failingSyncer) Sync(ctx context.Context, req SyncRequest) (Outcome, error) {
	if f.failures > 0 {
		f.failures--
		return Outcome{Status: "failed", Cause: "ldap"}, errors.New("ldap://127.0.0.1:1: connection refused")
	}
	return f.inner.Sync(ctx, req)
}

// Reload swaps schedules at once; a configuration the engine refuses is not
// applied.
func TestReloadSchedules(t *testing.T) {
	cfg := testConfig(t, newDatabase(t, onSQLite), nil, "")
	cfg.Schedule.Incremental = "*/5 * * * *"
	db := openApp(t, cfg)
	g := newGateSyncer(db, cfg, "n1")
	refuse := false
	r := startAgent(t, cfg, db, g, Options{NoCatchUp: true, NewSyncer: func(c *config.Config) (Syncer, error) {
		if refuse {
			return nil, errors.New("directory.ca_file: no such file")
		}
		return g, nil
	}})
	next := *cfg
	next.Schedule = config.Schedule{Incremental: "@every 1h", Full: "30 3 * * *"}
	if err := r.a.Reload(&next); err != nil {
		t.Fatal(err)
	}
	var sched dirsync.Schedule
	getJSON(t, "GET", r.ops+"/api/v1/schedule", true, "", &sched)
	specs := map[string]string{}
	for _, e := range sched.Schedules {
		specs[e.Kind] = e.Spec
		if e.Enabled && (e.Next == nil || !e.Next.After(sched.Now) || !e.Following.After(*e.Next)) {
			t.Errorf("%s: next run times %v, %v", e.Kind, e.Next, e.Following)
		}
	}
	if specs[KindDelta] != "@every 1h" || specs[KindFull] != "30 3 * * *" {
		t.Fatalf("after reload: %v", specs)
	}
	refuse = true
	bad := next
	bad.Schedule.Full = "0 4 * * *"
	if err := r.a.Reload(&bad); err == nil || !strings.Contains(err.Error(), "ca_file") {
		t.Fatalf("reload with a broken directory setting: %v", err)
	}
	getJSON(t, "GET", r.ops+"/api/v1/schedule", true, "", &sched)
	for _, e := range sched.Schedules {
		if e.Kind == KindFull && e.Spec != "30 3 * * *" {
			t.Fatalf("a refused reload changed the schedule to %q", e.Spec)
		}
	}
}

// The run history pages through sync_runs, newest first.
func TestRunsPagination(t *testing.T) {
	cfg := testConfig(t, newDatabase(t, onSQLite), nil, "")
	db := openApp(t, cfg)
	g := newGateSyncer(db, cfg, "n1")
	r := startAgent(t, cfg, db, g, Options{NoCatchUp: true})
	for i := 0; i < 5; i++ {
		body := `{"full":true}`
		if i%2 == 1 {
			body = `{"dry_run":true}`
		}
		if code := getJSON(t, "POST", r.ops+"/api/v1/sync", true, body, nil); code != 200 {
			t.Fatalf("sync %d: %d", i, code)
		}
	}
	var ids []int64
	url := r.ops + "/api/v1/runs?limit=2"
	for pages := 0; url != ""; pages++ {
		if pages > 5 {
			t.Fatal("pagination does not end")
		}
		var page Runs
		if code := getJSON(t, "GET", url, true, "", &page); code != 200 {
			t.Fatalf("GET %s: %d", url, code)
		}
		if len(page.Runs) > 2 {
			t.Fatalf("page of %d runs with limit=2", len(page.Runs))
		}
		for _, run := range page.Runs {
			ids = append(ids, run.ID)
		}
		url = ""
		if page.Next != "" {
			url = r.ops + page.Next
		}
	}
	if len(ids) != 5 {
		t.Fatalf("paged through %d runs, want 5: %v", len(ids), ids)
	}
	for i := 1; i < len(ids); i++ {
		if ids[i] >= ids[i-1] {
			t.Fatalf("runs not newest first: %v", ids)
		}
	}
	for _, q := range []string{"limit=0", "limit=501", "limit=x", "before=-1", "before=abc"} {
		var e APIError
		if code := getJSON(t, "GET", r.ops+"/api/v1/runs?"+q, true, "", &e); code != 400 {
			t.Errorf("?%s: %d %+v, want 400", q, code, e)
		}
	}
	_ = metrics.ResultSucceeded
}

// /readyz is unready while no sync has ever succeeded, and says so.
func TestReadyzWithoutSuccessfulSync(t *testing.T) {
	cfg := testConfig(t, newDatabase(t, onSQLite), nil, "")
	cfg.Schedule.Incremental = "*/5 * * * *"
	db := openApp(t, cfg)
	r := startAgent(t, cfg, db, newGateSyncer(db, cfg, "n1"), Options{NoCatchUp: true})
	var rd Readiness
	if code := getJSON(t, "GET", r.base+"/readyz", false, "", &rd); code != 503 {
		t.Fatalf("/readyz %d, want 503: %+v", code, rd)
	}
	if c := rd.Checks["sync"]; c.OK || !strings.Contains(c.Error, "no successful sync yet") {
		t.Fatalf("sync check: %+v", c)
	}
	if code := getJSON(t, "POST", r.base+"/api/v1/sync", true, `{"full":true}`, nil); code != 200 {
		t.Fatalf("sync: %d", code)
	}
	if code := getJSON(t, "GET", r.base+"/readyz", false, "", &rd); code != 200 {
		t.Fatalf("/readyz after a sync: %d %+v", code, rd)
	}
}

// Two daemons in one process on one PostgreSQL (then MariaDB) elect one
// runner per tick through the database lock and the shared history.
func TestTwoAgentsOneRunPerTick(t *testing.T) {
	for _, kind := range []dbKind{onPostgres, onMariaDB} {
		t.Run(string(kind), func(t *testing.T) {
			cfg := testConfig(t, newDatabase(t, kind), nil, "")
			cfg.Schedule.Full = "@every 1s"
			dbA := openApp(t, cfg)
			dbB := openApp(t, cfg) // a pool of its own, as another host would have
			startAgent(t, cfg, dbA, newGateSyncer(dbA, cfg, "a"), Options{NoCatchUp: true, Node: "a"})
			b := startAgent(t, cfg, dbB, newGateSyncer(dbB, cfg, "b"), Options{NoCatchUp: true, Node: "b"})
			waitFor(t, 60*time.Second, "6 runs", func() bool { return len(runRows(t, dbA, cfg)) >= 6 })
			ticks := map[int64]string{}
			for _, r := range runRows(t, dbA, cfg) {
				s := r.StartedAt.Unix()
				if prev, dup := ticks[s]; dup {
					t.Errorf("tick %s ran on %s and on %s", r.StartedAt.Truncate(time.Second), prev, r.Node)
				}
				ticks[s] = r.Node
			}
			// A replica whose tick fires late (after the winner has
			// finished and released the lock) finds the tick served.
			runs := runRows(t, dbA, cfg)
			served := runs[len(runs)-1].StartedAt.Truncate(time.Second)
			_, err := b.a.Runner().Run(context.Background(), SyncRequest{Full: true, Trigger: TriggerSchedule, Tick: served})
			if !errors.Is(err, errAlreadyDone) && !errors.Is(err, dirsync.ErrBusy) {
				t.Errorf("late replica on a served tick: %v, want already done", err)
			}
		})
	}
}
