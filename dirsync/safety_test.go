package dirsync

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/passbridge/passbridge/config"
	"github.com/passbridge/passbridge/directory"
	"github.com/passbridge/passbridge/internal/testsrv"
	"github.com/passbridge/passbridge/store"
)

// deadURL is an ldap URL on a loopback port where nothing listens.
func deadURL(t *testing.T, scheme string) string {
	return fmt.Sprintf("%s://127.0.0.1:%d", scheme, testsrv.FreePort(t))
}

// TestFailover: with the first URL down, the sync uses the next one and
// remembers it, on both kinds.
func TestFailover(t *testing.T) {
	for name, mk := range fixtures(t) {
		t.Run(name, func(t *testing.T) {
			f := mk(t)
			dc, db := database(t, "sqlite")
			cfg := baseConfig(t, dc, f.Kind())
			ou := f.NewOU(t)
			f.Configure(cfg, ou)
			good := cfg.Directory.URLs[0]
			scheme := strings.SplitN(good, ":", 2)[0]
			cfg.Directory.URLs = []string{deadURL(t, scheme), good}
			f.AddUser(t, ou, "fay", nil)
			s, log := newSyncer(t, cfg, db)
			sum, _ := run(t, s, RunOptions{})
			if sum.Server != good || sum.Changes[KindCreate] != 1 {
				t.Fatalf("summary %+v: want the sync done on %s", sum, good)
			}
			if !strings.Contains(log.String(), "directory server unreachable, trying the next one") {
				t.Fatal("the failover was not logged")
			}
			before := strings.Count(log.String(), "unreachable")
			run(t, s, RunOptions{})
			if strings.Count(log.String(), "unreachable") != before {
				t.Fatal("the second run tried the dead server again: the healthy one must be remembered")
			}
			// Every URL down: a clear error naming them.
			cfg2 := *cfg
			cfg2.Directory.URLs = []string{deadURL(t, scheme), deadURL(t, scheme)}
			s2, _ := NewSyncer(&cfg2, db, nil)
			_, err := s2.Run(context.Background(), RunOptions{})
			if err == nil || !strings.Contains(err.Error(), "no directory server could be reached (2 tried)") {
				t.Fatalf("all servers down: %v", err)
			}
			if got := identities(t, s); len(got) != 1 {
				t.Fatalf("a failed run must change nothing: %+v", got)
			}
		})
	}
}

// TestFailoverHungServer: a server that accepts connections but never
// answers costs one connect timeout, then the next URL is used.
func TestFailoverHungServer(t *testing.T) {
	hung := testsrv.StartSlapd(t, testsrv.SlapdOptions{})
	good := testsrv.Slapd(t)
	dc, db := database(t, "sqlite")
	cfg := baseConfig(t, dc, "openldap")
	ou := good.NewOU(t)
	slapdConfig(good, cfg, ou)
	cfg.Directory.URLs = []string{hung.URL, good.URL}
	cfg.Directory.ConnectTimeout = config.Duration(time.Second)
	good.AddUser(t, ou, "gus", nil)
	hung.Freeze(t)
	defer hung.Thaw(t)
	s, _ := newSyncer(t, cfg, db)
	sum, _ := run(t, s, RunOptions{})
	if sum.Server != good.URL || sum.Changes[KindCreate] != 1 {
		t.Fatalf("summary %+v", sum)
	}
}

