package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// EnvPrefix starts every environment variable that overrides a key:
// database.dsn is PASSBRIDGE_DATABASE_DSN.
const EnvPrefix = "PASSBRIDGE_"

// envReserved are PASSBRIDGE_ variables that are not configuration keys.
var envReserved = map[string]bool{"PASSBRIDGE_CONFIG": true}

// DefaultPaths are searched, in order, when no --config is given.
var DefaultPaths = []string{"passbridge.yaml", "/etc/passbridge/passbridge.yaml"}

// defaultMatch is directory.match when none is configured.
var defaultMatch = []string{"email", "username"}

// Default returns the configuration every file is decoded over.
func Default() Config {
	return Config{
		Database: Database{ConnectTimeout: Duration(30e9)},
		UsersTable: UsersTable{
			Name: "users", Key: "id", Username: "username", Email: "email",
			Password: "password_hash",
		},
		Directory: Directory{
			Kind:           "ad",
			ConnectTimeout: Duration(10e9),
			Timeout:        Duration(60e9),
			PageSize:       1000,
			// Of these, applyDefaults keeps those the users table has.
			Match:        slices.Clone(defaultMatch),
			Provision:    "link",
			MaxDeletions: Threshold{Percent: 5, IsPct: true},
		},
		Schedule: Schedule{Incremental: "*/5 * * * *", Full: "0 2 * * *"},
		Portal: Portal{
			Listen:          ":8080",
			RPName:          "passbridge",
			SessionLifetime: Duration(8 * 3600e9),
			AdminGroupCache: Duration(60e9),
			LinkLifetime:    Duration(72 * 3600e9),
			CeremonyTimeout: Duration(5 * 60e9),
			Policy:          Policy{Attestation: "none", MaxPasskeys: 10},
			RateLimits:      RateLimits{PasswordPerUser: 3, PasswordPerIP: 30, PasswordWindow: Duration(15 * 60e9)},
			Recovery:        Recovery{Link: true, CodeLifetime: Duration(10 * 60e9), PerUser: 5, Window: Duration(3600e9)},
		},
		Admin: Admin{
			ReadyMaxAge:   Duration(3 * 3600e9),
			ShutdownGrace: Duration(30e9),
		},
		// A DDL statement waiting for its lock stalls the application's
		// queries behind it: 200ms is the longest stall a migration may
		// cause (migrate.DefaultLockTimeout), with enough retries to wait
		// out a long transaction (see `passbridge migrate plan`).
		Migrate:  Migrate{Prefix: "passbridge_", LockTimeout: Duration(200e6), Retries: 20},
		Mail:     Mail{Security: "starttls", Timeout: Duration(10e9)},
		Audit:    Audit{Retention: Duration(400 * 24 * 3600e9)},
		OIDC:     OIDC{KeyRotation: Duration(30 * 24 * 3600e9), TokenLifetime: Duration(3600e9), AssertionLifetime: Duration(120e9)},
		Campaign: Campaign{PerMinute: 60, Interval: Duration(60e9), Retry: Duration(60e9), MaxAttempts: 10},
		Log:      Log{Level: "info", Format: "auto"},
	}
}

// Load reads the file at path (strictly), applies the environment and the
// *_file secrets, fills presets and validates all of it, as `passbridge run`
// needs. environ is os.Environ() in production; tests pass their own.
func Load(path string, environ []string) (*Config, error) {
	return LoadFor(ForRun, path, environ)
}

// LoadFor is Load for a command that reads only part of the configuration:
// only that part is validated (the rest is still decoded strictly).
func LoadFor(cmd Command, path string, environ []string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	cfg := Default()
	if err := decodeStrict(path, data, &cfg); err != nil {
		return nil, err
	}
	cfg.Source = path
	if err := FinishFor(cmd, &cfg, environ); err != nil {
		return nil, err
	}
	return &cfg, nil
}

// Finish applies environment overrides, reads secret files, fills presets and
// validates everything. The demo calls it for its built-in configuration.
func Finish(cfg *Config, environ []string) error {
	return FinishFor(ForRun, cfg, environ)
}

