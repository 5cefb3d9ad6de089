package demoserver

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-ldap/ldap/v3"
	"github.com/hashicorp/go-hclog"
	"github.com/jimlambrt/gldap"
)

// Config configures a Server. The zero value serves on 127.0.0.1 on a free
// port with the default limits.
type Config struct {
	// Addr is the loopback address to listen on, "127.0.0.1:0" when empty.
	// Any other than a loopback address is refused: the demo directory has
	// no TLS and exists for one machine.
	Addr string
	// BindDN and BindPassword add a service account that exists only in the
	// server's configuration, like OpenLDAP's rootdn and rootpw. Entries of
	// the directory with a userPassword can bind as well.
	BindDN       string
	BindPassword string
	// SizeLimit caps the entries of a search that is not paged (default
	// 500, as OpenLDAP; negative for no limit). Paged searches are capped by
	// the client's own size limit only, as in Active Directory.
	SizeLimit int
	// MaxPageSize caps the page size a client asks for (default 1000, as
	// Active Directory's MaxPageSize).
	MaxPageSize int
	// MaxMessageBytes caps one request message (default 1 MiB).
	MaxMessageBytes int
	// Logger receives debug logs of binds and searches; nil discards them.
	Logger *slog.Logger
}

// Supported controls (RFC 2696 paged results, RFC 3296 ManageDsaIT). The
// directory has no referrals, so ManageDsaIT is honoured by doing nothing.
var supportedControls = []string{gldap.ControlTypePaging, gldap.ControlTypeManageDsaIT}

// Server serves a Directory over LDAP on a loopback address. It is safe for
// concurrent use.
//
// It is built on github.com/jimlambrt/gldap, which parses requests and
// encodes responses, with a thin relay in front of it: gldap's Server neither
// reports the address it bound nor can it interrupt a connection that sits
// idle in a read, so with gldap alone a ":0" listener has no known port and
// Stop waits for every idle client to go away. The relay owns the public
// listener and the client connections; it frames each LDAP message (and
// refuses oversized or malformed ones before gldap sees them), answers the
// operations gldap cannot parse (abandon, compare, modify DN) instead of
// letting gldap drop the connection, and forwards the rest to gldap on a
// private loopback port.
type Server struct {
	cfg     Config
	log     *slog.Logger
	dir     atomic.Pointer[Directory]
	ln      net.Listener
	gl      *gldap.Server
	backend string // gldap's loopback address
	runDone chan error

	probeDN, probePassword string
	probeSeen              atomic.Bool

	mu       sync.Mutex
	sessions map[int]*session // by gldap connection ID
	conns    map[net.Conn]struct{}
	stopping bool

	wg       sync.WaitGroup // accept loop and relays
	stopOnce sync.Once
	stopped  chan struct{}
}

// session is what the server remembers about one client connection.
type session struct {
	bound string // DN of the bound principal; "" is anonymous
	paged map[string]*pagedSearch
	order []string // cookies, oldest first
}

// maxPagedPerConn bounds the paged searches a connection may leave open.
const maxPagedPerConn = 16

// Start serves dir until Stop. ctx bounds the start only.
func Start(ctx context.Context, dir *Directory, cfg Config) (*Server, error) {
	if dir == nil {
		return nil, errors.New("demo directory: no directory to serve")
	}
	if cfg.Addr == "" {
		cfg.Addr = "127.0.0.1:0"
	}
	if err := checkLoopback(cfg.Addr); err != nil {
		return nil, err
	}
	if cfg.SizeLimit == 0 {
		cfg.SizeLimit = 500
	}
	if cfg.MaxPageSize <= 0 {
		cfg.MaxPageSize = 1000
	}
	if cfg.MaxMessageBytes <= 0 {
		cfg.MaxMessageBytes = 1 << 20
	}
	if cfg.BindDN != "" {
		if _, err := normalizeDN(cfg.BindDN); err != nil {
			return nil, fmt.Errorf("demo directory: bind DN: %w", err)
		}
		if cfg.BindPassword == "" {
			return nil, errors.New("demo directory: the service account needs a password")
		}
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	nonce := make([]byte, 16)
	if _, err := rand.Read(nonce); err != nil {
		return nil, fmt.Errorf("demo directory: %w", err)
	}
	s := &Server{
		cfg:           cfg,
		log:           log.With("component", "demo-directory"),
		sessions:      map[int]*session{},
		conns:         map[net.Conn]struct{}{},
		stopped:       make(chan struct{}),
		probeDN:       "cn=startup-probe-" + hex.EncodeToString(nonce[:8]),
		probePassword: hex.EncodeToString(nonce[8:]),
	}
	s.dir.Store(dir)

	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("demo directory: listen on %s: %w", cfg.Addr, err)
	}
	s.ln = ln
	if err := s.startBackend(ctx); err != nil {
		ln.Close()
		return nil, fmt.Errorf("demo directory: %w", err)
	}
	s.wg.Add(1)
	go s.accept()
	s.log.Debug("demo directory listening", "addr", s.Addr(), "entries", len(dir.entries))
	return s, nil
}