// TestCertificateChecks: a CA that did not sign the server's certificate
// gives an error that says so (LDAPS on AD, StartTLS on OpenLDAP), and
// insecure_skip_verify works only when set, with a warning.
func TestCertificateChecks(t *testing.T) {
	for name, mk := range fixtures(t) {
		t.Run(name, func(t *testing.T) {
			f := mk(t)
			dc, db := database(t, "sqlite")
			cfg := baseConfig(t, dc, f.Kind())
			ou := f.NewOU(t)
			f.Configure(cfg, ou)
			cfg.Directory.CAFile = testsrv.UnrelatedCA(t).CertFile
			s, _ := newSyncer(t, cfg, db)
			_, err := s.Run(context.Background(), RunOptions{})
			if err == nil {
				t.Fatal("a mismatching CA must fail")
			}
			for _, want := range []string{"is not signed by", cfg.Directory.CAFile, "does not match"} {
				if !strings.Contains(err.Error(), want) {
					t.Fatalf("error %q does not say %q", err, want)
				}
			}
			cfg.Directory.InsecureSkipVerify = true
			s, log := newSyncer(t, cfg, db)
			if !strings.Contains(log.String(), "certificate verification is OFF") {
				t.Fatal("insecure_skip_verify must log a warning at start")
			}
			run(t, s, RunOptions{})
		})
	}
	t.Run("bad ca_file", func(t *testing.T) {
		d := config.Directory{URLs: []string{"ldaps://127.0.0.1:1"}, CAFile: "/nonexistent/ca.pem"}
		if _, err := directory.NewClient(d, nil); err == nil || !strings.Contains(err.Error(), "directory.ca_file") {
			t.Fatalf("missing CA file: %v", err)
		}
	})
}

// TestDeletionGuard: a run that would delete or disable more than
// max_deletions stops before writing anything and says why, through full
// and delta syncs, and so does a read that returns nobody, on OpenLDAP and
// on AD.
func TestDeletionGuard(t *testing.T) {
	for name, mk := range fixtures(t) {
		t.Run(name, func(t *testing.T) { deletionGuard(t, mk(t)) })
	}
}

