// Package directory reads users from Active Directory, OpenLDAP or FreeIPA:
// the LDAP client (failover, TLS, paged and streamed reads), the mapping of
// entries to identities, the scope (base DN, filter, nested group), group
// membership, password checks for the portal, and the full and delta reads
// (AD uSNChanged, syncrepl, modifyTimestamp) that hand what they find to a
// Sink. It never touches the application's database: the sync engine
// (package dirsync) is the Sink that diffs and writes.
package directory

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	ber "github.com/go-asn1-ber/asn1-ber"
	"github.com/go-ldap/ldap/v3"

	"github.com/passbridge/passbridge/config"
)

// Client dials the configured directory servers. It fails over to the next
// URL when a server cannot be reached and remembers the last healthy one,
// so a dead first server costs one connect timeout per process, not per run.
type Client struct {
	cfg     config.Directory
	log     *slog.Logger
	roots   *x509.CertPool // nil: the system pool
	servers []server

	mu        sync.Mutex
	preferred int
	// domain is the AD domain's names, read once (domainNames).
	domain *adDomain
}

type server struct {
	url    string
	scheme string // ldap | ldaps
	host   string // without port, for certificate checks
	addr   string // host:port
}

// NewClient checks the TLS settings and parses the URLs. Certificate
// verification is never silently off: insecure_skip_verify must be set
// explicitly, and every client built with it logs a warning.
func NewClient(cfg config.Directory, log *slog.Logger) (*Client, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	c := &Client{cfg: cfg, log: log}
	if cfg.CAFile != "" {
		pem, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("directory.ca_file: %w", err)
		}
		c.roots = x509.NewCertPool()
		if !c.roots.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("directory.ca_file %s: no PEM certificate found in the file", cfg.CAFile)
		}
	}
	if len(cfg.URLs) == 0 {
		return nil, errors.New("directory.urls: at least one ldap:// or ldaps:// URL is needed")
	}
	for i, raw := range cfg.URLs {
		u, err := url.Parse(raw)
		if err != nil || (u.Scheme != "ldap" && u.Scheme != "ldaps") || u.Host == "" {
			return nil, fmt.Errorf("directory.urls[%d]: expected ldap://host[:port] or ldaps://host[:port] (got %q)", i, raw)
		}
		port := u.Port()
		if port == "" {
			port = "389"
			if u.Scheme == "ldaps" {
				port = "636"
			}
		}
		c.servers = append(c.servers, server{url: raw, scheme: u.Scheme, host: u.Hostname(), addr: net.JoinHostPort(u.Hostname(), port)})
	}
	if cfg.InsecureSkipVerify {
		log.Warn("directory certificate verification is OFF (directory.insecure_skip_verify: true): anyone on the network path can read the bind password and forge directory answers; set directory.ca_file instead")
	} else {
		plain := 0
		for _, s := range c.servers {
			if s.scheme == "ldap" && !cfg.StartTLS {
				plain++
			}
		}
		if plain > 0 {
			log.Warn("directory connections are not encrypted (ldap:// without start_tls): the bind password crosses the network in clear; use ldaps:// or start_tls: true")
		}
	}
	return c, nil
}

// Conn is one bound connection to one directory server. Operations on it
// are sequential.
type Conn struct {
	*ldap.Conn
	// URL is the server this connection reached.
	URL     string
	timeout time.Duration
	stop    func() bool
	tap     *tap
}

// Close ends the connection.
func (c *Conn) Close() error {
	if c.stop != nil {
		c.stop()
	}
	return c.Conn.Close()
}

// Connect dials the servers in order, starting with the last healthy one,
// and binds with the service account. A server that cannot be reached is
// skipped; a bind that is refused is not (every server would refuse it).
func (c *Client) Connect(ctx context.Context) (*Conn, error) {
	return c.connect(ctx, c.cfg.BindDN, c.cfg.BindPassword.Reveal(), true)
}

func (c *Client) connect(ctx context.Context, bindDN, password string, service bool) (*Conn, error) {
	c.mu.Lock()
	first := c.preferred
	c.mu.Unlock()
	var errs []string
	for i := range c.servers {
		idx := (first + i) % len(c.servers)
		s := c.servers[idx]
		conn, err := c.dial(ctx, s)
		if err != nil {
			if ctx.Err() != nil {
				return nil, fmt.Errorf("connect to %s: %w", s.url, ctx.Err())
			}
			c.log.Warn("directory server unreachable, trying the next one", "url", s.url, "err", err)
			errs = append(errs, err.Error())
			continue
		}
		if bindDN != "" || service {
			if err := conn.bind(bindDN, password, service); err != nil {
				conn.Close()
				if isNetworkError(err) {
					c.log.Warn("directory server dropped the connection during bind, trying the next one", "url", s.url, "err", err)
					errs = append(errs, fmt.Sprintf("%s: %v", s.url, err))
					continue
				}
				return nil, err
			}
		}
		if idx != first {
			c.mu.Lock()
			c.preferred = idx
			c.mu.Unlock()
			c.log.Info("directory failover: now using another server", "url", s.url)
		}
		return conn, nil
	}
	return nil, fmt.Errorf("no directory server could be reached (%d tried): %s", len(c.servers), strings.Join(errs, "; "))
}

