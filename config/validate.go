package config

import (
	"errors"
	"fmt"
	"net"
	"net/mail"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/passbridge/passbridge/schedule"
)

// Preset is what a directory kind calls its attributes.
type Preset struct {
	Attributes Attributes
	UserFilter string
}

// Presets are the attribute names per directory kind. The stable ID is the
// directory's own immutable identifier, never the DN.
var Presets = map[string]Preset{
	"ad": {
		Attributes: Attributes{ID: "objectGUID", Username: "sAMAccountName", Email: "mail",
			DisplayName: "displayName", Department: "department", Disabled: "userAccountControl"},
		UserFilter: "(&(objectCategory=person)(objectClass=user))",
	},
	"openldap": {
		Attributes: Attributes{ID: "entryUUID", Username: "uid", Email: "mail",
			DisplayName: "displayName", Department: "departmentNumber", Disabled: "pwdAccountLockedTime"},
		UserFilter: "(objectClass=inetOrgPerson)",
	},
	"freeipa": {
		Attributes: Attributes{ID: "nsUniqueId", Username: "uid", Email: "mail",
			DisplayName: "displayName", Department: "departmentNumber", Disabled: "nsAccountLock"},
		UserFilter: "(objectClass=inetOrgPerson)",
	},
}

// applyDefaults fills what depends on other keys: the directory kind's
// attribute presets, and the default match rules narrowed to the columns the
// users table has (a table without an e-mail column needs no
// directory.match written; a rule written by hand is kept and validated).
func applyDefaults(cfg *Config) {
	applyPresets(&cfg.Directory)
	if slices.Equal(cfg.Directory.Match, defaultMatch) {
		var m []string
		if cfg.UsersTable.Email != "" {
			m = append(m, "email")
		}
		if cfg.UsersTable.Username != "" {
			m = append(m, "username")
		}
		cfg.Directory.Match = m
	}
}

func applyPresets(d *Directory) {
	p, ok := Presets[d.Kind]
	if !ok {
		return // Validate reports the kind
	}
	a := &d.Attributes
	fill := func(dst *string, v string) {
		if *dst == "" {
			*dst = v
		}
	}
	fill(&a.ID, p.Attributes.ID)
	fill(&a.Username, p.Attributes.Username)
	fill(&a.Email, p.Attributes.Email)
	fill(&a.DisplayName, p.Attributes.DisplayName)
	fill(&a.Department, p.Attributes.Department)
	fill(&a.Disabled, p.Attributes.Disabled)
	fill(&d.UserFilter, p.UserFilter)
}

// Validate checks every key that cmd reads and reports all problems at once,
// each naming the key and what is expected; the heading names the command,
// so that an operator knows why a key is needed.
func Validate(cfg *Config, cmd Command) error {
	var errs []string
	bad := func(key, format string, args ...any) {
		errs = append(errs, key+": "+fmt.Sprintf(format, args...))
	}
	oneOf := func(key, got string, allowed ...string) {
		if !slices.Contains(allowed, got) {
			bad(key, "must be one of %s (got %q)", strings.Join(allowed, ", "), got)
		}
	}

	if cmd.reads(PartDatabase) {
		validateDatabase(cfg, bad, oneOf)
	}
	if cmd.reads(PartDirectory) {
		validateDirectory(cfg, bad, oneOf)
	}
	if cmd.reads(PartPortal) {
		validateServing(cfg, bad, oneOf)
	}
	if cmd.reads(PartSchedule) {
		validateSchedule(cfg.Schedule, bad)
	}
	oneOf("log.level", cfg.Log.Level, "debug", "info", "warn", "error")
	oneOf("log.format", cfg.Log.Format, "auto", "text", "json")

	if len(errs) == 0 {
		return nil
	}
	where := cfg.Source
	if where == "" {
		where = "configuration"
	}
	return fmt.Errorf("%s is not valid for %s (it reads %s):\n  %w", where, cmd.Name, cmd.what(), errors.New(strings.Join(errs, "\n  ")))
}