func deletionGuard(t *testing.T, f fixture) {
	dc, db := database(t, "sqlite")
	cfg := baseConfig(t, dc, f.Kind())
	ou := f.NewOU(t)
	f.Configure(cfg, ou)
	var dns []string
	for i := range 10 {
		dns = append(dns, f.AddUser(t, ou, fmt.Sprintf("g%02d", i), nil))
	}
	cfg.Directory.MaxDeletions = config.Threshold{Percent: 30, IsPct: true}
	s, log := newSyncer(t, cfg, db)
	run(t, s, RunOptions{})

	for _, dn := range dns[:3] {
		f.Remove(t, dn)
	}
	f.Disable(t, dns[3])
	before := dump(t, s)
	for _, full := range []bool{false, true} {
		sum, err := s.Run(context.Background(), RunOptions{Full: full, Trigger: "test"})
		var refused *RefusedError
		if !errors.As(err, &refused) || !errors.Is(err, ErrRefused) {
			t.Fatalf("full=%v: %v, want a refusal", full, err)
		}
		if refused.Would != 4 || refused.Active != 10 || refused.Deletes != 3 || refused.Disables != 1 || refused.Allowed != 3 {
			t.Fatalf("refusal %+v", refused)
		}
		for _, want := range []string{"4 identities", "out of 10 active", "40.0%", "max_deletions 30%", "nothing was written"} {
			if !strings.Contains(err.Error(), want) {
				t.Fatalf("refusal %q does not say %q", err, want)
			}
		}
		if sum.Status != StatusRefused {
			t.Fatalf("status %s", sum.Status)
		}
		if after := dump(t, s); after != before {
			t.Fatalf("a refused run wrote:\nbefore:\n%s\nafter:\n%s", before, after)
		}
		var status string
		if err := store.Get(context.Background(), db, &status, "SELECT status FROM passbridge_sync_runs WHERE id = ?", sum.RunID); err != nil || status != StatusRefused {
			t.Fatalf("run history: %q %v", status, err)
		}
	}
	if !strings.Contains(log.String(), "directory sync refused") {
		t.Fatal("the refusal was not logged")
	}

	// A count: 4 is allowed.
	cfg.Directory.MaxDeletions = config.Threshold{Count: 4}
	s, _ = newSyncerNoSchema(t, cfg, db)
	_, changes := run(t, s, RunOptions{})
	if c := countKinds(changes); c[KindDelete] != 3 || c[KindDisable] != 1 {
		t.Fatalf("changes %v", changes)
	}

	// A filter that matches nobody is never "everyone left".
	cfg.Directory.MaxDeletions = config.Threshold{Percent: 5, IsPct: true}
	cfg.Directory.UserFilter = "(&(objectClass=inetOrgPerson)(uid=nobody-has-this-uid))"
	if f.Kind() == "ad" {
		cfg.Directory.UserFilter = "(&(objectCategory=person)(objectClass=user)(sAMAccountName=nobody-has-this-name))"
	}
	s, _ = newSyncerNoSchema(t, cfg, db)
	before = dump(t, s)
	_, err := s.Run(context.Background(), RunOptions{Trigger: "test"})
	if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "returned NO users in scope") {
		t.Fatalf("empty scope: %v", err)
	}
	// 6 active identities are left, and one disabled: marking that one
	// deleted takes nobody's access, so the guard counts 6 of 6, not 7.
	if msg := err.Error(); !strings.Contains(msg, "mark 6 identities") || !strings.Contains(msg, "out of 6 active (100.0%)") {
		t.Fatalf("empty scope: %v: want 6 of the 6 active counted", err)
	}
	if after := dump(t, s); after != before {
		t.Fatal("an empty read wrote")
	}
	// A count limit above the whole directory does not let an empty read
	// through either, in a delta or a full run; only 100% does.
	cfg.Directory.MaxDeletions = config.Threshold{Count: 1000}
	s, _ = newSyncerNoSchema(t, cfg, db)
	for _, full := range []bool{false, true} {
		_, err = s.Run(context.Background(), RunOptions{Full: full, Trigger: "test"})
		if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "NO users in scope") {
			t.Fatalf("empty scope, max_deletions 1000, full=%v: %v", full, err)
		}
	}
	if after := dump(t, s); after != before {
		t.Fatal("an empty read wrote under a count limit")
	}
	cfg.Directory.MaxDeletions = config.Threshold{Percent: 100, IsPct: true}
	s, _ = newSyncerNoSchema(t, cfg, db)
	if _, changes := run(t, s, RunOptions{Full: true}); countKinds(changes)[KindDelete] != 7 {
		t.Fatalf("max_deletions 100%% must let an intended empty scope through: %v", changes)
	}
}

func newSyncerNoSchema(t *testing.T, cfg *config.Config, db *store.DB) (*Syncer, *testLog) {
	t.Helper()
	log, buf := newTestLog(t)
	s, err := NewSyncer(cfg, db, log)
	if err != nil {
		t.Fatal(err)
	}
	return s, buf
}

// TestKilledMidRun: slapd killed in the middle of the read leaves the
// database exactly as it was; the next run, with slapd back, applies
// everything. Same with a Samba AD DC killed in the middle of a paged read.
func TestKilledMidRun(t *testing.T) {
	t.Run("openldap", killedMidRunSlapd)
	t.Run("ad", killedMidRunAD)
}

