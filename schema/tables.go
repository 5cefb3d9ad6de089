// Package schema is the vocabulary every package of passbridge shares about
// the application's database: the tables and columns passbridge adds (as
// data: migrate renders and creates them, everyone else reads and writes
// them), the identity and link states, the password policies, and Names,
// the SQL names of all of it quoted on store's dialect. It holds no I/O:
// it is safe to import from anywhere below cmd/.
package schema

// The tables passbridge adds to the application's database, as data. The
// migration planner (package migrate) renders them per engine; the rest of
// passbridge (the sync, the portal, the agent) reads and writes them by
// these names. Column types are logical: the planner picks the engine type
// (see Type).

// Type is a logical column type.
type Type int

const (
	// ID is a 64-bit auto-increment primary key.
	ID Type = iota
	// UserKey has the exact type of the users table's primary key, so a
	// foreign key to it is possible on every engine.
	UserKey
	// Ref is a 64-bit integer referring to an ID column.
	Ref
	// Int is a 64-bit integer.
	Int
	// Bool is a boolean (TINYINT(1) on MySQL, INTEGER on SQLite).
	Bool
	// Time is a timestamp with time zone, stored in UTC.
	Time
	// Str is a short indexed string; Column.Size bounds it (VARCHAR(n)).
	Str
	// Text is unbounded text (never indexed).
	Text
	// Bytes is short binary data that can be indexed; Size bounds it.
	Bytes
	// Blob is unbounded binary data.
	Blob
)

// Column is one column of a table passbridge owns.
type Column struct {
	Name     string
	Type     Type
	Size     int // for Str and Bytes
	Nullable bool
	// Default is a constant SQL literal ("0", "'active'"), never volatile.
	Default string
}

// Index is a secondary index; Unique makes it a constraint.
type Index struct {
	Name    string // without prefix; rendered as <prefix><table>_<name>
	Columns []string
	Unique  bool
}

// ForeignKey references another table; Users means the application's users
// table (by its configured key column), otherwise Table is a passbridge table.
type ForeignKey struct {
	Column   string
	Users    bool
	Table    string // without prefix
	OnDelete string // "", "CASCADE", "SET NULL"
}

// Table is one table passbridge adds. Name has no prefix.
type Table struct {
	Name    string
	Comment string
	// PrimaryKey is the primary key column: "id" for tables with an ID
	// column, a natural key (a hash, a name) otherwise.
	PrimaryKey string
	Columns    []Column
	Indexes    []Index
	FKs        []ForeignKey
}

// UserColumn is a column passbridge adds to the existing users table. It is
// always nullable with no default, so adding it is metadata-only on every
// engine (no table rewrite, no long lock).
type UserColumn struct {
	Name    string // without prefix
	Type    Type
	Size    int
	Comment string
}

// Identity states (identities.state).
const (
	StateActive   = "active"
	StateDisabled = "disabled" // disabled in the directory (AD UAC 0x2, nsAccountLock, ...)
	StateDeleted  = "deleted"  // gone from the directory or out of scope; never hard-deleted
)

// Link states (identities.link_state).
const (
	LinkLinked    = "linked"    // matched to a users row by the match rules
	LinkCreated   = "created"   // provision: create made the row
	LinkManual    = "manual"    // linked by an admin; later syncs keep it
	LinkUnmatched = "unmatched" // no row matched
	LinkAmbiguous = "ambiguous" // more than one row matched; never guessed
)

// Password fallback policies (users.<prefix>password_policy). NULL means
// the application's default: password allowed.
const (
	PasswordAllowed            = "allowed"
	PasswordRefusedWithPasskey = "refused_with_passkey"
	// PasswordPasskeyRequired refuses password login whether or not the
	// user has a passkey yet: what an enrollment campaign's deadline sets
	// (the employee adds one in the portal with the directory password or
	// a link from IT).
	PasswordPasskeyRequired = "passkey_required"
)

// UserColumns are added to the existing users table.
var UserColumns = []UserColumn{
	{Name: "passkey_state", Type: Str, Size: 16, Comment: "NULL: no passkey; 'enrolled': at least one active passkey"},
	{Name: "password_policy", Type: Str, Size: 32, Comment: "NULL or 'allowed': password login allowed; 'refused_with_passkey': refused once a passkey is enrolled"},
}