type (
	badFunc   = func(key, format string, args ...any)
	oneOfFunc = func(key, got string, allowed ...string)
)

// validateDatabase checks database, users_table and migrate.
func validateDatabase(cfg *Config, bad badFunc, oneOf oneOfFunc) {
	oneOf("database.driver", cfg.Database.Driver, "sqlite", "postgres", "mysql")
	if cfg.Database.DSN == "" {
		bad("database.dsn", "is required (or database.dsn_file, or PASSBRIDGE_DATABASE_DSN)")
	}
	switch n := cfg.Database.MaxOpenConns; {
	case n < 0:
		bad("database.max_open_conns", "must be 0 (driver default) or more")
	case n > 0 && n < MinServerConns && cfg.Database.Driver != "sqlite":
		bad("database.max_open_conns", "must be 0 (the default, %d) or at least %d on %s (got %d): a sync holds a connection for its lock, the campaign engine another, and a first sync writes on two more",
			DefaultServerConns, MinServerConns, cfg.Database.Driver, n)
	}

	ut := cfg.UsersTable
	if ut.Name == "" {
		bad("users_table.name", "is required: the application's existing users table")
	}
	if ut.Key == "" {
		bad("users_table.key", "is required: the table's primary key column")
	}
	if ut.Username == "" && ut.Email == "" {
		bad("users_table", "needs at least one of username and email to link identities to rows")
	}
	if strings.Contains(ut.NeverLink, ";") {
		bad("users_table.never_link", "must be one SQL condition on the users table, such as is_admin = true (got %q)", ut.NeverLink)
	}

	if cfg.Migrate.Prefix == "" || strings.ContainsAny(cfg.Migrate.Prefix, " .\"`'") {
		bad("migrate.prefix", "must be a plain identifier prefix such as passbridge_ (got %q)", cfg.Migrate.Prefix)
	}
	if cfg.Migrate.Retries < 0 {
		bad("migrate.retries", "must be 0 or more")
	}
}

// validateDirectory checks the directory and its match rules against the
// users table's columns.
func validateDirectory(cfg *Config, bad badFunc, oneOf oneOfFunc) {
	ut := cfg.UsersTable
	d := cfg.Directory
	oneOf("directory.kind", d.Kind, "ad", "openldap", "freeipa")
	if len(d.URLs) == 0 {
		bad("directory.urls", "needs at least one ldap:// or ldaps:// URL")
	}
	for i, raw := range d.URLs {
		u, err := url.Parse(raw)
		if err != nil || (u.Scheme != "ldap" && u.Scheme != "ldaps") || u.Host == "" {
			bad(fmt.Sprintf("directory.urls[%d]", i), "expected ldap://host[:port] or ldaps://host[:port] (got %q)", raw)
			continue
		}
		if u.Scheme == "ldaps" && d.StartTLS {
			bad("directory.start_tls", "cannot be combined with an ldaps:// URL (%s): pick one", raw)
		}
	}
	if d.BaseDN == "" {
		bad("directory.base_dn", "is required: the subtree that holds the users")
	}
	if d.PageSize < 1 || d.PageSize > 100000 {
		bad("directory.page_size", "must be between 1 and 100000 (got %d)", d.PageSize)
	}
	if len(d.Match) == 0 {
		bad("directory.match", "needs at least one of email, username")
	}
	for i, m := range d.Match {
		oneOf(fmt.Sprintf("directory.match[%d]", i), m, "email", "username")
		if m == "email" && ut.Email == "" {
			bad(fmt.Sprintf("directory.match[%d]", i), "matches on email but users_table.email is empty")
		}
		if m == "username" && ut.Username == "" {
			bad(fmt.Sprintf("directory.match[%d]", i), "matches on username but users_table.username is empty")
		}
	}
	oneOf("directory.provision", d.Provision, "link", "create")
	if d.Timeout <= 0 || d.ConnectTimeout <= 0 {
		bad("directory.timeout", "and directory.connect_timeout must be positive durations")
	}
}

