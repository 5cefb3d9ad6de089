package dirsync

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/passbridge/passbridge/schema"
)

// TestStreamedApply: a real run that prints nothing applies its plan while
// the candidate links are still being planned (applyPlanned). It must
// write exactly what a run that plans everything first and then applies
// it (the path of a run with OnChange, which prints the plan) writes: the
// same statements with the same arguments in the same order, and the same
// rows. And a batch that fails while links are still being planned stops
// the planning, saves no cursor, and the next run completes the rest.
//
// The directory has linked, contested (two users, one mailbox), unmatched,
// provisioned and disabled users, and batches of 7 changes, so that groups
// of creates, provisions with their links, and the boundary between the
// plan's spooled part and the streamed part fall inside batches, and the
// last batch is not full.
func TestStreamedApply(t *testing.T) {
	f := fixtures(t)["openldap"](t)
	ou := f.NewOU(t)
	const users = 43 // 61 changes: the last batch is not full
	for i := range users {
		attrs := map[string][]string(nil)
		if i%10 == 3 || i%10 == 4 {
			attrs = map[string][]string{"mail": {fmt.Sprintf("box%d@corp.example", i/10)}}
		}
		dn := f.AddUser(t, ou, fmt.Sprintf("st%02d", i), attrs)
		if i%10 == 9 {
			f.Disable(t, dn)
		}
	}
	at := time.Date(2026, 12, 7, 21, 0, 0, 0, time.UTC)
	// setup gives a fresh database with the users rows: every user but
	// each 5th, one row per shared mailbox, and (provision: create) rows
	// for the unmatched.
	setup := func(t *testing.T, driver string) *Syncer {
		dc, db := database(t, driver)
		cfg := baseConfig(t, dc, f.Kind())
		f.Configure(cfg, ou)
		cfg.Directory.Provision = "create"
		cfg.Directory.PageSize = 6
		for i := range users {
			name := fmt.Sprintf("st%02d", i)
			switch {
			case i%10 == 3:
				addAppUser(t, db, fmt.Sprintf("box%d", i/10), fmt.Sprintf("box%d@corp.example", i/10))
			case i%10 == 4 || i%5 == 0:
			default:
				addAppUser(t, db, name, name+"@corp.example")
			}
		}
		s, _ := newSyncer(t, cfg, db)
		s.BatchSize = 7
		s.now = func() time.Time { return at }
		return s
	}
	type written struct {
		Kind, DirectoryID, SQL string
		Args                   []any
	}
	record := func(dst *[]written) func(Change) {
		return func(c Change) { *dst = append(*dst, written{c.Kind, c.DirectoryID, c.SQL, c.Args}) }
	}
	ctx := context.Background()
	for _, driver := range []string{"sqlite", "postgres", "mysql"} {
		t.Run(driver, func(t *testing.T) {
			// Planned whole, then applied.
			whole := setup(t, driver)
			var planned []written
			sumWhole, err := whole.Run(ctx, RunOptions{Full: true, Trigger: "test", OnChange: record(&planned)})
			if err != nil {
				t.Fatal(err)
			}
			c := sumWhole.Changes
			if c[KindCreate] != users || c[KindProvision] == 0 || sumWhole.Ambiguous != 8 || sumWhole.Linked == 0 || sumWhole.Applied != len(planned) {
				t.Fatalf("the fixture must plan creates, provisions, links and contested rows: %s, %d linked, %d ambiguous, %d applied of %d",
					c, sumWhole.Linked, sumWhole.Ambiguous, sumWhole.Applied, len(planned))
			}

			// Streamed.
			streamed := setup(t, driver)
			var applied []written
			streamed.hookApply = record(&applied)
			sum, err := streamed.Run(ctx, RunOptions{Full: true, Trigger: "test"})
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(applied, planned) {
				t.Fatalf("the streamed run handed the database %d changes, the planned run %d, not the same ones", len(applied), len(planned))
			}
			if sum.Applied != sumWhole.Applied || !reflect.DeepEqual(sum.Changes, sumWhole.Changes) || sum.Linked != sumWhole.Linked ||
				sum.Ambiguous != sumWhole.Ambiguous || sum.Unmatched != sumWhole.Unmatched || !reflect.DeepEqual(sum.LinkIssues, sumWhole.LinkIssues) {
				t.Fatalf("summaries differ:\nstreamed %+v\nwhole    %+v", sum, sumWhole)
			}
			if a, b := unnumbered(dump(t, streamed)), unnumbered(dump(t, whole)); a != b {
				t.Fatalf("the databases differ after the two runs:\nstreamed:\n%s\nwhole:\n%s", a, b)
			}

			// A batch fails while the links are being planned: the last
			// but one (the plan's first batches are its spooled part).
			cut := setup(t, driver)
			batches := (len(planned) + 6) / 7
			boom := errors.New("boom")
			cut.hookBatch = func(n int) error {
				if n == batches-1 {
					return boom
				}
				return nil
			}
			if _, err := cut.Run(ctx, RunOptions{Full: true, Trigger: "test"}); !errors.Is(err, boom) {
				t.Fatalf("the run must fail in batch %d: %v", batches-1, err)
			}
			if c, err := cut.loadCursor(ctx); err != nil || c != nil {
				t.Fatalf("a run that failed must save no cursor: %v %v", c, err)
			}
			if n := len(identities(t, cut)); n == 0 || n >= users {
				t.Fatalf("%d identities after the failed run: want the batches before the failure", n)
			}
			cut.hookBatch = nil
			if _, err := cut.Run(ctx, RunOptions{Full: true, Trigger: "test"}); err != nil {
				t.Fatal(err)
			}
			if a, b := sameRows(identities(t, cut)), sameRows(identities(t, whole)); !reflect.DeepEqual(a, b) {
				t.Fatalf("after the rerun:\n%v\nwant\n%v", a, b)
			}
			if c, err := cut.loadCursor(ctx); err != nil || c == nil {
				t.Fatalf("the rerun saves the cursor: %v %v", c, err)
			}
		})
	}
}