func killedMidRunSlapd(t *testing.T) {
	srv := testsrv.StartSlapd(t, testsrv.SlapdOptions{Users: 3000})
	dc, db := database(t, "sqlite")
	cfg := baseConfig(t, dc, "openldap")
	slapdConfig(srv, cfg, srv.PeopleDN)
	cfg.Directory.PageSize = 500
	s, _ := newSyncer(t, cfg, db)
	run(t, s, RunOptions{})
	if n := len(identities(t, s)); n != 3000 {
		t.Fatalf("%d identities after the first sync", n)
	}
	for i := 1; i <= 10; i++ {
		srv.Modify(t, "uid="+testsrv.SeedUID(i)+","+srv.PeopleDN, map[string][]string{"displayName": {fmt.Sprintf("Renamed %d", i)}})
	}
	for i := 11; i <= 15; i++ {
		srv.Delete(t, "uid="+testsrv.SeedUID(i)+","+srv.PeopleDN)
	}
	before := dump(t, s)
	s.hookPage = func(page int) {
		if page == 1 {
			srv.Kill(t)
		}
	}
	_, err := s.Run(context.Background(), RunOptions{Full: true, Trigger: "test"})
	if err == nil {
		t.Fatal("the run must fail when the server dies mid-read")
	}
	t.Logf("killed mid-run: %v", err)
	if after := dump(t, s); after != before {
		t.Fatal("a run whose directory died mid-read wrote to the database")
	}
	var status string
	if err := store.Get(context.Background(), db, &status, "SELECT status FROM passbridge_sync_runs ORDER BY id DESC LIMIT 1"); err != nil || status != StatusFailed {
		t.Fatalf("run history: %q %v", status, err)
	}
	s.hookPage = nil
	srv.Restart(t)
	_, changes := run(t, s, RunOptions{})
	if c := countKinds(changes); c[KindUpdate] != 10 || c[KindDelete] != 5 || len(changes) != 15 {
		t.Fatalf("after restart: %v", countKinds(changes))
	}
}

func killedMidRunAD(t *testing.T) {
	ad := testsrv.StartSambaDC(t)
	f := sambaFixture{S: ad}
	dc, db := database(t, "sqlite")
	cfg := baseConfig(t, dc, f.Kind())
	ou := f.NewOU(t)
	f.Configure(cfg, ou)
	cfg.Directory.PageSize = 4
	var dns []string
	for i := range 12 {
		dns = append(dns, f.AddUser(t, ou, fmt.Sprintf("k%02d", i), nil))
	}
	s, _ := newSyncer(t, cfg, db)
	run(t, s, RunOptions{})
	if n := len(identities(t, s)); n != 12 {
		t.Fatalf("%d identities after the first sync", n)
	}
	for i, dn := range dns[:3] {
		f.Modify(t, dn, map[string][]string{"displayName": {fmt.Sprintf("Renamed %d", i)}})
	}
	for _, dn := range dns[3:5] {
		f.Remove(t, dn)
	}
	before := dump(t, s)
	s.hookPage = func(page int) {
		if page == 1 {
			ad.Kill(t)
		}
	}
	_, err := s.Run(context.Background(), RunOptions{Full: true, Trigger: "test"})
	if err == nil {
		t.Fatal("the run must fail when the DC dies mid-read")
	}
	t.Logf("killed mid-run: %v", err)
	if after := dump(t, s); after != before {
		t.Fatal("a run whose directory died mid-read wrote to the database")
	}
	var status string
	if err := store.Get(context.Background(), db, &status, "SELECT status FROM passbridge_sync_runs ORDER BY id DESC LIMIT 1"); err != nil || status != StatusFailed {
		t.Fatalf("run history: %q %v", status, err)
	}
	s.hookPage = nil
	ad.Restart(t)
	sum, changes := run(t, s, RunOptions{})
	if sum.Mode != "delta" {
		t.Fatalf("after restart: mode %s (%s): the failed run must not have moved the cursor", sum.Mode, sum.FullReason)
	}
	if c := countKinds(changes); c[KindUpdate] != 3 || c[KindDelete] != 2 || len(changes) != 5 {
		t.Fatalf("after restart: %v", changes)
	}
}

