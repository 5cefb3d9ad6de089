// Package adoption measures whether passkey adoption works, from the real
// data in the application's database: how many of the people in scope have
// a passkey (overall and per department), how long registering one takes,
// how often a registration is abandoned, how people sign in and recover,
// and how enrollment grew day by day. The figures are read with portable
// SQL (SQLite, PostgreSQL, MySQL/MariaDB) and every statistic (medians,
// percentiles, the daily series) is computed in Go from the rows, so that
// all three databases give the same answer.
//
// The IT console shows a Report next to FieldReport, the figures of the
// field report the product answers; Chart draws the enrollment series;
// Snapshot feeds the Prometheus gauges of agent/metrics.
package adoption

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/passbridge/passbridge/config"
	"github.com/passbridge/passbridge/schema"
	"github.com/passbridge/passbridge/store"
)

// FieldFigures are figures from the field report
// (context/passkeys-in-the-enterprise), shown beside the measured ones.
type FieldFigures struct {
	// PasskeyCreation is the average time to create a passkey.
	PasskeyCreation time.Duration
	// PasswordAnd2FA is the average time to set up a password and 2FA.
	PasswordAnd2FA time.Duration
	// AbandonmentPasswords is the share of registrations abandoned with
	// email and password (0.15 = 15 %).
	AbandonmentPasswords float64
	// AbandonmentPasskeys is the share abandoned with passkeys: the report
	// says "below 5 %", so this is an upper bound.
	AbandonmentPasskeys float64
}

// The field report's figures, as constants.
const (
	FieldPasskeyCreation      = 12 * time.Second
	FieldPasswordAnd2FA       = 45 * time.Second
	FieldAbandonmentPasswords = 0.15
	FieldAbandonmentPasskeys  = 0.05 // "below 5 %"
)

// FieldReport holds the field report's figures for templates and reports.
var FieldReport = FieldFigures{
	PasskeyCreation:      FieldPasskeyCreation,
	PasswordAnd2FA:       FieldPasswordAnd2FA,
	AbandonmentPasswords: FieldAbandonmentPasswords,
	AbandonmentPasskeys:  FieldAbandonmentPasskeys,
}

// NoDepartment names the group of identities without a department.
const NoDepartment = "(no department)"

// MetricsWindow is the window of the figures Snapshot exports.
const MetricsWindow = 30 * 24 * time.Hour

// SignInMethods are the sign-in methods counted in Report.SignIns (audit
// events signin.<method> with success set); each is present, 0 if unused.
var SignInMethods = []string{"password", "passkey", "link", "recovery"}

// RecoveryPaths are the recovery paths counted in Report.Recoveries (audit
// events recovery.<path> with success set). recovery.failed,
// recovery.limited and recovery.code_sent are not recoveries.
var RecoveryPaths = []string{"email", "totp", "link"}

// Ceremony kinds and results as the portal writes them (enroll/ceremony.go).
const (
	kindRegistration = "registration"
	kindUpgrade      = "upgrade" // the automatic passkey upgrade after a password sign-in
	// kindAppRegistration is a first passkey added on the invitation
	// that follows a password sign-in to an application (signin.KindAppRegistration).
	kindAppRegistration = "app_registration"
	resultSucceeded     = "succeeded"
	resultCancelled     = "cancelled"
	resultClaimed       = "claimed"
)