// validateServing checks what the daemon serves: the portal and its
// policy, mail and recovery, the admin listener and token, the audit trail.
func validateServing(cfg *Config, bad badFunc, oneOf oneOfFunc) {
	if cfg.Portal.Listen != "" {
		if _, _, err := net.SplitHostPort(cfg.Portal.Listen); err != nil {
			bad("portal.listen", "expected host:port or :port (got %q)", cfg.Portal.Listen)
		}
	}
	if cfg.Admin.Listen != "" {
		if _, _, err := net.SplitHostPort(cfg.Admin.Listen); err != nil {
			bad("admin.listen", "expected host:port or :port (got %q)", cfg.Admin.Listen)
		}
	}
	for i, o := range cfg.Portal.Origins {
		u, err := url.Parse(o)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.Path != "" {
			bad(fmt.Sprintf("portal.origins[%d]", i), "expected an origin such as https://passkeys.corp.example (got %q)", o)
		}
	}
	for i, o := range cfg.Portal.RelatedOrigins {
		u, err := url.Parse(o)
		switch {
		case err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.Path != "":
			bad(fmt.Sprintf("portal.related_origins[%d]", i), "expected an origin such as https://erp.example.com (got %q)", o)
		case u.Scheme == "http" && u.Hostname() != "localhost" && !strings.HasSuffix(u.Hostname(), ".localhost"):
			bad(fmt.Sprintf("portal.related_origins[%d]", i), "must be https:// (browsers allow passkeys over http only on localhost; got %q)", o)
		case cfg.Portal.RPID == "":
			bad("portal.related_origins", "needs portal.rp_id: the domain whose passkeys these origins may use")
		}
	}
	validatePortal(cfg.Portal, bad, oneOf)
	validateOIDC(cfg, bad, oneOf)
	validateMail(cfg, bad, oneOf)
	validateCampaign(cfg.Campaign, bad)
	if (cfg.Portal.TLSCertFile == "") != (cfg.Portal.TLSKeyFile == "") {
		bad("portal.tls_cert_file", "and portal.tls_key_file must be set together")
	}
	if tok := cfg.Admin.Token.Reveal(); tok != "" {
		if why := tokenWeakness(tok); why != "" {
			bad("admin.token", "%s: it must carry at least 128 random bits, as 32 hex or 22 base64url characters (generate one with: openssl rand -hex 32)", why)
		}
	}
	if cfg.Admin.ShutdownGrace <= 0 {
		bad("admin.shutdown_grace", "must be a positive duration such as 30s")
	}
}

// validateSchedule checks the sync schedules.
func validateSchedule(s Schedule, bad badFunc) {
	for _, sc := range []struct{ key, spec string }{
		{"schedule.incremental", s.Incremental},
		{"schedule.full", s.Full},
	} {
		if strings.TrimSpace(sc.spec) == "" {
			continue // an empty spec turns that kind of scheduled sync off
		}
		if _, err := schedule.Parse(sc.spec); err != nil {
			bad(sc.key, "%v", err)
		}
	}
}

// Effective renders the configuration as YAML with every secret masked,
// including the password inside database.dsn (the rest of the DSN, host and
// database, stays visible because that is what an operator checks).
func (c *Config) Effective() ([]byte, error) {
	var doc yaml.Node
	if err := doc.Encode(c); err != nil {
		return nil, err
	}
	if n := lookupNode(&doc, "database", "dsn"); n != nil && c.Database.DSN != "" {
		n.Value = MaskDSN(c.Database.DSN.Reveal())
	}
	return yaml.Marshal(&doc)
}

func lookupNode(n *yaml.Node, path ...string) *yaml.Node {
	for _, key := range path {
		if n.Kind == yaml.DocumentNode {
			n = n.Content[0]
		}
		var next *yaml.Node
		for i := 0; i+1 < len(n.Content); i += 2 {
			if n.Content[i].Value == key {
				next = n.Content[i+1]
			}
		}
		if next == nil {
			return nil
		}
		n = next
	}
	return n
}

