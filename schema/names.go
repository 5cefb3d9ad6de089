package schema

import (
	"github.com/passbridge/passbridge/config"
	"github.com/passbridge/passbridge/store"
)

// Names are the SQL names of everything passbridge reads and writes in the
// application's database, quoted for the engine and schema-qualified when
// users_table.schema is set: ready to put into a query as they are.
//
//	n := schema.NamesFor(cfg)
//	q := "SELECT " + n.UserKey + " FROM " + n.Users + " WHERE " + n.UserEmail + " = ?"
//
// passbridge's own tables live in the same schema as the users table.
type Names struct {
	// Dialect is the database's SQL dialect, which quoted these names.
	Dialect store.Dialect
	Schema  string // users_table.schema, unquoted ("" = the connection's default)
	Prefix  string // migrate.prefix

	// Users is the application's users table.
	Users string
	// The users table's configured columns, quoted; "" when not configured.
	UserKey, UserUsername, UserEmail, UserDisplayName, UserPassword, UserActive, UserTOTP string
	// PasskeyState and PasswordPolicy are the columns passbridge adds to the
	// users table (see UserColumns), quoted.
	PasskeyState, PasswordPolicy string

	// passbridge's tables (see Tables).
	Identities, Credentials, SyncRuns, SyncState, Audit, Sessions, Ceremonies, Tokens, RateLimits string

	// migrate's own bookkeeping tables.
	History, Baseline, BaselineRows string
}

// Bookkeeping table names of the migration, without prefix.
const (
	HistoryTable      = "schema_history"
	BaselineTable     = "schema_baseline"
	BaselineRowsTable = "schema_baseline_rows"
)

// NamesFor returns the names for a configuration. The driver has been
// validated by config.Validate; an unknown one quotes the standard way.
func NamesFor(cfg *config.Config) Names {
	d, err := store.NewDialect(cfg.Database.Driver)
	if err != nil {
		d, _ = store.NewDialect(string(store.Postgres))
	}
	return NamesOn(d, cfg.UsersTable, cfg.Migrate.Prefix)
}

// NamesOn returns the names of a users table configuration and a prefix on
// a dialect.
func NamesOn(d store.Dialect, ut config.UsersTable, prefix string) Names {
	col := func(name string) string {
		if name == "" {
			return ""
		}
		return d.Quote(name)
	}
	n := Names{Dialect: d, Schema: ut.Schema, Prefix: prefix}
	t := func(name string) string { return d.Table(ut.Schema, prefix+name) }
	n.Users = d.Table(ut.Schema, ut.Name)
	n.UserKey, n.UserUsername, n.UserEmail = col(ut.Key), col(ut.Username), col(ut.Email)
	n.UserDisplayName, n.UserPassword, n.UserActive, n.UserTOTP = col(ut.DisplayName), col(ut.Password), col(ut.Active), col(ut.TOTP)
	n.PasskeyState = d.Quote(prefix + "passkey_state")
	n.PasswordPolicy = d.Quote(prefix + "password_policy")
	n.Identities, n.Credentials, n.SyncRuns = t("identities"), t("credentials"), t("sync_runs")
	n.SyncState, n.Audit, n.Sessions = t("sync_state"), t("audit"), t("sessions")
	n.Ceremonies, n.Tokens, n.RateLimits = t("ceremonies"), t("tokens"), t("rate_limits")
	n.History, n.Baseline, n.BaselineRows = t(HistoryTable), t(BaselineTable), t(BaselineRowsTable)
	return n
}

// Table returns the quoted, qualified name of a passbridge table given its
// name in Tables ("credentials").
func (n Names) Table(name string) string {
	return n.Dialect.Table(n.Schema, n.Prefix+name)
}

// Column quotes any column name for the engine.
func (n Names) Column(name string) string { return n.Dialect.Quote(name) }

// Index returns the quoted name of a passbridge index as the planner names
// it: <prefix><table>_<index>.
func (n Names) Index(table, index string) string {
	return n.Dialect.Quote(IndexName(n.Prefix, table, index))
}

// IndexName is the unquoted name of a passbridge index:
// <prefix><table>_<index>.
func IndexName(prefix, table, index string) string { return prefix + table + "_" + index }

// FKName is the unquoted name of a passbridge foreign key:
// <prefix><table>_<column>_fk.
func FKName(prefix, table, column string) string { return prefix + table + "_" + column + "_fk" }
