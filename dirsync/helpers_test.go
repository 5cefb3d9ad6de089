package dirsync

import (
	"context"
	"os"
	"testing"

	"github.com/passbridge/passbridge/config"
	"github.com/passbridge/passbridge/internal/testdir"
	"github.com/passbridge/passbridge/internal/testsrv"
	"github.com/passbridge/passbridge/store"
)

func TestMain(m *testing.M) { os.Exit(testsrv.Run(m)) }

// The real directories and databases the tests drive (internal/testdir,
// shared with the directory reader's and the identity layer's tests).
type (
	fixture      = testdir.Fixture
	slapdFixture = testdir.Slapd
	sambaFixture = testdir.Samba
	testLog      = testdir.TestLog
	row          = testdir.Row
)

var (
	fixtures         = testdir.Fixtures
	baseConfig       = testdir.BaseConfig
	database         = testdir.Database
	createUsersTable = testdir.CreateUsersTable
	addAppUser       = testdir.AddAppUser
	slapdConfig      = testdir.SlapdConfig
	sambaConfig      = testdir.SambaConfig
	newTestLog       = testdir.NewTestLog
)

func newSyncer(t testing.TB, cfg *config.Config, db *store.DB) (*Syncer, *testLog) {
	t.Helper()
	log, buf := newTestLog(t)
	testdir.Migrate(t, db, cfg, log)
	s, err := NewSyncer(cfg, db, log)
	if err != nil {
		t.Fatalf("NewSyncer: %v", err)
	}
	return s, buf
}

// run runs a sync and fails the test on error.
func run(t testing.TB, s *Syncer, opts RunOptions) (*Summary, []Change) {
	t.Helper()
	var changes []Change
	if opts.DryRun {
		opts.OnChange = func(c Change) { changes = append(changes, c) }
	} else {
		// A real run as the daemon and the CLI make it (no OnChange: the
		// plan applied while its links are planned); the changes as they
		// are handed to the database.
		s.hookApply = func(c Change) { changes = append(changes, c) }
		defer func() { s.hookApply = nil }()
	}
	if opts.Trigger == "" {
		opts.Trigger = "test"
	}
	sum, err := s.Run(context.Background(), opts)
	if err != nil {
		t.Fatalf("sync (full=%v dry=%v): %v", opts.Full, opts.DryRun, err)
	}
	return sum, changes
}

func identities(t testing.TB, s *Syncer) map[string]row {
	t.Helper()
	return testdir.Identities(t, s.db, s.cfg)
}

func identity(t testing.TB, s *Syncer, id string) row {
	t.Helper()
	return testdir.Identity(t, s.db, s.cfg, id)
}

// dump is every passbridge-owned and users row as text, to compare the
// database before and after a run that must not write.
func dump(t testing.TB, s *Syncer) string {
	t.Helper()
	return testdir.Dump(t, s.db, s.cfg)
}

func countKinds(changes []Change) map[string]int {
	out := map[string]int{}
	for _, c := range changes {
		out[c.Kind]++
	}
	return out
}

func kindsOf(changes []Change, id string) []string {
	var out []string
	for _, c := range changes {
		if c.DirectoryID == id {
			out = append(out, c.Kind)
		}
	}
	return out
}
