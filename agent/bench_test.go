package agent

import (
	"net/http"
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
