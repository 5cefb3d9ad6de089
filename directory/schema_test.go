package directory

import (
	"context"
	"fmt"
	"log/slog"
	"strings"

	"github.com/passbridge/passbridge/config"
	"github.com/passbridge/passbridge/migrate"
	"github.com/passbridge/passbridge/store"
)

// ensureSchema creates passbridge's tables from migrate.Tables for tests.
// TODO: replace with migrate.EnsureApplied once it is on main.
func ensureSchema(ctx context.Context, cfg *config.Config, db *store.DB, _ *slog.Logger) error {
	d := db.Dialect()
	types := d.Types()
	keyType := types.BigInt
	for _, t := range migrate.Tables {
		var cols []string
		for _, c := range t.Columns {
			var def string
			switch c.Type {
			case migrate.ID:
				cols = append(cols, d.Quote(c.Name)+" "+types.ID)
				continue
			case migrate.UserKey:
				def = keyType
			case migrate.Ref, migrate.Int:
				def = types.BigInt
			case migrate.Bool:
				def = types.Bool
			case migrate.Time:
				def = types.Timestamp
			case migrate.Str:
				def = d.VarChar(c.Size)
			case migrate.Text:
				def = types.Text
			case migrate.Bytes:
				def = d.VarBinary(c.Size)
			case migrate.Blob:
				def = types.Binary
			}
			if !c.Nullable {
				def += " NOT NULL"
			}
			if c.Default != "" {
				v := c.Default
				if c.Type == migrate.Bool && d.Kind() == store.Postgres {
					v = map[string]string{"0": "FALSE", "1": "TRUE"}[v]
				}
				def += " DEFAULT " + v
			}
			cols = append(cols, d.Quote(c.Name)+" "+def)
		}
		if t.PrimaryKey != "id" {
			cols = append(cols, "PRIMARY KEY ("+d.Quote(t.PrimaryKey)+")")
		}
		for _, fk := range t.FKs {
			ref := d.Table(cfg.UsersTable.Schema, cfg.UsersTable.Name) + " (" + d.Quote(cfg.UsersTable.Key) + ")"
			if !fk.Users {
				ref = d.Table(cfg.UsersTable.Schema, cfg.Migrate.Prefix+fk.Table) + " (" + d.Quote("id") + ")"
			}
			s := "FOREIGN KEY (" + d.Quote(fk.Column) + ") REFERENCES " + ref
			if fk.OnDelete != "" {
				s += " ON DELETE " + fk.OnDelete
			}
			cols = append(cols, s)
		}
		name := cfg.Migrate.Prefix + t.Name
		ddl := "CREATE TABLE IF NOT EXISTS " + d.Table(cfg.UsersTable.Schema, name) + " (" + strings.Join(cols, ", ") + ")" + d.TableOptions()
		if _, err := db.ExecContext(ctx, ddl); err != nil {
			return fmt.Errorf("%s: %w", ddl, err)
		}
		for _, ix := range t.Indexes {
			var qc []string
			for _, c := range ix.Columns {
				qc = append(qc, d.Quote(c))
			}
			u := ""
			if ix.Unique {
				u = "UNIQUE "
			}
			q := "CREATE " + u + "INDEX IF NOT EXISTS " + d.Quote(name+"_"+ix.Name) + " ON " + d.Table(cfg.UsersTable.Schema, name) + " (" + strings.Join(qc, ", ") + ")"
			if _, err := db.ExecContext(ctx, q); err != nil {
				return fmt.Errorf("%s: %w", q, err)
			}
		}
	}
	return nil
}