// MaskDSN hides the password in a DSN of any of the three drivers' forms:
// URLs (postgres://u:p@h/db), key=value (password=p) and MySQL (u:p@tcp(h)/db).
func MaskDSN(dsn string) string {
	if u, err := url.Parse(dsn); err == nil && u.Scheme != "" && u.User != nil {
		if _, has := u.User.Password(); has {
			u.User = url.UserPassword(u.User.Username(), "xxxxx")
			return strings.Replace(u.String(), "xxxxx", mask, 1)
		}
		return dsn
	}
	if strings.Contains(dsn, "password=") {
		parts := strings.Fields(dsn)
		for i, p := range parts {
			if strings.HasPrefix(p, "password=") {
				parts[i] = "password=" + mask
			}
		}
		return strings.Join(parts, " ")
	}
	// MySQL: user:pass@proto(addr)/db
	if at := strings.LastIndex(dsn, "@"); at > 0 {
		if colon := strings.Index(dsn[:at], ":"); colon >= 0 {
			return dsn[:colon+1] + mask + dsn[at:]
		}
	}
	return dsn
}

// validatePortal checks the WebAuthn relying party and the portal's policy.
// The RP ID must be the host of every origin or a parent domain of it: the
// browser refuses any other pairing, and a mistake here would only show at
// the first enrollment.
func validatePortal(p Portal, bad badFunc, oneOf oneOfFunc) {
	if p.RPID != "" {
		if strings.Contains(p.RPID, "://") || strings.ContainsAny(p.RPID, ":/ ") || net.ParseIP(p.RPID) != nil {
			bad("portal.rp_id", "expected a domain name such as passkeys.corp.example, without scheme or port (got %q)", p.RPID)
		}
		if len(p.Origins) == 0 {
			bad("portal.origins", "needs at least one origin (such as https://%s) when portal.rp_id is set", p.RPID)
		}
		for i, o := range p.Origins {
			u, err := url.Parse(o)
			if err != nil || u.Host == "" {
				continue // reported above
			}
			host := strings.ToLower(u.Hostname())
			rp := strings.ToLower(p.RPID)
			if host != rp && !strings.HasSuffix(host, "."+rp) {
				bad(fmt.Sprintf("portal.origins[%d]", i), "host %q is neither portal.rp_id %q nor a subdomain of it", host, p.RPID)
			}
			if u.Scheme == "http" && host != "localhost" && !strings.HasSuffix(host, ".localhost") {
				bad(fmt.Sprintf("portal.origins[%d]", i), "must be https:// (browsers allow passkeys over http only on localhost; got %q)", o)
			}
		}
	} else if len(p.Origins) > 0 {
		bad("portal.rp_id", "is required when portal.origins is set: the domain passkeys are bound to")
	}
	for i, c := range p.TrustedProxies {
		if _, _, err := net.ParseCIDR(c); err != nil && net.ParseIP(c) == nil {
			bad(fmt.Sprintf("portal.trusted_proxies[%d]", i), "expected an address or CIDR such as 10.0.0.0/8 (got %q)", c)
		}
	}
	for i, a := range p.Policy.AllowedAAGUIDs {
		if !isAAGUID(a) {
			bad(fmt.Sprintf("portal.policy.allowed_aaguids[%d]", i), "expected an AAGUID such as ea9b8d66-4d01-1d21-3ce4-b6b48cb575d4 (got %q)", a)
		}
	}
	oneOf("portal.policy.attestation", p.Policy.Attestation, "none", "indirect", "direct", "enterprise")
	if p.Policy.MaxPasskeys < 1 || p.Policy.MaxPasskeys > 100 {
		bad("portal.policy.max_passkeys", "must be between 1 and 100 (got %d)", p.Policy.MaxPasskeys)
	}
	if p.RateLimits.PasswordPerUser < 1 || p.RateLimits.PasswordPerUser > 100 {
		bad("portal.rate_limits.password_per_user", "must be between 1 and 100, and below the directory's lockout threshold (got %d)", p.RateLimits.PasswordPerUser)
	}
	if p.RateLimits.PasswordPerIP < 1 {
		bad("portal.rate_limits.password_per_ip", "must be 1 or more (got %d)", p.RateLimits.PasswordPerIP)
	}
	if p.RateLimits.PasswordWindow < Duration(time.Minute) {
		bad("portal.rate_limits.password_window", "must be at least 1m, as long as the directory's lockout observation window (got %s)", p.RateLimits.PasswordWindow)
	}
	if p.AdminGroupCache < 0 || p.AdminGroupCache > Duration(time.Hour) {
		bad("portal.admin_group_cache", "must be between 0 (ask the directory every time) and 1h: admin rights last this long after someone leaves portal.admin_group (got %s)", p.AdminGroupCache)
	}
	if p.SessionLifetime < Duration(time.Minute) {
		bad("portal.session_lifetime", "must be at least 1m (got %s)", p.SessionLifetime)
	}
	if p.LinkLifetime < Duration(time.Minute) || p.LinkLifetime > Duration(30*24*time.Hour) {
		bad("portal.link_lifetime", "must be between 1m and 720h (got %s)", p.LinkLifetime)
	}
	if p.CeremonyTimeout < Duration(30*time.Second) || p.CeremonyTimeout > Duration(time.Hour) {
		bad("portal.ceremony_timeout", "must be between 30s and 1h (got %s)", p.CeremonyTimeout)
	}
}

