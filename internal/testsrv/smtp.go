package testsrv

import (
	"bytes"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"net"
	"net/mail"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// SMTPOptions configure a throwaway SMTP server (StartSMTP).
type SMTPOptions struct {
	// Security is how clients reach the server: "starttls" (the default:
	// plain connection, STARTTLS offered, AUTH only after it, like a
	// submission server on port 587), "tls" (implicit TLS from the first
	// byte, like port 465) or "none" (plain text only, AUTH allowed in
	// clear).
	Security string
	// Username and Password, when set, make AUTH mandatory: MAIL FROM is
	// refused with 530 until the client has authenticated with them.
	Username, Password string
	// AuthMechanisms are the SASL mechanisms offered (PLAIN and LOGIN are
	// implemented); default PLAIN.
	AuthMechanisms []string
	// AuthBeforeTLS lets a "starttls" server offer and accept AUTH on the
	// plain connection, before STARTTLS. By default it refuses, like real
	// submission servers (523 "TLS is required", AUTH not in EHLO).
	AuthBeforeTLS bool
	// NoSTARTTLS makes a "starttls" server not offer STARTTLS at all (a
	// misconfigured server, or an attacker who stripped it from the EHLO
	// answer): it then takes AUTH and mail in clear, so a test sees any
	// client that downgrades.
	NoSTARTTLS bool
	// RejectRecipients are addresses RCPT TO answers with 550.
	RejectRecipients []string
	// Stall makes the server greet and then never answer EHLO until it
	// stops, for timeout and cancellation tests.
	Stall bool
}

// SMTP is a throwaway SMTP server on 127.0.0.1, running in this process
// (github.com/emersion/go-smtp). Its certificate, for "localhost" and
// 127.0.0.1, is signed by a throwaway CA whose certificate is CAFile.
type SMTP struct {
	Host     string // 127.0.0.1, which is in the server certificate (so is localhost)
	Port     int
	Security string // starttls | tls | none, as in SMTPOptions
	CAFile   string // PEM of the CA that signed the server certificate
	CA       *CA
	Username string // "" when AUTH is not required
	Password string

	opts    SMTPOptions
	srv     *smtp.Server
	l       net.Listener
	stopped chan struct{}
	stop    sync.Once
	tb      testing.TB

	mu       sync.Mutex
	logOff   bool
	messages []ReceivedMail
	auths    []AuthAttempt
	changed  chan struct{} // closed and replaced whenever messages grows
}

// ReceivedMail is one message as the server received it for one recipient
// (a message to two recipients is two ReceivedMails).
type ReceivedMail struct {
	// From and To are the envelope addresses (MAIL FROM, RCPT TO).
	From, To string
	// Subject is the decoded Subject header (RFC 2047 words decoded).
	Subject string
	// Text is the decoded body: the transfer encoding (quoted-printable,
	// base64) undone, the charset converted to UTF-8, CRLF turned into
	// LF; for a multipart message, its first text/plain part.
	Text string
	// Header holds the raw header fields.
	Header mail.Header
	// HeaderFrom and HeaderTo are the parsed From and To header fields
	// (first address), display names decoded; nil when absent.
	HeaderFrom, HeaderTo *mail.Address
	// TLS tells whether the session was encrypted, Auth the user name it
	// authenticated as ("" without AUTH).
	TLS  bool
	Auth string
	// Raw is the message as received (CRLF line ends).
	Raw []byte
}

// AuthAttempt is one AUTH exchange the server saw. The password is never
// recorded.
type AuthAttempt struct {
	Mechanism string
	Username  string
	TLS       bool // whether the credentials came over an encrypted connection
	OK        bool
}

// StartSMTP starts an SMTP server for tb alone, stopped when tb ends.
func StartSMTP(tb testing.TB, o SMTPOptions) *SMTP {
	tb.Helper()
	s, err := startSMTP(tb, o)
	if err != nil {
		tb.Fatalf("smtp: %v", err)
	}
	onStop(s.Stop)
	tb.Cleanup(s.Stop)
	return s
}

func startSMTP(tb testing.TB, o SMTPOptions) (*SMTP, error) {
	if o.Security == "" {
		o.Security = "starttls"
	}
	if o.Security != "starttls" && o.Security != "tls" && o.Security != "none" {
		return nil, fmt.Errorf("security %q: want starttls, tls or none", o.Security)
	}
	if (o.Username == "") != (o.Password == "") {
		return nil, errors.New("set both Username and Password, or neither")
	}
	if len(o.AuthMechanisms) == 0 {
		o.AuthMechanisms = []string{sasl.Plain}
	}
	for i, m := range o.AuthMechanisms {
		m = strings.ToUpper(m)
		if m != sasl.Plain && m != sasl.Login {
			return nil, fmt.Errorf("auth mechanism %q: only PLAIN and LOGIN are implemented", m)
		}
		o.AuthMechanisms[i] = m
	}
	dir := tb.TempDir()
	ca, err := NewCA(dir, "passbridge SMTP test CA")
	if err != nil {
		return nil, err
	}
	sc, err := ca.Issue(dir, "smtp", "localhost", "127.0.0.1")
	if err != nil {
		return nil, err
	}
	cert, err := tls.LoadX509KeyPair(sc.CertFile, sc.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("load server certificate: %w", err)
	}
	tlsCfg := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}

	s := &SMTP{
		Host: "127.0.0.1", Security: o.Security, CAFile: ca.CertFile, CA: ca,
		Username: o.Username, Password: o.Password,
		opts: o, stopped: make(chan struct{}), changed: make(chan struct{}), tb: tb,
	}
	srv := smtp.NewServer(&smtpBackend{s: s})
	srv.Domain = "localhost"
	srv.ReadTimeout = 30 * time.Second
	srv.WriteTimeout = 30 * time.Second
	srv.MaxMessageBytes = 10 << 20
	srv.MaxRecipients = 50
	srv.ErrorLog = smtpLog{s}
	switch o.Security {
	case "starttls":
		if !o.NoSTARTTLS {
			srv.TLSConfig = tlsCfg
		}
		srv.AllowInsecureAuth = o.AuthBeforeTLS || o.NoSTARTTLS
	case "none":
		srv.AllowInsecureAuth = true
	}
	s.srv = srv

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("listen: %w", err)
	}
	s.Port = l.Addr().(*net.TCPAddr).Port
	if o.Security == "tls" {
		l = tls.NewListener(l, tlsCfg)
	}
	s.l = l
	go func() {
		if err := srv.Serve(l); err != nil && !errors.Is(err, smtp.ErrServerClosed) {
			s.logf("smtp server on %s: %v", s.Addr(), err)
		}
	}()
	return s, nil
}

