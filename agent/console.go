package agent

import (
	"context"
	"time"

	"github.com/passbridge/passbridge/agent/metrics"
)

// TriggerConsole marks runs started from the IT admin console.
const TriggerConsole = "console"

// The IT admin console (package enroll) shows the sync history and the
// schedule and starts syncs: through these methods, the same code paths as
// the admin API and `passbridge sync`.

// SyncNow runs one sync through the Runner and waits for it. The run does
// not depend on ctx (a browser that leaves does not abort it); ctx only
// bounds the wait. The error is ErrBusy when a sync is already running.
func (a *Agent) SyncNow(ctx context.Context, full, dryRun bool) (SyncResponse, error) {
	req := SyncRequest{Full: full, DryRun: dryRun, Trigger: TriggerConsole}
	type result struct {
		out Outcome
		err error
	}
	ch := make(chan result, 1)
	go func() {
		out, err := a.runner.Run(a.runCtx, req)
		ch <- result{out, err}
	}()
	select {
	case res := <-ch:
		body := SyncResponse{Status: res.out.Status, Summary: res.out.Summary}
		if body.Status == "" {
			body.Status = metrics.ResultSucceeded
			if res.err != nil {
				body.Status = metrics.ResultFailed
			}
		}
		if res.err != nil {
			body.Error = res.err.Error()
		}
		return body, res.err
	case <-ctx.Done():
		return SyncResponse{Status: "running"}, ctx.Err()
	}
}

// RecentRuns is the newest limit runs of the history, newest first.
func (a *Agent) RecentRuns(ctx context.Context, limit int) ([]RunRecord, error) {
	return a.db.ListRuns(ctx, 0, limit)
}

// ScheduleNow is the schedules with their next run times, as GET
// /api/v1/schedule shows them.
func (a *Agent) ScheduleNow() Schedule {
	now := time.Now()
	out := Schedule{Now: now.UTC(), Node: a.node, Running: a.runner.Current(), Schedules: []ScheduleEntry{}}
	for _, p := range a.sched.currentPlans() {
		e := ScheduleEntry{Kind: p.Kind, ConfigKey: p.ConfigKey, Spec: p.Spec, Enabled: p.sched != nil}
		if p.sched != nil {
			n := p.sched.Next(now)
			f := p.sched.Next(n)
			e.Next, e.Following = &n, &f
		}
		if due, attempt, ok := a.sched.pendingRetry(p.Kind); ok {
			e.RetryAt, e.RetryAttempt = &due, attempt
		}
		out.Schedules = append(out.Schedules, e)
	}
	return out
}
