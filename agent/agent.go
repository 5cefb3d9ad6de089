// Package agent is the passbridge daemon: it serves the HTTP surfaces
// (portal, health, readiness, metrics, admin API) and runs the sync
// schedules. One process or many: replicas are stateless, share the
// database, and elect one sync runner per tick with a database lock.
package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"reflect"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/passbridge/passbridge/admintoken"
	"github.com/passbridge/passbridge/agent/metrics"
	"github.com/passbridge/passbridge/audit"
	"github.com/passbridge/passbridge/config"
	"github.com/passbridge/passbridge/dirsync"
	"github.com/passbridge/passbridge/ratelimit"
	"github.com/passbridge/passbridge/store"
)

// Database is what the daemon needs from the application database:
// reachability, the sync lock and the run history.
type Database interface {
	Locker
	runLedger
	// Ping checks that the database answers.
	Ping(ctx context.Context) error
	// ListRuns returns up to limit runs older than run id before (0: the
	// newest), newest first.
	ListRuns(ctx context.Context, before int64, limit int) ([]dirsync.RunRecord, error)
	// LastRuns returns the finish time of the newest successful non-dry
	// run per kind, and the newest non-dry run whatever its status.
	LastRuns(ctx context.Context) (map[string]time.Time, *dirsync.RunRecord, error)
	// Snapshot reads the identity counts and last successes for /metrics.
	Snapshot(ctx context.Context) (metrics.Snapshot, error)
	// RateLimits are the limits every replica shares (wrong admin tokens
	// per address).
	RateLimits() *ratelimit.Limiter
	// Audit appends an event to the audit trail.
	Audit(ctx context.Context, e audit.Event) error
}

// Options are the daemon's dependencies.
type Options struct {
	// DB is the application database (see NewDatabase).
	DB Database
	// NewSyncer builds the sync engine for a configuration; it is called
	// again on reload, so directory settings take effect without a restart.
	NewSyncer func(cfg *config.Config) (Syncer, error)
	// Probe checks that the directory answers (connect and bind); /readyz
	// calls it at most once per ProbeTTL. Nil: no directory check.
	Probe func(ctx context.Context, cfg *config.Config) error
	// Mount adds the portal's routes to the portal listener's router.
	Mount func(e *echo.Echo)
	// PortalErrors renders errors on portal paths (HTML pages for people);
	// the daemon's own endpoints always answer JSON.
	PortalErrors echo.HTTPErrorHandler
	// Metrics is the registry; nil creates one.
	Metrics *metrics.Metrics
	// Node names this replica in logs and the run history (default
	// hostname:pid).
	Node string
	// ProbeTTL is how long a directory probe result is reused (default 5s).
	ProbeTTL time.Duration
	// RetryBase is the first retry delay after a failed scheduled run
	// (default 10s, doubling up to 10m).
	RetryBase time.Duration
	// NoCatchUp turns off the sync at start that runs when no successful
	// sync is newer than admin.ready_max_sync_age (tests of the schedule).
	NoCatchUp bool
}

// Agent is one running passbridge daemon.
type Agent struct {
	log     *slog.Logger
	metrics *metrics.Metrics
	db      Database
	probe   func(ctx context.Context, cfg *config.Config) error
	opts    Options
	node    string

	cfgMu sync.RWMutex
	cfg   *config.Config

	tokens *admintoken.Guard

	runner *Runner
	sched  *scheduler
	probes *probeCache

	// runCtx is what syncs run under; cancelled when the shutdown grace
	// is over, so a run in flight can finish first.
	runCtx    context.Context
	cancelRun context.CancelFunc

	portal *echo.Echo
	admin  *echo.Echo // nil: everything on the portal listener
}

