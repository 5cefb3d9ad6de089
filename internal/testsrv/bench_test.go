package testsrv

import (
	"context"
	"testing"
	"time"
)

// The start-up costs that every test package pays.

func BenchmarkSlapdStart(b *testing.B) {
	for i := 0; i < b.N; i++ {
		s := StartSlapd(b, SlapdOptions{})
		b.StopTimer()
		s.Stop()
		b.StartTimer()
	}
}

// BenchmarkSlapdSeed100k is the directory of the sync benchmarks: 100,000
// users in 10 groups loaded with slapadd, then slapd started.
func BenchmarkSlapdSeed100k(b *testing.B) {
	const users = 100_000
	for i := 0; i < b.N; i++ {
		s := StartSlapd(b, SlapdOptions{Users: users, Groups: 10})
		b.StopTimer()
		s.Stop()
		b.StartTimer()
	}
	b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N*users), "µs/user")
}

// BenchmarkSambaDCStart starts a DC from the cached template (provisioned
// first, outside the timer, if missing).
func BenchmarkSambaDCStart(b *testing.B) {
	sambaBinaries(b)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if _, _, err := sambaTemplate(ctx); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		s := StartSambaDC(b)
		b.StopTimer()
		s.Stop()
		b.StartTimer()
	}
}
