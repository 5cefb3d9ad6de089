// Package config loads passbridge's one YAML configuration file: decoded
// strictly (an unknown key is an error naming the file and line), every key
// overridable by a PASSBRIDGE_... environment variable, secrets read from
// *_file keys or the environment and never printed.
package config

// Config is the whole configuration. The YAML keys are the contract documented
// in README.md; the Go field names follow them.
type Config struct {
	Database   Database   `yaml:"database"`
	UsersTable UsersTable `yaml:"users_table"`
	Directory  Directory  `yaml:"directory"`
	Schedule   Schedule   `yaml:"schedule"`
	Portal     Portal     `yaml:"portal"`
	Admin      Admin      `yaml:"admin"`
	Migrate    Migrate    `yaml:"migrate"`
	Mail       Mail       `yaml:"mail"`
	Audit      Audit      `yaml:"audit"`
	OIDC       OIDC       `yaml:"oidc"`
	Campaign   Campaign   `yaml:"campaign"`
	Log        Log        `yaml:"log"`

	// Source is the file the configuration came from ("" for the demo).
	Source string `yaml:"-"`
	// Demo is set when passbridge runs its embedded demo.
	Demo bool `yaml:"-"`
}

// Database is the application's own database, which passbridge writes to.
type Database struct {
	Driver string `yaml:"driver"` // sqlite | postgres | mysql
	// DSN is a driver-specific data source name. It usually holds a
	// password, so it is a Secret: config check prints it masked.
	DSN     Secret `yaml:"dsn"`
	DSNFile string `yaml:"dsn_file"`
	// MaxOpenConns bounds the pool (0: driver default, SQLite: 1 writer;
	// at least MinServerConns on a database server).
	MaxOpenConns int `yaml:"max_open_conns"`
	// ConnectTimeout is how long Open keeps retrying before it gives up.
	ConnectTimeout Duration `yaml:"connect_timeout"`
}

// UsersTable names the application's existing users table and its columns.
// Empty column names mean "this table has no such column".
type UsersTable struct {
	Schema      string `yaml:"schema"`
	Name        string `yaml:"name"`
	Key         string `yaml:"key"`
	Username    string `yaml:"username"`
	Email       string `yaml:"email"`
	DisplayName string `yaml:"display_name"`
	Password    string `yaml:"password"`
	Active      string `yaml:"active"`
	TOTP        string `yaml:"totp"`
	// NeverLink is an SQL condition on the users table (is_admin = true):
	// rows it holds are never linked by the match rules, only by hand.
	NeverLink string `yaml:"never_link"`
}

// Directory is the LDAP / Active Directory source of identities.
type Directory struct {
	URLs               []string   `yaml:"urls"`
	Kind               string     `yaml:"kind"` // ad | openldap | freeipa
	BindDN             string     `yaml:"bind_dn"`
	BindPassword       Secret     `yaml:"bind_password"`
	BindPasswordFile   string     `yaml:"bind_password_file"`
	CAFile             string     `yaml:"ca_file"`
	StartTLS           bool       `yaml:"start_tls"`
	InsecureSkipVerify bool       `yaml:"insecure_skip_verify"`
	ConnectTimeout     Duration   `yaml:"connect_timeout"`
	Timeout            Duration   `yaml:"timeout"`
	BaseDN             string     `yaml:"base_dn"`
	UserFilter         string     `yaml:"user_filter"`
	Group              string     `yaml:"group"`
	PageSize           int        `yaml:"page_size"`
	Attributes         Attributes `yaml:"attributes"`
	Match              []string   `yaml:"match"`     // email | username, in order
	Provision          string     `yaml:"provision"` // link | create
	MaxDeletions       Threshold  `yaml:"max_deletions"`
}

// Attributes maps identity fields to directory attribute names. Empty fields
// take the preset of the directory kind.
type Attributes struct {
	ID          string `yaml:"id"`
	Username    string `yaml:"username"`
	Email       string `yaml:"email"`
	DisplayName string `yaml:"display_name"`
	Department  string `yaml:"department"`
	Disabled    string `yaml:"disabled"`
}

// Schedule holds cron specs (5 fields or @every) for the two kinds of sync.
type Schedule struct {
	Incremental string `yaml:"incremental"`
	Full        string `yaml:"full"`
}