// isAAGUID reports whether s is a canonical 8-4-4-4-12 hexadecimal AAGUID.
func isAAGUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i, r := range s {
		switch i {
		case 8, 13, 18, 23:
			if r != '-' {
				return false
			}
		default:
			if !strings.ContainsRune("0123456789abcdefABCDEF", r) {
				return false
			}
		}
	}
	return true
}

// validateCampaign checks how campaign mail is sent.
func validateCampaign(c Campaign, bad badFunc) {
	if c.PerMinute < 1 || c.PerMinute > 60000 {
		bad("campaign.per_minute", "must be between 1 and 60000 messages a minute (got %d)", c.PerMinute)
	}
	if c.Interval < Duration(time.Second) || c.Interval > Duration(time.Hour) {
		bad("campaign.interval", "must be between 1s and 1h (got %s)", c.Interval)
	}
	if c.Retry < Duration(time.Second) || c.Retry > Duration(time.Hour) {
		bad("campaign.retry", "must be between 1s and 1h (got %s)", c.Retry)
	}
	if c.MaxAttempts < 1 || c.MaxAttempts > 100 {
		bad("campaign.max_attempts", "must be between 1 and 100 (got %d)", c.MaxAttempts)
	}
}

// validateMail checks mail and the recovery paths that depend on it.
func validateMail(cfg *Config, bad badFunc, oneOf oneOfFunc) {
	m := cfg.Mail
	r := cfg.Portal.Recovery
	if m.Host != "" {
		oneOf("mail.security", m.Security, "starttls", "tls", "none")
		if m.Port < 0 || m.Port > 65535 {
			bad("mail.port", "must be a TCP port (got %d)", m.Port)
		}
		if m.From == "" {
			bad("mail.from", "is required when mail.host is set, such as \"Passkeys <passkeys@corp.example>\"")
		} else if _, err := mail.ParseAddress(m.From); err != nil {
			bad("mail.from", "is not an email address: %v", err)
		}
		if m.Security == "none" {
			if ip := net.ParseIP(m.Host); m.Host != "localhost" && (ip == nil || !ip.IsLoopback()) {
				bad("mail.security", "none sends mail (and the password) in clear: only allowed to a server on loopback, not %q", m.Host)
			}
		}
		if (m.Username == "") != (m.Password == "") {
			bad("mail.username", "and mail.password (or mail.password_file) go together")
		}
		if m.Timeout <= 0 {
			bad("mail.timeout", "must be a positive duration")
		}
	}
	if r.EmailCode && m.Host == "" {
		bad("portal.recovery.email_code", "needs mail.host: the code is sent by mail")
	}
	if r.TOTP && cfg.UsersTable.TOTP == "" {
		bad("portal.recovery.totp", "needs users_table.totp: the column that holds the legacy TOTP secrets")
	}
	if r.CodeLifetime < Duration(time.Minute) || r.CodeLifetime > Duration(time.Hour) {
		bad("portal.recovery.code_lifetime", "must be between 1m and 1h (got %s)", r.CodeLifetime)
	}
	if r.PerUser < 1 || r.PerUser > 100 {
		bad("portal.recovery.per_user", "must be between 1 and 100 (got %d)", r.PerUser)
	}
	if r.Window < Duration(time.Minute) {
		bad("portal.recovery.window", "must be at least 1m (got %s)", r.Window)
	}
	if cfg.Audit.Retention != 0 && cfg.Audit.Retention < Duration(24*time.Hour) {
		bad("audit.retention", "must be 0 (keep forever) or at least 24h (got %s)", cfg.Audit.Retention)
	}
}