// New builds the daemon. It does not start anything: Run does.
func New(cfg *config.Config, log *slog.Logger, opts Options) (*Agent, error) {
	if opts.DB == nil {
		return nil, errors.New("agent: no database")
	}
	if opts.NewSyncer == nil {
		return nil, errors.New("agent: no sync engine")
	}
	plans, err := plansFrom(cfg.Schedule)
	if err != nil {
		return nil, err
	}
	syncer, err := opts.NewSyncer(cfg)
	if err != nil {
		return nil, fmt.Errorf("sync engine: %w", err)
	}
	if opts.Metrics == nil {
		opts.Metrics = metrics.New()
	}
	if opts.Node == "" {
		host, _ := os.Hostname()
		opts.Node = host + ":" + strconv.Itoa(os.Getpid())
	}
	if opts.ProbeTTL <= 0 {
		opts.ProbeTTL = 5 * time.Second
	}
	a := &Agent{
		log: log, metrics: opts.Metrics, db: opts.DB, probe: opts.Probe, opts: opts,
		node: opts.Node, cfg: cfg, probes: &probeCache{ttl: opts.ProbeTTL},
	}
	a.tokens = admintoken.New(a.tokenSettings, opts.DB.RateLimits(), opts.DB.Audit, log)
	a.runCtx, a.cancelRun = context.WithCancel(context.Background())
	a.runner = newRunner(&observedSyncer{a: a, s: syncer}, opts.DB, opts.DB, a.node, a.metrics, log)
	a.sched = newScheduler(a.runCtx, a.runner, a.metrics, log)
	if opts.RetryBase > 0 {
		a.sched.retryBase = opts.RetryBase
	}
	a.sched.plans = plans
	a.metrics.SetSnapshot(opts.DB.Snapshot, log)

	var portalErrors func() echo.HTTPErrorHandler
	if opts.PortalErrors != nil {
		portalErrors = func() echo.HTTPErrorHandler { return opts.PortalErrors }
	}
	a.portal = newEcho(log, a.metrics, portalErrors)
	ops := a.portal
	if cfg.Admin.Listen != "" {
		// The admin API and /metrics stay off the employee-facing
		// listener; health and readiness are on both, for the load
		// balancer and for the orchestrator.
		a.admin = newEcho(log, a.metrics, nil)
		ops = a.admin
		a.portal.GET("/healthz", a.healthz)
		a.portal.GET("/readyz", a.readyz)
	}
	ops.GET("/healthz", a.healthz)
	ops.GET("/readyz", a.readyz)
	ops.GET("/metrics", echo.WrapHandler(a.metrics.Handler()))
	a.registerAdmin(ops)
	if opts.Mount != nil {
		opts.Mount(a.portal)
	}
	return a, nil
}

// Runner is the gate every sync goes through (for `passbridge sync` and
// tests).
func (a *Agent) Runner() *Runner { return a.runner }

// Metrics is the daemon's registry.
func (a *Agent) Metrics() *metrics.Metrics { return a.metrics }

// Handler is the portal listener's handler (tests serve it directly).
func (a *Agent) Handler() http.Handler { return a.portal }

// AdminHandler is the admin listener's handler, nil without admin.listen.
func (a *Agent) AdminHandler() http.Handler {
	if a.admin == nil {
		return nil
	}
	return a.admin
}

func (a *Agent) config() *config.Config {
	a.cfgMu.RLock()
	defer a.cfgMu.RUnlock()
	return a.cfg
}

// scheduled reports whether any sync schedule is on.
func (a *Agent) scheduled() bool {
	for _, p := range a.sched.currentPlans() {
		if p.sched != nil {
			return true
		}
	}
	return false
}

// Addrs are the addresses the daemon listens on once started.
type Addrs struct {
	Portal net.Addr
	Admin  net.Addr // nil without admin.listen
}