// Addr is the address the server listens on, such as "127.0.0.1:38411".
func (s *Server) Addr() string { return s.ln.Addr().String() }

// URL is the ldap:// URL of the server.
func (s *Server) URL() string { return "ldap://" + s.Addr() }

// Directory returns the directory being served.
func (s *Server) Directory() *Directory { return s.dir.Load() }

// Replace serves dir from now on. Searches already running, and paged
// searches already started, finish on the directory they began with.
func (s *Server) Replace(dir *Directory) {
	if dir != nil {
		s.dir.Store(dir)
	}
}

// Stop closes the listener and every client connection and waits until all
// of them are finished, or until ctx ends. It is safe to call more than once.
func (s *Server) Stop(ctx context.Context) error {
	s.stopOnce.Do(func() {
		s.mu.Lock()
		s.stopping = true
		conns := make([]net.Conn, 0, len(s.conns))
		for c := range s.conns {
			conns = append(conns, c)
		}
		s.mu.Unlock()
		s.ln.Close()
		for _, c := range conns {
			c.Close()
		}
		go func() {
			s.wg.Wait()
			if err := s.gl.Stop(); err != nil {
				s.log.Warn("demo directory: stop gldap", "err", err)
			}
			<-s.runDone
			close(s.stopped)
		}()
	})
	select {
	case <-s.stopped:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("stop demo directory: %w", ctx.Err())
	}
}

func checkLoopback(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("demo directory: address %q: %w", addr, err)
	}
	if host == "localhost" {
		return nil
	}
	ip := net.ParseIP(host)
	if ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("demo directory: address %q is not a loopback address (127.0.0.0/8, ::1): the demo directory has no TLS and serves this machine only", addr)
	}
	return nil
}