// tokenWeakness says why an admin token is too weak to guard the admin API
// and the IT console, "" when it is fine. A token is a random string, hex
// (4 bits a character: at least 32) or base64/base64url (6 bits: at least
// 22, padding not counted); values a person made up rather than a
// generator (one character repeated, a repeated pattern, a run of the
// alphabet) are refused whatever their length. The message never repeats
// the token.
func tokenWeakness(tok string) string {
	body := strings.TrimRight(tok, "=")
	hexOnly, b64 := true, true
	for _, r := range body {
		switch {
		case r >= '0' && r <= '9', r >= 'a' && r <= 'f', r >= 'A' && r <= 'F':
		case r >= 'g' && r <= 'z', r >= 'G' && r <= 'Z', r == '-', r == '_', r == '+', r == '/':
			hexOnly = false
		default:
			hexOnly, b64 = false, false
		}
	}
	n := len(body)
	switch {
	case !b64:
		return "has characters that are neither hex nor base64 (spaces, punctuation, non-ASCII): use a generated value"
	case hexOnly && n < 32:
		return fmt.Sprintf("is too short: %d hex characters carry %d bits", n, 4*n)
	case !hexOnly && n < 22:
		return fmt.Sprintf("is too short: %d base64 characters carry %d bits", n, 6*n)
	}
	distinct := map[byte]bool{}
	for i := range n {
		distinct[body[i]] = true
	}
	// 32 random hex characters have at least 8 distinct ones in practice
	// (never fewer in two million draws); fewer than 6 is made up.
	if len(distinct) < 6 {
		return fmt.Sprintf("uses only %d distinct characters", len(distinct))
	}
	for p := 1; p <= n/2; p++ {
		if body[p:] == body[:n-p] {
			return "repeats a pattern"
		}
	}
	run, step := 1, 0
	for i := 1; i < n; i++ {
		d := int(body[i]) - int(body[i-1])
		switch {
		case (d == 1 || d == -1) && d == step:
			run++
		case d == 1 || d == -1:
			run, step = 2, d
		default:
			run, step = 1, 0
		}
		if run >= 8 {
			return "holds a run of 8 or more consecutive characters (such as abcdefgh or 01234567)"
		}
	}
	return ""
}