// AddedColumn is a column added to one of passbridge's tables after the
// table's first release. It is never in the table's Columns: the table's
// CREATE TABLE would change, and with it the checksum that every existing
// install recorded for that step (status would report drift). migrate
// appends an add-column step for each, in this order, at the end of the
// plan (after every other step, also those added since), so that a new
// install and an old one end with the same columns. Always nullable, with
// no default: adding one is a catalog change only, on every engine.
type AddedColumn struct {
	Table  string // a table of Tables, without prefix
	Column Column
	// Comment says what the column holds (PostgreSQL and MySQL keep it).
	Comment string
}

// AddedColumns are the columns added to passbridge's tables since their
// first release, oldest first. Append only.
var AddedColumns = []AddedColumn{
	{Table: "identities", Column: Column{Name: "mapped_hash", Type: Str, Size: 64, Nullable: true},
		Comment: "hash of the mapped directory fields as last written by the sync: an entry whose hash is unchanged costs no write"},
}

// Tables are passbridge's own tables, in creation order (referenced first).
var Tables = []Table{
	{
		Name:       "identities",
		PrimaryKey: "id",
		Comment:    "directory identities, keyed by the directory's stable ID, linked to users rows",
		Columns: []Column{
			{Name: "id", Type: ID},
			{Name: "directory_id", Type: Str, Size: 64},
			{Name: "dn", Type: Text},
			{Name: "username", Type: Str, Size: 255},
			{Name: "email", Type: Str, Size: 320, Nullable: true},
			{Name: "display_name", Type: Str, Size: 255, Nullable: true},
			{Name: "department", Type: Str, Size: 255, Nullable: true},
			{Name: "state", Type: Str, Size: 16, Default: "'active'"},
			{Name: "state_reason", Type: Str, Size: 255, Nullable: true},
			{Name: "state_changed_at", Type: Time, Nullable: true},
			{Name: "user_key", Type: UserKey, Nullable: true},
			{Name: "link_state", Type: Str, Size: 16, Default: "'unmatched'"},
			{Name: "link_detail", Type: Text, Nullable: true},
			{Name: "attrs", Type: Text, Nullable: true}, // JSON of the raw mapped attributes
			{Name: "seen_run_id", Type: Ref, Nullable: true},
			{Name: "first_seen_at", Type: Time},
			{Name: "last_seen_at", Type: Time},
			{Name: "updated_at", Type: Time},
		},
		Indexes: []Index{
			{Name: "directory_id", Columns: []string{"directory_id"}, Unique: true},
			{Name: "username", Columns: []string{"username"}},
			{Name: "email", Columns: []string{"email"}},
			{Name: "user_key", Columns: []string{"user_key"}},
		},
		FKs: []ForeignKey{{Column: "user_key", Users: true, OnDelete: "SET NULL"}},
	},
	{
		Name:       "credentials",
		PrimaryKey: "id",
		Comment:    "passkeys: one user, many credentials; enough to verify a login with any WebAuthn library",
		Columns: []Column{
			{Name: "id", Type: ID},
			{Name: "user_key", Type: UserKey},
			{Name: "identity_id", Type: Ref, Nullable: true},
			{Name: "credential_id", Type: Bytes, Size: 1023},
			{Name: "public_key", Type: Blob}, // COSE_Key
			{Name: "sign_count", Type: Int, Default: "0"},
			{Name: "aaguid", Type: Bytes, Size: 16, Nullable: true},
			{Name: "transports", Type: Str, Size: 255, Nullable: true}, // comma-separated
			{Name: "user_present", Type: Bool, Default: "0"},
			{Name: "user_verified", Type: Bool, Default: "0"},
			{Name: "backup_eligible", Type: Bool, Default: "0"},
			{Name: "backup_state", Type: Bool, Default: "0"},
			{Name: "attestation_type", Type: Str, Size: 64, Nullable: true},
			{Name: "attestation_format", Type: Str, Size: 64, Nullable: true},
			{Name: "user_handle", Type: Bytes, Size: 64},
			{Name: "name", Type: Str, Size: 255},
			{Name: "credential_json", Type: Text, Nullable: true}, // the whole go-webauthn Credential
			{Name: "created_at", Type: Time},
			{Name: "last_used_at", Type: Time, Nullable: true},
			{Name: "revoked_at", Type: Time, Nullable: true},
			{Name: "revoked_reason", Type: Str, Size: 255, Nullable: true},
		},
		Indexes: []Index{
			{Name: "credential_id", Columns: []string{"credential_id"}, Unique: true},
			{Name: "user_key", Columns: []string{"user_key"}},
			{Name: "user_handle", Columns: []string{"user_handle"}},
			// Foreign key columns are indexed: without it, every change to
			// an identity would scan this table for referencing rows.
			{Name: "identity_id", Columns: []string{"identity_id"}},
		},
		FKs: []ForeignKey{
			{Column: "user_key", Users: true, OnDelete: "CASCADE"},
			{Column: "identity_id", Table: "identities", OnDelete: "SET NULL"},
		},
	},
	{
		Name:       "sync_runs",
		PrimaryKey: "id",
		Comment:    "history of directory sync runs, one row per run",
		Columns: []Column{
			{Name: "id", Type: ID},
			{Name: "kind", Type: Str, Size: 16},    // full | delta
			{Name: "trigger", Type: Str, Size: 16}, // schedule | cli | api
			{Name: "dry_run", Type: Bool, Default: "0"},
			{Name: "status", Type: Str, Size: 16}, // running | succeeded | failed | refused | unknown
			{Name: "node", Type: Str, Size: 255, Nullable: true},
			{Name: "started_at", Type: Time},
			{Name: "finished_at", Type: Time, Nullable: true},
			{Name: "entries", Type: Int, Default: "0"},
			{Name: "summary", Type: Text, Nullable: true}, // JSON counts and timings
			{Name: "error", Type: Text, Nullable: true},
		},
		Indexes: []Index{{Name: "started_at", Columns: []string{"started_at"}}},
	},
	{
		Name:       "sync_state",
		PrimaryKey: "name",
		Comment:    "delta sync cursors, advanced only in the transaction that applies a batch",
		Columns: []Column{
			{Name: "name", Type: Str, Size: 64}, // primary key: one cursor per directory source
			{Name: "cursor", Type: Text},        // JSON: DirSync cookie, USN + invocationId, syncrepl cookie...
			{Name: "run_id", Type: Ref, Nullable: true},
			{Name: "updated_at", Type: Time},
		},
	},
	{
		Name:       "audit",
		PrimaryKey: "id",
		Comment:    "append-only security event log",
		Columns: []Column{
			{Name: "id", Type: ID},
			{Name: "at", Type: Time},
			{Name: "event", Type: Str, Size: 64},
			{Name: "success", Type: Bool, Default: "1"},
			{Name: "actor", Type: Str, Size: 255, Nullable: true},
			{Name: "target", Type: Str, Size: 255, Nullable: true},
			{Name: "ip", Type: Str, Size: 64, Nullable: true},
			{Name: "user_agent", Type: Str, Size: 512, Nullable: true},
			{Name: "detail", Type: Text, Nullable: true}, // JSON
		},
		Indexes: []Index{
			{Name: "at", Columns: []string{"at"}},
			{Name: "event", Columns: []string{"event", "at"}},
			{Name: "target", Columns: []string{"target", "at"}},
		},
	},
	{
		Name:       "sessions",
		PrimaryKey: "id",
		Comment:    "portal sessions, server-side so any replica can serve any request",
		Columns: []Column{
			{Name: "id", Type: Str, Size: 64}, // SHA-256 of the cookie value, hex
			{Name: "identity_id", Type: Ref, Nullable: true},
			{Name: "data", Type: Text}, // JSON
			{Name: "created_at", Type: Time},
			{Name: "expires_at", Type: Time},
		},
		Indexes: []Index{
			{Name: "expires_at", Columns: []string{"expires_at"}},
			{Name: "identity_id", Columns: []string{"identity_id"}},
		},
		FKs: []ForeignKey{{Column: "identity_id", Table: "identities", OnDelete: "CASCADE"}},
	},
	{
		Name:       "ceremonies",
		PrimaryKey: "id",
		Comment:    "WebAuthn ceremony state: go-webauthn SessionData stored whole, with an expiry",
		Columns: []Column{
			{Name: "id", Type: Str, Size: 64},
			{Name: "kind", Type: Str, Size: 32}, // registration | login | ...
			{Name: "identity_id", Type: Ref, Nullable: true},
			{Name: "session_data", Type: Text}, // JSON of webauthn.SessionData
			{Name: "created_at", Type: Time},
			{Name: "expires_at", Type: Time},
			{Name: "finished_at", Type: Time, Nullable: true},
			{Name: "result", Type: Str, Size: 32, Nullable: true},
		},
		Indexes: []Index{
			{Name: "created_at", Columns: []string{"created_at"}},
		},
	},
	{
		Name:       "tokens",
		PrimaryKey: "id",
		Comment:    "one-time enrollment and recovery links, stored only as hashes",
		Columns: []Column{
			{Name: "id", Type: ID},
			{Name: "token_hash", Type: Str, Size: 64},
			{Name: "kind", Type: Str, Size: 16}, // enroll | recovery
			{Name: "identity_id", Type: Ref},
			{Name: "created_by", Type: Str, Size: 255},
			{Name: "created_at", Type: Time},
			{Name: "expires_at", Type: Time},
			{Name: "used_at", Type: Time, Nullable: true},
		},
		Indexes: []Index{
			{Name: "token_hash", Columns: []string{"token_hash"}, Unique: true},
			{Name: "identity_id", Columns: []string{"identity_id"}},
		},
		FKs: []ForeignKey{{Column: "identity_id", Table: "identities", OnDelete: "CASCADE"}},
	},
	{
		Name:       "rate_limits",
		PrimaryKey: "bucket",
		Comment:    "fixed-window counters shared by all replicas (password checks, recoveries)",
		Columns: []Column{
			{Name: "bucket", Type: Str, Size: 255},
			{Name: "window_start", Type: Time},
			{Name: "hits", Type: Int, Default: "0"},
		},
		Indexes: []Index{
			{Name: "window_start", Columns: []string{"window_start"}},
		},
	},
	{
		Name:       "ceremony_keys",
		PrimaryKey: "id",
		Comment:    "the keys that seal sign-in ceremonies (AES-256-GCM), so that a sign-in's begin writes nothing and any replica can open it",
		Columns: []Column{
			{Name: "id", Type: Str, Size: 32},     // random, named in every sealed ceremony
			{Name: "secret", Type: Str, Size: 64}, // the 256-bit key, hex
			{Name: "created_at", Type: Time},
		},
	},
	{
		Name:       "signing_keys",
		PrimaryKey: "id",
		Comment:    "the keys that sign ID tokens and assertions (ES256): one per rotation period, shared by every replica",
		Columns: []Column{
			{Name: "id", Type: Str, Size: 64}, // the JWK key ID (kid)
			{Name: "period", Type: Int},       // the rotation period it signs in: unique, so replicas agree
			{Name: "alg", Type: Str, Size: 16},
			{Name: "private_key", Type: Text}, // PKCS #8, PEM
			{Name: "public_key", Type: Text},  // the public JWK, JSON
			{Name: "signs_from", Type: Time},
			{Name: "signs_until", Type: Time},
			{Name: "published_until", Type: Time}, // signs_until + the longest token lifetime
			{Name: "created_at", Type: Time},
		},
		Indexes: []Index{
			{Name: "period", Columns: []string{"period"}, Unique: true},
			{Name: "published_until", Columns: []string{"published_until"}},
		},
	},
	{
		Name:       "oidc_requests",
		PrimaryKey: "id",
		Comment:    "OpenID Connect authorization requests, from authorize to the code's one exchange",
		Columns: []Column{
			{Name: "id", Type: Str, Size: 64}, // SHA-256 of the request ID in the login URL
			{Name: "client_id", Type: Str, Size: 64},
			{Name: "request", Type: Text}, // JSON of the authorization request
			{Name: "identity_id", Type: Ref, Nullable: true},
			{Name: "subject", Type: Str, Size: 255, Nullable: true},
			{Name: "amr", Type: Str, Size: 64, Nullable: true},
			{Name: "auth_time", Type: Time, Nullable: true},
			{Name: "browser_hash", Type: Str, Size: 64, Nullable: true}, // the browser that signed in (cookie)
			{Name: "code_hash", Type: Str, Size: 64, Nullable: true},
			{Name: "code_used_at", Type: Time, Nullable: true},
			{Name: "created_at", Type: Time},
			{Name: "expires_at", Type: Time},
		},
		Indexes: []Index{
			{Name: "code_hash", Columns: []string{"code_hash"}, Unique: true},
			{Name: "expires_at", Columns: []string{"expires_at"}},
		},
	},
	{
		Name:       "oidc_tokens",
		PrimaryKey: "id",
		Comment:    "OpenID Connect access tokens, so that a revoked one is refused",
		Columns: []Column{
			{Name: "id", Type: Str, Size: 64}, // the token's jti
			{Name: "request_id", Type: Str, Size: 64},
			{Name: "client_id", Type: Str, Size: 64},
			{Name: "subject", Type: Str, Size: 255},
			{Name: "identity_id", Type: Ref, Nullable: true},
			{Name: "created_at", Type: Time},
			{Name: "expires_at", Type: Time},
			{Name: "revoked_at", Type: Time, Nullable: true},
		},
		Indexes: []Index{
			{Name: "request_id", Columns: []string{"request_id"}},
			{Name: "subject", Columns: []string{"subject", "client_id"}},
			{Name: "expires_at", Columns: []string{"expires_at"}},
		},
	},
	// Enrollment campaigns (package campaign): who IT invites to enroll,
	// each person's progress, and every mail, one row per person and step.
	{
		Name:       "campaigns",
		PrimaryKey: "id",
		Comment:    "enrollment campaigns: a group, an OU or a list of users invited by mail to add a passkey",
		Columns: []Column{
			{Name: "id", Type: ID},
			{Name: "name", Type: Str, Size: 191},
			{Name: "state", Type: Str, Size: 16, Default: "'active'"}, // active | paused | cancelled | ended
			{Name: "target_kind", Type: Str, Size: 16},                // group | ou | users
			{Name: "target", Type: Text},                              // the group's or OU's DN, or the usernames as a JSON array
			{Name: "starts_at", Type: Time},
			{Name: "deadline", Type: Time, Nullable: true},
			{Name: "reminders", Type: Text}, // JSON: the reminder steps
			{Name: "template", Type: Text},  // JSON: subject, text, html, company
			{Name: "enforce", Type: Bool, Default: "0"},
			{Name: "grace", Type: Text, Nullable: true}, // JSON array of usernames the deadline does not apply to
			{Name: "enforced_at", Type: Time, Nullable: true},
			{Name: "last_error", Type: Text, Nullable: true}, // why the last pass could not resolve the target, if it could not
			{Name: "created_by", Type: Str, Size: 255},
			{Name: "created_at", Type: Time},
			{Name: "updated_at", Type: Time},
		},
		Indexes: []Index{
			{Name: "name", Columns: []string{"name"}, Unique: true},
			{Name: "state", Columns: []string{"state"}},
		},
	},
	{
		Name:       "campaign_recipients",
		PrimaryKey: "id",
		Comment:    "one row per person a campaign selected: invited, enrolled, dropped",
		Columns: []Column{
			{Name: "id", Type: ID},
			{Name: "campaign_id", Type: Ref},
			{Name: "identity_id", Type: Ref},
			{Name: "state", Type: Str, Size: 16}, // pending | invited | enrolled | dropped
			{Name: "state_reason", Type: Str, Size: 255, Nullable: true},
			{Name: "added_at", Type: Time},
			{Name: "invited_at", Type: Time, Nullable: true},
			{Name: "opened_at", Type: Time, Nullable: true},
			{Name: "enrolled_at", Type: Time, Nullable: true},
			{Name: "dropped_at", Type: Time, Nullable: true},
			{Name: "enforced_at", Type: Time, Nullable: true},
			{Name: "policy_before", Type: Str, Size: 32, Nullable: true},
			{Name: "updated_at", Type: Time},
		},
		Indexes: []Index{
			{Name: "person", Columns: []string{"campaign_id", "identity_id"}, Unique: true},
			{Name: "identity_id", Columns: []string{"identity_id"}},
		},
		FKs: []ForeignKey{
			{Column: "campaign_id", Table: "campaigns", OnDelete: "CASCADE"},
			{Column: "identity_id", Table: "identities", OnDelete: "CASCADE"},
		},
	},
	{
		Name:       "campaign_messages",
		PrimaryKey: "id",
		Comment:    "campaign mail: at most one row per person and step (a unique key), so nobody gets a step twice",
		Columns: []Column{
			{Name: "id", Type: ID},
			{Name: "campaign_id", Type: Ref},
			{Name: "recipient_id", Type: Ref},
			{Name: "identity_id", Type: Ref},
			{Name: "step", Type: Str, Size: 32},  // invite | a reminder's name
			{Name: "state", Type: Str, Size: 16}, // queued | sending | sent | bounced | failed | unknown | skipped | cancelled
			{Name: "attempts", Type: Int, Default: "0"},
			{Name: "next_attempt_at", Type: Time},
			{Name: "token_id", Type: Ref, Nullable: true}, // the one-time link it carried
			{Name: "claimed_by", Type: Str, Size: 255, Nullable: true},
			{Name: "queued_at", Type: Time},
			{Name: "sent_at", Type: Time, Nullable: true},
			{Name: "error", Type: Text, Nullable: true},
		},
		Indexes: []Index{
			{Name: "step", Columns: []string{"campaign_id", "identity_id", "step"}, Unique: true},
			{Name: "due", Columns: []string{"state", "next_attempt_at"}},
			{Name: "recipient_id", Columns: []string{"recipient_id"}},
			{Name: "token_id", Columns: []string{"token_id"}},
		},
		FKs: []ForeignKey{
			{Column: "campaign_id", Table: "campaigns", OnDelete: "CASCADE"},
			{Column: "recipient_id", Table: "campaign_recipients", OnDelete: "CASCADE"},
		},
	},
}
