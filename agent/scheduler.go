package agent

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	"github.com/robfig/cron/v3"

	"github.com/passbridge/passbridge/agent/metrics"
	"github.com/passbridge/passbridge/config"
	"github.com/passbridge/passbridge/dirsync"
	"github.com/passbridge/passbridge/schedule"
)

// Retry backoff for failed scheduled runs: base doubling up to max, with
// jitter, until a run succeeds or the next tick of that kind takes over.
const (
	defaultRetryBase = 10 * time.Second
	defaultRetryMax  = 10 * time.Minute
)

// Plan is one configured schedule.
type Plan struct {
	Kind      string `json:"kind"`       // full | delta
	ConfigKey string `json:"config_key"` // schedule.full | schedule.incremental
	Spec      string `json:"spec"`       // "" when this kind is not scheduled
	sched     cron.Schedule
}

// plansFrom parses the configured schedules. Validate has already checked
// them; an error here means a configuration built without Validate.
func plansFrom(s config.Schedule) ([]Plan, error) {
	var plans []Plan
	var errs []error
	for _, p := range []Plan{
		{Kind: KindDelta, ConfigKey: "schedule.incremental", Spec: strings.TrimSpace(s.Incremental)},
		{Kind: KindFull, ConfigKey: "schedule.full", Spec: strings.TrimSpace(s.Full)},
	} {
		if p.Spec != "" {
			sc, err := schedule.Parse(p.Spec)
			if err != nil {
				errs = append(errs, errors.New(p.ConfigKey+": "+err.Error()))
				continue
			}
			p.sched = sc
		}
		plans = append(plans, p)
	}
	return plans, errors.Join(errs...)
}

// scheduler fires the sync schedules through the Runner and retries failed
// scheduled runs with backoff.
type scheduler struct {
	runner *Runner
	log    *slog.Logger
	m      *metrics.Metrics
	// runCtx is the context syncs run under: cancelled only when the
	// shutdown grace is over, not when shutdown starts.
	runCtx context.Context

	retryBase, retryMax time.Duration

	mu      sync.Mutex
	cron    *cron.Cron
	plans   []Plan
	retries map[string]*retry // by kind
	stopped bool
	wg      sync.WaitGroup // jobs and retries in flight
}

type retry struct {
	timer   *time.Timer
	attempt int
	due     time.Time
	since   time.Time // the tick the retries are for
}

func newScheduler(runCtx context.Context, r *Runner, m *metrics.Metrics, log *slog.Logger) *scheduler {
	return &scheduler{runner: r, log: log, m: m, runCtx: runCtx,
		retryBase: defaultRetryBase, retryMax: defaultRetryMax, retries: map[string]*retry{}}
}

// start (re)installs the plans: the old cron stops firing, the new one
// starts. A run in flight is not interrupted.
func (s *scheduler) start(plans []Plan) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return
	}
	if s.cron != nil {
		s.cron.Stop()
	}
	c := cron.New(cron.WithLogger(cronLogger{s.log}), cron.WithChain(cron.Recover(cronLogger{s.log})))
	for _, p := range plans {
		if p.sched == nil {
			continue
		}
		c.Schedule(p.sched, cron.FuncJob(func() { s.fire(p) }))
		s.log.Info("sync scheduled", "kind", p.Kind, "spec", p.Spec, "next", p.sched.Next(time.Now()).Format(time.RFC3339))
	}
	s.cron, s.plans = c, plans
	c.Start()
}

// stop ends firing and pending retries; it does not wait for a run.
func (s *scheduler) stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stopped = true
	if s.cron != nil {
		s.cron.Stop()
	}
	for k, r := range s.retries {
		r.timer.Stop()
		delete(s.retries, k)
	}
}

func (s *scheduler) currentPlans() []Plan {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Plan(nil), s.plans...)
}

// enter registers a job in flight, unless the scheduler has stopped: after
// stop returns no job starts, so shutdown can wait for those that did.
func (s *scheduler) enter() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return false
	}
	s.wg.Add(1)
	return true
}