// Run serves and runs the schedules until ctx is cancelled, then shuts
// down: listeners close at once, a sync in flight gets admin.shutdown_grace
// to finish before it is cancelled (the directory applies batches in
// transactions, so a cancelled run leaves nothing half-written). ready, if
// not nil, receives the bound addresses once the listeners are open.
func (a *Agent) Run(ctx context.Context, ready func(Addrs)) error {
	cfg := a.config()
	type server struct {
		name string
		srv  *http.Server
		ln   net.Listener
	}
	var servers []server
	pln, err := net.Listen("tcp", cfg.Portal.Listen)
	if err != nil {
		return fmt.Errorf("portal listen %s: %w", cfg.Portal.Listen, err)
	}
	servers = append(servers, server{"portal", newServer(a.portal), pln})
	addrs := Addrs{Portal: pln.Addr()}
	if a.admin != nil {
		aln, err := net.Listen("tcp", cfg.Admin.Listen)
		if err != nil {
			pln.Close()
			return fmt.Errorf("admin listen %s: %w", cfg.Admin.Listen, err)
		}
		servers = append(servers, server{"admin", newServer(a.admin), aln})
		addrs.Admin = aln.Addr()
	}

	errc := make(chan error, len(servers))
	for _, s := range servers {
		go func() {
			var err error
			if s.name == "portal" && cfg.Portal.TLSCertFile != "" {
				err = s.srv.ServeTLS(s.ln, cfg.Portal.TLSCertFile, cfg.Portal.TLSKeyFile)
			} else {
				err = s.srv.Serve(s.ln)
			}
			if err != nil && !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("%s listener: %w", s.name, err)
				return
			}
			errc <- nil
		}()
		a.log.Info(s.name+" listening", "addr", s.ln.Addr().String())
	}
	if ready != nil {
		ready(addrs)
	}

	a.sched.start(a.sched.currentPlans())
	if !a.opts.NoCatchUp {
		go a.catchUp()
	}

	var serveErr error
	select {
	case serveErr = <-errc:
		// A listener failed: shut the rest down and report it.
	case <-ctx.Done():
	}

	grace := cfg.Admin.ShutdownGrace.D()
	a.log.Info("shutting down", "grace", grace)
	a.sched.stop()
	a.runner.Close()
	deadline, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()

	var wg sync.WaitGroup
	for _, s := range servers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.srv.Shutdown(deadline); err != nil {
				a.log.Warn(s.name+" listener did not drain in time; closing connections", "err", err)
				s.srv.Close()
			}
		}()
	}
	if cur := a.runner.Current(); cur != nil {
		a.log.Info("waiting for the running sync to finish", "kind", cur.Kind, "grace", grace)
	}
	if err := a.runner.Wait(deadline); err != nil {
		a.log.Warn("sync still running at the end of the shutdown grace: cancelling it (its open batch is rolled back)")
	}
	a.cancelRun()
	// The cancelled run returns as soon as its transaction has rolled
	// back; give it a bounded moment, never forever.
	abortCtx, abortCancel := context.WithTimeout(context.Background(), abortWait)
	defer abortCancel()
	if err := a.runner.Wait(abortCtx); err != nil {
		a.log.Error("sync did not stop after cancel; exiting anyway", "waited", abortWait)
	}
	a.sched.wg.Wait()
	wg.Wait()
	for range servers {
		if err := <-errc; err != nil && serveErr == nil {
			serveErr = err
		}
	}
	if serveErr != nil {
		return serveErr
	}
	a.log.Info("stopped")
	return nil
}

// abortWait bounds how long shutdown waits for a cancelled sync to return.
const abortWait = 15 * time.Second

// catchUp runs one sync at start when the history has no successful run
// newer than admin.ready_max_sync_age (or none at all), so that a fresh
// deployment or a replica back from a long outage is not stale until the
// next tick. Replicas starting together elect one runner like any tick.
func (a *Agent) catchUp() {
	cfg := a.config()
	maxAge := cfg.Admin.ReadyMaxAge.D()
	if !a.scheduled() || maxAge <= 0 {
		return
	}
	ctx, cancel := context.WithTimeout(a.runCtx, readyDBTimeout)
	last, _, err := a.db.LastRuns(ctx)
	cancel()
	if err != nil {
		a.metrics.DBError("query")
		a.log.Warn("cannot read the sync history at start; the schedule will sync at its next tick", "err", err)
		return
	}
	since := time.Now().Add(-maxAge)
	newest := last[KindFull]
	if d := last[KindDelta]; d.After(newest) {
		newest = d
	}
	if newest.After(since) {
		return
	}
	// Without any successful full run, a delta has no cursor to start
	// from: begin with a full one.
	req := SyncRequest{Full: last[KindFull].IsZero(), Trigger: TriggerStartup, DoneIf: since}
	a.log.Info("no recent successful sync: syncing now", "kind", req.Kind(), "last_success", newest)
	if !a.sched.enter() {
		return
	}
	defer a.sched.wg.Done()
	a.sched.run(req, since, 0)
}

