package dirsync

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/passbridge/passbridge/internal/testsrv"
)

// BenchmarkMatchMariaDB measures the email match of 1,000 identities
// against a 100,000-row users table with a case-insensitive collation on
// MariaDB, as the syncer asks it (col IN (...), served by the index migrate
// makes), next to the LOWER(col) IN (...) it asked before, which scans.
//
//	go test -run '^$' -bench MatchMariaDB -benchtime 1x ./dirsync/
func BenchmarkMatchMariaDB(b *testing.B) {
	dc, db := database(b, "mysql")
	ctx := context.Background()
	if _, err := db.ExecContext(ctx, "ALTER TABLE users MODIFY email VARCHAR(320) COLLATE utf8mb4_general_ci"); err != nil {
		b.Fatal(err)
	}
	if _, err := db.ExecContext(ctx, "INSERT INTO users (username, email, password_hash, is_active) SELECT CONCAT('u', seq), CONCAT('User', seq, '@Corp.Example'), 'x', 1 FROM seq_1_to_100000"); err != nil {
		b.Fatal(err)
	}
	cfg := baseConfig(b, dc, "openldap")
	ldap := testsrv.Slapd(b)
	slapdConfig(ldap, cfg, ldap.PeopleDN)
	s, _ := newSyncer(b, cfg, db) // migrate: the email index
	if _, err := db.ExecContext(ctx, "ANALYZE TABLE users"); err != nil {
		b.Fatal(err)
	}
	want := make([]string, 1000)
	for i := range want {
		want[i] = fmt.Sprintf("user%d@corp.example", i*97+1)
	}
	p := &planner{s: s}
	for b.Loop() {
		t0 := time.Now()
		got, err := p.usersBy(ctx, s.n.UserEmail, want)
		if err != nil || len(got) != len(want) {
			b.Fatalf("usersBy: %d of %d, %v", len(got), len(want), err)
		}
		indexed := time.Since(t0)
		s.ci[s.n.UserEmail] = false // the query as it was: LOWER(col) IN (...)
		t0 = time.Now()
		got, err = p.usersBy(ctx, s.n.UserEmail, want)
		if err != nil || len(got) != len(want) {
			b.Fatalf("usersBy with LOWER: %d of %d, %v", len(got), len(want), err)
		}
		lowered := time.Since(t0)
		delete(s.ci, s.n.UserEmail)
		b.Logf("1,000 emails against 100,000 rows: col IN %s, LOWER(col) IN %s", indexed.Round(time.Millisecond), lowered.Round(time.Millisecond))
		b.ReportMetric(float64(indexed.Microseconds())/1000, "in-ms")
		b.ReportMetric(float64(lowered.Microseconds())/1000, "lower-ms")
	}
}
