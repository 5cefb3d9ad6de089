package appsignin_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/descope/virtualwebauthn"

	"github.com/passbridge/passbridge/internal/testdb"
	"github.com/passbridge/passbridge/internal/testsrv"
	"github.com/passbridge/passbridge/store"
)

// directory is the real directory a daemon reads: slapd or Samba AD.
type directory interface {
	NewOU(tb testing.TB) string
	AddUser(tb testing.TB, parent, name string, attrs map[string][]string) string
	Disable(tb testing.TB, dn string)
	DirectoryYAML(base string, extra ...string) string
}

// daemon is `passbridge run` (the real binary) on a real directory and a
// real application database, reached as http://localhost:PORT.
type daemon struct {
	t     testing.TB
	bin   string
	conf  string
	URL   string
	db    *store.DB
	dir   directory
	ou    string
	out   *testsrv.Buffer
	users int
}

type daemonOptions struct {
	driver string // sqlite (default) | postgres
	ad     bool   // Samba AD instead of slapd
	// yaml is added to the configuration (oidc clients, portal keys).
	yaml string
	// port is the portal's port (0: a free one); origins are added to
	// portal.origins.
	port    int
	origins []string
}

// startDaemon writes the configuration, migrates the database with
// `passbridge migrate apply` and starts `passbridge run`, ready when
// /healthz answers.
func startDaemon(t testing.TB, o daemonOptions) *daemon {
	t.Helper()
	if o.driver == "" {
		o.driver = "sqlite"
	}
	d := &daemon{t: t, bin: testsrv.Passbridge(t), out: &testsrv.Buffer{}}
	var dirYAML string
	if o.ad {
		s := testsrv.SambaDC(t)
		d.dir = s
		d.ou = s.NewOU(t)
		dirYAML = s.DirectoryYAML(d.ou, "max_deletions: 100%")
	} else {
		s := testsrv.Slapd(t)
		d.dir = s
		d.ou = s.NewOU(t)
		dirYAML = s.DirectoryYAML(d.ou, "max_deletions: 100%")
	}
	db, cfg := testdb.Open(t, o.driver)
	d.db = db
	q := db.Dialect().Quote
	if _, err := db.ExecContext(context.Background(), "ALTER TABLE "+q("users")+" ADD COLUMN "+q("is_active")+" "+db.Dialect().Types().Bool); err != nil {
		t.Fatal(err)
	}
	port := o.port
	if port == 0 {
		port = testsrv.FreePort(t)
	}
	d.URL = "http://localhost:" + strconv.Itoa(port)
	origins, _ := json.Marshal(append([]string{d.URL}, o.origins...))
	conf := fmt.Sprintf(`database: {driver: %s, dsn: %q}
users_table: {name: users, key: id, username: username, email: email, password: password_hash, active: is_active}
%sschedule: {incremental: "", full: ""}
portal:
  listen: 127.0.0.1:%d
  rp_id: localhost
  rp_name: Test Corp
  origins: %s
log: {format: json}
%s`, cfg.Database.Driver, cfg.Database.DSN.Reveal(), dirYAML, port, origins, o.yaml)
	d.conf = filepath.Join(t.TempDir(), "passbridge.yaml")
	if err := os.WriteFile(d.conf, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	d.command("migrate", "apply")

	cmd := exec.Command(d.bin, "run", "--config", d.conf)
	cmd.Stdout, cmd.Stderr = d.out, d.out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("passbridge run output:\n%s", d.out.String())
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for {
		select {
		case err := <-exited:
			t.Fatalf("passbridge run exited: %v\n%s", err, d.out.String())
		case <-ctx.Done():
			t.Fatalf("passbridge run not healthy: %v\n%s", ctx.Err(), d.out.String())
		case <-time.After(50 * time.Millisecond):
		}
		if res, err := http.Get(d.URL + "/healthz"); err == nil {
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				return d
			}
		}
	}
}

