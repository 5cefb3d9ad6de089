package directory

import (
	"context"
	"log/slog"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/go-ldap/ldap/v3"

	"github.com/passbridge/passbridge/config"
	"github.com/passbridge/passbridge/internal/testsrv"
)

// The read benchmarks profile the directory side of a full sync alone, in
// process, so that `go test -cpuprofile` sees it:
//
//	PASSBRIDGE_TEST_REQUIRE_SERVERS=1 go test -run '^$' -bench 'Read' -benchtime 3x \
//	    -cpuprofile /tmp/read.prof ./directory/ && go tool pprof -top /tmp/read.prof
//
// A slapd seeded with PASSBRIDGE_BENCH_READ_USERS users (100,000 by
// default) is read over StartTLS with the OpenLDAP preset's filter and
// attributes: a paged search decoded by go-ldap alone and the same by the
// lean reader (wire.go), entries discarded; and the sync's own reader into
// a sink that only counts (the full read a first sync does: syncrepl
// refreshOnly without a cookie, every entry mapped).
// bench/directory measures the whole sync against ldapsearch.

// BenchmarkRead seeds the slapd once and runs each read as a
// sub-benchmark (select one with -bench 'Read/sync').
func BenchmarkRead(b *testing.B) {
	users := 100_000
	if v := os.Getenv("PASSBRIDGE_BENCH_READ_USERS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			b.Fatalf("PASSBRIDGE_BENCH_READ_USERS=%q: want a positive number", v)
		}
		users = n
	}
	srv := testsrv.StartSlapd(b, testsrv.SlapdOptions{Users: users})
	d := readBenchDirectory(srv)
	b.Run("go-ldap", func(b *testing.B) { benchReadPaged(b, d, users, false) })
	b.Run("lean", func(b *testing.B) { benchReadPaged(b, d, users, true) })
	b.Run("sync", func(b *testing.B) { benchReadSync(b, d, users) })
}

func readBenchDirectory(srv *testsrv.LDAP) config.Directory {
	p := config.Presets["openldap"]
	return config.Directory{Kind: "openldap", URLs: []string{srv.URL}, StartTLS: true, CAFile: srv.CAFile,
		BindDN: srv.BindDN, BindPassword: config.Secret(srv.BindPassword), BaseDN: srv.PeopleDN,
		Attributes: p.Attributes, UserFilter: p.UserFilter, Timeout: config.Duration(time.Minute), ConnectTimeout: config.Duration(10 * time.Second)}
}

// benchReadPaged: a paged search of the scope, entries discarded (what
// `ldapsearch -E pr=1000` does), decoded by go-ldap or by the lean reader.
func benchReadPaged(b *testing.B, d config.Directory, users int, lean bool) {
	c, err := NewClient(d, nil)
	if err != nil {
		b.Fatal(err)
	}
	attrs := NewMapper(d).Attributes()
	ctx := context.Background()
	b.ResetTimer()
	for b.Loop() {
		conn, err := c.Connect(ctx)
		if err != nil {
			b.Fatal(err)
		}
		n := 0
		req := ldap.NewSearchRequest(d.BaseDN, ldap.ScopeWholeSubtree, ldap.NeverDerefAliases, 0, 0, false, d.UserFilter, attrs, nil)
		if lean {
			err = conn.pagedRaw(ctx, req, 1000, func(page []*rawEntry) error { n += len(page); return nil })
		} else {
			err = conn.Paged(ctx, req, 1000, func(page []*ldap.Entry) error { n += len(page); return nil })
		}
		if err != nil {
			b.Fatal(err)
		}
		conn.Close()
		if n != users {
			b.Fatalf("read %d entries, want %d", n, users)
		}
	}
	b.ReportMetric(float64(users)*float64(b.N)/b.Elapsed().Seconds(), "entries/s")
}

// benchReadSync: the sync's full read (Conn.Read, Full) into a sink that
// counts.
func benchReadSync(b *testing.B, d config.Directory, users int) {
	c, err := NewClient(d, nil)
	if err != nil {
		b.Fatal(err)
	}
	m := NewMapper(d)
	ctx := context.Background()
	b.ResetTimer()
	for b.Loop() {
		conn, err := c.Connect(ctx)
		if err != nil {
			b.Fatal(err)
		}
		scope, err := conn.ResolveScope(ctx, d, m, ScopeOptions{})
		if err != nil {
			b.Fatal(err)
		}
		s := &countSink{}
		out, err := conn.Read(ctx, ReadRequest{Dir: d, Mapper: m, Scope: scope, Out: s, Log: slog.New(slog.DiscardHandler), Now: time.Now, Full: true})
		if err != nil {
			b.Fatal(err)
		}
		conn.Close()
		if s.upserted != users || s.invalids != 0 || !out.Complete {
			b.Fatalf("read %d identities (%d invalid, complete %v), want %d", s.upserted, s.invalids, out.Complete, users)
		}
	}
	b.ReportMetric(float64(users)*float64(b.N)/b.Elapsed().Seconds(), "entries/s")
}

// countSink counts what a read hands over and keeps nothing.
type countSink struct {
	upserted, presents, gones, invalids int
}

func (s *countSink) Upsert(_ context.Context, page []Identity) error {
	s.upserted += len(page)
	return nil
}

func (s *countSink) Present(_ context.Context, ids []string) error {
	s.presents += len(ids)
	return nil
}

func (s *countSink) Gone(_ context.Context, ids []string, _ string) error {
	s.gones += len(ids)
	return nil
}

func (s *countSink) Invalid(string, error) { s.invalids++ }