// Portal is the employee-facing enrollment portal.
type Portal struct {
	Listen    string   `yaml:"listen"`
	PublicURL string   `yaml:"public_url"`
	RPID      string   `yaml:"rp_id"`
	RPName    string   `yaml:"rp_name"`
	Origins   []string `yaml:"origins"`
	// RelatedOrigins are the origins of applications outside the RP ID's
	// domain whose pages run passkey sign-ins for it (WebAuthn related
	// origin requests): listed at /.well-known/webauthn, accepted in
	// assertions.
	RelatedOrigins []string `yaml:"related_origins"`
	AdminGroup     string   `yaml:"admin_group"`
	// AdminGroupCache is how long an answer of the directory about
	// membership in AdminGroup is reused (per user, per process) before it
	// is asked again: admin rights lapse at most this long after someone
	// leaves the group. 0 asks at every sign-in and admin request.
	AdminGroupCache Duration `yaml:"admin_group_cache"`
	TLSCertFile     string   `yaml:"tls_cert_file"`
	TLSKeyFile      string   `yaml:"tls_key_file"`
	SessionLifetime Duration `yaml:"session_lifetime"`
	// LinkLifetime is how long an enrollment link stays valid by default.
	LinkLifetime Duration `yaml:"link_lifetime"`
	// CeremonyTimeout bounds a WebAuthn ceremony from begin to finish.
	CeremonyTimeout Duration `yaml:"ceremony_timeout"`
	// TrustedProxies are the CIDRs of load balancers whose X-Forwarded-For
	// the portal believes when it rate-limits by client address. Empty:
	// the TCP peer is the client.
	TrustedProxies []string   `yaml:"trusted_proxies"`
	Policy         Policy     `yaml:"policy"`
	RateLimits     RateLimits `yaml:"rate_limits"`
	Recovery       Recovery   `yaml:"recovery"`
}

// Recovery is how an employee who lost their passkeys gets a new one. Each
// path is on or off; every recovery is rate-limited, audited, and mailed to
// the user.
type Recovery struct {
	// EmailCode: the directory password plus a one-time code mailed to the
	// directory's mail address (needs mail.host).
	EmailCode bool `yaml:"email_code"`
	// TOTP: the legacy TOTP secret of the users table (users_table.totp),
	// read only; the trade-off of reusing the existing 2FA.
	TOTP bool `yaml:"totp"`
	// Link: recovery links issued by IT (passbridge enroll link --recovery).
	Link bool `yaml:"link"`
	// RevokeOld revokes the user's existing passkeys when a recovery
	// succeeds (a lost device can no longer sign in).
	RevokeOld bool `yaml:"revoke_old"`
	// CodeLifetime is how long an emailed code is valid.
	CodeLifetime Duration `yaml:"code_lifetime"`
	// PerUser recovery attempts per account (and per client address) in
	// any Window.
	PerUser int      `yaml:"per_user"`
	Window  Duration `yaml:"window"`
}

// Mail is the SMTP server passbridge sends mail through (recovery codes,
// "a passkey was added" notices).
type Mail struct {
	Host string `yaml:"host"` // empty: no mail
	Port int    `yaml:"port"`
	// Security is starttls (port 587), tls (implicit TLS, port 465) or none
	// (only to a server on loopback).
	Security     string   `yaml:"security"`
	Username     string   `yaml:"username"`
	Password     Secret   `yaml:"password"`
	PasswordFile string   `yaml:"password_file"`
	From         string   `yaml:"from"`
	CAFile       string   `yaml:"ca_file"`
	Timeout      Duration `yaml:"timeout"`
}

// Audit is the audit trail (passbridge_audit).
type Audit struct {
	// Retention is how long events are kept; 0 keeps them forever.
	Retention Duration `yaml:"retention"`
}

// Campaign is how enrollment campaigns (package campaign) send their mail:
// the daemon's leader sends it, at most PerMinute messages a minute over
// all replicas (keep it under the SMTP server's own limit: Exchange Online
// takes 30 a minute per mailbox).
type Campaign struct {
	// PerMinute bounds the invitations and reminders sent per minute.
	PerMinute int `yaml:"per_minute"`
	// Interval is how often the daemon looks for campaign work (new
	// people in scope, reminders due, enrollments, the deadline).
	Interval Duration `yaml:"interval"`
	// Retry is the first wait after a temporary mail failure (the server
	// is down, a 4xx answer); it doubles up to an hour.
	Retry Duration `yaml:"retry"`
	// MaxAttempts: a message that has failed this often is given up
	// (counted as failed).
	MaxAttempts int `yaml:"max_attempts"`
}