// Addr is host:port.
func (s *SMTP) Addr() string { return net.JoinHostPort(s.Host, fmt.Sprint(s.Port)) }

// Stop closes the listener and every connection; a stopped server refuses
// connections (for "server is down" tests). Safe to call more than once.
func (s *SMTP) Stop() {
	s.stop.Do(func() {
		s.mu.Lock()
		s.logOff = true
		s.mu.Unlock()
		close(s.stopped)
		// Serve may not have registered the listener yet: close it here
		// too, so that a stopped server refuses connections at once.
		s.l.Close()
		s.srv.Close()
	})
}

// Messages returns every message received so far, in order.
func (s *SMTP) Messages() []ReceivedMail {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.messages)
}

// AuthAttempts returns every AUTH exchange seen so far, in order.
func (s *SMTP) AuthAttempts() []AuthAttempt {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.auths)
}

// Wait returns the first message received for the envelope recipient to
// (compared case-insensitively), waiting up to timeout for it; it fails
// the test when none arrives.
func (s *SMTP) Wait(tb testing.TB, to string, timeout time.Duration) ReceivedMail {
	tb.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		s.mu.Lock()
		for _, m := range s.messages {
			if strings.EqualFold(m.To, to) {
				s.mu.Unlock()
				return m
			}
		}
		var got []string
		for _, m := range s.messages {
			got = append(got, m.To)
		}
		changed := s.changed
		s.mu.Unlock()
		select {
		case <-changed:
		case <-deadline.C:
			tb.Fatalf("smtp %s: no mail for %s within %s (received for: %v)", s.Addr(), to, timeout, got)
			return ReceivedMail{}
		}
	}
}

