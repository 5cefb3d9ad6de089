package adoption

import (
	"context"
	"fmt"
	"maps"
	"math"
	"os"
	"reflect"
	"testing"
	"time"

	"github.com/passbridge/passbridge/config"
	"github.com/passbridge/passbridge/internal/testdb"
	"github.com/passbridge/passbridge/internal/testsrv"
	"github.com/passbridge/passbridge/schema"
	"github.com/passbridge/passbridge/store"
)

func TestMain(m *testing.M) { os.Exit(testsrv.Run(m)) }

var drivers = []string{"sqlite", "postgres", "mysql"}

// database opens a fresh database of the driver with the application's
// users table and passbridge's tables, and a configuration for it.
func database(t *testing.T, driver string) (*store.DB, *config.Config) {
	t.Helper()
	db, cfg := testdb.Open(t, driver)
	cfg.Directory.BaseDN = "OU=People,DC=northwind,DC=example" // spelled otherwise than the DNs: compared case-insensitively
	return db, cfg
}

// fixture writes rows into passbridge's tables.
type fixture struct {
	t   *testing.T
	db  *store.DB
	n   schema.Names
	seq int
}

func (f *fixture) exec(query string, args ...any) {
	f.t.Helper()
	if _, err := store.Exec(context.Background(), f.db, query, args...); err != nil {
		f.t.Fatalf("%s: %v", query, err)
	}
}

func (f *fixture) insert(table string, cols []string, args ...any) {
	f.t.Helper()
	quoted := ""
	marks := ""
	for i, c := range cols {
		if i > 0 {
			quoted += ", "
			marks += ", "
		}
		quoted += f.n.Column(c)
		marks += "?"
	}
	f.exec("INSERT INTO "+table+" ("+quoted+") VALUES ("+marks+")", args...)
}

func (f *fixture) user(name string) int64 {
	f.t.Helper()
	d := f.db.Dialect()
	id, err := d.InsertID(context.Background(), f.db, "INSERT INTO "+f.n.Users+" ("+d.Quote("username")+", "+d.Quote("email")+", "+d.Quote("password_hash")+") VALUES (?, ?, ?)",
		"id", name, name+"@northwind.example", "$2y$10$legacy."+name)
	if err != nil {
		f.t.Fatalf("add user %s: %v", name, err)
	}
	return id
}

// identity adds an identity; userKey 0 leaves it unlinked, department nil
// leaves it NULL.
func (f *fixture) identity(username, state string, department *string, userKey int64) int64 {
	f.t.Helper()
	var key any
	link := schema.LinkUnmatched
	if userKey != 0 {
		key, link = userKey, schema.LinkLinked
	}
	var dept any
	if department != nil {
		dept = *department
	}
	seen := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	id, err := f.db.Dialect().InsertID(context.Background(), f.db, "INSERT INTO "+f.n.Identities+" ("+
		f.n.Column("directory_id")+", "+f.n.Column("dn")+", "+f.n.Column("username")+", "+f.n.Column("department")+", "+
		f.n.Column("state")+", "+f.n.Column("user_key")+", "+f.n.Column("link_state")+", "+
		f.n.Column("first_seen_at")+", "+f.n.Column("last_seen_at")+", "+f.n.Column("updated_at")+") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
		"id", "guid-"+username, dnOf(username, department), username, dept, state, key, link, seen, seen, seen)
	if err != nil {
		f.t.Fatalf("add identity %s: %v", username, err)
	}
	return id
}

// dnOf puts the script's people in OUs: Engineering in its own OU, Sales
// in ou=Sales under ou=Field, the rest right under the base; frank's name
// holds an escaped comma.
func dnOf(username string, department *string) string {
	rdn := "cn=" + username
	if username == "frank" {
		rdn = `cn=Frank\, F.`
	}
	switch {
	case department != nil && *department == "Engineering":
		return rdn + ",ou=Engineering,ou=People,dc=northwind,dc=example"
	case department != nil && *department == "Sales":
		return rdn + ",ou=Sales,ou=Field,ou=People,dc=northwind,dc=example"
	}
	return rdn + ",ou=People,dc=northwind,dc=example"
}

