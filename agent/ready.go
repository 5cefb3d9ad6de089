package agent

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/passbridge/passbridge/dirsync"
)

// Check is one line of the /readyz report.
type Check struct {
	OK     bool   `json:"ok"`
	Error  string `json:"error,omitempty"`
	Detail string `json:"detail,omitempty"`
}

// Readiness is the /readyz body.
type Readiness struct {
	Status string           `json:"status"` // ready | unready
	Checks map[string]Check `json:"checks"`
	// Running is the sync in flight in this process, if any.
	Running *dirsync.Running `json:"sync_running,omitempty"`
}

// probeCache runs the directory probe at most once per ttl, and once at a
// time however many /readyz calls arrive together: a load balancer probing
// every replica every few seconds must not turn into a stream of binds
// against the domain controllers.
type probeCache struct {
	ttl time.Duration

	mu      sync.Mutex // held while probing: callers share one probe
	at      time.Time
	err     error
	checked bool
}

// get returns the cached result or probes afresh.
func (p *probeCache) get(ctx context.Context, probe func(context.Context) error) (time.Time, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.checked && time.Since(p.at) < p.ttl {
		return p.at, p.err
	}
	p.err = probe(ctx)
	p.at = time.Now()
	p.checked = true
	return p.at, p.err
}

// record stores evidence from a sync run: a successful run proves the
// directory answered, so no extra probe is needed until the ttl expires.
func (p *probeCache) record(err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.err, p.at, p.checked = err, time.Now(), true
}

// reset forgets the cached result.
func (p *probeCache) reset() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.checked = false
}

// readiness evaluates every check. It never fails itself: a check that
// cannot be evaluated is a failed check with the reason.
func (a *Agent) readiness(ctx context.Context) Readiness {
	cfg := a.config()
	checks := map[string]Check{}
	var mu sync.Mutex
	set := func(name string, c Check) {
		mu.Lock()
		checks[name] = c
		mu.Unlock()
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		ctx, cancel := context.WithTimeout(ctx, readyDBTimeout)
		defer cancel()
		if err := a.db.Ping(ctx); err != nil {
			if errors.Is(err, context.DeadlineExceeded) && a.runner.Current() != nil && cfg.Database.Driver == "sqlite" {
				// SQLite has one connection, and the running sync has it.
				set("database", Check{OK: true, Detail: "busy: the running sync holds the SQLite connection"})
				return
			}
			a.metrics.DBError("probe")
			set("database", Check{Error: "database unreachable: " + err.Error()})
			return
		}
		set("database", Check{OK: true})
	}()
	go func() {
		defer wg.Done()
		if a.probe == nil {
			set("directory", Check{OK: true, Detail: "no directory probe configured"})
			return
		}
		timeout := cfg.Directory.ConnectTimeout.D() + readyDBTimeout
		ctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		at, err := a.probes.get(ctx, func(ctx context.Context) error {
			err := a.probe(ctx, cfg)
			if err != nil {
				a.metrics.LDAPError("probe")
			}
			return err
		})
		if err != nil {
			set("directory", Check{Error: "directory unreachable: " + err.Error(), Detail: "checked " + at.UTC().Format(time.RFC3339)})
			return
		}
		set("directory", Check{OK: true, Detail: "checked " + at.UTC().Format(time.RFC3339)})
	}()
	wg.Wait()

	set("sync", a.syncFreshness(ctx, cfg.Admin.ReadyMaxAge.D(), checks["database"].OK))

	r := Readiness{Status: "ready", Checks: checks, Running: a.runner.Current()}
	for _, c := range checks {
		if !c.OK {
			r.Status = "unready"
		}
	}
	return r
}

const readyDBTimeout = 3 * time.Second

// syncFreshness checks that some replica finished a successful sync within
// maxAge. It reads the shared history, so replicas that lost the election
// are as ready as the one that ran the sync.
func (a *Agent) syncFreshness(ctx context.Context, maxAge time.Duration, dbOK bool) Check {
	if maxAge <= 0 {
		return Check{OK: true, Detail: "admin.ready_max_sync_age is 0: sync age not checked"}
	}
	if !a.scheduled() {
		return Check{OK: true, Detail: "no sync schedule configured: sync age not checked"}
	}
	if !dbOK {
		return Check{Error: "sync history unreadable: the database is unreachable"}
	}
	ctx, cancel := context.WithTimeout(ctx, readyDBTimeout)
	defer cancel()
	last, latest, err := a.db.LastRuns(ctx)
	if err != nil {
		a.metrics.DBError("query")
		return Check{Error: "cannot read sync history: " + err.Error()}
	}
	var newest time.Time
	for _, t := range last {
		if t.After(newest) {
			newest = t
		}
	}
	detail := ""
	if latest != nil && latest.Status != "succeeded" && latest.Status != "running" {
		detail = fmt.Sprintf("latest run #%d %s", latest.ID, latest.Status)
		if latest.Error != "" {
			detail += ": " + latest.Error
		}
	}
	if newest.IsZero() {
		msg := "no successful sync yet"
		if cur := a.runner.Current(); cur != nil {
			msg += " (a " + cur.Kind + " sync is running)"
		}
		return Check{Error: msg, Detail: detail}
	}
	age := time.Since(newest)
	if age > maxAge {
		return Check{Error: fmt.Sprintf("last successful sync finished %s ago, over admin.ready_max_sync_age (%s)", age.Round(time.Second), maxAge), Detail: detail}
	}
	if detail == "" {
		detail = fmt.Sprintf("last successful sync finished %s ago", age.Round(time.Second))
	}
	return Check{OK: true, Detail: detail}
}

// readyz answers 200 when ready and 503 with the failing checks otherwise.
func (a *Agent) readyz(c echo.Context) error {
	r := a.readiness(c.Request().Context())
	code := http.StatusOK
	if r.Status != "ready" {
		code = http.StatusServiceUnavailable
	}
	return c.JSON(code, r)
}

// healthz answers as long as the process is alive and serving.
func (a *Agent) healthz(c echo.Context) error {
	return c.JSON(http.StatusOK, map[string]string{"status": "ok"})
}