func (s *SMTP) logf(format string, args ...any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.logOff {
		s.tb.Logf(format, args...)
	}
}

func (s *SMTP) addAuth(a AuthAttempt) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.auths = append(s.auths, a)
}

func (s *SMTP) add(ms ...ReceivedMail) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.messages = append(s.messages, ms...)
	close(s.changed)
	s.changed = make(chan struct{})
}

// smtpLog sends go-smtp's error log to the test log while the server runs.
type smtpLog struct{ s *SMTP }

func (l smtpLog) Printf(format string, v ...any) { l.s.logf("smtp server: "+format, v...) }
func (l smtpLog) Println(v ...any)               { l.s.logf("smtp server: %s", fmt.Sprintln(v...)) }

type smtpBackend struct{ s *SMTP }

func (b *smtpBackend) NewSession(c *smtp.Conn) (smtp.Session, error) {
	if b.s.opts.Stall {
		<-b.s.stopped
		return nil, errors.New("server stopped")
	}
	return &smtpSession{s: b.s, conn: c}, nil
}

// smtpSession is one SMTP session (go-smtp starts a new one after
// STARTTLS).
type smtpSession struct {
	s    *SMTP
	conn *smtp.Conn
	user string // authenticated as
	from string
	to   []string
}

func (ss *smtpSession) isTLS() bool {
	_, ok := ss.conn.TLSConnectionState()
	return ok
}

func (ss *smtpSession) AuthMechanisms() []string {
	if ss.s.opts.Username == "" {
		return nil
	}
	return ss.s.opts.AuthMechanisms
}

func (ss *smtpSession) Auth(mech string) (sasl.Server, error) {
	if !slices.Contains(ss.AuthMechanisms(), mech) {
		return nil, smtp.ErrAuthUnknownMechanism
	}
	check := func(username, password string) error {
		ok := username == ss.s.opts.Username && password == ss.s.opts.Password
		ss.s.addAuth(AuthAttempt{Mechanism: mech, Username: username, TLS: ss.isTLS(), OK: ok})
		if !ok {
			return smtp.ErrAuthFailed
		}
		ss.user = username
		return nil
	}
	if mech == sasl.Login {
		return &loginServer{check: check}, nil
	}
	return sasl.NewPlainServer(func(identity, username, password string) error {
		if identity != "" && identity != username {
			ss.s.addAuth(AuthAttempt{Mechanism: mech, Username: username, TLS: ss.isTLS()})
			return smtp.ErrAuthFailed
		}
		return check(username, password)
	}), nil
}

func (ss *smtpSession) Mail(from string, _ *smtp.MailOptions) error {
	if ss.s.opts.Username != "" && ss.user == "" {
		return &smtp.SMTPError{Code: 530, EnhancedCode: smtp.EnhancedCode{5, 7, 0}, Message: "Authentication required"}
	}
	ss.from = from
	return nil
}

func (ss *smtpSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	for _, r := range ss.s.opts.RejectRecipients {
		if strings.EqualFold(r, to) {
			return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "No such user here"}
		}
	}
	ss.to = append(ss.to, to)
	return nil
}

func (ss *smtpSession) Data(r io.Reader) error {
	raw, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	m, err := parseReceivedMail(raw)
	if err != nil {
		return &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 6, 0}, Message: "testsrv cannot decode this message: " + err.Error()}
	}
	m.From, m.TLS, m.Auth = ss.from, ss.isTLS(), ss.user
	var ms []ReceivedMail
	for _, to := range ss.to {
		c := m
		c.To = to
		ms = append(ms, c)
	}
	ss.s.add(ms...)
	return nil
}

func (ss *smtpSession) Reset() {
	ss.from = ""
	ss.to = nil
}

func (ss *smtpSession) Logout() error { return nil }

// loginServer is the server side of the (obsolete but common) LOGIN SASL
// mechanism, which go-sasl no longer implements.
type loginServer struct {
	check    func(username, password string) error
	step     int
	username string
}