// Report is the adoption of passkeys at Now, over the Window before it.
type Report struct {
	Now    time.Time     // UTC
	Window time.Duration // the figures below marked "in the window" cover [Since, Now]
	Since  time.Time     // Now - Window

	// InScope counts the active identities linked to a users row;
	// Enrolled those of them whose users row has at least one passkey that
	// is not revoked; Rate is Enrolled/InScope (0 when nobody is in scope).
	InScope, Enrolled int
	Rate              float64
	// ByDepartment is the same per department, most identities in scope
	// first (then by name).
	ByDepartment []Group
	// ByOU is the same per organizational unit: the container of the
	// identity's DN, relative to directory.base_dn, in the same order; at
	// most MaxOUs of them, the rest summed as OtherOUs. For the console
	// only (Compute), not the metrics.
	ByOU []Group

	// Registration is the time from the beginning of a registration
	// ceremony to its successful finish, for those that succeeded in the
	// window.
	Registration Timing
	// Upgrades counts the passkeys the automatic upgrade made in the
	// window (conditional creation after a password sign-in): their own
	// registration method, outside Registration and Abandonment (a
	// password manager that declines silently abandons nothing).
	Upgrades int
	// AppRegistrations counts the passkeys added in the window on the
	// invitation that follows a password sign-in to an application (the
	// OpenID Connect login page of a client with password_fallback): their
	// own method too, outside Registration and Abandonment (declining the
	// invitation abandons nothing).
	AppRegistrations int
	// Abandonment is over the registration ceremonies begun in the window
	// that are over (finished, or expired unfinished).
	Abandonment Abandonment

	// SignIns counts successful sign-ins in the window by method
	// (SignInMethods: password, passkey, link, recovery).
	SignIns map[string]int
	// Recoveries counts successful recoveries in the window by path
	// (RecoveryPaths: email, totp, link).
	Recoveries map[string]int

	// Enrollment has one point per UTC day of the window, from the day of
	// Since to the day of Now.
	Enrollment []Point
}

// Group is the adoption of one department.
type Group struct {
	Name              string // NoDepartment for identities without one
	InScope, Enrolled int
	Rate              float64
}

// Timing summarises durations: Median and P90 are interpolated between the
// closest ranks (the median of an even count is the mean of the middle
// two); both are 0 when Count is 0.
type Timing struct {
	Count       int
	Median, P90 time.Duration
}

// Abandonment counts registration ceremonies that are over: Begun of them,
// Abandoned never finished (expired with no finish) or cancelled by the
// user. A ceremony still open, or being finished, is not over and not
// counted. Rate is Abandoned/Begun (0 when Begun is 0).
type Abandonment struct {
	Begun, Abandoned int
	Rate             float64
}

// Point is the state of enrollment at the end of one UTC day (at Now for
// the last day): Users with at least one live passkey and the live
// Passkeys, where a passkey is live from its created_at until its
// revoked_at. Passkeys created before the window are the starting level.
// These count every credential row, whatever the identity's state today,
// so they are history as it happened, not restated by later departures.
type Point struct {
	Day             time.Time // UTC midnight
	Users, Passkeys int
}

// Compute reads the adoption figures from the database at now, over the
// window before it.
func Compute(ctx context.Context, db *store.DB, cfg *config.Config, now time.Time, window time.Duration) (*Report, error) {
	return compute(ctx, db, cfg, now, window, true)
}

func compute(ctx context.Context, db *store.DB, cfg *config.Config, now time.Time, window time.Duration, series bool) (*Report, error) {
	if db == nil || cfg == nil {
		return nil, errors.New("adoption: no database")
	}
	if window <= 0 {
		return nil, fmt.Errorf("adoption: the window must be positive, not %s", window)
	}
	now = now.UTC()
	r := &Report{Now: now, Window: window, Since: now.Add(-window)}
	q := &reader{db: db, n: schema.NamesFor(cfg), base: cfg.Directory.BaseDN}
	steps := []struct {
		what string
		fn   func(context.Context, *Report) error
	}{
		{"identities in scope", q.scope},
		{"registration times", q.registration},
		{"abandoned registrations", q.abandonment},
		{"sign-ins and recoveries", q.events},
	}
	if series {
		steps = append(steps, []struct {
			what string
			fn   func(context.Context, *Report) error
		}{{"identities per OU", q.byOU}, {"enrollment over time", q.enrollment}}...)
	}
	for _, s := range steps {
		if err := s.fn(ctx, r); err != nil {
			return nil, fmt.Errorf("adoption: read %s from %s: %w", s.what, db.Describe(), err)
		}
	}
	return r, nil
}

type reader struct {
	db   *store.DB
	n    schema.Names
	base string // directory.base_dn, which OU names are relative to
}

func (q *reader) c(name string) string { return q.n.Column(name) }

// col is a column of a table alias: i."state".
func (q *reader) col(alias, name string) string { return alias + "." + q.n.Column(name) }

func ratio(a, b int) float64 {
	if b == 0 {
		return 0
	}
	return float64(a) / float64(b)
}