// FinishFor is Finish validating only what cmd reads.
func FinishFor(cmd Command, cfg *Config, environ []string) error {
	if err := applyEnv(cfg, environ); err != nil {
		return err
	}
	if err := readSecretFiles(cfg); err != nil {
		return err
	}
	applyDefaults(cfg)
	return Validate(cfg, cmd)
}

// Find returns the config path to use: the explicit one, else the first
// default path that exists, else "" (meaning: run the demo).
func Find(explicit string) (string, error) {
	if explicit != "" {
		if _, err := os.Stat(explicit); err != nil {
			return "", fmt.Errorf("config: %w", err)
		}
		return explicit, nil
	}
	for _, p := range DefaultPaths {
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", nil
}

var yamlLineErr = regexp.MustCompile(`^line (\d+): field (\S+) not found in type config\.(\w+)$`)

func decodeStrict(path string, data []byte, cfg *Config) error {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	err := dec.Decode(cfg)
	if errors.Is(err, io.EOF) {
		return nil // an empty file is the defaults
	}
	if err == nil {
		// A second document would be silently ignored: refuse it.
		var extra any
		if dec.Decode(&extra) != io.EOF {
			return fmt.Errorf("%s: more than one YAML document; passbridge reads exactly one", path)
		}
		return nil
	}
	var te *yaml.TypeError
	if errors.As(err, &te) {
		msgs := make([]string, 0, len(te.Errors))
		for _, e := range te.Errors {
			if m := yamlLineErr.FindStringSubmatch(e); m != nil {
				msgs = append(msgs, fmt.Sprintf("%s:%s: unknown key %q in %s", path, m[1], m[2], sectionName(m[3])))
				continue
			}
			msgs = append(msgs, fmt.Sprintf("%s:%s", path, strings.TrimPrefix(e, "line ")))
		}
		return errors.New(strings.Join(msgs, "\n"))
	}
	return fmt.Errorf("%s: %s", path, strings.TrimPrefix(err.Error(), "yaml: "))
}

// sectionName turns a Go type name from a yaml error into the YAML key a
// user wrote.
func sectionName(goType string) string {
	names := map[string]string{
		"Config": "the top level", "Database": "database", "UsersTable": "users_table",
		"Directory": "directory", "Attributes": "directory.attributes", "Schedule": "schedule",
		"Portal": "portal", "Policy": "portal.policy", "RateLimits": "portal.rate_limits", "Recovery": "portal.recovery", "Mail": "mail", "Audit": "audit", "Campaign": "campaign", "Admin": "admin", "Migrate": "migrate", "Log": "log",
		"OIDC": "oidc", "Client": "oidc.clients[]",
	}
	if n, ok := names[goType]; ok {
		return n
	}
	return goType
}

// field is one leaf key of the configuration, addressed by its YAML path.
type field struct {
	path string // "directory.bind_password"
	v    reflect.Value
}

// fields lists every leaf key, in declaration order.
func fields(cfg *Config) []field {
	var out []field
	var walk func(prefix string, v reflect.Value)
	walk = func(prefix string, v reflect.Value) {
		t := v.Type()
		for i := 0; i < t.NumField(); i++ {
			tag := strings.Split(t.Field(i).Tag.Get("yaml"), ",")[0]
			if tag == "" || tag == "-" {
				continue
			}
			fv := v.Field(i)
			p := tag
			if prefix != "" {
				p = prefix + "." + tag
			}
			if fv.Kind() == reflect.Struct && fv.Type() != reflect.TypeOf(Threshold{}) {
				walk(p, fv)
				continue
			}
			out = append(out, field{path: p, v: fv})
		}
	}
	walk("", reflect.ValueOf(cfg).Elem())
	return out
}

// EnvName is the environment variable that overrides a YAML path.
func EnvName(path string) string {
	return EnvPrefix + strings.ToUpper(strings.ReplaceAll(path, ".", "_"))
}

func applyEnv(cfg *Config, environ []string) error {
	byName := map[string]field{}
	for _, f := range fields(cfg) {
		byName[EnvName(f.path)] = f
	}
	var errs []string
	names := make([]string, 0)
	env := map[string]string{}
	for _, kv := range environ {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || !strings.HasPrefix(k, EnvPrefix) || envReserved[k] || strings.HasPrefix(k, EnvPrefix+"TEST_") {
			continue
		}
		env[k] = v
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		f, ok := byName[k]
		if !ok {
			errs = append(errs, fmt.Sprintf("environment: %s is not a configuration key (see README: every key is PASSBRIDGE_ plus its path, such as PASSBRIDGE_DATABASE_DSN)", k))
			continue
		}
		if err := setFromString(f.v, env[k]); err != nil {
			errs = append(errs, fmt.Sprintf("environment: %s (%s): %v", k, f.path, err))
		}
	}
	if len(errs) > 0 {
		return errors.New(strings.Join(errs, "\n"))
	}
	return nil
}

func setFromString(v reflect.Value, s string) error {
	switch v.Addr().Interface().(type) {
	case *Duration:
		d, err := parseDuration(s)
		if err != nil {
			return err
		}
		v.Set(reflect.ValueOf(d))
		return nil
	case *Threshold:
		t, err := parseThreshold(s)
		if err != nil {
			return err
		}
		v.Set(reflect.ValueOf(t))
		return nil
	}
	switch v.Kind() {
	case reflect.String:
		v.SetString(s)
	case reflect.Bool:
		b, err := strconv.ParseBool(s)
		if err != nil {
			return fmt.Errorf("expected true or false (got %q)", s)
		}
		v.SetBool(b)
	case reflect.Int:
		n, err := strconv.Atoi(s)
		if err != nil {
			return fmt.Errorf("expected a whole number (got %q)", s)
		}
		v.SetInt(int64(n))
	case reflect.Slice:
		if v.Type().Elem().Kind() == reflect.Struct {
			// A list of objects (oidc.clients) is written in YAML's flow
			// form: [{id: erp, public: true, redirect_uris: [...]}].
			dec := yaml.NewDecoder(strings.NewReader(s))
			dec.KnownFields(true)
			p := reflect.New(v.Type())
			if err := dec.Decode(p.Interface()); err != nil && !errors.Is(err, io.EOF) {
				return fmt.Errorf("expected a YAML list such as [{id: erp, public: true}]: %v", strings.TrimPrefix(err.Error(), "yaml: "))
			}
			v.Set(p.Elem())
			return nil
		}
		var parts []string
		for _, p := range strings.Split(s, ",") {
			if p = strings.TrimSpace(p); p != "" {
				parts = append(parts, p)
			}
		}
		v.Set(reflect.ValueOf(parts))
	default:
		return fmt.Errorf("cannot be set from the environment")
	}
	return nil
}

// readSecretFiles fills each Secret from its *_file sibling. Setting both is
// an error: which one wins would be a guess.
func readSecretFiles(cfg *Config) error {
	pairs := []struct {
		name   string
		secret *Secret
		file   string
	}{
		{"database.dsn", &cfg.Database.DSN, cfg.Database.DSNFile},
		{"directory.bind_password", &cfg.Directory.BindPassword, cfg.Directory.BindPasswordFile},
		{"admin.token", &cfg.Admin.Token, cfg.Admin.TokenFile},
		{"mail.password", &cfg.Mail.Password, cfg.Mail.PasswordFile},
	}
	for i := range cfg.OIDC.Clients {
		c := &cfg.OIDC.Clients[i]
		pairs = append(pairs, struct {
			name   string
			secret *Secret
			file   string
		}{fmt.Sprintf("oidc.clients[%d].secret", i), &c.Secret, c.SecretFile})
	}
	for _, p := range pairs {
		if p.file == "" {
			continue
		}
		if *p.secret != "" {
			return fmt.Errorf("%s and %s_file are both set: keep one", p.name, p.name)
		}
		b, err := os.ReadFile(p.file)
		if err != nil {
			return fmt.Errorf("%s_file: %w", p.name, err)
		}
		*p.secret = Secret(strings.TrimRight(string(b), "\r\n"))
	}
	return nil
}
