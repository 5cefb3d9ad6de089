package migrate

import (
	"github.com/passbridge/passbridge/config"
)

// Names are the SQL names of everything passbridge reads and writes in the
// application's database, quoted for the engine and schema-qualified when
// users_table.schema is set: ready to put into a query as they are.
//
//	n := migrate.NamesFor(cfg)
//	q := "SELECT " + n.UserKey + " FROM " + n.Users + " WHERE " + n.UserEmail + " = ?"
//
// passbridge's own tables live in the same schema as the users table.
type Names struct {
	Engine Engine
	Schema string // users_table.schema, unquoted ("" = the connection's default)
	Prefix string // migrate.prefix

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

// Bookkeeping table names, without prefix.
const (
	historyTable      = "schema_history"
	baselineTable     = "schema_baseline"
	baselineRowsTable = "schema_baseline_rows"
)

// NamesFor returns the names for a configuration. The driver has been
// validated by config.Validate; an unknown one quotes the standard way.
func NamesFor(cfg *config.Config) Names {
	eng, err := engineFor(cfg.Database.Driver)
	if err != nil {
		eng = Postgres
	}
	return namesFor(eng, cfg.UsersTable, cfg.Migrate.Prefix)
}

func namesFor(eng Engine, ut config.UsersTable, prefix string) Names {
	col := func(name string) string {
		if name == "" {
			return ""
		}
		return eng.quote(name)
	}
	n := Names{Engine: eng, Schema: ut.Schema, Prefix: prefix}
	t := func(name string) string { return eng.qualify(ut.Schema, prefix+name) }
	n.Users = eng.qualify(ut.Schema, ut.Name)
	n.UserKey, n.UserUsername, n.UserEmail = col(ut.Key), col(ut.Username), col(ut.Email)
	n.UserDisplayName, n.UserPassword, n.UserActive, n.UserTOTP = col(ut.DisplayName), col(ut.Password), col(ut.Active), col(ut.TOTP)
	n.PasskeyState = eng.quote(prefix + "passkey_state")
	n.PasswordPolicy = eng.quote(prefix + "password_policy")
	n.Identities, n.Credentials, n.SyncRuns = t("identities"), t("credentials"), t("sync_runs")
	n.SyncState, n.Audit, n.Sessions = t("sync_state"), t("audit"), t("sessions")
	n.Ceremonies, n.Tokens, n.RateLimits = t("ceremonies"), t("tokens"), t("rate_limits")
	n.History, n.Baseline, n.BaselineRows = t(historyTable), t(baselineTable), t(baselineRowsTable)
	return n
}

// Table returns the quoted, qualified name of a passbridge table given its
// name in Tables ("credentials").
func (n Names) Table(name string) string {
	return n.Engine.qualify(n.Schema, n.Prefix+name)
}

// Column quotes any column name for the engine.
func (n Names) Column(name string) string { return n.Engine.quote(name) }

// Index returns the quoted name of a passbridge index as the planner names
// it: <prefix><table>_<index>.
func (n Names) Index(table, index string) string {
	return n.Engine.quote(indexName(n.Prefix, table, index))
}

func indexName(prefix, table, index string) string { return prefix + table + "_" + index }

func fkName(prefix, table, column string) string { return prefix + table + "_" + column + "_fk" }
