// Package dirsync is the directory sync engine: it reads the directory
// through package directory (full or delta), diffs what it reads against
// the identities stored in the application's database a page at a time
// (the planner), links identities to users rows by the match rules, checks
// the deletion guard, and applies the plan (plain data: each change with
// its SQL) in batches of one transaction each, the delta cursor saved with
// the last. One Syncer serves the CLI, the daemon's schedules, the admin
// API and the IT console.
//
// It is not called sync, which would shadow the standard library's sync
// in every file that needs both (this one does), nor ldap, go-ldap's
// package name, which the reading side imports.
package dirsync

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/passbridge/passbridge/audit"
	"github.com/passbridge/passbridge/config"
	"github.com/passbridge/passbridge/directory"
	"github.com/passbridge/passbridge/schema"
	"github.com/passbridge/passbridge/store"
)

// Syncer syncs the directory into the database. One Syncer serves every
// run of a process (the agent's schedules, the CLI, the admin API): they
// share this code path.
type Syncer struct {
	cfg    *config.Config
	db     *store.DB
	log    *slog.Logger
	client *directory.Client
	mapper *directory.Mapper
	n      schema.Names

	// BatchSize is the number of changes applied per transaction
	// (defaultBatch when it is not set).
	BatchSize int
	// Writers is how many batches of creates are written at once on a
	// database server (defaultWriters when it is not set; see
	// applyStream). SQLite writes one at a time.
	Writers int
	// now is the clock (tests).
	now       func() time.Time
	scopeOpts directory.ScopeOptions

	// dbTime is the time spent in the database during a run, in
	// nanoseconds: the diff adds to it from its own goroutine.
	dbTime atomic.Int64

	// ci caches caseInsensitive per users column (MySQL).
	ciMu sync.Mutex
	ci   map[string]bool

	// Test hooks: after each page of upserts is handed to the diff (in the
	// reader's goroutine), before each batch is applied (in the applier's).
	hookPage  func(page int)
	hookBatch func(batch int) error
	// hookApply sees each change as it is handed to the database, in the
	// run's goroutine.
	hookApply func(Change)
}

// NewSyncer checks the directory settings (URLs, CA file) and returns a
// Syncer. It logs a warning when certificate checks are off.
func NewSyncer(cfg *config.Config, db *store.DB, log *slog.Logger) (*Syncer, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("component", "directory")
	client, err := directory.NewClient(cfg.Directory, log)
	if err != nil {
		return nil, err
	}
	if _, err := directory.ValidateFilter(cfg.Directory.UserFilter); err != nil {
		return nil, err
	}
	return &Syncer{
		cfg: cfg, db: db, log: log, client: client, mapper: directory.NewMapper(cfg.Directory),
		n: schema.NamesFor(cfg), BatchSize: defaultBatch, now: time.Now,
	}, nil
}

// addDBTime counts d as time spent in the database.
func (s *Syncer) addDBTime(d time.Duration) { s.dbTime.Add(int64(d)) }

// defaultBatch is how many changes a transaction applies: a first sync of
// 100,000 users is 100 commits of one COPY or a multi-row INSERT each (a
// COPY of 1,000 rows runs at the speed of larger ones: see
// BenchmarkInsertIdentities), and a run stopped midway keeps all but the
// last 1,000 changes.
const defaultBatch = 1000

// batchSize is BatchSize, or defaultBatch when it is not set.
func (s *Syncer) batchSize() int {
	if s.BatchSize <= 0 {
		return defaultBatch
	}
	return s.BatchSize
}

// Client is the syncer's directory client (for Authenticate).
func (s *Syncer) Client() *directory.Client { return s.client }

// RunOptions choose what a run does.
type RunOptions struct {
	// Full reads everything in scope instead of what changed.
	Full bool
	// DryRun plans and reports the changes without writing them (the run
	// itself is still recorded in the run history, as a dry run).
	DryRun bool
	// Trigger says who started the run: schedule, cli, api.
	Trigger string
	// OnChange, when set, receives every planned change in order before
	// anything is written (what `sync --dry-run` prints).
	OnChange func(Change)
	// Locked says that the caller already holds LockName for this run
	// (the daemon's Runner takes it before it reads the history to serve
	// each schedule tick once); otherwise a writing run takes it itself.
	Locked bool
}