// fire serves one tick of plan p.
func (s *scheduler) fire(p Plan) {
	if !s.enter() {
		return
	}
	defer s.wg.Done()
	now := time.Now()
	tick := schedule.Prev(p.sched, now)
	if p.Kind == KindDelta && s.fullDueAt(tick) {
		// The full run of the same instant reads everything anyway.
		s.m.SyncSkipped(p.Kind, metrics.SkipFullTick)
		s.log.Debug("delta tick skipped: a full sync is scheduled for the same instant", "tick", tick.Format(time.RFC3339))
		return
	}
	s.cancelRetry(p.Kind) // a new tick supersedes retries of the previous one
	s.run(SyncRequest{Full: p.Kind == KindFull, Trigger: TriggerSchedule, Tick: tick}, tick, 0)
}

func (s *scheduler) fullDueAt(tick time.Time) bool {
	for _, p := range s.currentPlans() {
		// Is tick one of the full schedule's own instants?
		if p.Kind == KindFull && p.sched != nil && p.sched.Next(tick.Add(-time.Nanosecond)).Equal(tick) {
			return true
		}
	}
	return false
}

// run asks the runner for one sync and handles what happened: a skip is
// logged and counted, a failure schedules a retry.
func (s *scheduler) run(req SyncRequest, since time.Time, attempt int) {
	kind := req.Kind()
	out, err := s.runner.Run(s.runCtx, req)
	switch {
	case err == nil:
		return
	case errors.Is(err, errAlreadyDone):
		s.m.SyncSkipped(kind, metrics.SkipReplica)
		s.log.Debug("sync tick already served", "kind", kind, "trigger", req.Trigger)
		return
	case errors.Is(err, dirsync.ErrBusy):
		reason := metrics.SkipBusy
		var be *dirsync.BusyError
		if errors.As(err, &be) && be.OtherReplica {
			reason = metrics.SkipReplica
		}
		s.m.SyncSkipped(kind, reason)
		s.log.Info("sync tick skipped: a sync is already running", "kind", kind, "trigger", req.Trigger, "reason", err.Error())
		return
	case s.runCtx.Err() != nil, errors.Is(err, ErrClosed):
		return // shutting down
	case out.Status == metrics.ResultRefused:
		return // the deletion guard: retrying gives the same answer
	}
	var le *lockError
	if errors.As(err, &le) {
		s.m.SyncSkipped(kind, metrics.SkipLockError)
	}
	s.scheduleRetry(kind, since, attempt+1)
}

func (s *scheduler) scheduleRetry(kind string, since time.Time, attempt int) {
	d := s.retryBase << min(attempt-1, 20)
	if d > s.retryMax || d <= 0 {
		d = s.retryMax
	}
	d = d/2 + rand.N(d/2+1) // jitter: replicas do not retry in lockstep
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return
	}
	if old := s.retries[kind]; old != nil {
		old.timer.Stop()
	}
	r := &retry{attempt: attempt, due: time.Now().Add(d), since: since}
	r.timer = time.AfterFunc(d, func() {
		s.mu.Lock()
		if s.retries[kind] != r || s.stopped {
			s.mu.Unlock()
			return
		}
		delete(s.retries, kind)
		s.wg.Add(1)
		s.mu.Unlock()
		defer s.wg.Done()
		s.m.SyncRetry(kind)
		s.log.Info("retrying failed sync", "kind", kind, "attempt", attempt)
		s.run(SyncRequest{Full: kind == KindFull, Trigger: TriggerRetry, DoneIf: since}, since, attempt)
	})
	s.retries[kind] = r
	s.log.Warn("sync will be retried", "kind", kind, "attempt", attempt, "in", d.Round(time.Second))
}

func (s *scheduler) cancelRetry(kind string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if r := s.retries[kind]; r != nil {
		r.timer.Stop()
		delete(s.retries, kind)
	}
}

// pendingRetry returns when the next retry of kind is due, if any.
func (s *scheduler) pendingRetry(kind string) (time.Time, int, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if r := s.retries[kind]; r != nil {
		return r.due, r.attempt, true
	}
	return time.Time{}, 0, false
}

// cronLogger sends robfig/cron's own messages to slog at debug level (it
// logs every wake-up at info, which is noise for operators).
type cronLogger struct{ log *slog.Logger }

func (l cronLogger) Info(msg string, kv ...any) { l.log.Debug("cron: "+msg, kv...) }
func (l cronLogger) Error(err error, msg string, kv ...any) {
	l.log.Error("cron: "+msg, append(kv, "err", err)...)
}
