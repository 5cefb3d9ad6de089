package config

import (
	"bytes"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// FuzzDecode feeds arbitrary bytes to the strict YAML decoder and then to
// presets and validation, as Load does for a file. Properties: no panic; a
// refusal is an error that names the file; a configuration that decodes
// renders (Effective, secrets masked) as YAML that decodes again, strictly,
// to the same rendering: what `passbridge config check` prints is itself a
// loadable configuration.
func FuzzDecode(f *testing.F) {
	for _, s := range []string{
		validYAML, "", "\n", "---\n", "{}", "[]", "null", "~", "database: [unclosed\n", "directory:\n  page_size: lots\n",
		"directory:\n  timeout: soon\n", "directory:\n  max_deletions: 5 percent\n", "directory:\n  max_deletions: 12.5%\n",
		"a: 1\n---\nb: 2\n", "database:\n  dsn: postgres://u:p@h/db\n", "database: {driver: mysql, dsn: 'u:p@tcp(h:3306)/db'}\n",
		"directory:\n  bind_passwrod: x\n", "portal:\n  origins: [https://a.example, 'http://[::1]:8080']\n",
		"anchors: &a {x: 1}\nother: *a\n", "database: &d {driver: sqlite}\nusers_table: *d\n", "log: !!binary aGVsbG8=\n",
		"schedule:\n  incremental: '*/5 * * * *'\n  full: '61 25 * * *'\n", "admin:\n  token: short\n", "directory:\n  urls: ldap://x\n",
		"directory:\n  page_size: 99999999999999999999\n", "directory:\n  timeout: -5s\n", "migrate:\n  prefix: 'a b'\n",
		"portal:\n  rate_limits: {password_per_user: -1}\n", "\xff\xfe", "key: \"\\u0000\"\n", "- - - -\n", strings.Repeat("[", 200),
		"directory:\n  max_deletions: 1e-300%\n", "portal:\n  link_lifetime: 9223372036s\n", "mail: {security: tls, port: 70000}\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > 64<<10 {
			return // a configuration file is small; the YAML parser is not under test for size
		}
		const path = "fuzz.yaml"
		cfg := Default()
		err := decodeStrict(path, data, &cfg)
		if err != nil {
			if !strings.HasPrefix(err.Error(), path) {
				t.Fatalf("error does not name the file: %q", err)
			}
			return
		}
		applyDefaults(&cfg)
		if err := Validate(&cfg, ForRun); err != nil {
			if !strings.HasPrefix(err.Error(), "configuration is not valid for passbridge run (it reads the database, the directory, the portal and the schedule):\n  ") {
				t.Fatalf("validation error not in its form: %q", err)
			}
		}
		out, err := cfg.Effective()
		if err != nil {
			t.Fatalf("Effective: %v", err)
		}
		again := Default()
		if err := decodeStrict(path, out, &again); err != nil {
			t.Fatalf("the effective configuration does not decode: %v\n%s", err, out)
		}
		out2, err := again.Effective()
		if err != nil {
			t.Fatalf("Effective (second): %v", err)
		}
		if !bytes.Equal(out, out2) {
			t.Fatalf("the effective configuration is not a fixed point:\n%s\n----\n%s", out, out2)
		}
	})
}

// FuzzScalars checks the scalar types a file or an environment variable
// sets: durations and thresholds parse without panics, refuse what they
// cannot represent with a message that quotes the input, and what they
// accept prints back to a string that parses to the same value.
func FuzzScalars(f *testing.F) {
	for _, s := range []string{"30s", "5m", "1h30m", "0", "-1s", "soon", "", " 2h ", "1.5h", "9223372036854775807ns", "9999999h",
		"5%", "100%", "100.5%", "-1%", "12.5 %", "50", "-3", "1e3", "NaN%", "Inf%", "0x10", "1e-300%", "%", "5%%"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if d, err := parseDuration(s); err != nil {
			if !strings.Contains(err.Error(), "expected") {
				t.Fatalf("duration %q: unclear error %q", s, err)
			}
		} else {
			if d < 0 {
				t.Fatalf("duration %q: negative %v accepted", s, d)
			}
			back, err := parseDuration(d.String())
			if err != nil || back != d {
				t.Fatalf("duration %q = %v, which prints as %q and parses back to %v, %v", s, time.Duration(d), d.String(), back, err)
			}
		}
		th, err := parseThreshold(s)
		if err != nil {
			if !strings.Contains(err.Error(), "expected a count") {
				t.Fatalf("threshold %q: unclear error %q", s, err)
			}
			return
		}
		if th.IsPct && (th.Percent < 0 || th.Percent > 100 || th.Percent != th.Percent) {
			t.Fatalf("threshold %q: percentage %v accepted", s, th.Percent)
		}
		if !th.IsPct && th.Count < 0 {
			t.Fatalf("threshold %q: count %d accepted", s, th.Count)
		}
		back, err := parseThreshold(th.String())
		if err != nil || back != th {
			t.Fatalf("threshold %q = %+v, which prints as %q and parses back to %+v, %v", s, th, th.String(), back, err)
		}
		// Exceeded and Limit agree: n is allowed exactly when n <= Limit.
		for _, total := range []int{0, 1, 7, 100, 12345} {
			lim := th.Limit(total)
			if lim < total && !th.Exceeded(lim+1, total) && total > 0 {
				t.Fatalf("threshold %v of %d: Limit %d but %d not refused", th, total, lim, lim+1)
			}
		}
	})
}

// FuzzEnv sets one configuration key from the environment as the daemon
// does. Properties: no panic; an unknown variable or a bad value is an
// error naming the variable; a string key takes the value as it is.
func FuzzEnv(f *testing.F) {
	for _, s := range [][2]string{
		{"PASSBRIDGE_DATABASE_DSN", "postgres://x"}, {"PASSBRIDGE_DIRECTORY_PAGE_SIZE", "lots"}, {"PASSBRIDGE_DIRECTORY_URLS", "ldap://a, ,ldap://b"},
		{"PASSBRIDGE_DIRECTORY_START_TLS", "yes"}, {"PASSBRIDGE_DIRECTORY_MAX_DELETIONS", "5%"}, {"PASSBRIDGE_PORTAL_LINK_LIFETIME", "-1h"},
		{"PASSBRIDGE_NOPE", "x"}, {"PASSBRIDGE_", ""}, {"PASSBRIDGE_CONFIG", "/etc/x"}, {"PASSBRIDGE_LOG_LEVEL", "debug\x00"},
		{"PASSBRIDGE_DATABASE_MAX_OPEN_CONNS", "99999999999999999999"},
	} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, name, value string) {
		if strings.Contains(name, "=") {
			return // not a variable name
		}
		cfg := Default()
		err := applyEnv(&cfg, []string{name + "=" + value})
		if err != nil {
			if !strings.Contains(err.Error(), name) {
				t.Fatalf("error does not name %s: %q", name, err)
			}
			return
		}
		for _, fl := range fields(&cfg) {
			if EnvName(fl.path) == name {
				if s, ok := fl.v.Interface().(string); ok && s != value {
					t.Fatalf("%s = %q, set %q", fl.path, s, value)
				}
			}
		}
		if utf8.ValidString(value) {
			_ = Validate(&cfg, ForRun) // no panic on any value the environment can set
		}
	})
}