// Policy is what the enterprise allows as a passkey.
type Policy struct {
	// AllowedAAGUIDs are the authenticator models allowed to register
	// (canonical AAGUID strings); empty allows any.
	AllowedAAGUIDs []string `yaml:"allowed_aaguids"`
	// ForbidSynced refuses passkeys that can be synced to other devices
	// (the BackupEligible flag): device-bound keys only.
	ForbidSynced bool `yaml:"forbid_synced"`
	// Attestation is the conveyance preference: none, indirect, direct or
	// enterprise.
	Attestation string `yaml:"attestation"`
	// MaxPasskeys is how many active passkeys one user may have.
	MaxPasskeys int `yaml:"max_passkeys"`
}

// RateLimits bound the directory password checks of the portal, so that the
// portal can never be what locks an employee out of the directory: keep
// PasswordPerUser below the directory's lockout threshold for the same
// window.
type RateLimits struct {
	// PasswordPerUser is the number of password checks per account in any
	// PasswordWindow (a sliding window: never more in any such span).
	PasswordPerUser int `yaml:"password_per_user"`
	// PasswordPerIP bounds password checks per client address per window.
	PasswordPerIP  int      `yaml:"password_per_ip"`
	PasswordWindow Duration `yaml:"password_window"`
}

// Admin is the operator surface: health, readiness, metrics and the admin API.
type Admin struct {
	// Listen is a separate listener for /healthz, /readyz, /metrics and
	// /api; empty serves them on the portal listener.
	Listen        string   `yaml:"listen"`
	Token         Secret   `yaml:"token"`
	TokenFile     string   `yaml:"token_file"`
	ReadyMaxAge   Duration `yaml:"ready_max_sync_age"`
	ShutdownGrace Duration `yaml:"shutdown_grace"`
}

// OIDC is the sign-in for applications: the OpenID Connect provider and the
// signed-assertion API, for the clients listed here (none: both are off).
type OIDC struct {
	// Issuer is the issuer URL (discovery lives under it); empty is
	// portal.public_url, else the first portal origin.
	Issuer string `yaml:"issuer"`
	// KeyRotation is how long one signing key signs; the next one is
	// published a whole period before it signs, and an old one stays
	// published until the last token it signed has expired.
	KeyRotation Duration `yaml:"key_rotation"`
	// TokenLifetime bounds ID and access tokens.
	TokenLifetime Duration `yaml:"token_lifetime"`
	// AssertionLifetime bounds the JWTs of the assertion API.
	AssertionLifetime Duration `yaml:"assertion_lifetime"`
	Clients           []Client `yaml:"clients"`
}

// Client is one application that signs employees in through passbridge.
type Client struct {
	ID   string `yaml:"id"`
	Name string `yaml:"name"`
	// Secret (or SecretFile) authenticates a confidential client at the
	// token endpoint; Public clients have none and must use PKCE S256.
	Secret     Secret `yaml:"secret"`
	SecretFile string `yaml:"secret_file"`
	Public     bool   `yaml:"public"`
	// RedirectURIs are matched exactly.
	RedirectURIs           []string `yaml:"redirect_uris"`
	PostLogoutRedirectURIs []string `yaml:"post_logout_redirect_uris"`
	// Origins are the application's web origins for the assertion API:
	// the only ones CORS answers, and the only ones (besides the portal's)
	// a passkey assertion for this client may come from.
	Origins []string `yaml:"origins"`
	// Subject is what sub carries: user_key (the users row's key, the
	// default) or directory_id (the directory's stable ID).
	Subject string `yaml:"subject"`
	// PasswordFallback offers the directory password on the OpenID
	// Connect login page (off by default: passkeys only), to a user whose
	// users.<prefix>password_policy allows it, within the portal's
	// password rate limits; a user without a passkey is then invited to
	// add one before going back to the application. The ID token's amr
	// says pwd.
	PasswordFallback bool `yaml:"password_fallback"`
}

// Migrate controls `passbridge migrate`.
type Migrate struct {
	// Prefix names every table passbridge adds ("passbridge_credentials").
	Prefix      string   `yaml:"prefix"`
	LockTimeout Duration `yaml:"lock_timeout"`
	Retries     int      `yaml:"retries"`
}

// Log controls log output; the command-line flags override it.
type Log struct {
	Level  string `yaml:"level"`  // debug | info | warn | error
	Format string `yaml:"format"` // auto | text | json
}

// DefaultServerConns is the pool of a database server when
// database.max_open_conns is 0.
const DefaultServerConns = 10

// MinServerConns is the smallest pool that works on a database server:
// locks (store.TryLock) hold a connection each while they are held (a
// sync's, the campaign engine's), and a first sync writes batches on two
// more (dirsync's writers). With fewer, a sync waited forever for a
// connection that its own lock held.
const MinServerConns = 4