// inScope is the FROM and WHERE of the identities in scope (active and
// linked to a users row; one argument, the active state), i, each with
// e.k set when its users row has a passkey that is not revoked.
func (q *reader) inScope() string {
	return " FROM " + q.n.Identities + " i" +
		" LEFT JOIN (SELECT DISTINCT " + q.c("user_key") + " AS k FROM " + q.n.Credentials + " WHERE " + q.c("revoked_at") + " IS NULL) e" +
		" ON e.k = " + q.col("i", "user_key") +
		" WHERE " + q.col("i", "state") + " = ? AND " + q.col("i", "user_key") + " IS NOT NULL"
}

// scope counts identities in scope and enrolled, per department. A users
// row is enrolled when it has a credential that is not revoked.
func (q *reader) scope(ctx context.Context, r *Report) error {
	var rows []struct {
		Department *string `db:"department"`
		InScope    int     `db:"in_scope"`
		Enrolled   int     `db:"enrolled"`
	}
	query := "SELECT " + q.col("i", "department") + " AS department, COUNT(*) AS in_scope, COUNT(e.k) AS enrolled" +
		q.inScope() + " GROUP BY " + q.col("i", "department")
	if err := store.Select(ctx, q.db, &rows, query, schema.StateActive); err != nil {
		return err
	}
	groups := map[string]*Group{}
	for _, row := range rows {
		name := NoDepartment
		if row.Department != nil && *row.Department != "" {
			name = *row.Department
		}
		g := groups[name]
		if g == nil {
			g = &Group{Name: name}
			groups[name] = g
		}
		g.InScope += row.InScope
		g.Enrolled += row.Enrolled
		r.InScope += row.InScope
		r.Enrolled += row.Enrolled
	}
	r.Rate = ratio(r.Enrolled, r.InScope)
	r.ByDepartment = make([]Group, 0, len(groups))
	for _, g := range groups {
		g.Rate = ratio(g.Enrolled, g.InScope)
		r.ByDepartment = append(r.ByDepartment, *g)
	}
	sort.Slice(r.ByDepartment, func(a, b int) bool {
		x, y := r.ByDepartment[a], r.ByDepartment[b]
		if x.InScope != y.InScope {
			return x.InScope > y.InScope
		}
		return x.Name < y.Name
	})
	return nil
}

// OU groups: at most MaxOUs, the rest summed as OtherOUs; BaseOU names the
// identities right under directory.base_dn.
const (
	MaxOUs   = 50
	OtherOUs = "(other OUs)"
	BaseOU   = "(base DN)"
)

// byOU counts identities in scope and enrolled per OU, from their DNs:
// where the department attribute is not kept up to date, the OU tree is
// how IT knows who is where.
func (q *reader) byOU(ctx context.Context, r *Report) error {
	rows, err := q.db.QueryxContext(ctx, q.db.Rebind("SELECT "+q.col("i", "dn")+", CASE WHEN e.k IS NULL THEN 0 ELSE 1 END"+q.inScope()), schema.StateActive)
	if err != nil {
		return err
	}
	defer rows.Close()
	groups := map[string]*Group{}
	for rows.Next() {
		var dn string
		var enrolled int
		if err := rows.Scan(&dn, &enrolled); err != nil {
			return err
		}
		name := OUOf(dn, q.base)
		key := strings.ToLower(name)
		g := groups[key]
		if g == nil {
			g = &Group{Name: name}
			groups[key] = g
		}
		g.InScope++
		g.Enrolled += enrolled
	}
	if err := rows.Err(); err != nil {
		return err
	}
	all := make([]Group, 0, len(groups))
	for _, g := range groups {
		g.Rate = ratio(g.Enrolled, g.InScope)
		all = append(all, *g)
	}
	sort.Slice(all, func(a, b int) bool {
		if all[a].InScope != all[b].InScope {
			return all[a].InScope > all[b].InScope
		}
		return all[a].Name < all[b].Name
	})
	if len(all) > MaxOUs {
		other := Group{Name: OtherOUs}
		for _, g := range all[MaxOUs-1:] {
			other.InScope += g.InScope
			other.Enrolled += g.Enrolled
		}
		other.Rate = ratio(other.Enrolled, other.InScope)
		all = append(all[:MaxOUs-1], other)
	}
	r.ByOU = all
	return nil
}