// command runs another passbridge command on the daemon's configuration.
func (d *daemon) command(args ...string) string {
	d.t.Helper()
	cmd := exec.Command(d.bin, append(args, "--config", d.conf)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		d.t.Fatalf("passbridge %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// user is an employee: in the directory, with a users row.
type user struct {
	name, dn, email string
	key             int64
}

// addUser adds an employee to the directory and the users table and runs
// `passbridge sync`, which links them.
func (d *daemon) addUser(prefix string) *user {
	d.t.Helper()
	u := d.addUnsynced(prefix)
	d.command("sync", "--full")
	return u
}

// addUnsynced adds an employee that the next sync links.
func (d *daemon) addUnsynced(prefix string) *user {
	d.t.Helper()
	d.users++
	name := fmt.Sprintf("%s-%d%d", prefix, d.users, time.Now().UnixNano()%100000)
	u := &user{name: name}
	u.dn = d.dir.AddUser(d.t, d.ou, name, map[string][]string{"displayName": {strings.ToUpper(prefix[:1]) + prefix[1:] + " Tester"}})
	u.email = d.mail(name)
	dl := d.db.Dialect()
	q := dl.Quote
	id, err := dl.InsertID(context.Background(), d.db, "INSERT INTO "+q("users")+" ("+q("username")+", "+q("email")+", "+q("password_hash")+", "+q("is_active")+") VALUES (?, ?, ?, ?)",
		"id", name, u.email, "$2a$10$legacy", true)
	if err != nil {
		d.t.Fatal(err)
	}
	u.key = id
	return u
}

// mail is the directory's mail address of a user.
func (d *daemon) mail(name string) string {
	if ad, ok := d.dir.(*testsrv.AD); ok {
		return name + "@" + ad.DNSDomain
	}
	return name + "@" + d.dir.(*testsrv.LDAP).MailDomain
}

// exec runs SQL on the application database.
func (d *daemon) exec(query string, args ...any) {
	d.t.Helper()
	if _, err := store.Exec(context.Background(), d.db, query, args...); err != nil {
		d.t.Fatalf("%s: %v", query, err)
	}
}

// count runs a COUNT(*) query.
func (d *daemon) count(query string, args ...any) int {
	d.t.Helper()
	var n int
	if err := store.Get(context.Background(), d.db, &n, query, args...); err != nil {
		d.t.Fatalf("%s: %v", query, err)
	}
	return n
}

// appSignIns counts the successful application sign-ins of a user.
func (d *daemon) appSignIns(u *user) int {
	q := d.db.Dialect().Quote
	return d.count("SELECT COUNT(*) FROM "+q("passbridge_audit")+" WHERE "+q("event")+" = 'app.signin' AND "+q("success")+" = ? AND "+q("target")+" = ?", true, u.name)
}

// passkey is an employee's passkey in a software authenticator
// (virtualwebauthn), enrolled through the portal's own API as the portal's
// page does: directory password, then registration.
type passkey struct {
	t    testing.TB
	auth virtualwebauthn.Authenticator
	cred virtualwebauthn.Credential
}

// enroll signs u in on the portal with the directory password and
// registers a passkey.
func (d *daemon) enroll(u *user) *passkey {
	d.t.Helper()
	jar, _ := cookiejar.New(nil)
	hc := &http.Client{Jar: jar, Timeout: 30 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	res, err := hc.Get(d.URL + "/")
	if err != nil {
		d.t.Fatal(err)
	}
	res.Body.Close()
	var csrf string
	for _, c := range jar.Cookies(res.Request.URL) {
		if c.Name == "pb_csrf" {
			csrf = c.Value
		}
	}
	res, err = hc.PostForm(d.URL+"/signin/password", url.Values{"username": {u.name}, "password": {testsrv.DefaultUserPassword}, "_csrf": {csrf}})
	if err != nil {
		d.t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusSeeOther {
		d.t.Fatalf("password sign-in of %s: %d", u.name, res.StatusCode)
	}
	post := func(path string, body any) (int, []byte) {
		raw, _ := json.Marshal(body)
		req, _ := http.NewRequest(http.MethodPost, d.URL+path, bytes.NewReader(raw))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-CSRF-Token", csrf)
		res, err := hc.Do(req)
		if err != nil {
			d.t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res.StatusCode, b
	}
	st, b := post("/webauthn/register/begin", nil)
	if st != http.StatusOK {
		d.t.Fatalf("register begin: %d %s", st, b)
	}
	var begun struct {
		Ceremony string          `json:"ceremony"`
		Options  json.RawMessage `json:"options"`
	}
	json.Unmarshal(b, &begun)
	opts, err := virtualwebauthn.ParseAttestationOptions(string(begun.Options))
	if err != nil {
		d.t.Fatal(err)
	}
	pk := &passkey{t: d.t, auth: virtualwebauthn.NewAuthenticator(), cred: virtualwebauthn.NewCredential(virtualwebauthn.KeyTypeEC2)}
	auth := pk.auth
	auth.Options.ClientExtensionResults = map[string]any{"credProps": map[string]any{"rk": true}}
	rp := virtualwebauthn.RelyingParty{Name: "Test Corp", ID: "localhost", Origin: d.URL}
	att := virtualwebauthn.CreateAttestationResponse(rp, auth, pk.cred, *opts)
	if st, b := post("/webauthn/register/finish", map[string]any{"ceremony": begun.Ceremony, "credential": json.RawMessage(att)}); st != http.StatusOK {
		d.t.Fatalf("register finish: %d %s", st, b)
	}
	pk.auth.Options.UserHandle = []byte(opts.UserID)
	pk.auth.AddCredential(pk.cred)
	return pk
}

// assert answers sign-in options as the authenticator would, in a page of
// origin.
func (pk *passkey) assert(options json.RawMessage, origin string) json.RawMessage {
	pk.t.Helper()
	opts, err := virtualwebauthn.ParseAssertionOptions(string(options))
	if err != nil {
		pk.t.Fatalf("sign-in options: %v\n%s", err, options)
	}
	pk.cred.Counter++
	rp := virtualwebauthn.RelyingParty{Name: "Test Corp", ID: "localhost", Origin: origin}
	return json.RawMessage(virtualwebauthn.CreateAssertionResponse(rp, pk.auth, pk.cred, *opts))
}

// api posts JSON to passbridge with an Origin header ("" for a backend's
// call) and returns the status, the body and the headers.
func api(t testing.TB, base, path, origin string, body any) (int, map[string]any, http.Header) {
	t.Helper()
	raw, _ := json.Marshal(body)
	req, _ := http.NewRequest(http.MethodPost, base+path, bytes.NewReader(raw))
	req.Header.Set("Content-Type", "application/json")
	if origin != "" {
		req.Header.Set("Origin", origin)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("%s: %d, not JSON: %q", path, res.StatusCode, b)
	}
	return res.StatusCode, m, res.Header
}
