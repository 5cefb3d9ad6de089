package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/passbridge/passbridge/agent/metrics"
	"github.com/passbridge/passbridge/dirsync"
)

// Sync kinds, as recorded in sync_runs.kind and in metric labels.
const (
	KindFull  = dirsync.ModeFull
	KindDelta = dirsync.ModeDelta
)

// Triggers: who asked for a run (sync_runs.trigger).
const (
	TriggerSchedule = "schedule"
	TriggerStartup  = "startup"
	TriggerRetry    = "retry"
	TriggerAPI      = "api"
	TriggerCLI      = "cli"
)

// errLock wraps a failure to ask the database for the sync lock.
type lockError struct{ err error }

func (e *lockError) Error() string { return "take the sync lock: " + e.err.Error() }
func (e *lockError) Unwrap() error { return e.err }

// ErrClosed means the daemon is shutting down and starts no new sync.
var ErrClosed = errors.New("shutting down: no new sync is started")

// errAlreadyDone means the tick (or retry) this request belongs to was
// already served by some replica: nothing to do.
var errAlreadyDone = errors.New("already done")

// SyncRequest is one request for a sync run.
type SyncRequest struct {
	Full    bool   `json:"full"`
	DryRun  bool   `json:"dry_run"`
	Trigger string `json:"-"`
	// Tick is the schedule instant a scheduled run belongs to; zero for a
	// run asked for by a person. Replicas use it to run each tick once.
	Tick time.Time `json:"-"`
	// DoneIf, for startup catch-up runs and retries, is the instant after
	// which a successful run of the kind makes this request unnecessary.
	DoneIf time.Time `json:"-"`
	// locked: the Runner holds dirsync.LockName for this run, so the
	// engine does not take it again.
	locked bool
}

// Kind names the kind of sync the request asks for.
func (r SyncRequest) Kind() string {
	if r.Full {
		return KindFull
	}
	return KindDelta
}

// Outcome is what the daemon needs to know about a finished run, whatever
// engine ran it.
type Outcome struct {
	// Summary is returned to API callers as is (JSON).
	Summary any
	// Status is succeeded, failed or refused (the deletion guard stopped
	// the run before it wrote anything).
	Status string
	// Cause says which side failed, for the error metrics: "ldap",
	// "database" or "" when unknown.
	Cause string
	// Logged is set when the engine logged the run's closing line (its
	// summary): the Runner then writes none of its own.
	Logged bool
}

// Syncer runs one directory sync. The dirsync package provides the real
// one; it must record the run in sync_runs itself, close the runs a dead
// process left running (under the lock), and log the run's one closing
// line.
type Syncer interface {
	Sync(ctx context.Context, req SyncRequest) (Outcome, error)
}

// Locker hands out the cross-replica lock.
type Locker interface {
	// TryLock takes the named lock without waiting. ok is false when
	// another session holds it. release must be called once.
	TryLock(ctx context.Context, name string) (release func(), ok bool, err error)
}

// runLedger is what the runner reads from the run history to decide
// whether a tick is still to be served.
type runLedger interface {
	// RunSince reports whether a non-dry run of one of kinds started at or
	// after since (succeededOnly: that also succeeded).
	RunSince(ctx context.Context, since time.Time, succeededOnly bool, kinds ...string) (bool, error)
}

// Runner is the one gate every sync of the daemon goes through: at most one
// run per process, one writing run across replicas (dirsync.LockName, the
// lock `passbridge sync` takes too), each schedule tick served once, and
// metrics for every outcome. The admin API, the scheduler and the console
// share it; `passbridge sync` runs the engine directly, which takes the same
// lock and applies the same abandoned-run rule itself.
type Runner struct {
	log     *slog.Logger
	metrics *metrics.Metrics
	locker  Locker
	ledger  runLedger
	node    string

	syncMu sync.RWMutex
	syncer Syncer

	mu      sync.Mutex
	closed  bool
	running *dirsync.Running
	done    chan struct{} // closed when the running sync returns
}

// newRunner builds the gate. ledger may be nil (no tick de-duplication, for
// a single process without history); locker may be nil (SQLite: one node).
func newRunner(s Syncer, locker Locker, ledger runLedger, node string, m *metrics.Metrics, log *slog.Logger) *Runner {
	return &Runner{syncer: s, locker: locker, ledger: ledger, node: node, metrics: m, log: log}
}

// SetSyncer swaps the engine (configuration reload). A run in flight keeps
// the engine it started with.
func (r *Runner) SetSyncer(s Syncer) {
	r.syncMu.Lock()
	defer r.syncMu.Unlock()
	r.syncer = s
}

