// Package metrics is passbridge's Prometheus instrumentation: one registry
// per daemon (never the global default, so tests and embedded uses do not
// collide), the series IT alerts on, and small methods the rest of the code
// calls. Every method is safe on a nil *Metrics, so packages that record
// metrics (the portal, the sync runner) work unchanged in tests and CLI
// commands that have no registry.
//
// The portal imports this package, not agent, to record ceremonies.
package metrics

import (
	"context"
	"log/slog"
	"math"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/passbridge/passbridge/enroll/adoption"
	"github.com/passbridge/passbridge/internal/buildinfo"
)

// Namespace prefixes every series passbridge exports.
const Namespace = "passbridge"

// Sync results as recorded in the runs counter and the duration histogram.
const (
	ResultSucceeded = "succeeded"
	ResultFailed    = "failed"
	ResultRefused   = "refused" // the deletion guard stopped the run before writing
	ResultAborted   = "aborted" // cancelled by shutdown
)

// Reasons a scheduled tick did not start a sync.
const (
	SkipBusy      = "busy"          // a sync was already running in this process
	SkipReplica   = "other_replica" // another replica holds the sync lock or ran this tick
	SkipFullTick  = "full_same_tick"
	SkipLockError = "lock_error" // the database lock could not be asked for
)

// Snapshot is the cluster-wide state read from the database at scrape time,
// so that every replica reports the same truth whichever one ran the sync.
type Snapshot struct {
	// Identities counts identities per state (active, disabled, deleted).
	Identities map[string]int
	// LastSuccess is the finish time of the newest successful, non-dry-run
	// sync per kind (full, delta). Kinds that never succeeded are absent.
	LastSuccess map[string]time.Time
}

// SnapshotFunc reads a Snapshot; it is called once per scrape.
type SnapshotFunc func(ctx context.Context) (Snapshot, error)

// Metrics holds every passbridge series and the registry that exports them.
type Metrics struct {
	reg *prometheus.Registry

	syncRuns     *prometheus.CounterVec
	syncDuration *prometheus.HistogramVec
	syncSkipped  *prometheus.CounterVec
	syncRetries  *prometheus.CounterVec
	syncRunning  prometheus.Gauge
	ldapErrors   *prometheus.CounterVec
	dbErrors     *prometheus.CounterVec
	ceremonies   *prometheus.CounterVec
	httpDuration *prometheus.HistogramVec

	mu          sync.Mutex
	snapshot    SnapshotFunc
	timeout     time.Duration
	log         *slog.Logger
	adoption    AdoptionFunc
	adoptionLog *slog.Logger
}

// New creates the registry with the process and Go runtime collectors, a
// build-info series and every passbridge series at zero.
func New() *Metrics {
	reg := prometheus.NewRegistry()
	m := &Metrics{
		reg: reg,
		syncRuns: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Name: "sync_runs_total",
			Help: "Directory sync runs started by this process, by kind (full, delta) and result (succeeded, failed, refused, aborted).",
		}, []string{"kind", "result"}),
		syncDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: Namespace, Name: "sync_duration_seconds",
			Help:    "Wall time of directory sync runs, by kind and result.",
			Buckets: []float64{0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600},
		}, []string{"kind", "result"}),
		syncSkipped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Name: "sync_ticks_skipped_total",
			Help: "Scheduled ticks that did not start a sync here, by kind and reason (busy, other_replica, full_same_tick, lock_error).",
		}, []string{"kind", "reason"}),
		syncRetries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Name: "sync_retries_total",
			Help: "Retries of failed scheduled syncs, by kind.",
		}, []string{"kind"}),
		syncRunning: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: Namespace, Name: "sync_running",
			Help: "1 while this process runs a directory sync.",
		}),
		ldapErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Name: "ldap_errors_total",
			Help: "Errors talking to the directory, by operation (sync, probe, bind).",
		}, []string{"op"}),
		dbErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Name: "database_errors_total",
			Help: "Errors talking to the database, by operation (sync, probe, lock, query).",
		}, []string{"op"}),
		ceremonies: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Name: "portal_ceremonies_total",
			Help: "Portal WebAuthn ceremonies, by kind (registration, login) and result.",
		}, []string{"kind", "result"}),
		httpDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: Namespace, Name: "http_request_duration_seconds",
			Help:    "HTTP request durations, by method, route pattern and status code.",
			Buckets: []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30},
		}, []string{"method", "route", "code"}),
		timeout: 5 * time.Second,
	}
	info := buildinfo.Get()
	build := prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: Namespace, Name: "build_info",
		Help:        "Always 1; the labels say which passbridge is running.",
		ConstLabels: prometheus.Labels{"version": info.Version, "commit": info.Commit, "goversion": info.GoVersion},
	})
	build.Set(1)
	reg.MustRegister(
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		collectors.NewGoCollector(),
		build,
		m.syncRuns, m.syncDuration, m.syncSkipped, m.syncRetries, m.syncRunning,
		m.ldapErrors, m.dbErrors, m.ceremonies, m.httpDuration,
		snapshotCollector{m},
		adoptionCollector{m},
	)
	// Pre-create the series alerts look for, so that "no failures yet"
	// reads as 0 rather than as a missing series.
	for _, kind := range []string{"full", "delta"} {
		for _, r := range []string{ResultSucceeded, ResultFailed, ResultRefused, ResultAborted} {
			m.syncRuns.WithLabelValues(kind, r)
		}
	}
	for _, op := range []string{"sync", "probe"} {
		m.ldapErrors.WithLabelValues(op)
		m.dbErrors.WithLabelValues(op)
	}
	return m
}

