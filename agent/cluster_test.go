package agent

import (
	"fmt"
	"net/http"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/passbridge/passbridge/config"
	"github.com/passbridge/passbridge/dirsync"
	"github.com/passbridge/passbridge/internal/testsrv"
)

// Two replica processes on one PostgreSQL, then one MariaDB: each tick runs
// exactly once; when the leader is killed mid-sync the other runs the next
// tick, closes the dead run, and the data is complete.
func TestReplicasElectOneRunnerPerTick(t *testing.T) {
	for _, kind := range []dbKind{onPostgres, onMariaDB} {
		t.Run(string(kind), func(t *testing.T) { testReplicas(t, kind) })
	}
}

func testReplicas(t *testing.T, kind dbKind) {
	s := testsrv.StartSlapd(t, testsrv.SlapdOptions{}) // dedicated: this test freezes it
	ou := seedOU(t, s, 20)
	cfg := testConfig(t, newDatabase(t, kind), s, ou)
	cfg.Schedule.Full = "@every 1s"
	db := openApp(t, cfg) // tables exist before the replicas race to start
	path := writeConfig(t, cfg)
	ra := startReplica(t, path, "replica-a")
	rb := startReplica(t, path, "replica-b")

	scheduled := func() []dirsync.RunRecord {
		var out []dirsync.RunRecord
		for _, r := range runRows(t, db, cfg) {
			if r.Trigger == TriggerSchedule {
				out = append(out, r)
			}
		}
		return out
	}
	waitFor(t, 90*time.Second, "8 scheduled runs", func() bool { return len(scheduled()) >= 8 })

	byTick := map[int64][]dirsync.RunRecord{}
	for _, r := range scheduled() {
		tick := r.StartedAt.Unix() // @every 1s: ticks are whole seconds
		byTick[tick] = append(byTick[tick], r)
	}
	for tick, runs := range byTick {
		if len(runs) > 1 {
			t.Errorf("tick %s ran %d times: %+v", time.Unix(tick, 0).UTC(), len(runs), runs)
		}
	}
	t.Logf("%d scheduled runs in %d ticks", len(scheduled()), len(byTick))

	// Work for the next run, then catch the leader inside it: with slapd
	// frozen, the run holds the lock and waits on the directory.
	for i := range 5 {
		s.AddUser(t, ou, fmt.Sprintf("late%02d", i), nil)
	}
	s.Freeze(t)
	frozenAt := time.Now().UTC()
	thawed := false
	defer func() {
		if !thawed {
			s.Thaw(t)
		}
	}()
	var leader, other *replica
	// A run that read the directory just before the freeze still
	// finishes (and may commit while its process is being killed): only a
	// run that started after the freeze is surely stuck on the directory.
	// A tick that was mid-read at the freeze holds the lock until
	// directory.timeout fails it; only then can a run start after the
	// freeze, so the wait must outlast that timeout.
	waitFor(t, cfg.Directory.Timeout.D()+30*time.Second, "a replica to be inside a sync that started after the freeze", func() bool {
		stuck := false
		for _, r := range runRows(t, db, cfg) {
			if r.Status == "running" && r.StartedAt.After(frozenAt) {
				stuck = true
			}
		}
		if !stuck {
			return false
		}
		switch {
		case ra.syncing(t):
			leader, other = ra, rb
		case rb.syncing(t):
			leader, other = rb, ra
		}
		return leader != nil
	})
	if other.syncing(t) {
		t.Fatal("both replicas are inside a sync")
	}
	// The engine records its run before it reads the directory.
	waitFor(t, 10*time.Second, "the leader's run in the history", func() bool {
		for _, r := range runRows(t, db, cfg) {
			if r.Status == "running" {
				return true
			}
		}
		return false
	})
	if err := leader.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	leader.wait(t, 10*time.Second)
	killedAt := time.Now().UTC()
	// Only the killed leader was inside a run (the engine records the
	// host name as node: both replicas share it here).
	var dead []int64
	for _, r := range runRows(t, db, cfg) {
		if r.Status == "running" {
			dead = append(dead, r.ID)
		}
	}
	s.Thaw(t)
	thawed = true

	waitFor(t, 60*time.Second, "the surviving replica to run a tick", func() bool {
		for _, r := range runRows(t, db, cfg) {
			if r.Status == "succeeded" && r.StartedAt.After(killedAt) {
				return true
			}
		}
		return false
	})
	rows := runRows(t, db, cfg)
	for _, id := range dead {
		for _, r := range rows {
			if r.ID == id && (r.Status != "failed" || !strings.Contains(r.Error, "abandoned")) {
				t.Errorf("run #%d of the killed replica: %s %q, want failed (abandoned)", id, r.Status, r.Error)
			}
		}
	}
	if len(dead) != 1 {
		t.Fatalf("%d runs in flight when the leader was killed, want 1", len(dead))
	}
	t.Logf("killed %s inside run #%d; %s took over", leader.node, dead[0], other.node)
	if got := identityCounts(t, db, cfg); got["active"] != 25 || got["deleted"] != 0 || got["disabled"] != 0 {
		t.Fatalf("identities after the take-over: %v, want 25 active", got)
	}

	// The survivor is ready: database, directory and a fresh sync.
	var rd Readiness
	if code := getJSON(t, "GET", other.base+"/readyz", false, "", &rd); code != http.StatusOK {
		t.Fatalf("survivor /readyz %d: %+v", code, rd)
	}
}