func (f *fixture) credential(userKey, identityID int64, created time.Time, revoked *time.Time) {
	f.t.Helper()
	f.seq++
	var rev any
	if revoked != nil {
		rev = *revoked
	}
	f.insert(f.n.Credentials, []string{"user_key", "identity_id", "credential_id", "public_key", "user_handle", "name", "created_at", "revoked_at"},
		userKey, identityID, []byte(fmt.Sprintf("cred-%d", f.seq)), []byte{0xa5, 0x01}, []byte(fmt.Sprintf("handle-%d", userKey)),
		fmt.Sprintf("passkey %d", f.seq), created, rev)
}

// ceremony adds a ceremony begun at begun that expires 5 minutes later;
// took < 0 leaves it unfinished.
func (f *fixture) ceremony(kind string, begun time.Time, took time.Duration, result string) {
	f.t.Helper()
	f.seq++
	var finished, res any
	if took >= 0 {
		finished = begun.Add(took)
	}
	if result != "" {
		res = result
	}
	f.insert(f.n.Ceremonies, []string{"id", "kind", "session_data", "created_at", "expires_at", "finished_at", "result"},
		fmt.Sprintf("%064d", f.seq), kind, "{}", begun, begun.Add(5*time.Minute), finished, res)
}

func (f *fixture) event(name string, success bool, at time.Time, times int) {
	f.t.Helper()
	for range times {
		f.insert(f.n.Audit, []string{"at", "event", "success", "actor", "target"}, at, name, success, "zoe.orsted", "zoe.orsted")
	}
}

func ptr[T any](v T) *T { return &v }

func day(d, h, m, s int) time.Time { return time.Date(2025, 3, d, h, m, s, 0, time.UTC) }

// now and the window of the scripted data: the window is 1 March 12:00 to
// 31 March 12:00.
var (
	now    = day(31, 12, 0, 0)
	window = 30 * 24 * time.Hour
)