// validateOIDC checks the application sign-in and its clients.
func validateOIDC(cfg *Config, bad badFunc, oneOf oneOfFunc) {
	o := cfg.OIDC
	if o.Issuer != "" {
		if u, err := url.Parse(o.Issuer); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
			bad("oidc.issuer", "expected a URL such as https://passkeys.corp.example (got %q)", o.Issuer)
		}
	}
	if o.KeyRotation < Duration(time.Hour) {
		bad("oidc.key_rotation", "must be at least 1h (got %s)", o.KeyRotation)
	}
	if o.TokenLifetime < Duration(time.Minute) || o.TokenLifetime > Duration(24*time.Hour) {
		bad("oidc.token_lifetime", "must be between 1m and 24h (got %s)", o.TokenLifetime)
	}
	if o.AssertionLifetime < Duration(10*time.Second) || o.AssertionLifetime > Duration(10*time.Minute) {
		bad("oidc.assertion_lifetime", "must be between 10s and 10m: the JWT is for one sign-in (got %s)", o.AssertionLifetime)
	}
	if len(o.Clients) > 0 && cfg.Portal.RPID == "" {
		bad("oidc.clients", "need the portal (portal.rp_id and portal.origins): applications sign in with its passkeys")
	}
	seen := map[string]bool{}
	for i, c := range o.Clients {
		key := func(k string) string { return fmt.Sprintf("oidc.clients[%d].%s", i, k) }
		switch {
		case c.ID == "":
			bad(key("id"), "is required: the client ID the application is configured with")
		case !clientID.MatchString(c.ID):
			bad(key("id"), "must be letters, digits, '.', '_' or '-', at most 64 (got %q)", c.ID)
		case seen[c.ID]:
			bad(key("id"), "%q is listed twice", c.ID)
		}
		seen[c.ID] = true
		switch {
		case c.Public && c.Secret != "":
			bad(key("secret"), "a public client has no secret: remove it or public: true")
		case !c.Public && c.Secret == "":
			bad(key("secret"), "is required (or secret_file) unless public: true")
		case !c.Public && len(c.Secret.Reveal()) < 16:
			bad(key("secret"), "must be at least 16 characters (generate one with: openssl rand -hex 32)")
		}
		if len(c.RedirectURIs) == 0 && len(c.Origins) == 0 {
			bad(key("redirect_uris"), "needs at least one redirect URI (OpenID Connect), or origins for the assertion API")
		}
		for j, r := range c.RedirectURIs {
			if msg := redirectProblem(r); msg != "" {
				bad(fmt.Sprintf("oidc.clients[%d].redirect_uris[%d]", i, j), "%s (got %q)", msg, r)
			}
		}
		for j, r := range c.PostLogoutRedirectURIs {
			if msg := redirectProblem(r); msg != "" {
				bad(fmt.Sprintf("oidc.clients[%d].post_logout_redirect_uris[%d]", i, j), "%s (got %q)", msg, r)
			}
		}
		for j, o := range c.Origins {
			k := fmt.Sprintf("oidc.clients[%d].origins[%d]", i, j)
			u, err := url.Parse(o)
			if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.Path != "" {
				bad(k, "expected an origin such as https://erp.corp.example (got %q)", o)
				continue
			}
			host, rp := strings.ToLower(u.Hostname()), strings.ToLower(cfg.Portal.RPID)
			if rp != "" && host != rp && !strings.HasSuffix(host, "."+rp) && !slices.Contains(cfg.Portal.RelatedOrigins, o) && !slices.Contains(cfg.Portal.Origins, o) {
				bad(k, "%q can use passkeys of %q only under that domain or when listed in portal.related_origins", o, cfg.Portal.RPID)
			}
		}
		if c.Subject != "" {
			oneOf(key("subject"), c.Subject, "user_key", "directory_id")
		}
		if c.PasswordFallback && len(c.RedirectURIs) == 0 {
			bad(key("password_fallback"), "applies to the OpenID Connect login page: this client has no redirect_uris (the assertion API signs in with passkeys only)")
		}
	}
}

var clientID = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)

// redirectProblem says what is wrong with a redirect URI, "" when nothing:
// absolute, no fragment, https (or http on loopback, for development and
// native apps).
func redirectProblem(r string) string {
	u, err := url.Parse(r)
	if err != nil || u.Scheme == "" || u.Host == "" {
		return "expected an absolute URL such as https://erp.corp.example/oidc/callback"
	}
	if u.Fragment != "" || strings.Contains(r, "#") {
		return "must not have a fragment"
	}
	h := u.Hostname()
	if u.Scheme != "https" && (u.Scheme != "http" || (h != "localhost" && !strings.HasSuffix(h, ".localhost") && !isLoopback(h))) {
		return "must be https:// (http only on localhost)"
	}
	return ""
}

func isLoopback(h string) bool {
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}
