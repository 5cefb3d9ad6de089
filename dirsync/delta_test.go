package dirsync

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/passbridge/passbridge/directory"
	"github.com/passbridge/passbridge/internal/testsrv"
	"github.com/passbridge/passbridge/schema"
	"github.com/passbridge/passbridge/store"
)

// TestLifecycleDatabases runs the lifecycle, full then delta, into
// PostgreSQL and MariaDB.
func TestLifecycleDatabases(t *testing.T) {
	for _, driver := range []string{"postgres", "mysql"} {
		for name, mk := range fixtures(t) {
			for _, mode := range []string{"full", "delta"} {
				t.Run(driver+"/"+name+"/"+mode, func(t *testing.T) {
					lifecycle(t, mk(t), mode == "full", driver)
				})
			}
		}
	}
}

// TestSyncreplPresentPhase: after slapd restarts, its session log is gone
// and a delta refresh uses the present phase; deletions are then seen by
// absence (RFC 4533 3.3.1), on a cookie saved before the restart.
func TestSyncreplPresentPhase(t *testing.T) {
	srv := testsrv.StartSlapd(t, testsrv.SlapdOptions{Users: 20})
	dc, db := database(t, "sqlite")
	cfg := baseConfig(t, dc, "openldap")
	slapdConfig(srv, cfg, srv.PeopleDN)
	s, _ := newSyncer(t, cfg, db)
	run(t, s, RunOptions{})
	// The changes happen before the restart: the session log that would
	// list the deletion is lost with the process.
	srv.Delete(t, "uid="+testsrv.SeedUID(3)+","+srv.PeopleDN)
	srv.Modify(t, "uid="+testsrv.SeedUID(4)+","+srv.PeopleDN, map[string][]string{"mail": {"four@corp.example"}})
	srv.Restart(t)
	sum, changes := run(t, s, RunOptions{})
	if sum.Mode != "delta" {
		t.Fatalf("mode %s (%s)", sum.Mode, sum.FullReason)
	}
	// The present phase reports the unchanged entries.
	if sum.Entries < 19 {
		t.Fatalf("entries %d: the refresh did not run the present phase", sum.Entries)
	}
	if c := countKinds(changes); c[KindDelete] != 1 || c[KindUpdate] != 1 || len(changes) != 2 {
		t.Fatalf("changes %v", changes)
	}
	if n := len(identities(t, s)); n != 20 {
		t.Fatalf("%d identities", n)
	}
}

// TestCursorFromAnotherDC: an AD cursor whose invocationId is not the DC's
// (another DC, or this one restored from backup) forces a full read.
func TestCursorFromAnotherDC(t *testing.T) {
	f := fixtures(t)["ad"](t)
	dc, db := database(t, "sqlite")
	cfg := baseConfig(t, dc, f.Kind())
	ou := f.NewOU(t)
	f.Configure(cfg, ou)
	f.AddUser(t, ou, "nora", nil)
	s, _ := newSyncer(t, cfg, db)
	run(t, s, RunOptions{})
	ctx := context.Background()
	c, err := s.loadCursor(ctx)
	if err != nil || c == nil || c.Mechanism != directory.MechUSN || c.USN == 0 || c.InvocationID == "" {
		t.Fatalf("cursor %+v %v", c, err)
	}
	c.InvocationID = "00000000-0000-0000-0000-000000000001"
	body, _ := json.Marshal(c)
	if _, err := store.Exec(ctx, db, "UPDATE passbridge_sync_state SET cursor = ?", string(body)); err != nil {
		t.Fatal(err)
	}
	sum, changes := run(t, s, RunOptions{})
	if sum.Mode != "full" || !strings.Contains(sum.FullReason, "invocationId") || len(changes) != 0 {
		t.Fatalf("summary %+v changes %v", sum, changes)
	}
	sum, _ = run(t, s, RunOptions{})
	if sum.Mode != "delta" {
		t.Fatalf("the run after must be a delta again: %+v", sum)
	}
}