// Run statuses (sync_runs.status).
const (
	StatusRunning   = "running"
	StatusSucceeded = "succeeded"
	StatusFailed    = "failed"
	StatusRefused   = "refused"
	// StatusUnknown is a run whose last COMMIT went out and was never
	// answered (store.ErrCommitUnknown): its changes may be in or not. The
	// next run finds out from the cursor (saved by the last batch with the
	// run's ID) and records the run as succeeded or failed.
	StatusUnknown = "unknown"
)

// Summary is the one report of a run: logged as one line, stored in
// sync_runs.summary, printed by `passbridge sync`.
type Summary struct {
	RunID     int64  `json:"run_id"`
	Status    string `json:"status"`
	Mode      string `json:"mode"` // full | delta
	Mechanism string `json:"mechanism,omitempty"`
	// FullReason says why the run read everything.
	FullReason string `json:"full_reason,omitempty"`
	DryRun     bool   `json:"dry_run"`
	Trigger    string `json:"trigger"`
	Server     string `json:"server,omitempty"`

	// Entries is how many directory entries (or IDs) the run read.
	Entries int `json:"entries"`
	// Invalid entries could not become identities (no ID, no username,
	// duplicate ID); they are logged with their DN.
	Invalid int `json:"invalid"`
	// Changes counts the planned changes per kind; Applied those written.
	Changes Counts `json:"changes"`
	Applied int    `json:"applied"`
	// Linked identities got a users row in this run; Unmatched and
	// Ambiguous were left without one (see LinkIssues, at most 50).
	Linked     int         `json:"linked"`
	Unmatched  int         `json:"unmatched"`
	Ambiguous  int         `json:"ambiguous"`
	LinkIssues []LinkIssue `json:"link_issues,omitempty"`
	// ProvisionFailed counts users rows that provision: create could not
	// insert (the identity stays unmatched; see the log).
	ProvisionFailed int `json:"provision_failed,omitempty"`

	StartedAt        time.Time `json:"started_at"`
	FinishedAt       time.Time `json:"finished_at"`
	LDAPMillis       int64     `json:"ldap_ms"`
	DBMillis         int64     `json:"db_ms"`
	TotalMillis      int64     `json:"total_ms"`
	EntriesPerSecond float64   `json:"entries_per_second"`
	Error            string    `json:"error,omitempty"`
}

// cursorName is the sync_state row of the directory's delta cursor.
const cursorName = "directory"