// Registry is where other packages register their own collectors (the
// portal's adoption figures, for instance).
func (m *Metrics) Registry() *prometheus.Registry {
	if m == nil {
		return nil
	}
	return m.reg
}

// Handler serves the registry in the Prometheus exposition format. A failing
// collector (the database is down) still lets every other series through.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{
		ErrorHandling:       promhttp.ContinueOnError,
		Registry:            m.reg,
		MaxRequestsInFlight: 4,
	})
}

// SetSnapshot installs the function that reads identities per state and the
// last successful sync times from the database at scrape time.
func (m *Metrics) SetSnapshot(fn SnapshotFunc, log *slog.Logger) {
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.snapshot, m.log = fn, log
}

// SetAdoption installs the function that reads the passkey adoption
// figures from the database at scrape time (enroll/adoption.Snapshot).
func (m *Metrics) SetAdoption(fn AdoptionFunc, log *slog.Logger) {
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.adoption, m.adoptionLog = fn, log
}

// SyncRun records one finished sync run.
func (m *Metrics) SyncRun(kind, result string, d time.Duration) {
	if m == nil {
		return
	}
	m.syncRuns.WithLabelValues(kind, result).Inc()
	m.syncDuration.WithLabelValues(kind, result).Observe(d.Seconds())
}

// SyncRunning flips the running gauge.
func (m *Metrics) SyncRunning(running bool) {
	if m == nil {
		return
	}
	if running {
		m.syncRunning.Set(1)
	} else {
		m.syncRunning.Set(0)
	}
}

// SyncSkipped records a scheduled tick that did not start a sync here.
func (m *Metrics) SyncSkipped(kind, reason string) {
	if m == nil {
		return
	}
	m.syncSkipped.WithLabelValues(kind, reason).Inc()
}

// SyncRetry records a retry of a failed scheduled sync.
func (m *Metrics) SyncRetry(kind string) {
	if m == nil {
		return
	}
	m.syncRetries.WithLabelValues(kind).Inc()
}

// LDAPError records an error talking to the directory.
func (m *Metrics) LDAPError(op string) {
	if m == nil {
		return
	}
	m.ldapErrors.WithLabelValues(op).Inc()
}

// DBError records an error talking to the database.
func (m *Metrics) DBError(op string) {
	if m == nil {
		return
	}
	m.dbErrors.WithLabelValues(op).Inc()
}

// Ceremony records a finished (or abandoned) portal WebAuthn ceremony. kind
// is "registration" or "login"; result is a short word such as "success",
// "failure", "refused" or "abandoned".
func (m *Metrics) Ceremony(kind, result string) {
	if m == nil {
		return
	}
	m.ceremonies.WithLabelValues(kind, result).Inc()
}

// HTTPRequest records one served request. route is the router's pattern
// ("/api/v1/runs"), never the raw path, so the label set stays bounded.
func (m *Metrics) HTTPRequest(method, route string, code int, d time.Duration) {
	if m == nil {
		return
	}
	m.httpDuration.WithLabelValues(method, route, strconv.Itoa(code)).Observe(d.Seconds())
}

// Identity states always exported, so a dashboard sees 0 rather than nothing.
var identityStates = []string{"active", "disabled", "deleted"}

var (
	identitiesDesc = prometheus.NewDesc(Namespace+"_identities",
		"Directory identities in the database, by state (active, disabled, deleted).", []string{"state"}, nil)
	lastSuccessDesc = prometheus.NewDesc(Namespace+"_sync_last_success_timestamp_seconds",
		"Unix time at which the newest successful sync of each kind finished (any replica).", []string{"kind"}, nil)
)