// TestPaging reads more entries than a page holds, on AD (paged search)
// and through the modifyTimestamp mechanism on OpenLDAP (paged too).
func TestPaging(t *testing.T) {
	for name, mk := range fixtures(t) {
		t.Run(name, func(t *testing.T) {
			f := mk(t)
			dc, db := database(t, "sqlite")
			cfg := baseConfig(t, dc, f.Kind())
			ou := f.NewOU(t)
			f.Configure(cfg, ou)
			cfg.Directory.PageSize = 2
			if f.Kind() == "openldap" {
				// An ID other than entryUUID: syncrepl cannot be used.
				cfg.Directory.Attributes.ID = "employeeNumber"
			}
			for i := range 7 {
				f.AddUser(t, ou, fmt.Sprintf("pg%d", i), map[string][]string{"employeeNumber": {fmt.Sprintf("E%03d", i)}})
			}
			s, _ := newSyncer(t, cfg, db)
			sum, _ := run(t, s, RunOptions{})
			if sum.Entries != 7 || sum.Changes[KindCreate] != 7 {
				t.Fatalf("summary %+v", sum)
			}
		})
	}
}

// TestTimestampMechanism: without syncrepl (the ID is not entryUUID), delta
// reads what changed by modifyTimestamp; it cannot see a deletion, which
// the next full sync catches.
func TestTimestampMechanism(t *testing.T) {
	f := fixtures(t)["openldap"](t)
	dc, db := database(t, "sqlite")
	cfg := baseConfig(t, dc, f.Kind())
	ou := f.NewOU(t)
	f.Configure(cfg, ou)
	cfg.Directory.Attributes.ID = "employeeNumber"
	a := f.AddUser(t, ou, "ola", map[string][]string{"employeeNumber": {"E1"}})
	b := f.AddUser(t, ou, "per", map[string][]string{"employeeNumber": {"E2"}})
	s, _ := newSyncer(t, cfg, db)
	sum, _ := run(t, s, RunOptions{})
	if sum.Mechanism != directory.MechTimestamp {
		t.Fatalf("mechanism %s", sum.Mechanism)
	}
	f.Modify(t, a, map[string][]string{"displayName": {"Ola Nordmann"}})
	f.Remove(t, b)
	sum, changes := run(t, s, RunOptions{})
	if sum.Mode != "delta" || countKinds(changes)[KindUpdate] != 1 || countKinds(changes)[KindDelete] != 0 {
		t.Fatalf("delta %+v %v", sum, changes)
	}
	_, changes = run(t, s, RunOptions{Full: true})
	if k := kindsOf(changes, "e2"); len(k) != 1 || k[0] != KindDelete {
		t.Fatalf("full %v", changes)
	}
	if identity(t, s, "e1").DisplayName != "Ola Nordmann" || identity(t, s, "e2").State != schema.StateDeleted {
		t.Fatal("final state")
	}
}

// TestScopeChangeForcesFull: changing the configured scope invalidates the
// delta cursor.
func TestScopeChangeForcesFull(t *testing.T) {
	f := fixtures(t)["openldap"](t)
	dc, db := database(t, "sqlite")
	cfg := baseConfig(t, dc, f.Kind())
	ou := f.NewOU(t)
	f.Configure(cfg, ou)
	f.AddUser(t, ou, "quinn", nil)
	f.AddUser(t, ou, "ruth", map[string][]string{"departmentNumber": {"ops"}})
	s, _ := newSyncer(t, cfg, db)
	run(t, s, RunOptions{})
	cfg.Directory.UserFilter = "(&(objectClass=inetOrgPerson)(departmentNumber=ops))"
	s, _ = newSyncerNoSchema(t, cfg, db)
	sum, changes := run(t, s, RunOptions{})
	if sum.Mode != "full" || !strings.Contains(sum.FullReason, "scope changed") || countKinds(changes)[KindDelete] != 1 {
		t.Fatalf("summary %+v changes %v", sum, changes)
	}
}
