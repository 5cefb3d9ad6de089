package testsrv

import (
	"slices"
	"sync"
	"testing"
	"time"
)

// Measured is what Measure found: operations completed per second, the
// latency of a completed one at p50 and p99, and how many failed.
type Measured struct {
	Rate     float64
	P50, P99 time.Duration
	Errors   int
}

// Measure runs fn on n goroutines (fn gets its goroutine's number) over and
// over for d, for the benchmarks' throughput and latency figures; a failed
// call counts as an error, not as a latency.
func Measure(n int, d time.Duration, fn func(worker int) error) Measured {
	var mu sync.Mutex
	var lat []time.Duration
	errs := 0
	deadline := time.Now().Add(d)
	start := time.Now()
	var wg sync.WaitGroup
	for w := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine []time.Duration
			bad := 0
			for time.Now().Before(deadline) {
				t0 := time.Now()
				if err := fn(w); err != nil {
					bad++
					continue
				}
				mine = append(mine, time.Since(t0))
			}
			mu.Lock()
			lat = append(lat, mine...)
			errs += bad
			mu.Unlock()
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	slices.Sort(lat)
	r := Measured{Rate: float64(len(lat)) / elapsed.Seconds(), Errors: errs}
	if len(lat) > 0 {
		r.P50, r.P99 = lat[len(lat)/2], lat[len(lat)*99/100]
	}
	return r
}

// Report reports the figures as b's metrics: <name>-<unit>/s, <name>-p50-ms,
// <name>-p99-ms and <name>-errors.
func (m Measured) Report(b *testing.B, name, unit string) {
	b.ReportMetric(m.Rate, name+"-"+unit+"/s")
	b.ReportMetric(float64(m.P50.Microseconds())/1000, name+"-p50-ms")
	b.ReportMetric(float64(m.P99.Microseconds())/1000, name+"-p99-ms")
	b.ReportMetric(float64(m.Errors), name+"-errors")
}