// snapshotCollector reads the database at scrape time: counts kept in
// process memory would disagree between replicas.
type snapshotCollector struct{ m *Metrics }

func (c snapshotCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- identitiesDesc
	ch <- lastSuccessDesc
}

func (c snapshotCollector) Collect(ch chan<- prometheus.Metric) {
	c.m.mu.Lock()
	fn, log, timeout := c.m.snapshot, c.m.log, c.m.timeout
	c.m.mu.Unlock()
	if fn == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	snap, err := fn(ctx)
	if err != nil {
		c.m.DBError("query")
		if log != nil {
			log.Warn("metrics: cannot read identities and sync history", "err", err)
		}
		return
	}
	seen := map[string]bool{}
	for _, s := range identityStates {
		seen[s] = true
		ch <- prometheus.MustNewConstMetric(identitiesDesc, prometheus.GaugeValue, float64(snap.Identities[s]), s)
	}
	for s, n := range snap.Identities {
		if !seen[s] {
			ch <- prometheus.MustNewConstMetric(identitiesDesc, prometheus.GaugeValue, float64(n), s)
		}
	}
	for kind, t := range snap.LastSuccess {
		ch <- prometheus.MustNewConstMetric(lastSuccessDesc, prometheus.GaugeValue, float64(t.UnixNano())/1e9, kind)
	}
}

// AdoptionSnapshot is passkey adoption as read from the database at scrape
// time: enroll/adoption computes it and owns its shape (adoption.Gauges).
type AdoptionSnapshot = adoption.Gauges

// DepartmentAdoption is the adoption of one department.
type DepartmentAdoption = adoption.DepartmentGauges

// AdoptionFunc reads an AdoptionSnapshot; it is called once per scrape.
type AdoptionFunc func(ctx context.Context) (AdoptionSnapshot, error)

// The department label keeps at most MaxDepartments values plus
// OtherDepartment, whatever the directory holds, so that the series stay
// bounded.
const (
	MaxDepartments  = 50
	OtherDepartment = "other"
)

var (
	adoptionInScopeDesc = prometheus.NewDesc(Namespace+"_adoption_in_scope_users",
		"Active directory identities linked to a users row: the people who should enroll a passkey.", nil, nil)
	adoptionEnrolledDesc = prometheus.NewDesc(Namespace+"_adoption_enrolled_users",
		"Identities in scope whose users row has at least one passkey that is not revoked.", nil, nil)
	adoptionDeptInScopeDesc = prometheus.NewDesc(Namespace+"_adoption_department_in_scope_users",
		"Identities in scope by department (the 50 largest by name, the rest as \"other\").", []string{"department"}, nil)
	adoptionDeptEnrolledDesc = prometheus.NewDesc(Namespace+"_adoption_department_enrolled_users",
		"Enrolled identities in scope by department (the 50 largest by name, the rest as \"other\").", []string{"department"}, nil)
	adoptionRegSecondsDesc = prometheus.NewDesc(Namespace+"_adoption_registration_seconds",
		"Time from the beginning of a passkey registration to its successful finish, over the last 30 days, by quantile (NaN without registrations).", []string{"quantile"}, nil)
	adoptionRegistrationsDesc = prometheus.NewDesc(Namespace+"_adoption_registrations",
		"Passkey registrations that succeeded in the last 30 days.", nil, nil)
	adoptionCeremoniesDesc = prometheus.NewDesc(Namespace+"_adoption_registration_ceremonies",
		"Registration ceremonies begun in the last 30 days that are over (finished or expired): the denominator of the abandonment ratio.", nil, nil)
	adoptionAbandonmentDesc = prometheus.NewDesc(Namespace+"_adoption_abandonment_ratio",
		"Share of the registration ceremonies begun in the last 30 days and over that were abandoned (expired unfinished or cancelled); NaN without ceremonies.", nil, nil)
	adoptionRecoveriesDesc = prometheus.NewDesc(Namespace+"_adoption_recoveries",
		"Successful account recoveries in the last 30 days, by path (email, totp, link).", []string{"path"}, nil)
	adoptionRegMethodsDesc = prometheus.NewDesc(Namespace+"_adoption_registrations_by_method",
		"Passkeys added in the last 30 days, by method (portal: the button; upgrade: the automatic upgrade after a password sign-in; app: the invitation after a password sign-in to an application).", []string{"method"}, nil)
	adoptionSignInsDesc = prometheus.NewDesc(Namespace+"_adoption_signins",
		"Successful portal sign-ins in the last 30 days, by method (password, passkey, link, recovery).", []string{"method"}, nil)
)