// Reload applies a new configuration: schedules, directory settings, the
// admin token and readiness limits take effect at once. Settings that need
// new listeners or a new database connection are kept and reported. On
// error nothing changes.
func (a *Agent) Reload(cfg *config.Config) error {
	old := a.config()
	plans, err := plansFrom(cfg.Schedule)
	if err != nil {
		return fmt.Errorf("reload: %w", err)
	}
	syncer, err := a.opts.NewSyncer(cfg)
	if err != nil {
		return fmt.Errorf("reload: sync engine: %w", err)
	}
	for _, k := range restartOnly(old, cfg) {
		a.log.Warn("reload: this setting changes only at restart; keeping the running value", "key", k)
	}
	a.cfgMu.Lock()
	next := *cfg
	next.Database = old.Database
	next.Portal = old.Portal
	next.Admin.Listen = old.Admin.Listen
	a.cfg = &next
	a.cfgMu.Unlock()
	a.runner.SetSyncer(&observedSyncer{a: a, s: syncer})
	a.probes.reset() // the old directory's probe result says nothing of the new one
	a.sched.start(plans)
	a.log.Info("configuration reloaded", "source", cfg.Source)
	return nil
}

// restartOnly lists the keys that differ between two configurations but
// cannot change while running.
func restartOnly(old, cur *config.Config) []string {
	var keys []string
	if !reflect.DeepEqual(old.Database, cur.Database) {
		keys = append(keys, "database")
	}
	if !reflect.DeepEqual(old.Portal, cur.Portal) {
		keys = append(keys, "portal")
	}
	if old.Admin.Listen != cur.Admin.Listen {
		keys = append(keys, "admin.listen")
	}
	return keys
}

// observedSyncer feeds each run's outcome to the readiness cache: a run that
// reached the directory proves it up, one that failed on LDAP proves it down.
type observedSyncer struct {
	a *Agent
	s Syncer
}

func (o *observedSyncer) Sync(ctx context.Context, req SyncRequest) (Outcome, error) {
	out, err := o.s.Sync(ctx, req)
	switch {
	case err == nil:
		o.a.probes.record(nil)
	case out.Cause == "ldap" && ctx.Err() == nil:
		o.a.probes.record(err)
	}
	return out, err
}

// newServer sets the timeouts every listener needs so that a slow or idle
// client cannot hold connections open forever. POST /api/v1/sync lifts its
// own write deadline: it answers when the sync is done.
func newServer(h http.Handler) *http.Server {
	t := serverLimits
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: t.ReadHeader,
		ReadTimeout:       t.Read,
		WriteTimeout:      t.Write,
		IdleTimeout:       t.Idle,
		MaxHeaderBytes:    t.MaxHeaderBytes,
	}
}

// serverLimits are every listener's limits; a variable so that the
// slow-client tests need not wait ten seconds per connection.
var serverLimits = struct {
	ReadHeader, Read, Write, Idle time.Duration
	MaxHeaderBytes                int
}{ReadHeader: 10 * time.Second, Read: 30 * time.Second, Write: 60 * time.Second, Idle: 120 * time.Second, MaxHeaderBytes: 64 << 10}

// NewDaemon builds the daemon of a real deployment on the application
// database: the directory engine (the same code path as `passbridge sync`)
// and the directory probe, unless opts names others.
func NewDaemon(cfg *config.Config, db *store.DB, log *slog.Logger, opts Options) (*Agent, error) {
	if opts.DB == nil {
		opts.DB = NewDatabase(db, cfg)
	}
	if opts.NewSyncer == nil {
		opts.NewSyncer = NewDirectorySyncer(db, log)
	}
	if opts.Probe == nil {
		opts.Probe = DirectoryProbe(log)
	}
	return New(cfg, log, opts)
}

// ReloadOnSIGHUP reloads the configuration with load at every SIGHUP until
// ctx ends. A configuration that does not load, validate or build is not
// applied: the daemon keeps running on the old one and logs why.
func ReloadOnSIGHUP(ctx context.Context, a *Agent, load func() (*config.Config, error)) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
		}
		a.log.Info("SIGHUP: reloading the configuration")
		cfg, err := load()
		if err == nil {
			err = a.Reload(cfg)
		}
		if err != nil {
			a.log.Error("configuration not reloaded; keeping the running one", "err", err)
		}
	}
}