// script writes a small company: departments, a disabled and an unlinked
// identity, passkeys (one revoked), ceremonies of every outcome, audit
// events in and out of the window.
func script(t *testing.T, db *store.DB, cfg *config.Config) {
	f := &fixture{t: t, db: db, n: schema.NamesFor(cfg)}
	eng, sales := ptr("Engineering"), ptr("Sales")

	alice, bob, carol := f.user("alice"), f.user("bob"), f.user("carol")
	dave, erin, frank, gina := f.user("dave"), f.user("erin"), f.user("frank"), f.user("gina")
	hank, judy := f.user("hank"), f.user("judy")
	iAlice := f.identity("alice", schema.StateActive, eng, alice)
	iBob := f.identity("bob", schema.StateActive, eng, bob)
	iCarol := f.identity("carol", schema.StateActive, eng, carol)
	f.identity("dave", schema.StateActive, sales, dave)
	iErin := f.identity("erin", schema.StateActive, sales, erin)
	iFrank := f.identity("frank", schema.StateActive, nil, frank)  // NULL department
	f.identity("gina", schema.StateActive, ptr(""), gina)          // empty department
	iHank := f.identity("hank", schema.StateDisabled, sales, hank) // disabled, has a passkey
	f.identity("ivan", schema.StateActive, eng, 0)                 // unlinked
	f.identity("judy", schema.StateDeleted, sales, judy)

	// Passkeys: two before the window (one of the disabled hank), bob's
	// revoked on 20 March, carol's two, erin's at midnight of 25 March
	// (counts from that day), frank's this morning.
	f.credential(hank, iHank, time.Date(2025, 2, 1, 9, 0, 0, 0, time.UTC), nil)
	f.credential(alice, iAlice, time.Date(2025, 2, 10, 9, 0, 0, 0, time.UTC), nil)
	f.credential(bob, iBob, day(5, 10, 0, 0), ptr(day(20, 9, 0, 0)))
	f.credential(carol, iCarol, day(10, 8, 0, 0), nil)
	f.credential(carol, iCarol, day(15, 14, 0, 0), nil)
	f.credential(erin, iErin, day(25, 0, 0, 0), nil)
	f.credential(frank, iFrank, day(31, 11, 0, 0), nil)

	// Registrations that succeeded in the window: 8, 10, 12, 20, 40 s.
	for i, took := range []time.Duration{20, 8, 40, 12, 10} {
		f.ceremony("registration", day(10+i, 8, 0, 0), took*time.Second, "succeeded")
	}
	// Out of the window, or not registrations: not counted.
	f.ceremony("registration", time.Date(2025, 2, 20, 8, 0, 0, 0, time.UTC), 90*time.Second, "succeeded")
	f.ceremony("login", day(12, 8, 0, 0), 3*time.Second, "succeeded")
	f.ceremony("login", day(12, 9, 0, 0), -1, "") // an abandoned login
	// Abandoned: expired unfinished; cancelled. Failed: over, not
	// abandoned.
	f.ceremony("registration", day(15, 8, 0, 0), -1, "")
	f.ceremony("registration", day(16, 8, 0, 0), 3*time.Second, "cancelled")
	f.ceremony("registration", day(17, 8, 0, 0), 30*time.Second, "failed")
	// The automatic upgrade: one made, one the password manager declined
	// (never finished): its own method, no abandonment.
	f.ceremony("upgrade", day(18, 8, 0, 0), 2*time.Second, "succeeded")
	f.ceremony("upgrade", day(18, 9, 0, 0), -1, "")
	// The invitation after a password sign-in to an application: two
	// added, one begun and cancelled; its own method, no abandonment.
	f.ceremony("app_registration", day(19, 8, 0, 0), 5*time.Second, "succeeded")
	f.ceremony("app_registration", day(19, 9, 0, 0), 7*time.Second, "succeeded")
	f.ceremony("app_registration", day(19, 10, 0, 0), 2*time.Second, "cancelled")
	// Not over: still open; being finished right now.
	f.ceremony("registration", now.Add(-time.Minute), -1, "")
	f.ceremony("registration", now.Add(-30*time.Second), 29*time.Second, "claimed")

	in := day(20, 10, 0, 0)
	f.event("signin.password", true, in, 3)
	f.event("signin.passkey", true, in, 5)
	f.event("signin.link", true, in, 1)
	f.event("signin.recovery", true, now, 1) // at now: in the window
	f.event("signin.password", false, in, 2)
	f.event("signin.failed", false, in, 2)
	f.event("signin.limited", false, in, 1)
	f.event("signin.passkey", true, day(1, 11, 59, 59), 4) // just before the window
	f.event("recovery.email", true, in, 2)
	f.event("recovery.totp", true, day(1, 12, 0, 0), 1) // at the start: in the window
	f.event("recovery.failed", false, in, 3)
	f.event("recovery.code_sent", true, in, 2)
	f.event("recovery.email", true, time.Date(2025, 2, 1, 0, 0, 0, 0, time.UTC), 1)
	f.event("passkey.register", true, in, 6)
}

// wantSeries is the daily enrollment of the script: users, passkeys from
// 1 March to 31 March.
func wantSeries() []Point {
	var out []Point
	for d := 1; d <= 31; d++ {
		p := Point{Day: day(d, 0, 0, 0)}
		switch {
		case d < 5:
			p.Users, p.Passkeys = 2, 2 // hank, alice
		case d < 10:
			p.Users, p.Passkeys = 3, 3 // + bob
		case d < 15:
			p.Users, p.Passkeys = 4, 4 // + carol
		case d < 20:
			p.Users, p.Passkeys = 4, 5 // + carol's second
		case d < 25:
			p.Users, p.Passkeys = 3, 4 // bob's revoked
		case d < 31:
			p.Users, p.Passkeys = 4, 5 // + erin
		default:
			p.Users, p.Passkeys = 5, 6 // + frank
		}
		out = append(out, p)
	}
	return out
}