// Run does one sync. The steps read top to bottom: configure, read the
// wanted state from the directory, inspect the current state in the
// database and diff (a page at a time, into a plan of changes), check the
// deletion guard, then print or apply. Nothing is written before the whole
// directory has been read and the guard has passed; the plan is applied in
// batches, one transaction each, and the delta cursor is saved in the
// transaction of the last batch. The candidate links, decided once the
// whole run is known, are planned while the batches before them are
// written (applyPlanned), except in a run that prints its plan. Every run
// ends with one summary, logged and recorded in sync_runs; a refused run
// returns a *RefusedError.
func (s *Syncer) Run(ctx context.Context, opts RunOptions) (sum *Summary, err error) {
	// Configure.
	start := s.now()
	s.dbTime.Store(0)
	if opts.Trigger == "" {
		opts.Trigger = "api"
	}
	sum = &Summary{Status: StatusRunning, Mode: ModeDelta, DryRun: opts.DryRun, Trigger: opts.Trigger, StartedAt: start.UTC(), Changes: Counts{}}
	if opts.Full {
		sum.Mode = ModeFull
	}
	if !opts.DryRun && !opts.Locked {
		lock, err := Lock(ctx, s.db)
		if err != nil {
			return sum, err
		}
		defer lock.Unlock()
	}
	if sum.RunID, err = s.startRun(ctx, sum); err != nil {
		return sum, err
	}
	var ldapTime time.Duration
	defer func() { s.finishRun(ctx, sum, start, ldapTime, err) }()

	prev, err := s.loadCursor(ctx)
	if err != nil {
		return sum, err
	}
	if err := s.checkNeverLink(ctx); err != nil {
		return sum, err
	}
	p, err := s.newPlanner(sum.RunID, nil)
	if err != nil {
		return sum, err
	}
	defer p.close()

	// Read the wanted state from the directory; the planner inspects the
	// current state and diffs as pages arrive.
	t0 := time.Now()
	conn, err := s.client.Connect(ctx)
	if err != nil {
		return sum, err
	}
	defer conn.Close()
	sum.Server = conn.URL
	scope, err := conn.ResolveScope(ctx, s.cfg.Directory, s.mapper, s.scopeOpts)
	if err != nil {
		return sum, err
	}
	// The diff runs beside the read (pipe): ldap_ms is the time the read
	// took less the time it waited for the diff.
	diff := newPipe(p)
	out, err := conn.Read(ctx, directory.ReadRequest{Dir: s.cfg.Directory, Mapper: s.mapper, Scope: scope, Out: diff, Log: s.log, Now: s.now, Prev: prev, Full: opts.Full})
	if derr := diff.close(); err == nil && derr != nil {
		err = derr
	}
	ldapTime = time.Since(t0) - diff.waited
	if err != nil {
		return sum, fmt.Errorf("read the directory: %w", err)
	}
	conn.Close()
	sum.Mechanism, sum.Entries, sum.Server = out.Mechanism, out.Entries, out.Cursor.Server
	if out.Full {
		sum.Mode, sum.FullReason = ModeFull, out.Reason
	}

	// Identities the read did not mention: gone when the read was
	// complete; unlinked ones are matched again.
	if err := s.finishPlan(ctx, p, out, scope); err != nil {
		return sum, err
	}
	// What is left to plan is the candidate links (claims.resolve: creates
	// and links, which the guard does not count). A run that prints its
	// plan plans them now, prints the plan whole, and then asks the guard
	// (a refused run still shows what it would have done); a run that
	// prints nothing asks the guard first, then applies the plan while
	// the links are still being planned (applyPlanned).
	whole := opts.OnChange != nil || opts.DryRun
	if whole {
		if err := p.claims.resolve(p); err != nil {
			return sum, err
		}
		s.planned(sum, p)
		if opts.OnChange != nil {
			if err := p.plan.each(func(c Change) error { opts.OnChange(c); return nil }); err != nil {
				return sum, err
			}
		}
	}
	// The guard, before anything is written.
	if err := s.guard(ctx, p, out, scope); err != nil {
		sum.Status = StatusRefused
		if !whole {
			// The summary counts what the run would have done.
			if rerr := p.claims.resolve(p); rerr != nil {
				return sum, errors.Join(err, rerr)
			}
			s.planned(sum, p)
		}
		return sum, err
	}
	if opts.DryRun {
		sum.Status = StatusSucceeded
		return sum, nil
	}
	// Apply.
	var applied, failed int
	if whole {
		applied, failed, err = s.apply(ctx, p.plan, out.Cursor, prev, sum.RunID)
	} else {
		applied, failed, err = s.applyPlanned(ctx, p, out.Cursor, prev, sum.RunID)
		s.planned(sum, p)
	}
	sum.Applied, sum.ProvisionFailed = applied, failed
	if errors.Is(err, store.ErrCommitUnknown) {
		sum.Status = StatusUnknown
		return sum, fmt.Errorf("%w; the next run finds out and records which", err)
	}
	if err != nil {
		return sum, err
	}
	sum.Status = StatusSucceeded
	return sum, nil
}

// planned copies the plan's counts into the summary.
func (s *Syncer) planned(sum *Summary, p *planner) {
	sum.Changes = p.plan.counts
	sum.Invalid, sum.Linked, sum.Unmatched, sum.Ambiguous, sum.LinkIssues = p.invalidCount, p.linked, p.unmatched, p.ambiguous, p.issues
}

// applyPlanned applies the plan and the candidate links planned meanwhile:
// the changes spooled so far, then those claims.resolve plans, each batch
// written while the next is planned. The database sees exactly the changes,
// in exactly the order, that apply would run once the plan is complete.
func (s *Syncer) applyPlanned(ctx context.Context, p *planner, cursor, prev *directory.Cursor, runID int64) (applied, provisionFailed int, err error) {
	return s.applyFrom(ctx, cursor, prev, runID, func(add func(Change) error) error {
		if err := p.plan.stream(add); err != nil {
			return err
		}
		if err := p.claims.resolve(p); err != nil {
			return err
		}
		return p.plan.flush()
	})
}