// tlsConfig is the TLS configuration for one server. The certificate is
// verified in VerifyConnection, exactly as crypto/tls would (chain to the
// roots, server name or IP, server-auth usage), so that a failure keeps
// its x509 type even through StartTLS, whose error in go-ldap is only
// text: *verr receives it, and tlsError explains it.
func (c *Client) tlsConfig(host string) (*tls.Config, *error) {
	verr := new(error)
	conf := &tls.Config{ServerName: host, RootCAs: c.roots, MinVersion: tls.VersionTLS12}
	if c.cfg.InsecureSkipVerify {
		conf.InsecureSkipVerify = true //nolint:gosec // explicit opt-in, warned at start
		return conf, verr
	}
	conf.InsecureSkipVerify = true //nolint:gosec // verified below, in VerifyConnection
	conf.VerifyConnection = func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			*verr = errors.New("the server sent no certificate")
			return *verr
		}
		opts := x509.VerifyOptions{DNSName: host, Roots: c.roots, Intermediates: x509.NewCertPool()}
		for _, ic := range cs.PeerCertificates[1:] {
			opts.Intermediates.AddCert(ic)
		}
		_, err := cs.PeerCertificates[0].Verify(opts)
		*verr = err
		return err
	}
	return conf, verr
}

// dial opens one connection (TCP, then TLS for ldaps:// or StartTLS) within
// the connect timeout, and sets the operation timeout.
func (c *Client) dial(ctx context.Context, s server) (*Conn, error) {
	connectTimeout := c.cfg.ConnectTimeout.D()
	if connectTimeout <= 0 {
		connectTimeout = 10 * time.Second
	}
	dctx, cancel := context.WithTimeout(ctx, connectTimeout)
	defer cancel()
	var d net.Dialer
	raw, err := d.DialContext(dctx, "tcp", s.addr)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", s.url, err)
	}
	var nc net.Conn = raw
	switch {
	case s.scheme == "ldaps":
		conf, verr := c.tlsConfig(s.host)
		tc := tls.Client(raw, conf)
		if err := tc.HandshakeContext(dctx); err != nil {
			raw.Close()
			return nil, c.tlsError(s, err, *verr)
		}
		nc = tc
	case c.cfg.StartTLS:
		conf, verr := c.tlsConfig(s.host)
		tc, err := startTLS(dctx, raw, conf)
		if err != nil {
			raw.Close()
			return nil, c.tlsError(s, err, *verr)
		}
		nc = tc
	}
	// go-ldap reads through the tap (wire.go), which decodes the entries
	// of the sync's own searches itself.
	t := newTap(nc)
	l := ldap.NewConn(t, nc != raw)
	l.Start()
	timeout := c.cfg.Timeout.D()
	if timeout <= 0 {
		timeout = time.Minute
	}
	l.SetTimeout(timeout)
	conn := &Conn{Conn: l, URL: s.url, timeout: timeout, tap: t}
	// Operations of go-ldap take no context: closing the connection is how
	// a cancelled run interrupts a bind or a search in flight.
	conn.stop = context.AfterFunc(ctx, func() { l.Close() })
	return conn, nil
}

// startTLS runs the StartTLS extended operation (RFC 4511 4.14) on a
// fresh connection, then the TLS handshake. It is go-ldap's StartTLS (the
// same request, encoded and its answer decoded by go-ldap and asn1-ber),
// done before go-ldap takes the connection: go-ldap's own StartTLS hides
// the TLS connection it makes inside its Conn, and the tap must read the
// plaintext. The message ID is 1, which go-ldap then uses again for its
// first request: an ID may be reused once its operation is over.
func startTLS(ctx context.Context, raw net.Conn, conf *tls.Config) (*tls.Conn, error) {
	if deadline, ok := ctx.Deadline(); ok {
		_ = raw.SetDeadline(deadline)
		defer raw.SetDeadline(time.Time{})
	}
	packet := ber.Encode(ber.ClassUniversal, ber.TypeConstructed, ber.TagSequence, nil, "LDAP Request")
	packet.AppendChild(ber.NewInteger(ber.ClassUniversal, ber.TypePrimitive, ber.TagInteger, int64(1), "MessageID"))
	request := ber.Encode(ber.ClassApplication, ber.TypeConstructed, ldap.ApplicationExtendedRequest, nil, "Start TLS")
	request.AppendChild(ber.NewString(ber.ClassContext, ber.TypePrimitive, 0, "1.3.6.1.4.1.1466.20037", "TLS Extended Command"))
	packet.AppendChild(request)
	if _, err := raw.Write(packet.Bytes()); err != nil {
		return nil, ldap.NewError(ldap.ErrorNetwork, fmt.Errorf("send StartTLS: %w", err))
	}
	// ReadPacket reads exactly one message, nothing of the handshake.
	resp, err := ber.ReadPacket(raw)
	if err != nil {
		return nil, ldap.NewError(ldap.ErrorNetwork, fmt.Errorf("read the StartTLS response: %w", err))
	}
	if err := ldap.GetLDAPError(resp); err != nil {
		return nil, err
	}
	tc := tls.Client(raw, conf)
	if err := tc.HandshakeContext(ctx); err != nil {
		return nil, ldap.NewError(ldap.ErrorNetwork, fmt.Errorf("TLS handshake failed (%w)", err))
	}
	return tc, nil
}