func TestCompute(t *testing.T) {
	for _, driver := range drivers {
		t.Run(driver, func(t *testing.T) {
			db, cfg := database(t, driver)
			script(t, db, cfg)
			r, err := Compute(context.Background(), db, cfg, now.In(time.FixedZone("CET", 3600)), window)
			if err != nil {
				t.Fatal(err)
			}
			if !r.Now.Equal(now) || r.Now.Location() != time.UTC || !r.Since.Equal(day(1, 12, 0, 0)) || r.Window != window {
				t.Errorf("now %v since %v window %v", r.Now, r.Since, r.Window)
			}
			if r.InScope != 7 || r.Enrolled != 4 || r.Rate != 4.0/7 {
				t.Errorf("in scope %d, enrolled %d, rate %v; want 7, 4, 4/7", r.InScope, r.Enrolled, r.Rate)
			}
			wantDepts := []Group{
				{Name: "Engineering", InScope: 3, Enrolled: 2, Rate: 2.0 / 3},
				{Name: NoDepartment, InScope: 2, Enrolled: 1, Rate: 0.5},
				{Name: "Sales", InScope: 2, Enrolled: 1, Rate: 0.5},
			}
			if !reflect.DeepEqual(r.ByDepartment, wantDepts) {
				t.Errorf("by department:\n got %+v\nwant %+v", r.ByDepartment, wantDepts)
			}
			wantOUs := []Group{
				{Name: "ou=Engineering", InScope: 3, Enrolled: 2, Rate: 2.0 / 3},
				{Name: BaseOU, InScope: 2, Enrolled: 1, Rate: 0.5},
				{Name: "ou=Sales,ou=Field", InScope: 2, Enrolled: 1, Rate: 0.5},
			}
			if !reflect.DeepEqual(r.ByOU, wantOUs) {
				t.Errorf("by OU:\n got %+v\nwant %+v", r.ByOU, wantOUs)
			}
			if want := (Timing{Count: 5, Median: 12 * time.Second, P90: 32 * time.Second}); r.Registration != want {
				t.Errorf("registration %+v, want %+v", r.Registration, want)
			}
			if want := (Abandonment{Begun: 8, Abandoned: 2, Rate: 0.25}); r.Abandonment != want {
				t.Errorf("abandonment %+v, want %+v", r.Abandonment, want)
			}
			if want := map[string]int{"password": 3, "passkey": 5, "link": 1, "recovery": 1}; !maps.Equal(r.SignIns, want) {
				t.Errorf("sign-ins %v, want %v", r.SignIns, want)
			}
			if want := map[string]int{"email": 2, "totp": 1, "link": 0}; !maps.Equal(r.Recoveries, want) {
				t.Errorf("recoveries %v, want %v", r.Recoveries, want)
			}
			want := wantSeries()
			if len(r.Enrollment) != len(want) {
				t.Fatalf("%d points, want %d: %+v", len(r.Enrollment), len(want), r.Enrollment)
			}
			for i, p := range r.Enrollment {
				if !p.Day.Equal(want[i].Day) || p.Day.Location() != time.UTC || p.Users != want[i].Users || p.Passkeys != want[i].Passkeys {
					t.Errorf("point %d: %v users %d passkeys %d; want %v %d %d", i, p.Day, p.Users, p.Passkeys, want[i].Day, want[i].Users, want[i].Passkeys)
				}
			}

			// The metrics mapping: the same figures without the series.
			s, err := snapshotAt(context.Background(), db, cfg, now)
			if err != nil {
				t.Fatal(err)
			}
			wantSnap := Gauges{
				InScope: 7, Enrolled: 4,
				Departments: []DepartmentGauges{
					{Name: "Engineering", InScope: 3, Enrolled: 2}, {Name: NoDepartment, InScope: 2, Enrolled: 1}, {Name: "Sales", InScope: 2, Enrolled: 1},
				},
				Registrations: 5, RegistrationMedian: 12 * time.Second, RegistrationP90: 32 * time.Second,
				CeremoniesOver: 8, CeremoniesAbandoned: 2,
				SignIns:             map[string]int{"password": 3, "passkey": 5, "link": 1, "recovery": 1},
				Recoveries:          map[string]int{"email": 2, "totp": 1, "link": 0},
				RegistrationMethods: map[string]int{"portal": 5, "upgrade": 1, "app": 2},
			}
			if !reflect.DeepEqual(s, wantSnap) {
				t.Errorf("snapshot:\n got %+v\nwant %+v", s, wantSnap)
			}
			if _, err := Snapshot(db, cfg)(context.Background()); err != nil {
				t.Errorf("Snapshot: %v", err)
			}
		})
	}
}