// OUOf is the container of dn relative to base: "OU=Sales,OU=Staff" for
// "CN=Smith\, Ann,OU=Sales,OU=Staff,DC=corp,DC=example" under
// "DC=corp,DC=example"; BaseOU right under base; the whole container when
// dn is not under base (a DN the directory spells differently).
func OUOf(dn, base string) string {
	parent := ""
	for i := 0; i < len(dn); i++ {
		if dn[i] == '\\' {
			i++ // an escaped character, such as the comma in "Smith\, Ann"
			continue
		}
		if dn[i] == ',' {
			parent = strings.TrimSpace(dn[i+1:])
			break
		}
	}
	base = strings.TrimSpace(base)
	switch {
	case parent == "" || strings.EqualFold(parent, base):
		return BaseOU
	case base != "" && len(parent) > len(base) && strings.EqualFold(parent[len(parent)-len(base):], base) && parent[len(parent)-len(base)-1] == ',':
		return strings.TrimSpace(parent[:len(parent)-len(base)-1])
	}
	return parent
}

// registration reads the registrations that succeeded in the window.
func (q *reader) registration(ctx context.Context, r *Report) error {
	var rows []struct {
		Begun    time.Time `db:"created_at"`
		Finished time.Time `db:"finished_at"`
	}
	query := "SELECT " + q.c("created_at") + ", " + q.c("finished_at") + " FROM " + q.n.Ceremonies +
		" WHERE " + q.c("kind") + " = ? AND " + q.c("result") + " = ? AND " +
		q.c("finished_at") + " >= ? AND " + q.c("finished_at") + " <= ?"
	if err := store.Select(ctx, q.db, &rows, query, kindRegistration, resultSucceeded, r.Since, r.Now); err != nil {
		return err
	}
	ds := make([]time.Duration, 0, len(rows))
	for _, row := range rows {
		// A finish stamped before its beginning (clocks of two replicas
		// apart) counts as instant rather than negative.
		ds = append(ds, max(row.Finished.Sub(row.Begun), 0))
	}
	r.Registration = timing(ds)
	for kind, n := range map[string]*int{kindUpgrade: &r.Upgrades, kindAppRegistration: &r.AppRegistrations} {
		if err := store.Get(ctx, q.db, n, "SELECT COUNT(*) FROM "+q.n.Ceremonies+
			" WHERE "+q.c("kind")+" = ? AND "+q.c("result")+" = ? AND "+q.c("finished_at")+" >= ? AND "+q.c("finished_at")+" <= ?",
			kind, resultSucceeded, r.Since, r.Now); err != nil {
			return err
		}
	}
	return nil
}

// RegistrationMethods are the ways a passkey is added, as Report and the
// metrics count them: the portal's button, the automatic upgrade, and the
// invitation after a password sign-in to an application.
var RegistrationMethods = []string{"portal", "upgrade", "app"}

// Summarize is the count, median and 90th percentile of durations, as the
// adoption figures compute them (enrollment campaigns use it for their
// time to passkey).
func Summarize(ds []time.Duration) Timing { return timing(ds) }

