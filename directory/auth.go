package directory

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/go-ldap/ldap/v3"

	"github.com/passbridge/passbridge/config"
)

// Errors of Authenticate, for errors.Is. Callers show the user one message
// for all three: telling them apart would tell an attacker which usernames
// exist.
var (
	// ErrInvalidCredentials: unknown user or wrong password.
	ErrInvalidCredentials = errors.New("invalid username or password")
	// ErrDisabled: the directory says the account is disabled.
	ErrDisabled = errors.New("the account is disabled in the directory")
	// ErrAmbiguousUser: the username names more than one entry in scope.
	ErrAmbiguousUser = errors.New("the username matches more than one directory entry")
)

// Authenticate checks a username and password against the directory and
// returns the identity. It builds a client for the one call; long-lived
// callers (the portal) keep a Client and use (*Client).Authenticate.
func Authenticate(ctx context.Context, cfg *config.Config, username, password string) (*Identity, error) {
	c, err := NewClient(cfg.Directory, slog.New(slog.DiscardHandler))
	if err != nil {
		return nil, err
	}
	return c.Authenticate(ctx, username, password)
}

// Authenticate looks the user up in scope (LookupUser), then checks the
// password with a bind as the entry's DN on a separate connection
// (CheckPassword). A disabled account is refused before any bind, so that a
// refused login never counts as a failed password.
func (c *Client) Authenticate(ctx context.Context, username, password string) (*Identity, error) {
	if strings.TrimSpace(username) == "" || password == "" {
		// An empty password would be an unauthenticated bind, which
		// servers accept without checking anything (RFC 4513 5.1.2).
		return nil, fmt.Errorf("%w: username and password are required", ErrInvalidCredentials)
	}
	it, err := c.LookupUser(ctx, username)
	if err != nil {
		return it, err
	}
	if err := c.CheckPassword(ctx, it.DN, password); err != nil {
		return nil, err
	}
	return it, nil
}