// Label values always exported, so a dashboard sees 0 rather than nothing.
var (
	recoveryPaths  = []string{"email", "totp", "link"}
	regMethods     = []string{"portal", "upgrade", "app"}
	signInMethods  = []string{"password", "passkey", "link", "recovery"}
	registrationQs = []struct {
		label string
		get   func(AdoptionSnapshot) time.Duration
	}{
		{"0.5", func(s AdoptionSnapshot) time.Duration { return s.RegistrationMedian }},
		{"0.9", func(s AdoptionSnapshot) time.Duration { return s.RegistrationP90 }},
	}
)

// adoptionCollector reads the adoption figures at scrape time, like
// snapshotCollector, so that every replica reports the same.
type adoptionCollector struct{ m *Metrics }

func (c adoptionCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{adoptionInScopeDesc, adoptionEnrolledDesc, adoptionDeptInScopeDesc, adoptionDeptEnrolledDesc,
		adoptionRegSecondsDesc, adoptionRegistrationsDesc, adoptionCeremoniesDesc, adoptionAbandonmentDesc, adoptionRecoveriesDesc, adoptionSignInsDesc, adoptionRegMethodsDesc} {
		ch <- d
	}
}

func (c adoptionCollector) Collect(ch chan<- prometheus.Metric) {
	c.m.mu.Lock()
	fn, log, timeout := c.m.adoption, c.m.adoptionLog, c.m.timeout
	c.m.mu.Unlock()
	if fn == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	s, err := fn(ctx)
	if err != nil {
		c.m.DBError("query")
		if log != nil {
			log.Warn("metrics: cannot read the adoption figures", "err", err)
		}
		return
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	gauge(adoptionInScopeDesc, float64(s.InScope))
	gauge(adoptionEnrolledDesc, float64(s.Enrolled))
	for _, d := range capDepartments(s.Departments) {
		gauge(adoptionDeptInScopeDesc, float64(d.InScope), d.Name)
		gauge(adoptionDeptEnrolledDesc, float64(d.Enrolled), d.Name)
	}
	gauge(adoptionRegistrationsDesc, float64(s.Registrations))
	for _, q := range registrationQs {
		v := math.NaN()
		if s.Registrations > 0 {
			v = q.get(s).Seconds()
		}
		gauge(adoptionRegSecondsDesc, v, q.label)
	}
	gauge(adoptionCeremoniesDesc, float64(s.CeremoniesOver))
	ratio := math.NaN()
	if s.CeremoniesOver > 0 {
		ratio = float64(s.CeremoniesAbandoned) / float64(s.CeremoniesOver)
	}
	gauge(adoptionAbandonmentDesc, ratio)
	byLabel := func(d *prometheus.Desc, known []string, counts map[string]int) {
		for _, k := range known {
			gauge(d, float64(counts[k]), k)
		}
		for k, n := range counts {
			if !slices.Contains(known, k) {
				gauge(d, float64(n), strings.ToValidUTF8(k, "\uFFFD"))
			}
		}
	}
	byLabel(adoptionRecoveriesDesc, recoveryPaths, s.Recoveries)
	byLabel(adoptionSignInsDesc, signInMethods, s.SignIns)
	byLabel(adoptionRegMethodsDesc, regMethods, s.RegistrationMethods)
}

// capDepartments merges departments of the same name, keeps the
// MaxDepartments with the most identities in scope (then by name) and sums
// the rest into OtherDepartment (with any department of that name).
// Names that are not valid UTF-8 (which a label cannot hold) are repaired.
func capDepartments(in []DepartmentAdoption) []DepartmentAdoption {
	byName := map[string]*DepartmentAdoption{}
	var all []*DepartmentAdoption
	for _, d := range in {
		name := strings.ToValidUTF8(d.Name, "\uFFFD")
		g := byName[name]
		if g == nil {
			g = &DepartmentAdoption{Name: name}
			byName[name] = g
			all = append(all, g)
		}
		g.InScope += d.InScope
		g.Enrolled += d.Enrolled
	}
	sort.Slice(all, func(a, b int) bool {
		if all[a].InScope != all[b].InScope {
			return all[a].InScope > all[b].InScope
		}
		return all[a].Name < all[b].Name
	})
	out := make([]DepartmentAdoption, 0, min(len(all), MaxDepartments+1))
	if len(all) <= MaxDepartments {
		for _, g := range all {
			out = append(out, *g)
		}
		return out
	}
	other := DepartmentAdoption{Name: OtherDepartment}
	for _, g := range all {
		if g.Name != OtherDepartment && len(out) < MaxDepartments {
			out = append(out, *g)
			continue
		}
		other.InScope += g.InScope
		other.Enrolled += g.Enrolled
	}
	return append(out, other)
}
