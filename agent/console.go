package agent

import (
	"context"
	"time"

	"github.com/passbridge/passbridge/agent/metrics"
	"github.com/passbridge/passbridge/dirsync"
)

// TriggerConsole marks runs started from the IT admin console.
const TriggerConsole = "console"

// The IT admin console (package enroll) shows the sync history and the
// schedule and starts syncs: through these methods, the same code paths as
// the admin API and `passbridge sync`.

// SyncNow runs one sync through the Runner and waits for it. The run does
// not depend on ctx (a browser that leaves does not abort it); ctx only
// bounds the wait. The error is dirsync.ErrBusy when a sync is already running.
func (a *Agent) SyncNow(ctx context.Context, full, dryRun bool) (dirsync.SyncResponse, error) {
	res, waited := a.runDetached(ctx, SyncRequest{Full: full, DryRun: dryRun, Trigger: TriggerConsole})
	if !waited {
		return dirsync.SyncResponse{Status: "running"}, ctx.Err()
	}
	return res.response(), res.err
}

// runResult is how a run through the Runner ended.
type runResult struct {
	out Outcome
	err error
}

// runDetached runs one sync through the Runner on the agent's own context,
// so that a caller who leaves does not abort it half-way, and waits for it
// while ctx lasts. waited is false when ctx ended first: the run goes on
// and lands in the history.
func (a *Agent) runDetached(ctx context.Context, req SyncRequest) (res runResult, waited bool) {
	ch := make(chan runResult, 1)
	go func() {
		out, err := a.runner.Run(a.runCtx, req)
		ch <- runResult{out, err}
	}()
	select {
	case res = <-ch:
		return res, true
	case <-ctx.Done():
		return runResult{}, false
	}
}

// response is the run as the admin API and the console report it: the
// Outcome's status, else succeeded or failed by the error.
func (r runResult) response() dirsync.SyncResponse {
	body := dirsync.SyncResponse{Status: r.out.Status, Summary: r.out.Summary}
	if body.Status == "" {
		body.Status = metrics.ResultSucceeded
		if r.err != nil {
			body.Status = metrics.ResultFailed
		}
	}
	if r.err != nil {
		body.Error = r.err.Error()
	}
	return body
}

// RecentRuns is the newest limit runs of the history, newest first.
func (a *Agent) RecentRuns(ctx context.Context, limit int) ([]dirsync.RunRecord, error) {
	return a.db.ListRuns(ctx, 0, limit)
}

// ScheduleNow is the schedules with their next run times, as GET
// /api/v1/schedule shows them.
func (a *Agent) ScheduleNow() dirsync.Schedule {
	now := time.Now()
	out := dirsync.Schedule{Now: now.UTC(), Node: a.node, Running: a.runner.Current(), Schedules: []dirsync.ScheduleEntry{}}
	for _, p := range a.sched.currentPlans() {
		e := dirsync.ScheduleEntry{Kind: p.Kind, ConfigKey: p.ConfigKey, Spec: p.Spec, Enabled: p.sched != nil}
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
