package config

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

const validYAML = `database:
  driver: postgres
  dsn: postgres://passbridge:s3cret-pw@db.corp.example:5432/erp?sslmode=verify-full
users_table:
  name: users
  key: id
directory:
  urls: [ldaps://dc1.corp.example:636, ldaps://dc2.corp.example:636]
  kind: ad
  bind_dn: CN=svc-passbridge,OU=Service,DC=corp,DC=example
  bind_password_file: BINDPW
  base_dn: DC=corp,DC=example
  max_deletions: 25
portal:
  rp_id: passkeys.corp.example
  origins: [https://passkeys.corp.example]
`

// write puts a config file (and the bind password file it names) in a temp dir.
func write(t *testing.T, body string) string {
	t.Helper()
	dir := t.TempDir()
	pw := filepath.Join(dir, "bindpw")
	if err := os.WriteFile(pw, []byte("b1nd-pw\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "passbridge.yaml")
	if err := os.WriteFile(p, []byte(strings.ReplaceAll(body, "BINDPW", pw)), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLoadValid(t *testing.T) {
	cfg, err := Load(write(t, validYAML), nil)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Directory.BindPassword.Reveal() != "b1nd-pw" {
		t.Errorf("bind password from file = %q, want trailing newline trimmed", cfg.Directory.BindPassword.Reveal())
	}
	if cfg.Directory.Attributes.ID != "objectGUID" || cfg.Directory.UserFilter == "" {
		t.Errorf("AD preset not applied: %+v", cfg.Directory.Attributes)
	}
	if cfg.Directory.MaxDeletions.IsPct || cfg.Directory.MaxDeletions.Count != 25 {
		t.Errorf("max_deletions = %+v, want count 25", cfg.Directory.MaxDeletions)
	}
	if cfg.Schedule.Full != "0 2 * * *" {
		t.Errorf("default schedule lost: %q", cfg.Schedule.Full)
	}
}

func TestUnknownKeyNamesFileLineAndKey(t *testing.T) {
	p := write(t, strings.Replace(validYAML, "  kind: ad\n", "  kind: ad\n  bind_passwrod: x\n", 1))
	_, err := Load(p, nil)
	if err == nil {
		t.Fatal("misspelled key accepted")
	}
	want := p + `:10: unknown key "bind_passwrod" in directory`
	if !strings.Contains(err.Error(), want) {
		t.Fatalf("error %q does not contain %q", err, want)
	}
}

func TestBadYAML(t *testing.T) {
	for name, body := range map[string]string{
		"syntax":     "database: [unclosed\n",
		"wrong type": "directory:\n  page_size: lots\n",
		"duration":   "directory:\n  timeout: soon\n",
		"threshold":  "directory:\n  max_deletions: 5 percent\n",
		"two docs":   validYAML + "---\nlog: {level: info}\n",
	} {
		t.Run(name, func(t *testing.T) {
			p := write(t, body)
			_, err := Load(p, nil)
			if err == nil {
				t.Fatal("accepted")
			}
			if !strings.Contains(err.Error(), p) {
				t.Errorf("error does not name the file: %v", err)
			}
		})
	}
}

func TestValidationNamesKeyAndExpectation(t *testing.T) {
	body := strings.NewReplacer("kind: ad", "kind: novell", "driver: postgres", "driver: oracle",
		"https://passkeys.corp.example]", "passkeys.corp.example]").Replace(validYAML)
	_, err := Load(write(t, body), nil)
	if err == nil {
		t.Fatal("invalid config accepted")
	}
	for _, want := range []string{
		`directory.kind: must be one of ad, openldap, freeipa (got "novell")`,
		`database.driver: must be one of sqlite, postgres, mysql (got "oracle")`,
		`portal.origins[0]: expected an origin`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
}

func TestEnvOverrides(t *testing.T) {
	env := []string{
		"PASSBRIDGE_DIRECTORY_URLS=ldaps://a.example:636, ldaps://b.example:636",
		"PASSBRIDGE_DIRECTORY_PAGE_SIZE=500",
		"PASSBRIDGE_DIRECTORY_START_TLS=false",
		"PASSBRIDGE_DIRECTORY_MAX_DELETIONS=2%",
		"PASSBRIDGE_PORTAL_SESSION_LIFETIME=2h",
		"PASSBRIDGE_DATABASE_DSN=postgres://u:envpw@h/db",
		"PASSBRIDGE_CONFIG=ignored-by-load",
		"PASSBRIDGE_TEST_REQUIRE_SERVERS=1",
		"HOME=/root",
	}
	cfg, err := Load(write(t, validYAML), env)
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.Directory.URLs; len(got) != 2 || got[1] != "ldaps://b.example:636" {
		t.Errorf("urls = %q", got)
	}
	if cfg.Directory.PageSize != 500 || cfg.Portal.SessionLifetime.D().Hours() != 2 {
		t.Errorf("page size %d, lifetime %v", cfg.Directory.PageSize, cfg.Portal.SessionLifetime)
	}
	if !cfg.Directory.MaxDeletions.IsPct || cfg.Directory.MaxDeletions.Percent != 2 {
		t.Errorf("max_deletions = %+v", cfg.Directory.MaxDeletions)
	}
	if cfg.Database.DSN.Reveal() != "postgres://u:envpw@h/db" {
		t.Errorf("dsn not overridden")
	}
}

func TestEnvErrors(t *testing.T) {
	_, err := Load(write(t, validYAML), []string{"PASSBRIDGE_DIRECTORY_PAGESIZE=5", "PASSBRIDGE_DIRECTORY_START_TLS=maybe"})
	if err == nil {
		t.Fatal("accepted")
	}
	for _, want := range []string{"PASSBRIDGE_DIRECTORY_PAGESIZE is not a configuration key", "PASSBRIDGE_DIRECTORY_START_TLS (directory.start_tls): expected true or false"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q: %v", want, err)
		}
	}
}

func TestSecretFileAndInlineBothSetIsError(t *testing.T) {
	body := strings.Replace(validYAML, "  bind_password_file:", "  bind_password: inline\n  bind_password_file:", 1)
	if _, err := Load(write(t, body), nil); err == nil || !strings.Contains(err.Error(), "both set") {
		t.Fatalf("err = %v", err)
	}
	body = strings.Replace(validYAML, "BINDPW", "/nonexistent/bindpw", 1)
	dir := t.TempDir()
	p := filepath.Join(dir, "c.yaml")
	os.WriteFile(p, []byte(body), 0o600)
	if _, err := Load(p, nil); err == nil || !strings.Contains(err.Error(), "directory.bind_password_file") {
		t.Fatalf("missing secret file: err = %v", err)
	}
}

func TestEffectiveMasksSecrets(t *testing.T) {
	cfg, err := Load(write(t, validYAML), []string{"PASSBRIDGE_ADMIN_TOKEN=adm1n-t0ken-long-enough"})
	if err != nil {
		t.Fatal(err)
	}
	out, err := cfg.Effective()
	if err != nil {
		t.Fatal(err)
	}
	s := string(out)
	for _, secret := range []string{"s3cret-pw", "b1nd-pw", "adm1n-t0ken-long-enough"} {
		if strings.Contains(s, secret) {
			t.Errorf("effective config leaks %q:\n%s", secret, s)
		}
	}
	for _, want := range []string{"db.corp.example:5432/erp", "bind_password: '********'", "token: '********'", "max_deletions: \"25\""} {
		if !strings.Contains(s, want) {
			t.Errorf("effective config lacks %q:\n%s", want, s)
		}
	}
	// The effective output is itself a valid configuration shape.
	var back Config = Default()
	if err := decodeStrict("effective", out, &back); err != nil {
		t.Errorf("effective output does not decode strictly: %v", err)
	}
}

func TestMaskDSN(t *testing.T) {
	for in, want := range map[string]string{
		"postgres://app:pw@db:5432/erp":           "postgres://app:********@db:5432/erp",
		"host=db user=app password=pw dbname=erp": "host=db user=app password=******** dbname=erp",
		"app:pw@tcp(db:3306)/erp?parseTime=true":  "app:********@tcp(db:3306)/erp?parseTime=true",
		"file:/var/lib/passbridge/demo.db":        "file:/var/lib/passbridge/demo.db",
	} {
		if got := MaskDSN(in); got != want {
			t.Errorf("MaskDSN(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestThreshold(t *testing.T) {
	pct := Threshold{Percent: 5, IsPct: true}
	if pct.Exceeded(5, 100) || !pct.Exceeded(6, 100) {
		t.Error("5% of 100")
	}
	if !pct.Exceeded(1, 0) {
		t.Error("any deletion out of an empty total exceeds a percentage")
	}
	if (Threshold{Count: 3}).Exceeded(3, 10) || !(Threshold{Count: 3}).Exceeded(4, 10) {
		t.Error("count 3")
	}
}

func TestScheduleAndAdminValidation(t *testing.T) {
	body := validYAML + "schedule:\n  incremental: \"*/5 * * *\"\n  full: \"@every 100ms\"\nadmin:\n  token: short\n"
	_, err := Load(write(t, body), nil)
	if err == nil {
		t.Fatal("bad schedules and a short token accepted")
	}
	for _, want := range []string{"schedule.incremental:", "expected 5 fields", "schedule.full:", "at least 1s", "admin.token: is too short", "openssl rand -hex 32"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
	// An empty spec turns that kind of scheduled sync off.
	off := validYAML + "schedule:\n  incremental: \"\"\n  full: \"@every 1h\"\n"
	cfg, err := Load(write(t, off), nil)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Schedule.Incremental != "" || cfg.Schedule.Full != "@every 1h" {
		t.Fatalf("schedule = %+v", cfg.Schedule)
	}
}

func TestPortalValidation(t *testing.T) {
	for _, tc := range []struct {
		name, portal, want string
	}{
		{"origin not under rp_id", "  rp_id: passkeys.corp.example\n  origins: [https://evil.example]\n", `portal.origins[0]: host "evil.example" is neither portal.rp_id`},
		{"http off localhost", "  rp_id: corp.example\n  origins: [http://passkeys.corp.example]\n", "portal.origins[0]: must be https://"},
		{"rp_id with scheme", "  rp_id: https://corp.example\n  origins: [https://corp.example]\n", "portal.rp_id: expected a domain name"},
		{"origins without rp_id", "  origins: [https://corp.example]\n", "portal.rp_id: is required when portal.origins is set"},
		{"rp_id without origins", "  rp_id: corp.example\n", "portal.origins: needs at least one origin"},
		{"bad aaguid", "  rp_id: corp.example\n  origins: [https://corp.example]\n  policy: {allowed_aaguids: [yubikey]}\n", "portal.policy.allowed_aaguids[0]: expected an AAGUID"},
		{"bad attestation", "  rp_id: corp.example\n  origins: [https://corp.example]\n  policy: {attestation: always}\n", "portal.policy.attestation: must be one of none, indirect, direct, enterprise"},
		{"too many attempts", "  rp_id: corp.example\n  origins: [https://corp.example]\n  rate_limits: {password_per_user: 0}\n", "portal.rate_limits.password_per_user: must be between 1 and 100"},
		{"bad proxy", "  rp_id: corp.example\n  origins: [https://corp.example]\n  trusted_proxies: [lb.corp]\n", "portal.trusted_proxies[0]: expected an address or CIDR"},
		{"unknown policy key", "  rp_id: corp.example\n  origins: [https://corp.example]\n  policy: {forbid_sync: true}\n", `unknown key "forbid_sync" in portal.policy`},
		{"admin group cache too long", "  rp_id: corp.example\n  origins: [https://corp.example]\n  admin_group_cache: 2h\n", "portal.admin_group_cache: must be between 0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body := validYAML[:strings.Index(validYAML, "portal:\n")] + "portal:\n" + tc.portal
			_, err := Load(write(t, body), nil)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error = %v, want it to contain %q", err, tc.want)
			}
		})
	}
	cfg, err := Load(write(t, validYAML), []string{"PASSBRIDGE_PORTAL_POLICY_FORBID_SYNCED=true", "PASSBRIDGE_PORTAL_POLICY_ALLOWED_AAGUIDS=ea9b8d66-4d01-1d21-3ce4-b6b48cb575d4, fbfc3007-154e-4ecc-8c0b-6e020557d7bd"})
	if err != nil {
		t.Fatal(err)
	}
	if p := cfg.Portal.Policy; !p.ForbidSynced || len(p.AllowedAAGUIDs) != 2 || p.MaxPasskeys != 10 || p.Attestation != "none" {
		t.Errorf("policy = %+v, want the env overrides over the defaults", p)
	}
	if r := cfg.Portal.RateLimits; r.PasswordPerUser != 3 || r.PasswordWindow.D() != 15*time.Minute {
		t.Errorf("rate limits default = %+v, want 3 per 15m", r)
	}
}

// TestAdminTokenStrength: the admin token must carry at least 128 bits in
// practice (32 hex or 22 base64url characters), obviously low-entropy
// values are refused, and the error says how to make a good one.
func TestAdminTokenStrength(t *testing.T) {
	for _, tc := range []struct {
		token string
		ok    bool
	}{
		{"3f9c0e7a1b24d6c8e05f9a7b3c1d2e4f", true},                                 // openssl rand -hex 16
		{"3f9c0e7a1b24d6c8e05f9a7b3c1d2e4f8a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d", true}, // openssl rand -hex 32
		{"Zq3_x9Kp-L2mVb7wR4tYn8", true},                                           // 22 base64url characters
		{"q2Vx8k+P/r1T9mZ3bL0nWcY5dE7aQ4uH6jS2fG8iK0o=", true},                     // openssl rand -base64 32
		{"3f9c0e7a1b24d6c8e05f9a7b3c1d2e4", false},                                 // 31 hex: 124 bits
		{"Zq3_x9Kp-L2mVb7wR4tYn", false},                                           // 21 base64url: 126 bits
		{"adm1n-t0ken-long-enough", true},
		{strings.Repeat("a", 40), false},                   // one repeated character
		{strings.Repeat("ab", 20), false},                  // a repeated pattern
		{strings.Repeat("c0ffee", 6), false},               // a repeated pattern, hex
		{"00000000000000000000000000000001", false},        // almost one character
		{"abcdefghijklmnopqrstuvwxyz012345", false},        // the alphabet in order
		{"0123456789abcdef0123456789abcdef", false},        // a sequence, twice
		{"correct horse battery staple!!!!", false},        // not hex or base64: spaces, punctuation
		{"Zq3_x9Kp-L2mVb7wR4tYn8==", true},                 // base64 of 16 bytes, padded
		{"Zq3_x9Kp-L2mVb7wR4tY==", false},                  // padding is not entropy: 20 characters
		{"6a1f0c9e4b7d2a8f5c3e0b9d7a6f4c2e1b8d5a3f", true}, // 40 hex
	} {
		cfg, err := Load(write(t, validYAML+"admin:\n  token: \""+tc.token+"\"\n"), nil)
		switch {
		case tc.ok && err != nil:
			t.Errorf("%q refused: %v", tc.token, err)
		case !tc.ok && err == nil:
			t.Errorf("%q accepted (%d characters)", tc.token, len(cfg.Admin.Token.Reveal()))
		case !tc.ok:
			for _, want := range []string{"admin.token:", "openssl rand -hex 32"} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("%q: the error lacks %q: %v", tc.token, want, err)
				}
			}
			if strings.Contains(err.Error(), tc.token) {
				t.Errorf("%q: the error repeats the token: %v", tc.token, err)
			}
		}
	}
}

// TestOIDCClients: oidc.clients from the file (a secret from its file)
// and from the environment (a YAML flow list), printed masked, and each
// mistake named by its key.
func TestOIDCClients(t *testing.T) {
	dir := t.TempDir()
	secretFile := filepath.Join(dir, "erp-secret")
	os.WriteFile(secretFile, []byte("erp-client-secret-0123456789\n"), 0o600)
	p := write(t, validYAML+`oidc:
  clients:
    - id: erp
      secret_file: `+secretFile+`
      redirect_uris: [https://erp.corp.example/oidc/callback]
      post_logout_redirect_uris: [https://erp.corp.example/]
    - id: spa
      public: true
      redirect_uris: [http://localhost:5173/callback]
      origins: [https://spa.passkeys.corp.example]
      subject: directory_id
      password_fallback: true
`)
	cfg, err := Load(p, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.OIDC.Clients[0].Secret.Reveal(); got != "erp-client-secret-0123456789" {
		t.Errorf("secret from secret_file = %q", got)
	}
	out, err := cfg.Effective()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(out), "erp-client-secret") || !strings.Contains(string(out), "secret: '********'") || !strings.Contains(string(out), "id: spa") {
		t.Errorf("config check shows the clients wrong:\n%s", out)
	}
	// password_fallback is off unless a client turns it on, and config
	// check shows it for every client.
	if cfg.OIDC.Clients[0].PasswordFallback || !cfg.OIDC.Clients[1].PasswordFallback || strings.Count(string(out), "password_fallback: false") != 1 || strings.Count(string(out), "password_fallback: true") != 1 {
		t.Errorf("password_fallback: %v, %v; config check:\n%s", cfg.OIDC.Clients[0].PasswordFallback, cfg.OIDC.Clients[1].PasswordFallback, out)
	}

	env := []string{`PASSBRIDGE_OIDC_CLIENTS=[{id: wiki, public: true, redirect_uris: ["https://wiki.corp.example/cb"]}]`}
	cfg, err = Load(write(t, validYAML), env)
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.OIDC.Clients) != 1 || cfg.OIDC.Clients[0].ID != "wiki" || !cfg.OIDC.Clients[0].Public {
		t.Errorf("clients from the environment: %+v", cfg.OIDC.Clients)
	}
	if _, err := Load(write(t, validYAML), []string{`PASSBRIDGE_OIDC_CLIENTS=[{id: wiki, pubic: true}]`}); err == nil || !strings.Contains(err.Error(), "PASSBRIDGE_OIDC_CLIENTS") {
		t.Errorf("a misspelled key in the environment's clients: %v", err)
	}

	for body, want := range map[string]string{
		"oidc: {clients: [{id: erp, redirect_uris: [https://erp.corp.example/cb]}]}":                                                                              "oidc.clients[0].secret: is required (or secret_file) unless public: true",
		"oidc: {clients: [{id: erp, public: true, secret: abcdefghijklmnopqrstu, redirect_uris: [https://e.x/cb]}]}":                                              "oidc.clients[0].secret: a public client has no secret",
		"oidc: {clients: [{id: erp, public: true}]}":                                                                                                              "oidc.clients[0].redirect_uris: needs at least one redirect URI",
		"oidc: {clients: [{id: erp, public: true, redirect_uris: [http://erp.corp.example/cb]}]}":                                                                 "oidc.clients[0].redirect_uris[0]: must be https://",
		"oidc: {clients: [{id: erp, public: true, redirect_uris: [https://erp.corp.example/cb#x]}]}":                                                              "must not have a fragment",
		"oidc: {clients: [{id: erp, public: true, origins: [https://erp.other.example]}]}":                                                                        "only under that domain or when listed in portal.related_origins",
		"oidc: {clients: [{id: a, public: true, origins: [https://a.passkeys.corp.example]}, {id: a, public: true, origins: [https://b.passkeys.corp.example]}]}": `oidc.clients[1].id: "a" is listed twice`,
		"oidc: {clients: [{id: 'e r p', public: true, origins: [https://a.passkeys.corp.example]}]}":                                                              "oidc.clients[0].id: must be letters",
		"oidc: {clients: [{id: erp, public: true, password_fallback: true, origins: [https://a.passkeys.corp.example]}]}":                                         "oidc.clients[0].password_fallback: applies to the OpenID Connect login page",
		"oidc: {key_rotation: 10m}": "oidc.key_rotation: must be at least 1h",
	} {
		_, err := Load(write(t, validYAML+body+"\n"), nil)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s:\n got %v\nwant %q", body, err, want)
		}
	}
	// A client on another domain is fine once it is a related origin.
	if _, err := Load(write(t, strings.Replace(validYAML, "origins: [https://passkeys.corp.example]", "origins: [https://passkeys.corp.example]\n  related_origins: [https://erp.other.example]", 1)+
		"oidc: {clients: [{id: erp, public: true, origins: [https://erp.other.example]}]}\n"), nil); err != nil {
		t.Errorf("a related origin as a client's origin: %v", err)
	}
}

// TestBadValueNamesLine: a value of the wrong shape (a duration, a
// threshold) is an error that names the file and the line, and every such
// value is reported, not only the first.
func TestBadValueNamesLine(t *testing.T) {
	body := validYAML + "  session_lifetime: soon\n  rate_limits:\n    password_window: -5m\n"
	body = strings.Replace(body, "  max_deletions: 25\n", "  max_deletions: lots\n", 1)
	_, err := Load(write(t, body), nil)
	if err == nil {
		t.Fatal("bad values accepted")
	}
	lines := strings.Split(body, "\n")
	lineOf := func(prefix string) int {
		for i, l := range lines {
			if strings.HasPrefix(l, prefix) {
				return i + 1
			}
		}
		t.Fatalf("no line %q", prefix)
		return 0
	}
	for _, want := range []string{
		fmt.Sprintf("passbridge.yaml:%d: ", lineOf("  max_deletions: lots")),
		fmt.Sprintf("passbridge.yaml:%d: ", lineOf("  session_lifetime: soon")),
		fmt.Sprintf("passbridge.yaml:%d: ", lineOf("    password_window: -5m")),
		`"soon"`, `"lots"`, `"-5m"`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("the error lacks %q:\n%v", want, err)
		}
	}
}

// TestMatchFollowsTheUsersTable: a users table without an e-mail column
// (users_table.email: "") needs no directory.match written, for migrate
// (which does not read the directory) nor for the commands that match,
// whose default rules keep the columns the table has; a rule written by
// hand on a missing column is an error for those commands only.
func TestMatchFollowsTheUsersTable(t *testing.T) {
	noEmail := strings.Replace(validYAML, "  key: id\n", "  key: id\n  username: login\n  email: \"\"\n", 1)
	for _, cmd := range []Command{ForMigrate, ForSync, ForRun} {
		cfg, err := LoadFor(cmd, write(t, noEmail), nil)
		if err != nil {
			t.Fatalf("%s with no e-mail column and no directory.match: %v", cmd.Name, err)
		}
		if !slices.Equal(cfg.Directory.Match, []string{"username"}) {
			t.Errorf("%s: match %v, want [username]", cmd.Name, cfg.Directory.Match)
		}
	}
	cfg, err := LoadFor(ForSync, write(t, validYAML), nil)
	if err != nil || !slices.Equal(cfg.Directory.Match, []string{"email", "username"}) {
		t.Fatalf("a table with both columns: match %v, %v", cfg.Directory.Match, err)
	}

	byHand := strings.Replace(noEmail, "  max_deletions: 25\n", "  max_deletions: 25\n  match: [email]\n", 1)
	if _, err := LoadFor(ForMigrate, write(t, byHand), nil); err != nil {
		t.Fatalf("migrate does not read directory.match: %v", err)
	}
	for _, cmd := range []Command{ForSync, ForRun} {
		_, err := LoadFor(cmd, write(t, byHand), nil)
		if err == nil || !strings.Contains(err.Error(), "directory.match[0]") || !strings.Contains(err.Error(), "users_table.email is empty") || !strings.Contains(err.Error(), cmd.Name) {
			t.Errorf("%s with match: [email] written by hand on a table without one: %v", cmd.Name, err)
		}
	}
}

// TestPoolTooSmall: on a database server, a sync holds a connection of
// the pool for its lock (the campaign engine another) and writes on up to
// two more; with a pool of one, `passbridge sync` waited forever for a
// second connection. Such a pool is refused, naming the key and why.
func TestPoolTooSmall(t *testing.T) {
	for _, n := range []int{1, 2, 3} {
		body := strings.Replace(validYAML, "driver: postgres\n", fmt.Sprintf("driver: postgres\n  max_open_conns: %d\n", n), 1)
		_, err := Load(write(t, body), nil)
		want := fmt.Sprintf("database.max_open_conns: must be 0 (the default, 10) or at least 4 on postgres (got %d)", n)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("max_open_conns %d: %v, want %q", n, err, want)
		}
	}
	for _, n := range []int{0, 4, 50} {
		body := strings.Replace(validYAML, "driver: postgres\n", fmt.Sprintf("driver: postgres\n  max_open_conns: %d\n", n), 1)
		if _, err := Load(write(t, body), nil); err != nil {
			t.Errorf("max_open_conns %d: %v", n, err)
		}
	}
	// SQLite has one writer and locks with a file, not a connection.
	body := strings.NewReplacer("driver: postgres\n", "driver: sqlite\n  max_open_conns: 1\n",
		"postgres://passbridge:s3cret-pw@db.corp.example:5432/erp?sslmode=verify-full", "app.db").Replace(validYAML)
	if _, err := Load(write(t, body), nil); err != nil {
		t.Errorf("sqlite, max_open_conns 1: %v", err)
	}
}