func (l *loginServer) Next(response []byte) ([]byte, bool, error) {
	switch l.step {
	case 0:
		l.step++
		if response == nil { // no initial response: ask for the user name
			return []byte("Username:"), false, nil
		}
		l.username = string(response)
		l.step++
		return []byte("Password:"), false, nil
	case 1:
		l.username = string(response)
		l.step++
		return []byte("Password:"), false, nil
	case 2:
		l.step++
		return nil, true, l.check(l.username, string(response))
	}
	return nil, false, sasl.ErrUnexpectedClientResponse
}

// parseReceivedMail decodes a message's header and text.
func parseReceivedMail(raw []byte) (ReceivedMail, error) {
	msg, err := mail.ReadMessage(bytes.NewReader(raw))
	if err != nil {
		return ReceivedMail{}, fmt.Errorf("header: %w", err)
	}
	m := ReceivedMail{Header: msg.Header, Raw: raw}
	dec := &mime.WordDecoder{CharsetReader: charsetReader}
	if m.Subject, err = dec.DecodeHeader(msg.Header.Get("Subject")); err != nil {
		return ReceivedMail{}, fmt.Errorf("subject: %w", err)
	}
	for _, f := range []struct {
		name string
		dst  **mail.Address
	}{{"From", &m.HeaderFrom}, {"To", &m.HeaderTo}} {
		if msg.Header.Get(f.name) == "" {
			continue
		}
		list, err := msg.Header.AddressList(f.name)
		if err != nil {
			return ReceivedMail{}, fmt.Errorf("%s: %w", f.name, err)
		}
		if len(list) > 0 {
			*f.dst = list[0]
		}
	}
	text, _, err := decodeText(msg.Header.Get("Content-Type"), msg.Header.Get("Content-Transfer-Encoding"), msg.Body)
	if err != nil {
		return ReceivedMail{}, err
	}
	m.Text = strings.ReplaceAll(text, "\r\n", "\n")
	return m, nil
}

// decodeText returns the text of a body or of its first text/plain part;
// found is false when there is none.
func decodeText(contentType, encoding string, body io.Reader) (text string, found bool, err error) {
	mediaType, params := "text/plain", map[string]string{}
	if contentType != "" {
		if mediaType, params, err = mime.ParseMediaType(contentType); err != nil {
			return "", false, fmt.Errorf("content-type %q: %w", contentType, err)
		}
	}
	if strings.HasPrefix(mediaType, "multipart/") {
		mr := multipart.NewReader(body, params["boundary"])
		for {
			p, err := mr.NextRawPart()
			if err == io.EOF {
				return "", false, nil
			}
			if err != nil {
				return "", false, fmt.Errorf("%s: %w", mediaType, err)
			}
			t, ok, err := decodeText(p.Header.Get("Content-Type"), p.Header.Get("Content-Transfer-Encoding"), p)
			if err != nil || ok {
				return t, ok, err
			}
		}
	}
	if mediaType != "text/plain" {
		return "", false, nil
	}
	var r io.Reader
	switch enc := strings.ToLower(strings.TrimSpace(encoding)); enc {
	case "quoted-printable":
		r = quotedprintable.NewReader(body)
	case "base64":
		r = base64.NewDecoder(base64.StdEncoding, body) // ignores CR and LF
	case "", "7bit", "8bit", "binary":
		r = body
	default:
		return "", false, fmt.Errorf("content-transfer-encoding %q", encoding)
	}
	cr, err := charsetReader(params["charset"], r)
	if err != nil {
		return "", false, err
	}
	b, err := io.ReadAll(cr)
	if err != nil {
		return "", false, fmt.Errorf("body (%s): %w", encoding, err)
	}
	return string(b), true, nil
}

// charsetReader converts UTF-8, US-ASCII and ISO-8859-1 to UTF-8.
func charsetReader(charset string, r io.Reader) (io.Reader, error) {
	switch strings.ToLower(charset) {
	case "", "utf-8", "utf8", "us-ascii":
		return r, nil
	case "iso-8859-1", "latin1":
		b, err := io.ReadAll(r)
		if err != nil {
			return nil, err
		}
		rs := make([]rune, len(b))
		for i, c := range b {
			rs[i] = rune(c)
		}
		return strings.NewReader(string(rs)), nil
	}
	return nil, fmt.Errorf("charset %q is not supported by testsrv", charset)
}
