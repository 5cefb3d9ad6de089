package enroll

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/passbridge/passbridge/config"
	"github.com/passbridge/passbridge/enroll/adoption"
	"github.com/passbridge/passbridge/schema"
	"github.com/passbridge/passbridge/store"
)

const testAdminToken = "92e1549a2e6a7525dc70cbed1e61dadc"

// adminEnv is a portal whose admin group holds the admin through a nested
// group (it-admins > helpdesk > the admin), on slapd.
func adminEnv(t *testing.T) (*env, *user) {
	t.Helper()
	var admins string
	e := newEnv(t, envOptions{mail: true, configure: func(cfg *config.Config) {
		cfg.Admin.Token = testAdminToken
		cfg.Portal.Recovery.Link = true
		// Filled in below, once the groups exist; the portal reads it per
		// sign-in.
		cfg.Portal.AdminGroup = "cn=placeholder"
	}})
	admin := e.addUser("admin", true)
	s := e.dir.(slapdDir).s
	helpdesk := s.AddGroup(t, e.ou, "helpdesk-"+admin.name, admin.dn)
	admins = s.AddGroup(t, e.ou, "it-admins-"+admin.name, helpdesk)
	e.cfg.Portal.AdminGroup = admins
	e.sync()
	return e, admin
}

// TestAdminRoutesRefused walks the router's route list: every route under
// /admin is refused with 403 to a visitor, to a signed-in employee who is
// not an admin, and to a wrong token; a new route cannot be forgotten.
func TestAdminRoutesRefused(t *testing.T) {
	e, _ := adminEnv(t)
	// The walk tries a wrong token on every GET route from one address:
	// more than the per-address limit of wrong tokens, which is
	// TestAdminTokenLimited's subject.
	e.cfg.Portal.RateLimits.PasswordPerUser = 100
	staff := e.addUser("staff", true)
	e.sync()
	employee := e.client()
	employee.mustSignIn(staff.name, staff.password)
	anonymous := e.client()
	anonymous.get("/")
	param := regexp.MustCompile(`:[a-z]+`)
	n := 0
	for _, r := range e.echo.Routes() {
		if r.Path != "/admin" && !strings.HasPrefix(r.Path, "/admin/") {
			continue
		}
		n++
		path := param.ReplaceAllString(r.Path, "1")
		for who, c := range map[string]*client{"visitor": anonymous, "employee": employee} {
			var res response
			if r.Method == http.MethodGet {
				res = c.get(path)
			} else {
				res = c.form(path, url.Values{"kind": {"enroll"}, "policy": {"allowed"}, "user_key": {"1"}})
			}
			if res.status != http.StatusForbidden {
				t.Errorf("%s %s as %s: %d, want 403", r.Method, r.Path, who, res.status)
			}
		}
		req, _ := http.NewRequest(r.Method, e.URL+path, nil)
		req.Header.Set("Authorization", "Bearer wrong-token-wrong-token")
		if res := anonymous.do(req); res.status != http.StatusForbidden {
			t.Errorf("%s %s with a wrong token: %d", r.Method, r.Path, res.status)
		}
	}
	if n < 10 {
		t.Fatalf("only %d admin routes found: the walk is broken", n)
	}
	// The right token opens GET routes (scripts) and the token sign-in.
	req, _ := http.NewRequest(http.MethodGet, e.URL+"/admin/audit/export?format=json", nil)
	req.Header.Set("Authorization", "Bearer "+testAdminToken)
	if res := anonymous.do(req); res.status != http.StatusOK {
		t.Errorf("export with the admin token: %d", res.status)
	}
	tc := e.client()
	if r := tc.form("/signin/admin-token", url.Values{"token": {"nope"}}); r.status != http.StatusUnauthorized {
		t.Errorf("wrong token sign-in: %d", r.status)
	}
	if r := tc.form("/signin/admin-token", url.Values{"token": {testAdminToken}}); r.status != http.StatusSeeOther {
		t.Fatalf("token sign-in: %d %s", r.status, strip(r.body))
	}
	if r := tc.get("/admin"); r.status != http.StatusOK {
		t.Errorf("console after token sign-in: %d %s", r.status, strip(r.body))
	}
	// A page address typed with a trailing slash goes to the page (the
	// query kept), never to a 404; a form post is not redirected.
	for path, want := range map[string]string{"/admin/": "/admin", "/admin/audit/?event=sync.run": "/admin/audit?event=sync.run", "//evil.example/": "/evil.example"} {
		if r := tc.get(path); r.status != http.StatusMovedPermanently || r.header.Get("Location") != want {
			t.Errorf("GET %s: %d to %q, want 301 to %q", path, r.status, r.header.Get("Location"), want)
		}
	}
	if r := tc.form("/signout/", url.Values{}); r.status == http.StatusMovedPermanently {
		t.Errorf("POST /signout/ redirected: a form post must not be")
	}
}