// timing computes the count, median and 90th percentile of durations.
func timing(ds []time.Duration) Timing {
	t := Timing{Count: len(ds)}
	if len(ds) == 0 {
		return t
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	t.Median = quantile(s, 0.5)
	t.P90 = quantile(s, 0.9)
	return t
}

// quantile interpolates linearly between the closest ranks of sorted (the
// method of R's type 7, numpy's default): p=0.5 is the usual median.
func quantile(sorted []time.Duration, p float64) time.Duration {
	n := len(sorted)
	if n == 0 {
		return 0
	}
	h := p * float64(n-1)
	lo := int(math.Floor(h))
	if lo >= n-1 {
		return sorted[n-1]
	}
	frac := h - float64(lo)
	a, b := sorted[lo], sorted[lo+1]
	return a + time.Duration(math.Round(frac*float64(b-a)))
}

// abandonment counts the registration ceremonies begun in the window that
// are over: finished with a result (other than "claimed", a finish under
// way), or expired. Abandoned are those that expired unfinished plus the
// cancelled ones.
func (q *reader) abandonment(ctx context.Context, r *Report) error {
	var row struct {
		Begun     int `db:"begun"`
		Abandoned int `db:"abandoned"`
	}
	finished, expires, result := q.c("finished_at"), q.c("expires_at"), q.c("result")
	query := "SELECT COUNT(*) AS begun," +
		" COUNT(CASE WHEN (" + finished + " IS NULL AND " + expires + " <= ?) OR " + result + " = ? THEN 1 END) AS abandoned" +
		" FROM " + q.n.Ceremonies +
		" WHERE " + q.c("kind") + " = ? AND " + q.c("created_at") + " >= ? AND " + q.c("created_at") + " <= ?" +
		" AND ((" + finished + " IS NOT NULL AND COALESCE(" + result + ", ?) <> ?) OR " + expires + " <= ?)"
	err := store.Get(ctx, q.db, &row, query,
		r.Now, resultCancelled,
		kindRegistration, r.Since, r.Now,
		resultClaimed, resultClaimed, r.Now)
	if err != nil {
		return err
	}
	r.Abandonment = Abandonment{Begun: row.Begun, Abandoned: row.Abandoned, Rate: ratio(row.Abandoned, row.Begun)}
	return nil
}

// events counts successful sign-ins and recoveries in the window.
func (q *reader) events(ctx context.Context, r *Report) error {
	var err error
	if r.SignIns, err = q.countEvents(ctx, r, "signin.", SignInMethods); err != nil {
		return err
	}
	r.Recoveries, err = q.countEvents(ctx, r, "recovery.", RecoveryPaths)
	return err
}

// countEvents counts the successful audit events prefix+name in the window
// for each name; every name is in the map.
func (q *reader) countEvents(ctx context.Context, r *Report, prefix string, names []string) (map[string]int, error) {
	args := make([]any, 0, len(names)+3)
	for _, name := range names {
		args = append(args, prefix+name)
	}
	args = append(args, true, r.Since, r.Now)
	var rows []struct {
		Event string `db:"event"`
		N     int    `db:"n"`
	}
	query := "SELECT " + q.c("event") + " AS event, COUNT(*) AS n FROM " + q.n.Audit +
		" WHERE " + q.c("event") + " IN (?" + strings.Repeat(", ?", len(names)-1) + ")" +
		" AND " + q.c("success") + " = ? AND " + q.c("at") + " >= ? AND " + q.c("at") + " <= ?" +
		" GROUP BY " + q.c("event")
	if err := store.Select(ctx, q.db, &rows, query, args...); err != nil {
		return nil, err
	}
	out := make(map[string]int, len(names))
	for _, name := range names {
		out[name] = 0
	}
	for _, row := range rows {
		out[strings.TrimPrefix(row.Event, prefix)] += row.N
	}
	return out, nil
}

// enrollment builds the daily series from every credential created by
// now: a sweep over creations and revocations in time order, sampled at
// the end of each day.
func (q *reader) enrollment(ctx context.Context, r *Report) error {
	var rows []struct {
		UserKey string     `db:"user_key"`
		Created time.Time  `db:"created_at"`
		Revoked *time.Time `db:"revoked_at"`
	}
	query := "SELECT " + q.c("user_key") + ", " + q.c("created_at") + ", " + q.c("revoked_at") +
		" FROM " + q.n.Credentials + " WHERE " + q.c("created_at") + " <= ?"
	if err := store.Select(ctx, q.db, &rows, query, r.Now); err != nil {
		return err
	}
	type change struct {
		at   time.Time
		user string
		d    int // +1 created, -1 revoked
	}
	changes := make([]change, 0, len(rows)*2)
	for _, row := range rows {
		changes = append(changes, change{row.Created.UTC(), row.UserKey, +1})
		if row.Revoked != nil {
			changes = append(changes, change{row.Revoked.UTC(), row.UserKey, -1})
		}
	}
	// Revocations at the same instant as creations go first, so that a
	// passkey created and revoked at once never counts.
	sort.SliceStable(changes, func(a, b int) bool {
		if !changes[a].at.Equal(changes[b].at) {
			return changes[a].at.Before(changes[b].at)
		}
		return changes[a].d < changes[b].d
	})

	live := map[string]int{} // live passkeys per user
	passkeys, i := 0, 0
	for _, day := range days(r.Since, r.Now) {
		// The state at the end of the day: changes before the next
		// midnight; for today, every change up to now included.
		end := day.Add(24 * time.Hour)
		if end.After(r.Now) {
			end = r.Now.Add(time.Nanosecond)
		}
		for ; i < len(changes) && changes[i].at.Before(end); i++ {
			c := changes[i]
			passkeys += c.d
			live[c.user] += c.d
			if live[c.user] == 0 {
				delete(live, c.user)
			}
		}
		r.Enrollment = append(r.Enrollment, Point{Day: day, Users: len(live), Passkeys: passkeys})
	}
	return nil
}

// days lists the UTC midnights from the day of since to the day of now.
func days(since, now time.Time) []time.Time {
	first := midnight(since)
	last := midnight(now)
	var out []time.Time
	for d := first; !d.After(last); d = d.AddDate(0, 0, 1) {
		out = append(out, d)
	}
	return out
}

func midnight(t time.Time) time.Time {
	y, m, d := t.UTC().Date()
	return time.Date(y, m, d, 0, 0, 0, 0, time.UTC)
}

// Snapshot returns the function agent/metrics calls at scrape time
// (metrics.SetAdoption): the adoption figures over MetricsWindow before the
// scrape, without the daily series, mapped to the exported gauges.
func Snapshot(db *store.DB, cfg *config.Config) func(context.Context) (Gauges, error) {
	return func(ctx context.Context) (Gauges, error) {
		return snapshotAt(ctx, db, cfg, time.Now())
	}
}

func snapshotAt(ctx context.Context, db *store.DB, cfg *config.Config, now time.Time) (Gauges, error) {
	r, err := compute(ctx, db, cfg, now, MetricsWindow, false)
	if err != nil {
		return Gauges{}, err
	}
	return r.Metrics(), nil
}

// Metrics maps the report to the gauges of agent/metrics.
func (r *Report) Metrics() Gauges {
	s := Gauges{
		InScope:             r.InScope,
		Enrolled:            r.Enrolled,
		Registrations:       r.Registration.Count,
		RegistrationMedian:  r.Registration.Median,
		RegistrationP90:     r.Registration.P90,
		CeremoniesOver:      r.Abandonment.Begun,
		CeremoniesAbandoned: r.Abandonment.Abandoned,
		SignIns:             r.SignIns,
		Recoveries:          r.Recoveries,
		RegistrationMethods: map[string]int{"portal": r.Registration.Count, "upgrade": r.Upgrades, "app": r.AppRegistrations},
	}
	for _, g := range r.ByDepartment {
		s.Departments = append(s.Departments, DepartmentGauges{Name: g.Name, InScope: g.InScope, Enrolled: g.Enrolled})
	}
	return s
}

// Gauges are the adoption figures /metrics exports (agent/metrics'
// AdoptionSnapshot), read at scrape time: the windowed figures over the
// last MetricsWindow.
type Gauges struct {
	// InScope counts the active identities linked to a users row;
	// Enrolled those of them with a passkey that is not revoked.
	InScope, Enrolled int
	// Departments is the same per department. Only the largest
	// (metrics.MaxDepartments) are exported by name; the others are summed.
	Departments []DepartmentGauges
	// Registrations counts the registrations that succeeded in the window;
	// RegistrationMedian and RegistrationP90 are the time from the
	// beginning of their ceremony to its finish.
	Registrations                       int
	RegistrationMedian, RegistrationP90 time.Duration
	// CeremoniesOver counts the registration ceremonies begun in the window
	// that are over (finished or expired); CeremoniesAbandoned those of
	// them that expired unfinished or were cancelled.
	CeremoniesOver, CeremoniesAbandoned int
	// Recoveries counts successful recoveries in the window by path
	// (email, totp, link); SignIns successful sign-ins by method
	// (password, passkey, link, recovery).
	Recoveries map[string]int
	SignIns    map[string]int
	// RegistrationMethods counts the passkeys added in the window by how:
	// portal (the button), app (the invitation after a password sign-in
	// to an application) and upgrade (the automatic upgrade after a
	// password sign-in).
	RegistrationMethods map[string]int
}

// DepartmentGauges is the adoption of one department.
type DepartmentGauges struct {
	Name              string
	InScope, Enrolled int
}
