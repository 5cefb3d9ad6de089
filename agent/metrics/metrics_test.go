package metrics

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// Every method works on a nil *Metrics, so callers without a registry
// (tests, CLI commands) need no special case.
func TestNilMetricsAreSafe(t *testing.T) {
	var m *Metrics
	m.SyncRun("full", ResultSucceeded, time.Second)
	m.SyncSkipped("delta", SkipBusy)
	m.SyncRetry("full")
	m.SyncRunning(true)
	m.LDAPError("sync")
	m.DBError("sync")
	m.Ceremony("login", "success")
	m.HTTPRequest("GET", "/", 200, time.Millisecond)
	m.SetSnapshot(nil, nil)
	m.SetAdoption(nil, nil)
	if m.Registry() != nil {
		t.Fatal("nil metrics has a registry")
	}
}

func scrape(t *testing.T, m *Metrics) string {
	t.Helper()
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if rec.Code != 200 {
		t.Fatalf("scrape: %d", rec.Code)
	}
	b, _ := io.ReadAll(rec.Body)
	return string(b)
}

// A database that cannot be read at scrape time costs its own series and
// counts an error; every other series is still served.
func TestSnapshotFailureKeepsTheRest(t *testing.T) {
	m := New()
	m.SetSnapshot(func(context.Context) (Snapshot, error) { return Snapshot{}, errors.New("connection refused") }, nil)
	m.SyncRun("full", ResultSucceeded, 2*time.Second)
	out := scrape(t, m)
	// The error is counted while the scrape collects, so it shows from
	// the next scrape on; read the counter itself.
	if n := testutil.ToFloat64(m.dbErrors.WithLabelValues("query")); n != 1 {
		t.Errorf("database errors (query) = %v, want 1", n)
	}
	for _, want := range []string{
		`passbridge_sync_runs_total{kind="full",result="succeeded"} 1`,
		`passbridge_sync_runs_total{kind="delta",result="failed"} 0`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("scrape lacks %q", want)
		}
	}
	if strings.Contains(out, "passbridge_identities{") {
		t.Error("identities exported without a snapshot")
	}

	at := time.Date(2025, 3, 1, 2, 0, 0, 0, time.UTC)
	m.SetSnapshot(func(context.Context) (Snapshot, error) {
		return Snapshot{Identities: map[string]int{"active": 40, "disabled": 2}, LastSuccess: map[string]time.Time{"full": at}}, nil
	}, nil)
	out = scrape(t, m)
	for _, want := range []string{
		`passbridge_identities{state="active"} 40`,
		`passbridge_identities{state="disabled"} 2`,
		`passbridge_identities{state="deleted"} 0`,
		`passbridge_sync_last_success_timestamp_seconds{kind="full"} 1.7407944e+09`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("scrape lacks %q:\n%s", want, out)
		}
	}
}

func adoptionSnapshot() AdoptionSnapshot {
	return AdoptionSnapshot{
		InScope: 7, Enrolled: 4,
		Departments: []DepartmentAdoption{
			{Name: "Engineering", InScope: 3, Enrolled: 2}, {Name: "(no department)", InScope: 2, Enrolled: 1}, {Name: "Sales", InScope: 2, Enrolled: 1},
		},
		Registrations: 5, RegistrationMedian: 12 * time.Second, RegistrationP90: 32500 * time.Millisecond,
		CeremoniesOver: 8, CeremoniesAbandoned: 2,
		SignIns:    map[string]int{"password": 3, "passkey": 5, "link": 1},
		Recoveries: map[string]int{"email": 2, "totp": 1},
	}
}