// An empty database gives zeros, never NaN, and a point per day.
func TestComputeEmpty(t *testing.T) {
	db, cfg := database(t, "sqlite")
	r, err := Compute(context.Background(), db, cfg, now, 48*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if r.InScope != 0 || r.Enrolled != 0 || r.Rate != 0 || len(r.ByDepartment) != 0 {
		t.Errorf("scope %+v", r)
	}
	if r.Registration != (Timing{}) || r.Abandonment != (Abandonment{}) {
		t.Errorf("registration %+v abandonment %+v", r.Registration, r.Abandonment)
	}
	if len(r.SignIns) != len(SignInMethods) || len(r.Recoveries) != len(RecoveryPaths) {
		t.Errorf("sign-ins %v recoveries %v", r.SignIns, r.Recoveries)
	}
	want := []Point{{Day: day(29, 0, 0, 0)}, {Day: day(30, 0, 0, 0)}, {Day: day(31, 0, 0, 0)}}
	if !reflect.DeepEqual(r.Enrollment, want) {
		t.Errorf("series %+v, want %+v", r.Enrollment, want)
	}
	if _, err := Compute(context.Background(), db, cfg, now, 0); err == nil {
		t.Error("a zero window is accepted")
	}
}

func TestQuantile(t *testing.T) {
	s := func(secs ...int) []time.Duration {
		var out []time.Duration
		for _, x := range secs {
			out = append(out, time.Duration(x)*time.Second)
		}
		return out
	}
	for _, c := range []struct {
		in          []time.Duration
		median, p90 time.Duration
	}{
		{nil, 0, 0},
		{s(7), 7 * time.Second, 7 * time.Second},
		{s(10, 20), 15 * time.Second, 19 * time.Second},
		{s(40, 8, 12, 20, 10), 12 * time.Second, 32 * time.Second},
		{s(1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11), 6 * time.Second, 10 * time.Second},
	} {
		got := timing(c.in)
		if got.Count != len(c.in) || got.Median != c.median || got.P90 != c.p90 {
			t.Errorf("timing(%v) = %+v, want median %v p90 %v", c.in, got, c.median, c.p90)
		}
	}
	if math.IsNaN(ratio(0, 0)) || ratio(0, 0) != 0 {
		t.Error("ratio of nothing")
	}
}

func TestFieldReport(t *testing.T) {
	if FieldReport.PasskeyCreation != 12*time.Second || FieldReport.PasswordAnd2FA != 45*time.Second ||
		FieldReport.AbandonmentPasswords != 0.15 || FieldReport.AbandonmentPasskeys != 0.05 {
		t.Errorf("field report %+v", FieldReport)
	}
}

func TestOUOf(t *testing.T) {
	base := "DC=corp,DC=example"
	for _, c := range []struct{ dn, want string }{
		{`CN=Smith\, Ann,OU=Sales,OU=Staff,DC=corp,DC=example`, "OU=Sales,OU=Staff"},
		{"uid=ann,ou=people,dc=CORP,dc=example", "ou=people"},
		{"CN=Ann,DC=corp,DC=example", BaseOU},
		{`CN=Ann\2C B,OU=x\,y,DC=corp,DC=example`, `OU=x\,y`},
		{"CN=Ann,OU=Elsewhere,DC=other", "OU=Elsewhere,DC=other"},
		{"CN=Ann", BaseOU},
		{"", BaseOU},
		{"CN=Ann,XDC=corp,DC=example", "XDC=corp,DC=example"},
	} {
		if got := OUOf(c.dn, base); got != c.want {
			t.Errorf("OUOf(%q) = %q, want %q", c.dn, got, c.want)
		}
	}
}