func (r *Runner) currentSyncer() Syncer {
	r.syncMu.RLock()
	defer r.syncMu.RUnlock()
	return r.syncer
}

// Current returns the sync in flight in this process, or nil.
func (r *Runner) Current() *dirsync.Running {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.running == nil {
		return nil
	}
	c := *r.running
	return &c
}

// Close makes every later Run fail with ErrClosed; a run in flight goes on.
func (r *Runner) Close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closed = true
}

// Wait blocks until no sync runs in this process or ctx ends.
func (r *Runner) Wait(ctx context.Context) error {
	r.mu.Lock()
	done := r.done
	r.mu.Unlock()
	if done == nil {
		return nil
	}
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Run runs one sync if none is running here or on another replica, and
// returns its outcome. ErrBusy means nothing was started. A failed run
// returns its outcome (with the run recorded by the syncer) and an error.
func (r *Runner) Run(ctx context.Context, req SyncRequest) (Outcome, error) {
	kind := req.Kind()
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return Outcome{}, ErrClosed
	}
	if r.running != nil {
		cur := *r.running
		r.mu.Unlock()
		return Outcome{}, &dirsync.BusyError{Running: &cur}
	}
	r.running = &dirsync.Running{Kind: kind, DryRun: req.DryRun, Trigger: req.Trigger, Started: time.Now().UTC()}
	r.done = make(chan struct{})
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		close(r.done)
		r.running, r.done = nil, nil
		r.mu.Unlock()
	}()

	// A writing run holds the one sync lock from before the history is
	// read (so that each tick is served once) to its end; the engine is
	// told, and does not take it again. Dry runs write only their own
	// history row and take no lock, wherever they start.
	if r.locker != nil && !req.DryRun {
		release, ok, err := r.locker.TryLock(ctx, dirsync.LockName)
		if err != nil {
			r.metrics.DBError("lock")
			return Outcome{}, &lockError{err}
		}
		if !ok {
			return Outcome{}, &dirsync.BusyError{OtherReplica: true}
		}
		defer release()
		req.locked = true
	}

	if r.ledger != nil {
		if done, err := r.servedAlready(ctx, req); err != nil {
			r.metrics.DBError("query")
			return Outcome{}, fmt.Errorf("read sync history: %w", err)
		} else if done {
			return Outcome{}, errAlreadyDone
		}
	}

	r.metrics.SyncRunning(true)
	defer r.metrics.SyncRunning(false)
	start := time.Now()
	r.log.Info("sync starting", "kind", kind, "dry_run", req.DryRun, "trigger", req.Trigger)
	out, err := r.currentSyncer().Sync(ctx, req)
	took := time.Since(start)

	result := out.Status
	switch {
	case err != nil && ctx.Err() != nil:
		result = metrics.ResultAborted
	case err != nil && result == "":
		result = metrics.ResultFailed
	case result == "":
		result = metrics.ResultSucceeded
	}
	if !req.DryRun {
		r.metrics.SyncRun(kind, result, took)
	}
	if result == metrics.ResultFailed {
		switch out.Cause {
		case "ldap":
			r.metrics.LDAPError("sync")
		case "database":
			r.metrics.DBError("sync")
		}
	}
	// The engine logs the run's one closing line (its summary); only a
	// run that failed before the engine could record it is logged here.
	if err != nil && !out.Logged {
		r.log.Error("sync failed", "kind", kind, "dry_run", req.DryRun, "trigger", req.Trigger, "result", result, "took", took.Round(time.Millisecond), "err", err)
	}
	return out, err
}

// servedAlready tells whether another replica (or this one, earlier) has
// already done what req is for.
func (r *Runner) servedAlready(ctx context.Context, req SyncRequest) (bool, error) {
	// A full run serves a delta request too: it reads everything.
	kinds := []string{KindFull}
	if !req.Full {
		kinds = append(kinds, KindDelta)
	}
	switch {
	case !req.Tick.IsZero():
		// Clocks of replicas differ by a little: a run started a moment
		// before this replica's idea of the tick instant belongs to it.
		return r.ledger.RunSince(ctx, req.Tick.Add(-tickSkew), false, kinds...)
	case !req.DoneIf.IsZero():
		return r.ledger.RunSince(ctx, req.DoneIf, true, kinds...)
	}
	return false, nil
}

// tickSkew is the clock difference between replicas that tick
// de-duplication tolerates. Schedules shorter than twice this would merge
// ticks, so @every accepts nothing under a second and this stays small.
const tickSkew = 250 * time.Millisecond
