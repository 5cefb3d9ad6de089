package migrate

import (
	"context"
	"embed"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/passbridge/passbridge/config"
	"github.com/passbridge/passbridge/internal/testsrv"
	"github.com/passbridge/passbridge/store"
)

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) != "" {
		os.Exit(helperMain())
	}
	os.Exit(testsrv.Run(m))
}

//go:embed testdata/*.sql
var fixtures embed.FS

// fixture is a realistic legacy schema and how passbridge is configured for
// it.
type fixture struct {
	name   string
	engine Engine
	file   string
	ut     config.UsersTable
}

var fixtureList = []fixture{
	{
		name: "django", engine: Postgres, file: "django_postgres.sql",
		ut: config.UsersTable{Name: "auth_user", Key: "id", Username: "username", Email: "email",
			Password: "password", Active: "is_active"},
	},
	{
		name: "wordpress", engine: MySQL, file: "wordpress_mariadb.sql",
		ut: config.UsersTable{Name: "wp_users", Key: "ID", Username: "user_login", Email: "user_email",
			DisplayName: "display_name", Password: "user_pass"},
	},
	{
		// ROW_FORMAT=COMPRESSED: no INSTANT, so the columns come in one
		// online rebuild; the key is the login name, no e-mail column.
		name: "nextcloud", engine: MySQL, file: "nextcloud_mariadb.sql",
		ut: config.UsersTable{Name: "oc_users", Key: "uid", Username: "uid", Email: "",
			DisplayName: "displayname", Password: "password"},
	},
	{
		name: "gitea", engine: SQLite, file: "gitea_sqlite.sql",
		ut: config.UsersTable{Name: "user", Key: "id", Username: "name", Email: "email",
			DisplayName: "full_name", Password: "passwd", Active: "is_active"},
	},
	{
		name: "erp", engine: Postgres, file: "erp_postgres.sql",
		ut: config.UsersTable{Schema: "erp", Name: "AppUser", Key: "id", Username: "userName", Email: "Email",
			DisplayName: "fullName", Password: "hashed_password", Active: "is_active", TOTP: "totpSecret"},
	},
}

func fixtureNamed(t *testing.T, name string) fixture {
	for _, f := range fixtureList {
		if f.name == name {
			return f
		}
	}
	t.Fatalf("no fixture %s", name)
	return fixture{}
}

// newDatabase makes an empty database of the engine and returns its config.
func newDatabase(t *testing.T, eng Engine) config.Database {
	t.Helper()
	return config.Database{Driver: string(eng), DSN: config.Secret(testsrv.DSN(t, string(eng))), ConnectTimeout: config.Duration(30 * time.Second)}
}

func testConfig(db config.Database, ut config.UsersTable) *config.Config {
	cfg := config.Default()
	cfg.Database = db
	cfg.UsersTable = ut
	cfg.Migrate.LockTimeout = config.Duration(2 * time.Second)
	cfg.Migrate.Retries = 3
	return &cfg
}

func openDB(t *testing.T, d config.Database) *store.DB {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	db, err := store.Open(ctx, d, nil)
	if err != nil {
		t.Fatalf("open %s: %v", d.Driver, err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// load creates the fixture's database and returns its configuration and an
// open store.
func load(t *testing.T, f fixture) (*config.Config, *store.DB) {
	t.Helper()
	d := newDatabase(t, f.engine)
	db := openDB(t, d)
	data, err := fixtures.ReadFile("testdata/" + f.file)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, stmt := range splitSQL(string(data)) {
		if _, err := db.ExecContext(ctx, stmt); err != nil {
			t.Fatalf("fixture %s: %v\n%s", f.file, err, stmt)
		}
	}
	return testConfig(d, f.ut), db
}

// splitSQL splits a script into statements at semicolons outside quotes
// and comments.
func splitSQL(script string) []string {
	var out []string
	var cur strings.Builder
	var quote rune
	inLineComment := false
	runes := []rune(script)
	for i := 0; i < len(runes); i++ {
		r := runes[i]
		switch {
		case inLineComment:
			if r == '\n' {
				inLineComment = false
				cur.WriteRune(r)
			}
			continue
		case quote != 0:
			cur.WriteRune(r)
			if r == quote {
				if i+1 < len(runes) && runes[i+1] == quote { // doubled quote
					cur.WriteRune(runes[i+1])
					i++
					continue
				}
				quote = 0
			}
			continue
		case r == '-' && i+1 < len(runes) && runes[i+1] == '-':
			inLineComment = true
			continue
		case r == '\'' || r == '"' || r == '`':
			quote = r
		case r == ';':
			if s := strings.TrimSpace(cur.String()); s != "" {
				out = append(out, s)
			}
			cur.Reset()
			continue
		}
		cur.WriteRune(r)
	}
	if s := strings.TrimSpace(cur.String()); s != "" {
		out = append(out, s)
	}
	return out
}