// TestAdminConsole: an admin (nested group member) searches, looks at a
// user, issues links, revokes passkeys (their sessions end), sets the
// password policy, links an unmatched identity by hand (a full sync keeps
// it), syncs, and reads and exports the audit trail.
func TestAdminConsole(t *testing.T) {
	e, admin := adminEnv(t)
	worker := e.addUser("worker", true)
	loner := e.addUser("loner", false) // no users row: unmatched
	e.sync()
	ac := e.client()
	ac.mustSignIn(admin.name, admin.password)
	if r := ac.get("/"); !strings.Contains(r.body, `href="/admin"`) {
		t.Error("an admin's page has no link to the console")
	}
	home := ac.get("/admin")
	if home.status != http.StatusOK {
		t.Fatalf("/admin: %d %s", home.status, strip(home.body))
	}
	for _, want := range []string{"<svg", "12", "45", "By OU", "<code>" + adoption.BaseOU + "</code>"} {
		mustContain(t, "dashboard", home.body, want)
	}

	// The worker has two passkeys and a session made with one.
	wc := e.client()
	wc.mustSignIn(worker.name, worker.password)
	k1 := wc.register("laptop")
	wc.register("phone")
	wp := newClient(t, e.URL)
	wp.auth = wc.auth
	if r := wp.passkeySignIn(&k1); r.status != http.StatusOK {
		t.Fatalf("worker passkey sign-in: %d %s", r.status, r.body)
	}

	id := e.identityID(worker)
	page := ac.get("/admin/users?q=" + url.QueryEscape(strings.ToUpper(worker.name[:5])))
	mustContain(t, "search", page.body, "/admin/users/"+strconv.FormatInt(id, 10))
	detail := ac.get("/admin/users/" + strconv.FormatInt(id, 10))
	if detail.status != http.StatusOK {
		t.Fatalf("user page: %d %s", detail.status, strip(detail.body))
	}
	for _, want := range []string{worker.dn, "laptop", "phone", "passkey.register"} {
		mustContain(t, "user page", detail.body, want)
	}

	// Links.
	for _, kind := range []string{LinkEnroll, LinkRecovery} {
		r := ac.form("/admin/users/"+strconv.FormatInt(id, 10)+"/links", url.Values{"kind": {kind}, "expires": {"2h"}})
		if r.status != http.StatusOK || !strings.Contains(r.body, e.URL+"/link/") {
			t.Errorf("issue %s link: %d %s", kind, r.status, strip(r.body))
		}
	}
	if e.auditCount(evLinkIssued, true, worker.name) != 2 {
		t.Error("issued links are not in the audit trail")
	}

	// Revoke the laptop passkey: the session made with it ends.
	var laptop int64
	for _, cr := range e.storedPasskeys(worker) {
		if cr.Name == "laptop" {
			laptop = cr.ID
		}
	}
	r := ac.form("/admin/users/"+strconv.FormatInt(id, 10)+"/passkeys/"+strconv.FormatInt(laptop, 10)+"/revoke", url.Values{})
	if r.status != http.StatusSeeOther {
		t.Fatalf("revoke: %d %s", r.status, strip(r.body))
	}
	if r := wp.get("/"); !strings.Contains(r.body, `id="password-form"`) {
		t.Error("the session made with the revoked passkey is still signed in")
	}
	if r := wp.passkeySignIn(&k1); r.status != http.StatusForbidden {
		t.Errorf("sign-in with the revoked passkey: %d", r.status)
	}
	if r := wc.get("/"); !strings.Contains(r.body, "Your passkeys") {
		t.Error("the worker's password session should go on after one passkey was revoked")
	}
	r = ac.form("/admin/users/"+strconv.FormatInt(id, 10)+"/passkeys/revoke-all", url.Values{})
	if r.status != http.StatusSeeOther || e.activePasskeys(worker) != 0 || e.passkeyState(worker) != "NULL" {
		t.Errorf("revoke all: %d, %d active, state %s", r.status, e.activePasskeys(worker), e.passkeyState(worker))
	}

	// Password policy, in the column the migration added.
	if r := ac.form("/admin/users/"+strconv.FormatInt(id, 10)+"/password-policy", url.Values{"policy": {schema.PasswordRefusedWithPasskey}}); r.status != http.StatusSeeOther {
		t.Fatalf("policy: %d %s", r.status, strip(r.body))
	}
	n := schema.NamesFor(e.cfg)
	var pol *string
	if err := store.Get(context.Background(), e.db, &pol, "SELECT "+n.PasswordPolicy+" FROM "+n.Users+" WHERE "+n.UserKey+" = ?", worker.key); err != nil || pol == nil || *pol != schema.PasswordRefusedWithPasskey {
		t.Errorf("password policy column = %v (%v)", pol, err)
	}
	if r := ac.form("/admin/users/"+strconv.FormatInt(id, 10)+"/password-policy", url.Values{"policy": {"whatever"}}); r.status != http.StatusBadRequest {
		t.Errorf("bad policy: %d", r.status)
	}

	// The unmatched identity, linked by hand to a new users row; a full
	// sync keeps the link.
	lid := e.identityID(loner)
	if r := ac.get("/admin/users?link=unmatched"); !strings.Contains(r.body, loner.name) {
		t.Error("the unmatched identity is not in the review list")
	}
	d := e.db.Dialect()
	key, err := d.InsertID(context.Background(), e.db, "INSERT INTO "+d.Table("", "users")+" ("+d.Quote("username")+", "+d.Quote("email")+") VALUES (?, ?)", "id", "contractor-x", "someone-else@corp.example")
	if err != nil {
		t.Fatal(err)
	}
	if r := ac.form("/admin/users/"+strconv.FormatInt(lid, 10)+"/manual-link", url.Values{"user_key": {strconv.FormatInt(key, 10)}}); r.status != http.StatusSeeOther {
		t.Fatalf("manual link: %d %s", r.status, strip(r.body))
	}
	e.sync()
	it, err := e.portal.data.identityByID(context.Background(), lid)
	if err != nil || it.LinkState != schema.LinkManual || it.UserKey == nil {
		t.Fatalf("after a full sync the manual link is %+v (%v)", it, err)
	}
	if r := ac.form("/admin/users/"+strconv.FormatInt(lid, 10)+"/manual-link", url.Values{"user_key": {"99999"}}); r.status != http.StatusConflict {
		t.Errorf("manual link to a missing row: %d", r.status)
	}
	if r := ac.form("/admin/users/"+strconv.FormatInt(lid, 10)+"/unlink", url.Values{}); r.status != http.StatusSeeOther {
		t.Errorf("unlink: %d %s", r.status, strip(r.body))
	}
	if it, _ := e.portal.data.identityByID(context.Background(), lid); it == nil || it.LinkState != schema.LinkUnmatched {
		t.Errorf("after unlink: %+v", it)
	}

	// Sync from the console.
	r = ac.form("/admin/sync", url.Values{"full": {"1"}, "dry_run": {"1"}})
	if r.status != http.StatusOK || !strings.Contains(r.body, "dry run") {
		t.Errorf("sync now: %d %s", r.status, strip(r.body))
	}
	if r := ac.get("/admin/sync"); !strings.Contains(r.body, "console") {
		t.Error("the console's run is not in the history")
	}

	// The audit trail: filtered, exported.
	r = ac.get("/admin/audit?user=" + url.QueryEscape(worker.name) + "&event=admin.*")
	for _, want := range []string{evAdminRevoke, evAdminRevokeAll, evAdminPolicy} {
		mustContain(t, "audit page", r.body, want)
	}
	if strings.Contains(r.body, evRegistered) {
		t.Error("the event filter let other events through")
	}
	r = ac.get("/admin/audit/export?format=csv&user=" + url.QueryEscape(worker.name))
	rows, err := csv.NewReader(strings.NewReader(r.body)).ReadAll()
	if err != nil || len(rows) < 5 || rows[0][0] != "id" {
		t.Errorf("CSV export: %v, %d rows", err, len(rows))
	}
	r = ac.get("/admin/audit/export?format=json&event=signin.*")
	var events []map[string]any
	if err := json.Unmarshal([]byte(r.body), &events); err != nil || len(events) == 0 {
		t.Errorf("JSON export: %v (%d events)", err, len(events))
	}
	for _, ev := range events {
		if !strings.HasPrefix(ev["event"].(string), "signin.") {
			t.Errorf("JSON export with event=signin.* has %v", ev["event"])
		}
	}
}