// TestDatabaseErrorMidApply: a database error in the second batch leaves
// the first committed and the cursor where it was; the next run resumes
// and ends in the same state as an uninterrupted run.
func TestDatabaseErrorMidApply(t *testing.T) {
	f := fixtures(t)["openldap"](t)
	dc, db := database(t, "sqlite")
	cfg := baseConfig(t, dc, f.Kind())
	ou := f.NewOU(t)
	f.Configure(cfg, ou)
	for i := range 25 {
		f.AddUser(t, ou, fmt.Sprintf("h%02d", i), nil)
	}
	s, _ := newSyncer(t, cfg, db)
	s.BatchSize = 10
	ctx := context.Background()
	renamed := false
	s.hookBatch = func(n int) error {
		if n == 2 {
			// A real database error: the table vanishes under the sync.
			_, err := db.ExecContext(ctx, "ALTER TABLE passbridge_identities RENAME TO gone_identities")
			renamed = err == nil
			return err
		}
		return nil
	}
	_, err := s.Run(ctx, RunOptions{Trigger: "test"})
	if err == nil || !renamed {
		t.Fatalf("the run must fail in its second batch: %v", err)
	}
	if _, err := db.ExecContext(ctx, "ALTER TABLE gone_identities RENAME TO passbridge_identities"); err != nil {
		t.Fatal(err)
	}
	if n := len(identities(t, s)); n != 10 {
		t.Fatalf("%d identities after a run that failed in batch 2, want the 10 of batch 1", n)
	}
	if c, _ := s.loadCursor(ctx); c != nil {
		t.Fatal("the cursor must not advance when the run failed")
	}
	s.hookBatch = nil
	sum, _ := run(t, s, RunOptions{})
	if sum.Changes[KindCreate] != 15 || len(identities(t, s)) != 25 {
		t.Fatalf("resume: %+v", sum)
	}
	if c, _ := s.loadCursor(ctx); c == nil {
		t.Fatal("the cursor must be saved once the run succeeds")
	}
	_, changes := run(t, s, RunOptions{})
	if len(changes) != 0 {
		t.Fatalf("after resuming, a run finds %v", changes)
	}
}

// TestDryRun: the plan is printed, nothing is written, the run is recorded
// as a dry run, and the real run then applies exactly that plan.
func TestDryRun(t *testing.T) {
	f := fixtures(t)["openldap"](t)
	dc, db := database(t, "sqlite")
	cfg := baseConfig(t, dc, f.Kind())
	ou := f.NewOU(t)
	f.Configure(cfg, ou)
	a := f.AddUser(t, ou, "ida", nil)
	f.AddUser(t, ou, "jon", nil)
	addAppUser(t, db, "ida", "")
	s, _ := newSyncer(t, cfg, db)
	run(t, s, RunOptions{})
	f.Modify(t, a, map[string][]string{"displayName": {"Ida Dry"}})
	f.AddUser(t, ou, "kim", nil)
	before := dump(t, s)
	sum, planned := run(t, s, RunOptions{DryRun: true})
	if after := dump(t, s); after != before {
		t.Fatal("a dry run wrote")
	}
	if !sum.DryRun || sum.Applied != 0 || countKinds(planned)[KindUpdate] != 1 || countKinds(planned)[KindCreate] != 1 {
		t.Fatalf("dry run %+v planned %v", sum, planned)
	}
	for _, c := range planned {
		if c.SQL == "" || c.Description == "" || c.String() == "" {
			t.Fatalf("change without SQL or description: %+v", c)
		}
	}
	var dry bool
	if err := store.Get(context.Background(), db, &dry, "SELECT dry_run FROM passbridge_sync_runs WHERE id = ?", sum.RunID); err != nil || !dry {
		t.Fatalf("run history: dry_run=%v %v", dry, err)
	}
	sum2, applied := run(t, s, RunOptions{})
	if len(applied) != len(planned) || sum2.Applied != len(planned) {
		t.Fatalf("real run %v after dry run %v", applied, planned)
	}
	for i := range planned {
		if planned[i].Kind != applied[i].Kind || planned[i].Description != applied[i].Description || planned[i].SQL != applied[i].SQL {
			t.Fatalf("plan differs: %+v vs %+v", planned[i], applied[i])
		}
	}
	if identity(t, s, f.ID(t, a)).DisplayName != "Ida Dry" {
		t.Fatal("the real run did not apply")
	}
}