// LookupUser finds a user in scope with the service account, without any
// bind as the user: nothing it does counts towards the directory's lockout.
// The username is escaped for the filter. On AD it may be the
// sAMAccountName, DOMAIN\sAMAccountName or the userPrincipalName; elsewhere
// the username attribute (uid). An unknown user is ErrInvalidCredentials;
// a disabled one is returned with ErrDisabled.
func (c *Client) LookupUser(ctx context.Context, username string) (*Identity, error) {
	username = strings.TrimSpace(username)
	if username == "" {
		return nil, fmt.Errorf("%w: a username is required", ErrInvalidCredentials)
	}
	if len(username) > 256 || !utf8.ValidString(username) || strings.IndexFunc(username, unicode.IsControl) >= 0 {
		return nil, fmt.Errorf("%w: the username is not valid", ErrInvalidCredentials)
	}
	m := NewMapper(c.cfg)
	conn, err := c.Connect(ctx)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	scope, err := conn.ResolveScope(ctx, c.cfg, m, ScopeOptions{})
	if err != nil {
		return nil, err
	}
	var clauses []string
	name := username
	if c.cfg.Kind == "ad" {
		if i := strings.IndexByte(name, '\\'); i >= 0 && strings.Count(name, `\`) == 1 {
			// DOMAIN\sAMAccountName: this domain's name, or nobody. Any
			// prefix used to be dropped, which made OTHER\ada this
			// domain's ada.
			d, err := c.domainNames(ctx, conn)
			if err != nil {
				return nil, err
			}
			if !d.names(name[:i]) {
				return nil, fmt.Errorf("%w: %q names another domain than %s (%s)", ErrInvalidCredentials, username, d.netbios, d.dns)
			}
			name = name[i+1:]
		}
		clauses = append(clauses, "(userPrincipalName="+ldap.EscapeFilter(username)+")")
	}
	clauses = append(clauses, "("+m.attrs.Username+"="+ldap.EscapeFilter(name)+")")
	filter := "(&" + scope.Filter + "(|" + strings.Join(clauses, "") + "))"
	req := ldap.NewSearchRequest(scope.BaseDN, ldap.ScopeWholeSubtree, ldap.NeverDerefAliases, 2, 0, false, filter, m.Attributes(), nil)
	var found []*ldap.Entry
	err = conn.stream(ctx, req, 0, false, func(r result) error {
		if r.entry != nil && scope.InScope(r.entry.DN) {
			found = append(found, r.entry)
		}
		return nil
	})
	if err != nil && !errors.Is(err, ErrTruncated) {
		return nil, fmt.Errorf("look up %q: %w", username, err)
	}
	switch {
	case len(found) == 0:
		return nil, fmt.Errorf("%w: no user %q in scope", ErrInvalidCredentials, username)
	case len(found) > 1 || errors.Is(err, ErrTruncated):
		return nil, fmt.Errorf("%w: %q", ErrAmbiguousUser, username)
	}
	it, err := m.Map(found[0])
	if err != nil {
		return nil, err
	}
	if it.Disabled {
		return &it, fmt.Errorf("%w (%s)", ErrDisabled, it.DisabledReason)
	}
	return &it, nil
}

// ErrPasswordExpired: the password was right but has expired or must be
// changed (AD answers so only to the right password).
var ErrPasswordExpired = errors.New("the directory password has expired and must be changed")

// CheckPassword binds as dn with password on a connection of its own (the
// service account's connections are never rebound). A wrong password is
// ErrInvalidCredentials.
func (c *Client) CheckPassword(ctx context.Context, dn, password string) error {
	if dn == "" || password == "" {
		return fmt.Errorf("%w: username and password are required", ErrInvalidCredentials)
	}
	user, err := c.connect(ctx, "", "", false)
	if err != nil {
		return err
	}
	defer user.Close()
	err = user.bind(dn, password, false)
	if err != nil && errors.Is(err, ErrInvalidCredentials) && adPasswordExpired(err) {
		return fmt.Errorf("%w: %w", ErrPasswordExpired, err)
	}
	return err
}

// adPasswordExpired reads AD's bind diagnostic ("... AcceptSecurityContext
// error, data 532, ..."): 532 the password expired, 773 it must be reset.
func adPasswordExpired(err error) bool {
	msg := err.Error()
	return strings.Contains(msg, "data 532,") || strings.Contains(msg, "data 773,")
}

// adDomain is what an AD domain is called before the backslash of
// DOMAIN\name: its NetBIOS name (CORP) and its DNS name (corp.example).
type adDomain struct {
	netbios, dns string
}

// names reports whether prefix is one of the domain's names (case does
// not matter, as on Windows).
func (d *adDomain) names(prefix string) bool {
	return prefix != "" && (strings.EqualFold(prefix, d.netbios) || strings.EqualFold(prefix, d.dns))
}

// domainNames reads the names of the domain the DC serves, once per
// client: the crossRef of its naming context in the configuration
// partition holds nETBIOSName and dnsRoot (readable by any authenticated
// account). When the service account cannot read it, the names are taken
// from the naming context's DC= components (DC=corp,DC=example: CORP and
// corp.example), which is what most domains are called, and a warning says
// so.
func (c *Client) domainNames(ctx context.Context, conn *Conn) (*adDomain, error) {
	c.mu.Lock()
	d := c.domain
	c.mu.Unlock()
	if d != nil {
		return d, nil
	}
	root, err := conn.rootDSE(ctx, "defaultNamingContext", "configurationNamingContext")
	if err != nil {
		return nil, err
	}
	nc := root.GetEqualFoldAttributeValue("defaultNamingContext")
	parsed, err := ldap.ParseDN(nc)
	if err != nil || nc == "" {
		return nil, fmt.Errorf("the root DSE of %s has no usable defaultNamingContext (%q): is this an AD domain controller?", conn.URL, nc)
	}
	var labels []string
	for _, rdn := range parsed.RDNs {
		for _, a := range rdn.Attributes {
			if strings.EqualFold(a.Type, "DC") {
				labels = append(labels, a.Value)
			}
		}
	}
	d = &adDomain{dns: strings.Join(labels, ".")}
	if len(labels) > 0 {
		d.netbios = strings.ToUpper(labels[0])
	}
	var ref *ldap.Entry
	if cfgNC := root.GetEqualFoldAttributeValue("configurationNamingContext"); cfgNC != "" {
		req := ldap.NewSearchRequest("CN=Partitions,"+cfgNC, ldap.ScopeSingleLevel, ldap.NeverDerefAliases, 1, 0, false,
			"(&(objectClass=crossRef)(nCName="+ldap.EscapeFilter(nc)+"))", []string{"nETBIOSName", "dnsRoot"}, nil)
		err = conn.stream(ctx, req, 0, false, func(r result) error {
			if r.entry != nil && ref == nil {
				ref = r.entry
			}
			return nil
		})
	}
	if ref != nil && ref.GetAttributeValue("nETBIOSName") != "" {
		d.netbios = ref.GetAttributeValue("nETBIOSName")
		if dns := ref.GetAttributeValue("dnsRoot"); dns != "" {
			d.dns = dns
		}
	} else {
		c.log.Warn("cannot read the domain's NetBIOS name from its crossRef in the configuration partition; DOMAIN\\name logins accept the name taken from the naming context",
			"naming_context", nc, "netbios", d.netbios, "dns", d.dns, "err", err)
	}
	c.mu.Lock()
	c.domain = d
	c.mu.Unlock()
	return d, nil
}