// startBackend starts gldap on a free loopback port. gldap takes an address
// and does not report the port it bound, so the port is picked first; the
// pick can race with another process, so the server proves that the
// listener is its own with a bind only its handler recognises.
func (s *Server) startBackend(ctx context.Context) error {
	var lastErr error
	for attempt := 0; attempt < 5; attempt++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		port, err := freeLoopbackPort()
		if err != nil {
			return err
		}
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		gl, err := s.newGLDAP()
		if err != nil {
			return err
		}
		runDone := make(chan error, 1)
		go func() { runDone <- gl.Run(addr) }()
		err = s.awaitBackend(ctx, gl, addr, runDone)
		if err == nil {
			s.gl, s.backend, s.runDone = gl, addr, runDone
			return nil
		}
		lastErr = err
		_ = gl.Stop()
		// Run returns once its listener is closed or failed to open.
		select {
		case <-runDone:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return fmt.Errorf("start the LDAP engine: %w", lastErr)
}

func freeLoopbackPort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("pick a loopback port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func (s *Server) awaitBackend(ctx context.Context, gl *gldap.Server, addr string, runDone chan error) error {
	for !gl.Ready() {
		select {
		case err := <-runDone:
			runDone <- err // for the caller
			return fmt.Errorf("listen on %s: %w", addr, err)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Millisecond):
		}
	}
	s.probeSeen.Store(false)
	for {
		select {
		case err := <-runDone:
			runDone <- err
			return fmt.Errorf("listen on %s: %w", addr, err)
		default:
		}
		conn, err := ldap.DialURL("ldap://"+addr, ldap.DialWithDialer(&net.Dialer{Timeout: time.Second}))
		if err == nil {
			conn.SetTimeout(2 * time.Second)
			err = conn.Bind(s.probeDN, s.probePassword)
			conn.Close()
			if s.probeSeen.Load() {
				return nil
			}
			return fmt.Errorf("another process answers on %s (%v)", addr, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(2 * time.Millisecond):
		}
	}
}

func (s *Server) newGLDAP() (*gldap.Server, error) {
	// gldap logs through hclog; its messages are about clients (malformed
	// requests, resets), so they go to the debug level of our logger. Warn
	// keeps gldap from dumping every packet.
	hl := hclog.New(&hclog.LoggerOptions{
		Name: "gldap", Level: hclog.Warn, DisableTime: true,
		Output: slogWriter{s.log},
	})
	gl, err := gldap.NewServer(gldap.WithLogger(hl), gldap.WithOnClose(s.connClosed))
	if err != nil {
		return nil, err
	}
	mux, err := gldap.NewMux()
	if err != nil {
		return nil, err
	}
	for _, err := range []error{
		mux.Bind(s.handleBind),
		mux.Search(s.handleSearch),
		mux.Unbind(s.handleUnbind),
		mux.ExtendedOperation(s.handleStartTLS, gldap.ExtendedOperationStartTLS),
		mux.DefaultRoute(s.handleOther),
	} {
		if err != nil {
			return nil, err
		}
	}
	if err := gl.Router(mux); err != nil {
		return nil, err
	}
	return gl, nil
}

type slogWriter struct{ log *slog.Logger }

func (w slogWriter) Write(p []byte) (int, error) {
	w.log.Debug(strings.TrimSpace(string(p)))
	return len(p), nil
}

func (s *Server) session(id int) *session {
	sess := s.sessions[id]
	if sess == nil {
		sess = &session{paged: map[string]*pagedSearch{}}
		s.sessions[id] = sess
	}
	return sess
}

func (s *Server) connClosed(id int) {
	s.mu.Lock()
	delete(s.sessions, id)
	s.mu.Unlock()
}

func (s *Server) handleUnbind(_ *gldap.ResponseWriter, r *gldap.Request) {
	s.connClosed(r.ConnectionID())
}

// recoverHandler turns a panic in a handler into an operationsError for the
// client and an error log, instead of a crashed process: gldap runs every
// request in its own goroutine without a recover.
func (s *Server) recoverHandler(op string, reply func(code int, diag string)) {
	if v := recover(); v != nil {
		s.log.Error("demo directory: internal error", "op", op, "panic", fmt.Sprint(v))
		reply(gldap.ResultOperationsError, "internal error")
	}
}

// criticalUnsupported returns the OID of a control the server must refuse:
// one marked critical that it does not implement (RFC 4511 4.1.11). gldap
// keeps the criticality of controls it does not know; it drops it for the
// Microsoft controls it decodes, and those (change notification, show
// deleted, link TTL) would change the answer, so they are refused as if
// critical rather than silently ignored.
func criticalUnsupported(controls []gldap.Control, supported ...string) string {
	for _, c := range controls {
		oid := c.GetControlType()
		if slices.Contains(supported, oid) {
			continue
		}
		switch c := c.(type) {
		case *gldap.ControlString:
			if c.Criticality {
				return oid
			}
		case *gldap.ControlManageDsaIT:
			if c.Criticality {
				return oid
			}
		case *gldap.ControlMicrosoftNotification, *gldap.ControlMicrosoftShowDeleted, *gldap.ControlMicrosoftServerLinkTTL:
			return oid
		}
	}
	return ""
}

func (s *Server) handleBind(w *gldap.ResponseWriter, r *gldap.Request) {
	resp := r.NewBindResponse()
	reply := func(code int, diag string) {
		resp.SetResultCode(code)
		resp.SetDiagnosticMessage(diag)
		if err := w.Write(resp); err != nil {
			s.log.Debug("demo directory: write bind response", "err", err)
		}
	}
	defer s.recoverHandler("bind", reply)
	m, err := r.GetSimpleBindMessage()
	if err != nil {
		reply(gldap.ResultProtocolError, "not a simple bind")
		return
	}
	if oid := criticalUnsupported(m.Controls); oid != "" {
		s.setBound(r.ConnectionID(), "")
		reply(gldap.ResultUnavailableCriticalExtension, "critical control "+oid+" is not supported")
		return
	}
	code, diag, who := s.authenticate(m.UserName, string(m.Password))
	// A failed bind leaves the connection anonymous (RFC 4511 4.2.1).
	s.setBound(r.ConnectionID(), who)
	s.log.Debug("demo directory: bind", "conn", r.ConnectionID(), "dn", m.UserName, "result", code)
	reply(code, diag)
}

func (s *Server) setBound(conn int, dn string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.session(conn).bound = dn
}

func (s *Server) boundDN(conn int) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if sess := s.sessions[conn]; sess != nil {
		return sess.bound
	}
	return ""
}

// dummySSHA keeps a bind for an unknown DN about as slow as one for a known
// DN, so response times do not tell which DNs exist.
var dummySSHA = HashSSHA("no such user", []byte("saltsalt"))

