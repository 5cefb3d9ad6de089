package agent

import (
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/passbridge/passbridge/internal/testsrv"
)

// BenchmarkDeadDirectoryDetection measures how long /readyz takes to report
// a directory that died, with the default probe cache (5s), polled every
// 100ms as a load balancer would. Figures go to bench/README.md.
func BenchmarkDeadDirectoryDetection(b *testing.B) {
	s := testsrv.StartSlapd(b, testsrv.SlapdOptions{})
	ou := seedOU(b, s, 5)
	cfg := testConfig(b, newDatabase(b, onSQLite), s, ou)
	cfg.Schedule.Incremental = "*/5 * * * *"
	db := openApp(b, cfg)
	log := testLog(b)
	r := startAgent(b, cfg, db, nil, Options{NewSyncer: NewDirectorySyncer(db, log), Probe: DirectoryProbe(log)})
	code := func() int {
		resp, err := http.Get(r.base + "/readyz")
		if err != nil {
			b.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	waitFor(b, time.Minute, "ready", func() bool { return code() == 200 })
	var total time.Duration
	for i := 0; i < b.N; i++ {
		waitFor(b, time.Minute, "ready", func() bool { return code() == 200 })
		s.Kill(b)
		start := time.Now()
		for code() == 200 {
			time.Sleep(100 * time.Millisecond)
		}
		total += time.Since(start)
		s.Restart(b)
	}
	b.ReportMetric(total.Seconds()/float64(b.N), "s/detection")
}

// BenchmarkIdleDaemon measures the idle cost of `passbridge run` on the
// embedded demo: resident memory and CPU over 60 s after start-up (the
// start-up sync included in the warm-up). Figures go to bench/README.md.
func BenchmarkIdleDaemon(b *testing.B) {
	// The testing package calls a benchmark once with b.N = 1 before the
	// measured call: a minute of idling is worth measuring once.
	if idleMeasured != nil {
		idleMeasured(b)
		return
	}
	bin := testsrv.Passbridge(b)
	if out, _ := exec.Command(bin, "run", "--help").CombinedOutput(); !strings.Contains(string(out), "Usage:\n  passbridge run") {
		b.Skip("this passbridge has no run command yet")
	}
	const window = 60 * time.Second
	for i := 0; i < b.N; i++ {
		port := testsrv.FreePort(b)
		dir := b.TempDir()
		cmd := exec.Command(bin, "run")
		cmd.Dir = dir // no passbridge.yaml here: the demo starts
		cmd.Env = append(os.Environ(), "PASSBRIDGE_PORTAL_LISTEN=127.0.0.1:"+strconv.Itoa(port), "PASSBRIDGE_CONFIG=")
		logf, err := os.Create(filepath.Join(dir, "run.log"))
		if err != nil {
			b.Fatal(err)
		}
		cmd.Stdout, cmd.Stderr = logf, logf
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		base := "http://127.0.0.1:" + strconv.Itoa(port)
		waitFor(b, time.Minute, "passbridge run to answer /healthz", func() bool {
			resp, err := http.Get(base + "/healthz")
			if err != nil {
				return false
			}
			resp.Body.Close()
			return resp.StatusCode == 200
		})
		time.Sleep(5 * time.Second) // the start-up sync and first requests settle
		cpu0, _ := procCPU(cmd.Process.Pid)
		t0 := time.Now()
		time.Sleep(window)
		cpu1, rss := procCPU(cmd.Process.Pid)
		elapsed := time.Since(t0)
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
		logf.Close()
		report := func(b *testing.B) {
			b.ReportMetric(float64(rss)/(1<<20), "MiB-RSS")
			b.ReportMetric(100*(cpu1-cpu0).Seconds()/elapsed.Seconds(), "%CPU")
		}
		report(b)
		idleMeasured = report
		b.Logf("idle over %s: RSS %.1f MiB, CPU %.3f s (%.3f%%)", elapsed.Round(time.Second), float64(rss)/(1<<20), (cpu1 - cpu0).Seconds(), 100*(cpu1-cpu0).Seconds()/elapsed.Seconds())
	}
}

// idleMeasured reports the idle figures once measured.
var idleMeasured func(b *testing.B)

// procCPU returns the user+system CPU time and the resident set size of a
// process, from /proc.
func procCPU(pid int) (time.Duration, int64) {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0
	}
	// Fields after the command name (which may hold spaces) in parentheses.
	f := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+2:]))
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	const hz = 100 // USER_HZ on Linux
	cpu := time.Duration(utime+stime) * time.Second / hz
	status, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	var rss int64
	for _, line := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			rss = kb << 10
		}
	}
	return cpu, rss
}