// unnumbered is a dump in sorted lines, without the identities' row IDs:
// on a database server, batches of creates written at once (applyStream)
// number their rows in the order they commit, not the order planned.
func unnumbered(dump string) string {
	lines := strings.Split(dump, "\n")
	for i, l := range lines {
		if table, _, _ := strings.Cut(l, " "); strings.Contains(table, "identities") {
			lines[i] = rowID.ReplaceAllString(l, " ")
		}
	}
	slices.Sort(lines)
	return strings.Join(lines, "\n")
}

// rowID is the key id of a printed map (directory_id is not preceded by a space).
var rowID = regexp.MustCompile(` id:[0-9]+ `)

// sameRows is the identities without what two databases number on their
// own (row IDs; the keys of provisioned users rows, whose sequence a
// rolled-back INSERT advances on PostgreSQL).
func sameRows(rows map[string]row) map[string]row {
	out := map[string]row{}
	for id, r := range rows {
		r.ID = 0
		if r.LinkState == schema.LinkCreated {
			r.UserKey = "provisioned"
		}
		out[id] = r
	}
	return out
}

// TestConcurrentCreates: on a database server, batches of nothing but
// creates are written at once, on connections of their own; any other
// batch, and the last one with the cursor, starts only once every batch
// before it has committed.
func TestConcurrentCreates(t *testing.T) {
	f := fixtures(t)["openldap"](t)
	ou := f.NewOU(t)
	const users, size = 40, 5
	for i := range users {
		f.AddUser(t, ou, fmt.Sprintf("cc%02d", i), nil)
	}
	ctx := context.Background()
	for _, driver := range []string{"postgres", "mysql"} {
		t.Run(driver, func(t *testing.T) {
			dc, db := database(t, driver)
			cfg := baseConfig(t, dc, f.Kind())
			f.Configure(cfg, ou)
			cfg.Directory.Provision = "create"
			for i := range users {
				if i%8 != 7 { // the others are provisioned
					name := fmt.Sprintf("cc%02d", i)
					addAppUser(t, db, name, name+"@corp.example")
				}
			}
			s, _ := newSyncer(t, cfg, db)
			s.BatchSize, s.Writers = size, 3

			// The changes as handed over (the run's goroutine), to know
			// each batch's kinds in the writers' hook.
			var mu sync.Mutex
			var handed []Change
			s.hookApply = func(c Change) { mu.Lock(); handed = append(handed, c); mu.Unlock() }
			kinds := func(n int) (creates, last bool, before int) {
				mu.Lock()
				defer mu.Unlock()
				// A batch is sent when the next change is handed over,
				// the last one when there is no next.
				creates, last = true, len(handed) <= n*size
				for i, c := range handed {
					switch {
					case i < (n-1)*size:
						if c.Kind == KindCreate {
							before++
						}
					case i < n*size:
						creates = creates && c.Kind == KindCreate
					}
				}
				return creates, last, before
			}
			count := func() (n int) {
				if err := db.GetContext(ctx, &n, "SELECT COUNT(*) FROM "+schema.NamesFor(cfg).Identities); err != nil {
					t.Error(err)
				}
				return n
			}
			batches := 0
			var overlapped, barriers atomic.Int32
			started := map[int]chan struct{}{}
			for n := 1; n <= 64; n++ {
				started[n] = make(chan struct{})
			}
			s.hookBatch = func(n int) error {
				close(started[n])
				creates, last, before := kinds(n)
				if !creates || last {
					// Everything before it has committed.
					barriers.Add(1)
					if got := count(); got != before {
						return fmt.Errorf("batch %d started with %d identities committed, want the %d created before it", n, got, before)
					}
					return nil
				}
				if next, _, _ := kinds(n + 1); next && n > 1 && overlapped.Load() == 0 {
					// The next batch of creates starts while this one is
					// being written.
					select {
					case <-started[n+1]:
						overlapped.Add(1)
					case <-time.After(10 * time.Second):
						return fmt.Errorf("batch %d of creates did not start while batch %d was being written", n+1, n)
					}
				}
				mu.Lock()
				batches = max(batches, n)
				mu.Unlock()
				return nil
			}
			sum, err := s.Run(ctx, RunOptions{Full: true, Trigger: "test"})
			if err != nil {
				t.Fatal(err)
			}
			if sum.Changes[KindCreate] != users || sum.Changes[KindProvision] != users/8 || overlapped.Load() == 0 || barriers.Load() < 2 {
				t.Fatalf("%s; %d overlapped, %d barriers: the fixture must write batches of creates at once, and others after them", sum.Changes, overlapped.Load(), barriers.Load())
			}
			if c, err := s.loadCursor(ctx); err != nil || c == nil {
				t.Fatalf("the cursor is saved: %v %v", c, err)
			}
			if got := identities(t, s); len(got) != users {
				t.Fatalf("%d identities, want %d", len(got), users)
			}

			// A batch of creates fails while the next is being written:
			// the run fails and saves no cursor, what was committed stays,
			// and the next run writes the rest.
			dc2, db2 := database(t, driver)
			cfg2 := baseConfig(t, dc2, f.Kind())
			f.Configure(cfg2, ou)
			cut, _ := newSyncer(t, cfg2, db2)
			cut.BatchSize, cut.Writers = size, 2
			boom := errors.New("boom")
			third := make(chan struct{})
			cut.hookBatch = func(n int) error {
				switch n {
				case 2:
					select { // fail once batch 3 is being written beside it
					case <-third:
					case <-time.After(10 * time.Second):
					}
					return boom
				case 3:
					close(third)
				}
				return nil
			}
			if _, err := cut.Run(ctx, RunOptions{Full: true, Trigger: "test"}); !errors.Is(err, boom) {
				t.Fatalf("the run must fail in batch 2: %v", err)
			}
			if c, err := cut.loadCursor(ctx); err != nil || c != nil {
				t.Fatalf("a run that failed must save no cursor: %v %v", c, err)
			}
			if n := len(identities(t, cut)); n == 0 || n >= users {
				t.Fatalf("%d identities after the failed run: want those of the batches committed", n)
			}
			cut.hookBatch = nil
			sum2, err := cut.Run(ctx, RunOptions{Full: true, Trigger: "test"})
			if err != nil {
				t.Fatal(err)
			}
			if got := identities(t, cut); len(got) != users || sum2.Changes[KindCreate] == 0 {
				t.Fatalf("after the rerun: %d identities (%s), want %d", len(got), sum2.Changes, users)
			}
			if c, err := cut.loadCursor(ctx); err != nil || c == nil {
				t.Fatalf("the rerun saves the cursor: %v %v", c, err)
			}
		})
	}
}
