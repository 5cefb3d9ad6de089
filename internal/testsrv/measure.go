package testsrv

import (
	"runtime"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Measured is what Measure found: operations completed per second, the
// latency of a completed one at p50 and p99, and how many failed.
type Measured struct {
	Rate     float64
	P50, P99 time.Duration
	Errors   int
	// CPUPerOp and AllocPerOp are this process's CPU time (user and
	// system) and heap allocation per completed operation, clients
	// included: less sensitive than Rate to what else runs on the
	// machine (servers in other processes, a database, are not counted).
	CPUPerOp   time.Duration
	AllocPerOp float64 // bytes
}

// Measure runs fn on n goroutines (fn gets its goroutine's number) over and
// over for d, for the benchmarks' throughput and latency figures; a failed
// call counts as an error, not as a latency.
func Measure(n int, d time.Duration, fn func(worker int) error) Measured {
	var mu sync.Mutex
	var lat []time.Duration
	errs := 0
	var mem0, mem1 runtime.MemStats
	runtime.ReadMemStats(&mem0)
	cpu0 := processCPU()
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
	cpu := processCPU() - cpu0
	runtime.ReadMemStats(&mem1)
	slices.Sort(lat)
	r := Measured{Rate: float64(len(lat)) / elapsed.Seconds(), Errors: errs}
	if n := len(lat); n > 0 {
		r.P50, r.P99 = lat[n/2], lat[n*99/100]
		r.CPUPerOp = cpu / time.Duration(n)
		r.AllocPerOp = float64(mem1.TotalAlloc-mem0.TotalAlloc) / float64(n)
	}
	return r
}

// processCPU is the CPU time this process used so far, user and system.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// Report reports the figures as b's metrics: <name>-<unit>/s, <name>-p50-ms,
// <name>-p99-ms, <name>-errors, <name>-cpu-us/op and <name>-KiB/op.
func (m Measured) Report(b *testing.B, name, unit string) {
	b.ReportMetric(float64(m.CPUPerOp.Nanoseconds())/1000, name+"-cpu-us/op")
	b.ReportMetric(m.AllocPerOp/1024, name+"-KiB/op")
	b.ReportMetric(m.Rate, name+"-"+unit+"/s")
	b.ReportMetric(float64(m.P50.Microseconds())/1000, name+"-p50-ms")
	b.ReportMetric(float64(m.P99.Microseconds())/1000, name+"-p99-ms")
	b.ReportMetric(float64(m.Errors), name+"-errors")
}