// authenticate checks a simple bind and returns the result code, a message
// and the DN now bound ("" for anonymous or a failure).
func (s *Server) authenticate(name, password string) (code int, diag, who string) {
	const invalid = "invalid credentials"
	switch {
	case name == "" && password == "":
		return gldap.ResultSuccess, "", ""
	case name == "":
		return gldap.ResultInvalidCredentials, invalid, ""
	case password == "":
		// An unauthenticated bind (RFC 4513 5.1.2) would look like a
		// successful login to a careless client.
		return gldap.ResultUnwillingToPerform, "unauthenticated bind (DN with an empty password) is not allowed", ""
	}
	if name == s.probeDN {
		if password == s.probePassword {
			s.probeSeen.Store(true)
		}
		return gldap.ResultInvalidCredentials, invalid, ""
	}
	key, err := normalizeDN(name)
	if err != nil {
		return gldap.ResultInvalidDNSyntax, "invalid DN syntax", ""
	}
	if s.cfg.BindDN != "" {
		if svc, _ := normalizeDN(s.cfg.BindDN); svc.String() == key.String() {
			if verifyPassword(s.cfg.BindPassword, password) == nil {
				return gldap.ResultSuccess, "", s.cfg.BindDN
			}
			return gldap.ResultInvalidCredentials, invalid, ""
		}
	}
	dir := s.dir.Load()
	e := dir.byKey[key.String()]
	var stored *attr
	if e != nil {
		stored = e.get("userpassword")
	}
	if stored == nil {
		_ = verifyPassword(dummySSHA, password)
		return gldap.ResultInvalidCredentials, invalid, ""
	}
	ok := false
	for _, v := range stored.values {
		if verifyPassword(v, password) == nil {
			ok = true
		}
	}
	if !ok {
		return gldap.ResultInvalidCredentials, invalid, ""
	}
	if why := disabledReason(e); why != "" {
		// Same answer as a wrong password, as OpenLDAP's ppolicy and AD
		// give: the bind must not tell an attacker the password was right.
		s.log.Debug("demo directory: bind refused for a disabled account", "dn", e.dn, "why", why)
		return gldap.ResultInvalidCredentials, invalid, ""
	}
	return gldap.ResultSuccess, "", e.dn
}

// disabledReason reports why an account cannot bind: locked by the ppolicy
// overlay (pwdAccountLockedTime; 000001010000Z is the administrative lock),
// by 389/FreeIPA (nsAccountLock: TRUE) or disabled in AD style
// (userAccountControl bit 0x2).
func disabledReason(e *entry) string {
	if e.first("pwdaccountlockedtime") != "" {
		return "pwdAccountLockedTime is set"
	}
	if e.first("nsaccountlock") == "TRUE" {
		return "nsAccountLock is TRUE"
	}
	if v := e.first("useraccountcontrol"); v != "" {
		if n, err := strconv.ParseInt(v, 10, 64); err == nil && n&2 != 0 {
			return "userAccountControl has ACCOUNTDISABLE"
		}
	}
	return ""
}

func (s *Server) handleStartTLS(w *gldap.ResponseWriter, r *gldap.Request) {
	resp := r.NewExtendedResponse(gldap.WithResponseCode(gldap.ResultProtocolError))
	resp.SetDiagnosticMessage("StartTLS is not available: the demo directory serves loopback only, without TLS")
	_ = w.Write(resp)
}

// handleOther answers every operation without a route: writes (the demo
// directory is read-only over LDAP) and unknown extended operations.
func (s *Server) handleOther(w *gldap.ResponseWriter, r *gldap.Request) {
	app, code, diag := gldap.ApplicationExtendedResponse, gldap.ResultProtocolError, "unsupported operation"
	if _, err := r.GetModifyMessage(); err == nil {
		app, code, diag = gldap.ApplicationModifyResponse, gldap.ResultUnwillingToPerform, "the demo directory is read-only"
	} else if _, err := r.GetAddMessage(); err == nil {
		app, code, diag = gldap.ApplicationAddResponse, gldap.ResultUnwillingToPerform, "the demo directory is read-only"
	} else if _, err := r.GetDeleteMessage(); err == nil {
		app, code, diag = gldap.ApplicationDelResponse, gldap.ResultUnwillingToPerform, "the demo directory is read-only"
	}
	_ = w.Write(r.NewResponse(gldap.WithApplicationCode(app), gldap.WithResponseCode(code),
		gldap.WithDiagnosticMessage(diag), gldap.WithMatchedDN("")))
}