// finishPlan completes the diff once the directory has been read.
func (s *Syncer) finishPlan(ctx context.Context, p *planner, out *directory.ReadOutcome, scope *directory.Scope) error {
	if out.Complete {
		if p.invalidCount > 0 {
			s.log.Warn("some entries in scope could not be read: identities missing from this read are NOT marked deleted this run",
				"invalid", p.invalidCount)
		} else {
			// Every stored identity's row ID, and the whole row of those
			// the read did not see.
			err := p.cur().eachIdentityID(ctx, identityFilter{notDeleted: true}, func(ids []int64) error {
				var unseen []int64
				for _, id := range ids {
					if !p.seen.has(id, seenUpsert|seenPresent|seenGone) {
						unseen = append(unseen, id)
					}
				}
				rows, err := p.cur().identitiesByRowID(ctx, unseen)
				if err != nil {
					return err
				}
				for _, row := range rows {
					if err := p.markDeleted(row, "no longer in the directory, or out of scope"); err != nil {
						return err
					}
				}
				return nil
			})
			if err != nil {
				return err
			}
		}
	}
	// Identities without a users row that this read did not cover: the
	// application may have added their row since.
	err := p.cur().eachIdentity(ctx, identityFilter{notDeleted: true, unlinked: true}, func(rows []*identityRow) error {
		var in []linkInput
		var pending []*identityRow
		for _, row := range rows {
			if p.seen.has(row.ID, seenUpsert|seenGone) {
				continue // matched already in this run, or just deleted
			}
			in = append(in, linkInput{DirectoryID: row.DirectoryID, Username: row.Username, Email: row.Email.String})
			pending = append(pending, row)
		}
		if len(in) == 0 {
			return nil
		}
		res, err := p.match(ctx, in)
		if err != nil {
			return err
		}
		for i, row := range pending {
			it := directory.Identity{DirectoryID: row.DirectoryID, DN: row.DN, Username: row.Username, Email: row.Email.String,
				DisplayName: row.DisplayName.String, Department: row.Department.String, Disabled: row.State != schema.StateActive}
			if err := p.decide(it, row, res[i]); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	return nil
}

// guard refuses a run that would mark too many identities deleted or
// disabled (directory.max_deletions, a count or a percentage of the active
// identities).
func (s *Syncer) guard(ctx context.Context, p *planner, out *directory.ReadOutcome, scope *directory.Scope) error {
	would := p.deletes + p.disables
	if would == 0 {
		return nil
	}
	var active int
	t0 := time.Now()
	err := store.Get(ctx, s.db, &active, "SELECT COUNT(*) FROM "+s.n.Identities+" WHERE "+s.n.Dialect.Quote("state")+" = ?", schema.StateActive)
	s.addDBTime(time.Since(t0))
	if err != nil {
		return fmt.Errorf("count active identities: %w", err)
	}
	limit := s.cfg.Directory.MaxDeletions
	// A complete read that found nobody in scope is refused whatever the
	// limit, unless it is 100%: a count such as 50 must not let an empty
	// answer (a wrong base_dn, a service account that lost its read right)
	// take everyone away in a small directory.
	empty := out.Complete && p.upserted+p.presents == 0
	everyoneAllowed := limit.IsPct && limit.Percent >= 100
	if !limit.Exceeded(would, active) && (!empty || everyoneAllowed) {
		return nil
	}
	e := &RefusedError{Would: would, Active: active, Limit: limit.String(), Allowed: limit.Limit(active), Deletes: p.deletes, Disables: p.disables}
	switch {
	case empty:
		e.Detail = fmt.Sprintf("The directory returned NO users in scope (base_dn %q, filter %s): a wrong base_dn, user_filter or group, or a service account that may not read users, looks exactly like this", scope.BaseDN, scope.Filter)
	case would >= active:
		// A delta run reads changes only, so it cannot tell "nobody in
		// scope"; that every active identity would go says as much.
		e.Detail = fmt.Sprintf("Every active identity would go: check that base_dn %q and the filter %s still find the users, and that the service account may read them", scope.BaseDN, scope.Filter)
	}
	return e
}

// startRun records the run as running. A writing run first closes the runs
// a dead process left running (closeAbandoned: it holds the lock, so none
// is live).
func (s *Syncer) startRun(ctx context.Context, sum *Summary) (int64, error) {
	q := s.n.Dialect.Quote
	node, _ := os.Hostname()
	t0 := time.Now()
	defer func() { s.addDBTime(time.Since(t0)) }()
	if !sum.DryRun {
		closed, err := closeAbandoned(ctx, s.db, s.n, s.now().UTC(), node)
		if err != nil {
			return 0, fmt.Errorf("record the sync run: %w", err)
		}
		if closed > 0 {
			s.log.Warn("closed sync runs left running by a stopped process", "runs", closed)
		}
		if err := s.reconcileUnknown(ctx); err != nil {
			return 0, err
		}
	}
	id, err := s.n.Dialect.InsertID(ctx, s.db, "INSERT INTO "+s.n.SyncRuns+" ("+q("kind")+", "+q("trigger")+", "+q("dry_run")+", "+q("status")+", "+
		q("node")+", "+q("started_at")+", "+q("entries")+") VALUES (?, ?, ?, ?, ?, ?, ?)", "id",
		sum.Mode, sum.Trigger, sum.DryRun, StatusRunning, nullString(node), sum.StartedAt, 0)
	if err != nil {
		return 0, fmt.Errorf("record the sync run in %s (has `passbridge migrate apply` run?): %w", s.n.SyncRuns, err)
	}
	return id, nil
}

// reconcileUnknown records what became of runs whose last COMMIT was never
// answered: the last batch saves the cursor with the run's ID, so a cursor
// with that ID means the run committed in full; any other means its last
// batch did not (the batches before it did; this run reads the directory
// again and plans what is still to do). The caller holds the sync lock.
func (s *Syncer) reconcileUnknown(ctx context.Context) error {
	q := s.n.Dialect.Quote
	var ids []int64
	if err := store.Select(ctx, s.db, &ids, "SELECT "+q("id")+" FROM "+s.n.SyncRuns+" WHERE "+q("status")+" = ? ORDER BY "+q("id"), StatusUnknown); err != nil {
		return fmt.Errorf("read the runs of unknown outcome in %s: %w", s.n.SyncRuns, err)
	}
	if len(ids) == 0 {
		return nil
	}
	var cursorRun sql.NullInt64
	err := store.Get(ctx, s.db, &cursorRun, "SELECT "+q("run_id")+" FROM "+s.n.SyncState+" WHERE "+q("name")+" = ?", cursorName)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("read the delta cursor: %w", err)
	}
	for _, id := range ids {
		status, note := StatusFailed, "its last COMMIT was never answered, and it had not committed (the batches before it had); the next run planned what was still to do"
		if cursorRun.Valid && cursorRun.Int64 == id {
			status, note = StatusSucceeded, "its last COMMIT was never answered, but it had committed: the cursor it saved is the current one"
		}
		_, err := store.Exec(ctx, s.db, "UPDATE "+s.n.SyncRuns+" SET "+q("status")+" = ?, "+q("error")+" = ? WHERE "+q("id")+" = ? AND "+q("status")+" = ?",
			status, note, id, StatusUnknown)
		if err != nil {
			return fmt.Errorf("record the outcome of sync run %d: %w", id, err)
		}
		s.log.Warn("sync run of unknown outcome reconciled", "run_id", id, "status", status, "detail", note)
	}
	return nil
}

// finishRun completes the summary, logs it as one line and records it.
func (s *Syncer) finishRun(ctx context.Context, sum *Summary, start time.Time, ldapTime time.Duration, runErr error) {
	sum.FinishedAt = s.now().UTC()
	total := sum.FinishedAt.Sub(start)
	if runErr != nil {
		sum.Error = runErr.Error()
		if sum.Status != StatusRefused && sum.Status != StatusUnknown {
			sum.Status = StatusFailed
		}
	}
	// The record below is the last DB time; count it in.
	t0 := time.Now()
	q := s.n.Dialect.Quote
	sum.LDAPMillis = max(ldapTime, 0).Milliseconds()
	sum.DBMillis = time.Duration(s.dbTime.Load()).Milliseconds()
	sum.TotalMillis = total.Milliseconds()
	if total > 0 {
		sum.EntriesPerSecond = float64(int64(float64(sum.Entries)/total.Seconds()*10)) / 10
	}
	body, _ := json.Marshal(sum)
	// Record even when the run's context was cancelled.
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	_, err := store.Exec(rctx, s.db, "UPDATE "+s.n.SyncRuns+" SET "+q("kind")+" = ?, "+q("status")+" = ?, "+q("finished_at")+" = ?, "+q("entries")+" = ?, "+
		q("summary")+" = ?, "+q("error")+" = ? WHERE "+q("id")+" = ?",
		sum.Mode, sum.Status, sum.FinishedAt, sum.Entries, string(body), nullString(sum.Error), sum.RunID)
	if err != nil {
		s.log.Error("could not record the sync run", "run_id", sum.RunID, "err", err)
	}
	if !sum.DryRun {
		s.auditRun(rctx, sum)
	}
	_ = t0
	attrs := []any{"run_id", sum.RunID, "status", sum.Status, "mode", sum.Mode, "dry_run", sum.DryRun, "trigger", sum.Trigger,
		"server", sum.Server, "mechanism", sum.Mechanism, "entries", sum.Entries, "changes", sum.Changes.String(), "applied", sum.Applied,
		"linked", sum.Linked, "unmatched", sum.Unmatched, "ambiguous", sum.Ambiguous, "invalid", sum.Invalid,
		"ldap_ms", sum.LDAPMillis, "db_ms", sum.DBMillis, "total_ms", sum.TotalMillis, "entries_per_s", sum.EntriesPerSecond}
	if sum.FullReason != "" {
		attrs = append(attrs, "full_reason", sum.FullReason)
	}
	switch sum.Status {
	case StatusSucceeded:
		s.log.Info("directory sync finished", attrs...)
	case StatusRefused:
		s.log.Warn("directory sync refused", append(attrs, "err", sum.Error)...)
	case StatusUnknown:
		s.log.Warn("directory sync of unknown outcome: its last COMMIT was never answered", append(attrs, "err", sum.Error)...)
	default:
		s.log.Error("directory sync failed", append(attrs, "err", sum.Error)...)
	}
}

// EventSyncRun is the audit event of a sync run that could write (dry runs
// change nothing and are not audited).
const EventSyncRun = "sync.run"

// auditRun records the run's summary in the audit trail. A failure to audit
// is logged and does not fail the run.
func (s *Syncer) auditRun(ctx context.Context, sum *Summary) {
	detail := map[string]any{
		"run_id": sum.RunID, "mode": sum.Mode, "dry_run": sum.DryRun, "status": sum.Status,
		"changes": sum.Changes, "applied": sum.Applied, "entries": sum.Entries, "invalid": sum.Invalid,
		"linked": sum.Linked, "unmatched": sum.Unmatched, "ambiguous": sum.Ambiguous,
	}
	if sum.Changes == nil {
		detail["changes"] = Counts{}
	}
	if sum.FullReason != "" {
		detail["full_reason"] = sum.FullReason
	}
	if sum.ProvisionFailed > 0 {
		detail["provision_failed"] = sum.ProvisionFailed
	}
	if sum.Server != "" {
		detail["server"] = sum.Server
	}
	if sum.Error != "" {
		detail["error"] = sum.Error
	}
	err := audit.Record(ctx, s.db, schema.NamesFor(s.cfg), audit.Event{
		At: sum.FinishedAt, Event: EventSyncRun, Success: sum.Status == StatusSucceeded,
		Actor: sum.Trigger, Target: "directory", Detail: audit.Detail(detail),
	})
	if err != nil {
		s.log.Error("could not write the sync run to the audit trail", "run_id", sum.RunID, "err", err)
	}
}

// loadCursor reads the delta cursor; nil when there is none yet.
func (s *Syncer) loadCursor(ctx context.Context) (*directory.Cursor, error) {
	var raw string
	t0 := time.Now()
	err := store.Get(ctx, s.db, &raw, "SELECT "+s.n.Dialect.Quote("cursor")+" FROM "+s.n.SyncState+" WHERE "+s.n.Dialect.Quote("name")+" = ?", cursorName)
	s.addDBTime(time.Since(t0))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read the delta cursor from %s: %w", s.n.SyncState, err)
	}
	var c directory.Cursor
	if err := json.Unmarshal([]byte(raw), &c); err != nil {
		s.log.Warn("the stored delta cursor is unreadable: this run reads everything", "err", err)
		return nil, nil
	}
	return &c, nil
}
