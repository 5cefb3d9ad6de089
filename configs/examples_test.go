package configs_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/passbridge/passbridge/config"
)

// Every example must pass `passbridge config check` as shipped, with only
// its secret files supplied (they live outside the repository).
func TestExamplesLoad(t *testing.T) {
	examples := map[string]struct{ kind, driver string }{
		"ad.yaml":       {"ad", "postgres"},
		"openldap.yaml": {"openldap", "mysql"},
		"freeipa.yaml":  {"freeipa", "postgres"},
	}
	dir := t.TempDir()
	secret := func(name, value string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(value+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	env := []string{
		"PASSBRIDGE_DATABASE_DSN_FILE=" + secret("dsn", "postgres://passbridge:dsn-s3cret@db.corp.example/erp"),
		"PASSBRIDGE_DIRECTORY_BIND_PASSWORD_FILE=" + secret("bindpw", "b1nd-s3cret"),
		"PASSBRIDGE_ADMIN_TOKEN_FILE=" + secret("token", exampleToken),
	}
	for name, want := range examples {
		t.Run(name, func(t *testing.T) {
			cfg, err := config.Load(name, env)
			if err != nil {
				t.Fatalf("%s does not pass config check:\n%v", name, err)
			}
			if cfg.Directory.Kind != want.kind || cfg.Database.Driver != want.driver {
				t.Errorf("kind/driver = %s/%s, want %s/%s", cfg.Directory.Kind, cfg.Database.Driver, want.kind, want.driver)
			}
			if cfg.Admin.Token.Reveal() != exampleToken || cfg.Directory.BindPassword.Reveal() != "b1nd-s3cret" {
				t.Error("secret files not read")
			}
			if cfg.Schedule.Incremental == "" || cfg.Schedule.Full == "" {
				t.Errorf("example has no schedule: %+v", cfg.Schedule)
			}
			out, err := cfg.Effective()
			if err != nil {
				t.Fatal(err)
			}
			for _, s := range []string{"dsn-s3cret", "b1nd-s3cret", exampleToken} {
				if strings.Contains(string(out), s) {
					t.Errorf("effective configuration leaks a secret:\n%s", out)
				}
			}
		})
	}
}

// exampleToken is an admin token as `openssl rand -hex 32` makes one.
const exampleToken = "e3b7a1f09c4d58e2b6f1a03d7c9e4b2851f6a0c3d8e7b49f2a1c5e0d6b3f8a74"
