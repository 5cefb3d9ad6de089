// Package testdb gives tests a throwaway application database: a fresh
// database of a driver (testsrv.DSN), the small legacy users table
// passbridge meets (id, username, email, password_hash) and passbridge's
// own tables, with the configuration that describes them.
package testdb

import (
	"context"
	"testing"
	"time"

	"github.com/passbridge/passbridge/config"
	"github.com/passbridge/passbridge/internal/testsrv"
	"github.com/passbridge/passbridge/migrate"
	"github.com/passbridge/passbridge/store"
)

// Open makes the database for one test (closed when it ends) and returns
// it with its configuration.
func Open(tb testing.TB, driver string) (*store.DB, *config.Config) {
	tb.Helper()
	dc := config.Database{Driver: driver, DSN: config.Secret(testsrv.DSN(tb, driver)), ConnectTimeout: config.Duration(30 * time.Second)}
	ctx := context.Background()
	db, err := store.Open(ctx, dc, nil)
	if err != nil {
		tb.Fatalf("open %s: %v", driver, err)
	}
	tb.Cleanup(func() { db.Close() })
	d := db.Dialect()
	q := d.Quote
	ddl := "CREATE TABLE " + d.Table("", "users") + " (" + q("id") + " " + d.Types().ID + ", " +
		q("username") + " " + d.VarChar(255) + " NOT NULL, " + q("email") + " " + d.VarChar(320) + ", " +
		q("password_hash") + " " + d.VarChar(255) + ")" + d.TableOptions()
	if _, err := db.ExecContext(ctx, ddl); err != nil {
		tb.Fatalf("create users table: %v", err)
	}
	cfg := config.Default()
	cfg.Database = dc
	cfg.UsersTable = config.UsersTable{Name: "users", Key: "id", Username: "username", Email: "email", Password: "password_hash"}
	if err := migrate.EnsureApplied(ctx, db, &cfg, nil); err != nil {
		tb.Fatalf("create passbridge tables: %v", err)
	}
	return db, &cfg
}