// The adoption gauges are read at scrape time from the installed function.
func TestAdoptionGauges(t *testing.T) {
	m := New()
	if out := scrape(t, m); strings.Contains(out, "passbridge_adoption_") {
		t.Error("adoption exported without a function")
	}
	calls := 0
	m.SetAdoption(func(ctx context.Context) (AdoptionSnapshot, error) {
		calls++
		if _, ok := ctx.Deadline(); !ok {
			t.Error("the adoption function has no deadline")
		}
		return adoptionSnapshot(), nil
	}, nil)
	out := scrape(t, m)
	if calls != 1 {
		t.Errorf("adoption read %d times for one scrape", calls)
	}
	for _, want := range []string{
		"passbridge_adoption_in_scope_users 7",
		"passbridge_adoption_enrolled_users 4",
		`passbridge_adoption_department_in_scope_users{department="Engineering"} 3`,
		`passbridge_adoption_department_enrolled_users{department="Engineering"} 2`,
		`passbridge_adoption_department_in_scope_users{department="(no department)"} 2`,
		`passbridge_adoption_department_enrolled_users{department="Sales"} 1`,
		`passbridge_adoption_registration_seconds{quantile="0.5"} 12`,
		`passbridge_adoption_registration_seconds{quantile="0.9"} 32.5`,
		"passbridge_adoption_registrations 5",
		"passbridge_adoption_registration_ceremonies 8",
		"passbridge_adoption_abandonment_ratio 0.25",
		`passbridge_adoption_recoveries{path="email"} 2`,
		`passbridge_adoption_recoveries{path="totp"} 1`,
		`passbridge_adoption_recoveries{path="link"} 0`,
		`passbridge_adoption_signins{method="password"} 3`,
		`passbridge_adoption_signins{method="passkey"} 5`,
		`passbridge_adoption_signins{method="link"} 1`,
		`passbridge_adoption_signins{method="recovery"} 0`,
		"# TYPE passbridge_adoption_registration_seconds gauge",
	} {
		if !strings.Contains(out, want+"\n") {
			t.Errorf("scrape lacks %q", want)
		}
	}
	if strings.Contains(out, `department="other"`) {
		t.Error("other department with few departments")
	}
	if n, err := testutil.GatherAndCount(m.Registry(), "passbridge_adoption_department_in_scope_users"); err != nil || n != 3 {
		t.Errorf("department series %d, %v", n, err)
	}

	// No registrations, no ceremonies: undefined, not 0 (which would read
	// as instant registrations and no abandonment).
	m.SetAdoption(func(context.Context) (AdoptionSnapshot, error) { return AdoptionSnapshot{}, nil }, nil)
	out = scrape(t, m)
	for _, want := range []string{
		`passbridge_adoption_registration_seconds{quantile="0.5"} NaN`,
		`passbridge_adoption_registration_seconds{quantile="0.9"} NaN`,
		"passbridge_adoption_abandonment_ratio NaN",
		"passbridge_adoption_in_scope_users 0",
		`passbridge_adoption_signins{method="passkey"} 0`,
	} {
		if !strings.Contains(out, want+"\n") {
			t.Errorf("scrape lacks %q", want)
		}
	}

	// A failing read costs the adoption series only.
	m.SetAdoption(func(context.Context) (AdoptionSnapshot, error) {
		return AdoptionSnapshot{}, errors.New("connection refused")
	}, nil)
	out = scrape(t, m)
	if strings.Contains(out, "passbridge_adoption_") {
		t.Error("adoption exported after a failed read")
	}
	if !strings.Contains(out, "passbridge_build_info{") {
		t.Error("a failed adoption read lost the other series")
	}
	if n := testutil.ToFloat64(m.dbErrors.WithLabelValues("query")); n != 1 {
		t.Errorf("database errors (query) = %v, want 1", n)
	}
}

// However many departments the directory has, the label keeps at most
// MaxDepartments values plus "other", which sums the rest.
func TestAdoptionDepartmentsAreCapped(t *testing.T) {
	var depts []DepartmentAdoption
	inScope, enrolled := 0, 0
	for i := range 120 {
		d := DepartmentAdoption{Name: fmt.Sprintf("dept-%03d", i), InScope: 1000 - i, Enrolled: i}
		depts = append(depts, d)
		inScope += d.InScope
		enrolled += d.Enrolled
	}
	// A department really named "other", a repeated name and a name that is
	// not UTF-8 (which a label value cannot hold) fold in without breaking
	// the scrape.
	depts = append(depts, DepartmentAdoption{Name: "other", InScope: 5000, Enrolled: 7},
		DepartmentAdoption{Name: "dept-000", InScope: 1, Enrolled: 1}, DepartmentAdoption{Name: "R\xe9seau", InScope: 1, Enrolled: 0})
	inScope += 5000 + 1 + 1
	enrolled += 7 + 1
	m := New()
	m.SetAdoption(func(context.Context) (AdoptionSnapshot, error) {
		return AdoptionSnapshot{InScope: inScope, Enrolled: enrolled, Departments: depts}, nil
	}, nil)
	mfs, err := m.Registry().Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	got := map[string]map[string]float64{}
	for _, mf := range mfs {
		name := mf.GetName()
		if name != "passbridge_adoption_department_in_scope_users" && name != "passbridge_adoption_department_enrolled_users" {
			continue
		}
		got[name] = map[string]float64{}
		for _, mt := range mf.GetMetric() {
			got[name][mt.GetLabel()[0].GetValue()] = mt.GetGauge().GetValue()
		}
	}
	in, en := got["passbridge_adoption_department_in_scope_users"], got["passbridge_adoption_department_enrolled_users"]
	if len(in) != MaxDepartments+1 || len(en) != MaxDepartments+1 {
		t.Fatalf("%d and %d department values, want %d", len(in), len(en), MaxDepartments+1)
	}
	// The largest are kept by name: dept-000 (1000 + 1) to dept-049.
	if in["dept-000"] != 1001 || en["dept-000"] != 1 || in["dept-049"] != 951 || en["dept-049"] != 49 {
		t.Errorf("dept-000 %v/%v, dept-049 %v/%v", in["dept-000"], en["dept-000"], in["dept-049"], en["dept-049"])
	}
	if _, ok := in["dept-050"]; ok {
		t.Error("dept-050 kept by name")
	}
	sumIn, sumEn := 0.0, 0.0
	for k := range in {
		sumIn += in[k]
		sumEn += en[k]
	}
	if sumIn != float64(inScope) || sumEn != float64(enrolled) {
		t.Errorf("departments sum to %v/%v, want %d/%d", sumIn, sumEn, inScope, enrolled)
	}
	// other = the real "other" + dept-050..119 + the repaired name.
	wantOther := 5000 + 1
	for i := 50; i < 120; i++ {
		wantOther += 1000 - i
	}
	if in["other"] != float64(wantOther) {
		t.Errorf("other %v, want %d", in["other"], wantOther)
	}
}
