package migrate

import (
	"context"
	"strings"
	"testing"
)

// TestInspect reads each fixture's users table: key and its type, indexes,
// foreign keys both ways, row count.
func TestInspect(t *testing.T) {
	want := map[string]struct {
		keyKind  string
		index    string // an index that must be found
		incoming string // a table that references the users table ("" none)
	}{
		"django":    {"integer", "auth_user_username_6821ab7c_like", "otp_totp_totpdevice"},
		"wordpress": {"bigint unsigned", "user_login_key", ""},
		"gitea":     {"integer", "UQE_user_lower_name", ""},
		"erp":       {"uuid", "ix_AppUser_email_lower", "audit_log"},
		"nextcloud": {"varchar(64)", "user_uid_lower", ""},
	}
	for _, f := range fixtureList {
		t.Run(f.name, func(t *testing.T) {
			t.Parallel()
			cfg, db := load(t, f)
			u, err := Inspect(context.Background(), db, cfg.UsersTable)
			if err != nil {
				t.Fatal(err)
			}
			w := want[f.name]
			if u.KeyKind != w.keyKind || len(u.PrimaryKey) != 1 || u.PrimaryKey[0] != cfg.UsersTable.Key {
				t.Fatalf("key: %q %v", u.KeyKind, u.PrimaryKey)
			}
			found := false
			for _, ix := range u.Indexes {
				found = found || ix.Name == w.index
			}
			if !found {
				t.Fatalf("index %s not found in %+v", w.index, u.Indexes)
			}
			incoming := ""
			for _, fk := range u.ForeignKeys {
				if fk.Incoming {
					incoming = fk.Table
				}
			}
			if !strings.Contains(incoming, w.incoming) || (w.incoming == "") != (incoming == "") {
				t.Fatalf("incoming foreign key %q, want %q (%+v)", incoming, w.incoming, u.ForeignKeys)
			}
			if f.engine != Postgres && u.Rows < 6 { // PostgreSQL: -1 until analyzed
				t.Fatalf("rows %d", u.Rows)
			}
			// What rules out ALGORITHM=INSTANT is read from the catalog.
			if f.name == "nextcloud" {
				if u.RowFormat != "Compressed" || len(u.NoInstantAdd) == 0 || !strings.Contains(u.NoInstantAdd[0], "COMPRESSED") ||
					len(u.NoInstantDrop) == 0 || u.SizeBytes <= 0 || !strings.Contains(u.ServerVersion, "MariaDB") {
					t.Fatalf("compressed table: row format %q, no instant add %v, drop %v, size %d, server %q",
						u.RowFormat, u.NoInstantAdd, u.NoInstantDrop, u.SizeBytes, u.ServerVersion)
				}
			} else if len(u.NoInstantAdd) > 0 || len(u.NoInstantDrop) > 0 {
				t.Fatalf("INSTANT ruled out on %s: %v %v", f.name, u.NoInstantAdd, u.NoInstantDrop)
			}
		})
	}
}

// TestInspectErrors: what a DBA gets for a misconfigured users table.
func TestInspectErrors(t *testing.T) {
	ctx := context.Background()
	t.Run("postgres", func(t *testing.T) {
		t.Parallel()
		cfg, db := load(t, fixtureNamed(t, "erp"))
		cases := []struct {
			mutate func()
			want   string
		}{
			{func() { cfg.UsersTable.Name = "appuser" }, `did you mean "AppUser"`},
			{func() { cfg.UsersTable.Username = "username" }, `did you mean "userName"`},
			{func() { cfg.UsersTable.Schema = "" }, "set users_table.schema"},
			{func() { cfg.UsersTable.Key = "Email" }, "neither the primary key nor covered by a single-column unique index"},
		}
		orig := cfg.UsersTable
		for _, c := range cases {
			cfg.UsersTable = orig
			c.mutate()
			_, err := Inspect(ctx, db, cfg.UsersTable)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("want %q, got %v", c.want, err)
			}
		}
		// Found through the search_path, but in another schema than the
		// one new tables go to: refused with the setting to use.
		var dbName string
		if err := db.QueryRowContext(ctx, "SELECT current_database()").Scan(&dbName); err != nil {
			t.Fatal(err)
		}
		mustExec(t, db, `ALTER DATABASE "`+dbName+`" SET search_path = public, erp`)
		db2 := openDB(t, cfg.Database)
		cfg.UsersTable = orig
		cfg.UsersTable.Schema = ""
		if _, err := Inspect(ctx, db2, cfg.UsersTable); err == nil || !strings.Contains(err.Error(), "set users_table.schema: erp") {
			t.Errorf("search_path mismatch: %v", err)
		}
	})
	t.Run("mysql", func(t *testing.T) {
		t.Parallel()
		cfg, db := load(t, fixtureNamed(t, "wordpress"))
		mustExec(t, db, "CREATE TABLE legacy_users (id int PRIMARY KEY, login varchar(20), pass varchar(60)) ENGINE=MyISAM")
		cfg.UsersTable.Name, cfg.UsersTable.Key, cfg.UsersTable.Username, cfg.UsersTable.Email, cfg.UsersTable.DisplayName, cfg.UsersTable.Password = "legacy_users", "id", "login", "", "", "pass"
		_, err := NewPlan(ctx, db, cfg)
		if err == nil || !strings.Contains(err.Error(), "MyISAM") || !strings.Contains(err.Error(), "InnoDB") {
			t.Errorf("MyISAM: %v", err)
		}
	})
	t.Run("sqlite", func(t *testing.T) {
		t.Parallel()
		cfg, db := load(t, fixtureNamed(t, "gitea"))
		cfg.UsersTable.Password = "password" // Gitea calls it passwd
		_, err := Inspect(ctx, db, cfg.UsersTable)
		if err == nil || !strings.Contains(err.Error(), `users_table.password: column "password" not found`) || !strings.Contains(err.Error(), "passwd") {
			t.Errorf("missing column: %v", err)
		}
	})
}