// SIGTERM while a sync runs: the daemon stops taking requests, lets the run
// finish within the grace time, and exits 0; when the run cannot finish in
// time it is cancelled and nothing of it is written.
func TestSIGTERMMidSync(t *testing.T) {
	t.Run("finishes within grace", func(t *testing.T) { testSIGTERM(t, true) })
	t.Run("aborted after grace", func(t *testing.T) { testSIGTERM(t, false) })
}

func testSIGTERM(t *testing.T, thaw bool) {
	s := testsrv.StartSlapd(t, testsrv.SlapdOptions{})
	ou := seedOU(t, s, 10)
	cfg := testConfig(t, newDatabase(t, onPostgres), s, ou)
	cfg.Admin.ShutdownGrace = config.Duration(4 * time.Second)
	if !thaw {
		cfg.Admin.ShutdownGrace = config.Duration(time.Second)
	}
	db := openApp(t, cfg)
	path := writeConfig(t, cfg)
	r := startReplica(t, path, "solo")

	// A first sync brings in the 10 users.
	var out dirsync.SyncResponse
	if code := getJSON(t, "POST", r.base+"/api/v1/sync", true, `{"full":true}`, &out); code != 200 {
		t.Fatalf("first sync: %d %+v", code, out)
	}
	for i := range 5 {
		s.AddUser(t, ou, fmt.Sprintf("new%02d", i), nil)
	}
	s.Freeze(t)
	defer s.Thaw(t)
	apiDone := make(chan int, 1)
	go func() {
		// The connection may be cut at the end of the grace: no t.Fatal
		// from this goroutine, -1 for "no answer".
		req, _ := http.NewRequest("POST", r.base+"/api/v1/sync", strings.NewReader(`{"full":true}`))
		req.Header.Set("Authorization", "Bearer "+testToken)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			apiDone <- -1
			return
		}
		resp.Body.Close()
		apiDone <- resp.StatusCode
	}()
	waitFor(t, 20*time.Second, "the sync to start", func() bool { return r.syncing(t) })
	if err := r.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	// New connections are refused once shutdown has begun.
	waitFor(t, 10*time.Second, "the listener to close", func() bool {
		_, err := http.Get(r.base + "/healthz")
		return err != nil
	})
	if thaw {
		s.Thaw(t)
	}
	if code := r.wait(t, 30*time.Second); code != 0 {
		t.Fatalf("exit code %d after SIGTERM, want 0", code)
	}
	if !thaw {
		s.Thaw(t)
	}
	apiCode := <-apiDone
	last := runRows(t, db, cfg)
	run := last[len(last)-1]
	counts := identityCounts(t, db, cfg)
	if thaw {
		if apiCode != 200 || run.Status != "succeeded" || counts["active"] != 15 {
			t.Fatalf("finished run: API %d, run %+v, identities %v; want 200, succeeded, 15 active", apiCode, run, counts)
		}
		return
	}
	if run.Status == "succeeded" {
		t.Fatalf("the run should have been cancelled: %+v", run)
	}
	if counts["active"] != 10 {
		t.Fatalf("identities after the aborted run: %v, want the 10 of before: a half-written run", counts)
	}
	t.Logf("aborted run: API answered %d, run #%d %s %q", apiCode, run.ID, run.Status, run.Error)
}

// SIGHUP reloads the schedules from the file; a broken file is not applied
// and the daemon keeps running on the configuration it has.
func TestSIGHUPReload(t *testing.T) {
	s := testsrv.Slapd(t)
	cfg := testConfig(t, newDatabase(t, onSQLite), s, s.NewOU(t))
	cfg.Schedule.Incremental = "*/5 * * * *"
	openApp(t, cfg)
	path := writeConfig(t, cfg)
	r := startReplica(t, path, "hup")
	spec := func() string {
		var sched dirsync.Schedule
		if code := getJSON(t, "GET", r.base+"/api/v1/schedule", true, "", &sched); code != 200 {
			t.Fatalf("schedule: %d", code)
		}
		for _, e := range sched.Schedules {
			if e.Kind == KindDelta {
				return e.Spec
			}
		}
		return ""
	}
	if got := spec(); got != "*/5 * * * *" {
		t.Fatalf("initial spec %q", got)
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(strings.Replace(string(raw), `incremental: "*/5 * * * *"`, `incremental: "@every 1h"`, 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := r.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the new schedule", func() bool { return spec() == "@every 1h" })

	if err := os.WriteFile(path, []byte(string(raw)+"\nnot_a_key: 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := r.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the refusal in the log", func() bool {
		b, _ := os.ReadFile(r.logf)
		return strings.Contains(string(b), "configuration not reloaded") && strings.Contains(string(b), `unknown key \"not_a_key\"`)
	})
	if got := spec(); got != "@every 1h" {
		t.Fatalf("after a broken reload the spec is %q, want the running @every 1h", got)
	}
	if err := r.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := r.wait(t, 20*time.Second); code != 0 {
		t.Fatalf("exit code %d", code)
	}
}