// identityID is the stored identity of a directory user.
func (e *env) identityID(u *user) int64 {
	e.t.Helper()
	n := schema.NamesFor(e.cfg)
	var id int64
	if err := store.Get(context.Background(), e.db, &id, "SELECT "+e.db.Dialect().Quote("id")+" FROM "+n.Identities+" WHERE "+e.db.Dialect().Quote("username")+" = ?", u.name); err != nil {
		e.t.Fatalf("identity of %s: %v", u.name, err)
	}
	return id
}

// TestAdoptionMetrics: after a scripted set of enrollments (one finished,
// one abandoned, one cancelled) and sign-ins, /metrics reports the
// ceremonies and the adoption figures.
func TestAdoptionMetrics(t *testing.T) {
	e := newEnv(t, envOptions{})
	a, b, c := e.addUser("ma", true), e.addUser("mb", true), e.addUser("mc", true)
	e.sync()
	ca := e.client()
	ca.mustSignIn(a.name, a.password)
	ca.register("")
	// b begins and walks away: the ceremony expires unfinished.
	cb := e.client()
	cb.mustSignIn(b.name, b.password)
	cb.begin("/webauthn/register/begin", nil)
	n := schema.NamesFor(e.cfg)
	q := e.db.Dialect().Quote
	if _, err := store.Exec(context.Background(), e.db, "UPDATE "+n.Ceremonies+" SET "+q("expires_at")+" = ? WHERE "+q("identity_id")+" = ?",
		time.Now().Add(-time.Minute).UTC(), e.identityID(b)); err != nil {
		t.Fatal(err)
	}
	// c cancels in the browser's dialog.
	cc := e.client()
	cc.mustSignIn(c.name, c.password)
	cer, _ := cc.begin("/webauthn/register/begin", nil)
	if r := cc.post("/webauthn/cancel", map[string]any{"ceremony": cer, "kind": "registration", "reason": "NotAllowedError"}); r.status != http.StatusNoContent {
		t.Fatalf("cancel: %d %s", r.status, r.body)
	}
	body := e.client().get("/metrics").body
	for _, want := range []string{
		`passbridge_portal_ceremonies_total{kind="registration",result="succeeded"} 1`,
		`passbridge_portal_ceremonies_total{kind="registration",result="cancelled"} 1`,
		`passbridge_adoption_in_scope_users 3`,
		`passbridge_adoption_enrolled_users 1`,
		`passbridge_adoption_registration_ceremonies 3`,
		`passbridge_adoption_abandonment_ratio 0.6666666666666666`,
		`passbridge_adoption_registrations 1`,
		`passbridge_adoption_signins{method="password"} 3`,
		`passbridge_adoption_registration_seconds{quantile="0.5"}`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if t.Failed() {
		for _, l := range strings.Split(body, "\n") {
			if strings.Contains(l, "adoption") || strings.Contains(l, "ceremonies") {
				t.Log(l)
			}
		}
	}
}