// tlsError turns certificate failures into errors that say what to fix.
func (c *Client) tlsError(s server, err, verr error) error {
	if verr != nil {
		err = fmt.Errorf("%w (%w)", verr, err)
	}
	var unknown x509.UnknownAuthorityError
	var host x509.HostnameError
	var invalid x509.CertificateInvalidError
	trust := "the system's trusted CAs (set directory.ca_file to the CA that signed the directory's certificate)"
	if c.cfg.CAFile != "" {
		trust = "the CA in directory.ca_file (" + c.cfg.CAFile + ")"
	}
	switch {
	case errors.As(err, &unknown):
		issuer := ""
		if unknown.Cert != nil {
			issuer = unknown.Cert.Issuer.String()
		}
		return fmt.Errorf("%s: TLS: the server certificate (issued by %q) is not signed by %s: the CA does not match this server: %w", s.url, issuer, trust, err)
	case errors.As(err, &host):
		names := ""
		if host.Certificate != nil {
			names = strings.Join(append(append([]string{}, host.Certificate.DNSNames...), ipStrings(host.Certificate.IPAddresses)...), ", ")
		}
		return fmt.Errorf("%s: TLS: the server certificate is valid for [%s], not for %q: use a host name from the certificate in directory.urls: %w", s.url, names, s.host, err)
	case errors.As(err, &invalid):
		return fmt.Errorf("%s: TLS: the server certificate is not valid (%s): %w", s.url, invalidReason(invalid), err)
	}
	return fmt.Errorf("%s: TLS: %w", s.url, err)
}

func ipStrings(ips []net.IP) []string {
	out := make([]string, len(ips))
	for i, ip := range ips {
		out[i] = ip.String()
	}
	return out
}

func invalidReason(e x509.CertificateInvalidError) string {
	switch e.Reason {
	case x509.Expired:
		return "expired or not yet valid"
	case x509.NotAuthorizedToSign:
		return "signed by a certificate that is not a CA"
	case x509.IncompatibleUsage:
		return "not issued for server authentication"
	}
	return e.Error()
}

// bind does a simple bind. bindDN is a DN or, on AD, a UPN
// (svc-passbridge@corp.example) or DOMAIN\name.
func (c *Conn) bind(bindDN, password string, service bool) error {
	if bindDN == "" {
		return nil // anonymous: allowed for directories that permit it
	}
	if password == "" {
		// An empty password is an unauthenticated bind (RFC 4513 5.1.2):
		// it would "succeed" without proving anything.
		return fmt.Errorf("bind as %q: the password is empty", bindDN)
	}
	if err := c.Bind(bindDN, password); err != nil {
		if ldap.IsErrorWithCode(err, ldap.LDAPResultInvalidCredentials) {
			if service {
				return fmt.Errorf("%s: bind as %q refused: invalid credentials (check directory.bind_dn and directory.bind_password): %w", c.URL, bindDN, err)
			}
			// The server's diagnostic stays in the chain: AD tells an
			// expired password (data 532) from a wrong one (data 52e).
			return fmt.Errorf("%s: bind refused: %w: %w", c.URL, ErrInvalidCredentials, err)
		}
		return fmt.Errorf("%s: bind as %q: %w", c.URL, bindDN, err)
	}
	return nil
}

// isNetworkError reports whether err means "this server is not usable right
// now" (as opposed to an answer from a working server).
func isNetworkError(err error) bool {
	if err == nil {
		return false
	}
	if ldap.IsErrorWithCode(err, ldap.ErrorNetwork) || ldap.IsErrorWithCode(err, ldap.LDAPResultBusy) ||
		ldap.IsErrorWithCode(err, ldap.LDAPResultUnavailable) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne)
}
