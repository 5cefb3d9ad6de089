// Package mail sends passbridge's plain-text mail (recovery codes, "a
// passkey was added" notices) through the company's SMTP server
// (config.Mail), with github.com/wneessen/go-mail.
//
// Security is never negotiated down: "starttls" requires the server to offer
// STARTTLS and fails otherwise, "tls" speaks TLS from the first byte, and
// "none" (plain text) only talks to a server on loopback. The server
// certificate is verified against mail.ca_file when set, else the system
// roots, for the name mail.host. The password goes out only over an
// encrypted connection (or to loopback with "none").
//
// Bodies carry one-time codes: they are never logged, and errors never
// contain them or the password.
package mail

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/mail"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	gomail "github.com/wneessen/go-mail"
	gmlog "github.com/wneessen/go-mail/log"

	"github.com/passbridge/passbridge/config"
)

// Message is one mail (UTF-8) to one recipient: plain text, and with HTML
// set, multipart/alternative with the HTML as the second part (clients
// that show HTML show it, the others the text).
type Message struct {
	// To is one address, with or without a display name
	// ("Zoë Ørsted <zoe@corp.example>").
	To      string
	Subject string
	Text    string
	HTML    string
}

// Permanent reports whether a Send error is the server's final refusal
// (a 5xx answer: the recipient does not exist, the message was rejected),
// which sending again will not change: a bounce. Every other error (the
// server is down or slow, a 4xx answer, TLS or authentication trouble
// that IT can fix) is worth retrying.
func Permanent(err error) bool {
	var se *gomail.SendError
	if !errors.As(err, &se) || se.IsTemp() {
		return false
	}
	switch se.Reason {
	case gomail.ErrSMTPRcptTo, gomail.ErrSMTPData, gomail.ErrSMTPDataClose, gomail.ErrWriteContent:
		return se.ErrorCode() >= 500 && se.ErrorCode() < 600
	}
	return false
}

// Sender sends mail.
type Sender interface {
	// Send delivers m to the SMTP server, within ctx and mail.timeout. It
	// returns once the server has accepted the message.
	Send(ctx context.Context, m Message) error
}

// ErrNotConfigured is returned by New when mail.host is empty.
var ErrNotConfigured = errors.New("mail is not configured (mail.host is empty)")

// DefaultTimeout bounds a send when mail.timeout is 0.
const DefaultTimeout = 10 * time.Second

// New returns a Sender for cfg (as checked by config.Load), or
// ErrNotConfigured when cfg.Host is empty. It connects to nothing yet:
// every Send opens its own connection. log may be nil.
func New(cfg config.Mail, log *slog.Logger) (Sender, error) {
	if cfg.Host == "" {
		return nil, ErrNotConfigured
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &smtpSender{
		host:     cfg.Host,
		port:     cfg.Port,
		security: cfg.Security,
		username: cfg.Username,
		password: cfg.Password.Reveal(),
		timeout:  cfg.Timeout.D(),
		log:      log,
	}
	if s.security == "" {
		s.security = "starttls"
	}
	if s.port == 0 {
		switch s.security {
		case "starttls":
			s.port = 587
		case "tls":
			s.port = 465
		case "none":
			s.port = 25
		}
	}
	s.addr = net.JoinHostPort(s.host, strconv.Itoa(s.port))
	switch s.security {
	case "starttls", "tls":
	case "none":
		if !isLoopback(s.host) {
			return nil, fmt.Errorf("mail.security none sends mail and the password in clear: only allowed to a server on loopback, not %q", s.host)
		}
	default:
		return nil, fmt.Errorf("mail.security %q: want starttls, tls or none", s.security)
	}
	if s.port < 1 || s.port > 65535 {
		return nil, fmt.Errorf("mail.port %d is not a TCP port", s.port)
	}
	if s.timeout <= 0 {
		s.timeout = DefaultTimeout
	}
	from, err := mail.ParseAddress(cfg.From)
	if err != nil {
		return nil, fmt.Errorf("mail.from %q is not an email address: %v", cfg.From, err)
	}
	s.from = from
	if at := strings.LastIndexByte(from.Address, '@'); at >= 0 {
		s.idDomain = from.Address[at+1:]
	} else {
		s.idDomain = "passbridge.invalid"
	}
	s.tlsConfig = &tls.Config{ServerName: s.host, MinVersion: tls.VersionTLS12}
	if cfg.CAFile != "" {
		pem, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("mail.ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("mail.ca_file %s: no PEM certificate in it", cfg.CAFile)
		}
		s.tlsConfig.RootCAs = pool
	}
	return s, nil
}

type smtpSender struct {
	host, addr, security string
	port                 int
	username, password   string
	from                 *mail.Address
	idDomain             string
	tlsConfig            *tls.Config
	timeout              time.Duration
	log                  *slog.Logger
}

func (s *smtpSender) Send(ctx context.Context, m Message) error {
	to, err := mail.ParseAddress(m.To)
	if err != nil {
		return fmt.Errorf("mail to %q: not an email address: %v", m.To, err)
	}
	msg, err := s.message(to, m)
	if err != nil {
		return fmt.Errorf("mail to %s: %w", to.Address, err)
	}

	// ctx bounds the whole send; cancelling it (or the end of Send)
	// closes the connection, which interrupts whatever go-mail is waiting
	// for. go-mail's own timeout bounds each step as well.
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	if err := ctx.Err(); err != nil {
		return s.fail(ctx, to, &tracker{}, err)
	}

	tr := &tracker{}
	opts := []gomail.Option{
		gomail.WithPort(s.port),
		// go-mail's own I/O deadline is a backstop only: the send's
		// context (mail.timeout) ends the connection first, so that the
		// error says what happened, the same way every time.
		gomail.WithTimeout(s.timeout + 5*time.Second),
		gomail.WithTLSConfig(s.tlsConfig.Clone()),
		gomail.WithDialContextFunc(s.dialer(ctx, tr)),
		// The "debug log" only feeds tr, which keeps the name of the
		// last command sent (never its arguments) for error messages.
		gomail.WithLogger(tr),
		gomail.WithDebugLog(),
	}
	switch s.security {
	case "starttls":
		// Mandatory: a server (or a man in the middle) that does not
		// offer STARTTLS gets nothing.
		opts = append(opts, gomail.WithTLSPolicy(gomail.TLSMandatory))
	case "tls":
		// The dialer has already done the TLS handshake: go-mail sees a
		// *tls.Conn, counts the connection as encrypted, and with no
		// STARTTLS on offer over TLS, starts none.
		opts = append(opts, gomail.WithTLSPolicy(gomail.TLSOpportunistic))
	case "none":
		opts = append(opts, gomail.WithTLSPolicy(gomail.NoTLS))
	}
	if s.username != "" {
		opts = append(opts, gomail.WithUsername(s.username), gomail.WithPassword(s.password))
		if s.security == "none" {
			// Loopback only (New checks): PLAIN and LOGIN in clear are
			// what a local relay offers; go-mail's autodiscovery would
			// refuse them on a plain connection.
			opts = append(opts, gomail.WithOpportunisticSMTPAuth(
				gomail.SMTPAuthSCRAMSHA256, gomail.SMTPAuthSCRAMSHA1,
				gomail.SMTPAuthPlainNoEnc, gomail.SMTPAuthLoginNoEnc))
		} else {
			// PLAIN, else LOGIN when the server offers only that, else
			// whatever go-mail autodiscovers among the mechanisms the
			// server offers over TLS.
			opts = append(opts, gomail.WithOpportunisticSMTPAuth(gomail.SMTPAuthPlain, gomail.SMTPAuthLogin))
		}
	}
	client, err := gomail.NewClient(s.host, opts...)
	if err != nil {
		return s.fail(ctx, to, tr, err)
	}
	sc, err := client.DialToSMTPClientWithContext(ctx)
	if err != nil {
		return s.fail(ctx, to, tr, err)
	}
	err = client.SendWithSMTPClient(sc, msg)
	closeErr := client.CloseWithSMTPClient(sc)
	if err != nil && !msg.IsDelivered() {
		return s.fail(ctx, to, tr, err)
	}
	attrs := []any{"to", to.Address, "server", s.addr, "message_id", msg.GetMessageID()}
	if err != nil || closeErr != nil {
		// Accepted (the server answered 250 to the end of DATA): a
		// failing RSET or QUIT afterwards does not undo that.
		attrs = append(attrs, "after_delivery", s.scrub(errors.Join(err, closeErr).Error()))
	}
	s.log.Debug("mail sent", attrs...)
	return nil
}

// message builds the mail. Header values are RFC 2047 encoded by go-mail
// where they are not ASCII, the body is quoted-printable UTF-8.
func (s *smtpSender) message(to *mail.Address, m Message) (*gomail.Msg, error) {
	msg := gomail.NewMsg(gomail.WithNoDefaultUserAgent())
	msg.FromMailAddress(s.from)
	msg.ToMailAddress(to)
	// A line break in a subject would end the header field.
	msg.Subject(strings.Join(strings.FieldsFunc(m.Subject, func(r rune) bool { return r == '\r' || r == '\n' }), " "))
	msg.SetDate()
	id := make([]byte, 16)
	if _, err := rand.Read(id); err != nil {
		return nil, fmt.Errorf("message id: %w", err)
	}
	msg.SetMessageIDWithValue(hex.EncodeToString(id) + "@" + s.idDomain)
	msg.SetGenHeader("Auto-Submitted", "auto-generated")
	msg.SetBodyString(gomail.TypeTextPlain, m.Text)
	if m.HTML != "" {
		msg.AddAlternativeString(gomail.TypeTextHTML, m.HTML)
	}
	return msg, nil
}

// dialer connects to the server, and for "tls" does the TLS handshake.
// The connection is closed when sendCtx ends (cancelled, timed out, or
// Send returned).
func (s *smtpSender) dialer(sendCtx context.Context, tr *tracker) gomail.DialContextFunc {
	// go-mail passes host + ":" + port, which is wrong for an IPv6 address.
	return func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		c, err := d.DialContext(ctx, network, s.addr)
		if err != nil {
			return nil, &stepError{step: "dial", err: err}
		}
		context.AfterFunc(sendCtx, func() { c.Close() })
		tr.connected()
		if s.security != "tls" {
			return c, nil
		}
		tc := tls.Client(c, s.tlsConfig.Clone())
		if err := tc.HandshakeContext(ctx); err != nil {
			c.Close()
			return nil, &stepError{step: "TLS", err: err}
		}
		return tc, nil
	}
}

// stepError is a failure the dialer saw, with the step it failed in.
type stepError struct {
	step string
	err  error
}

func (e *stepError) Error() string { return e.step + ": " + e.err.Error() }
func (e *stepError) Unwrap() error { return e.err }

// tracker is a go-mail logger that remembers the last SMTP command the
// client sent, by its name only: AUTH data, addresses and the message never
// reach it (go-mail writes the body without logging it).
type tracker struct {
	mu       sync.Mutex
	dialed   bool
	last     string
	startTLS bool // STARTTLS was sent
}

func (t *tracker) connected() {
	t.mu.Lock()
	t.dialed = true
	t.mu.Unlock()
}

func (t *tracker) Debugf(l gmlog.Log) {
	if l.Direction != gmlog.DirClientToServer {
		return
	}
	var verb string
	if l.Format == "%s" {
		// go-mail replaces everything sent during AUTH by one redacted
		// "%s" message; it sends no other command with that format.
		verb = "AUTH"
	} else if f := strings.Fields(l.Format); len(f) > 0 {
		verb = strings.ToUpper(strings.TrimSuffix(strings.SplitN(f[0], ":", 2)[0], ":"))
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if verb == "HELO" && t.last == "EHLO" {
		verb = "EHLO" // go-mail falls back to HELO when EHLO fails
	}
	t.last = verb
	if verb == "STARTTLS" {
		t.startTLS = true
	}
}

func (t *tracker) Infof(gmlog.Log)  {}
func (t *tracker) Warnf(gmlog.Log)  {}
func (t *tracker) Errorf(gmlog.Log) {}

func (t *tracker) state() (dialed bool, last string, startTLS bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.dialed, t.last, t.startTLS
}

// fail turns a go-mail error into one that names the server, the step that
// failed and the server's answer, without the password.
func (s *smtpSender) fail(ctx context.Context, to *mail.Address, tr *tracker, err error) error {
	prefix := fmt.Sprintf("mail to %s via %s", to.Address, s.addr)
	dialed, last, startTLS := tr.state()
	var (
		what  string
		cause = err
	)
	var se *stepError
	var send *gomail.SendError
	switch {
	case ctx.Err() != nil:
		// The connection was closed under go-mail: its error is only
		// "use of closed network connection".
		cause = context.Cause(ctx)
		if errors.Is(cause, context.DeadlineExceeded) {
			what = fmt.Sprintf("timed out (mail.timeout %s or the caller's deadline)", s.timeout)
		} else {
			what = "cancelled"
		}
		if last != "" {
			what += " waiting for the answer to " + last
		} else if !dialed {
			what += " while connecting"
		}
	case errors.As(err, &se) && se.step == "dial":
		what, cause = "cannot connect", se.err
	case errors.As(err, &se) && se.step == "TLS":
		what, cause = "TLS handshake failed"+tlsHint(se.err, s.security), se.err
	case isTLSError(err):
		what = "TLS handshake after STARTTLS failed" + tlsHint(err, s.security)
	case s.security == "starttls" && !startTLS && strings.Contains(err.Error(), "STARTTLS"):
		what, cause = "the server does not offer STARTTLS, and mail.security starttls refuses to send without TLS", nil
	case last == "STARTTLS":
		what = "the server refused STARTTLS"
	case errors.As(err, &send):
		switch send.Reason {
		case gomail.ErrSMTPRcptTo:
			what = "the server rejected the recipient " + to.Address
		case gomail.ErrSMTPMailFrom:
			what = "the server rejected the sender " + s.from.Address
		case gomail.ErrSMTPData, gomail.ErrWriteContent, gomail.ErrSMTPDataClose:
			what = "the server rejected the message"
		case gomail.ErrConnCheck:
			what = "the connection failed before MAIL FROM"
		default:
			what = "sending failed"
		}
		cause = send
	case last == "AUTH" || isAuthError(err):
		what = fmt.Sprintf("SMTP authentication as %q failed", s.username)
		if errors.Is(err, gomail.ErrNoSupportedAuthDiscovered) || strings.Contains(err.Error(), "does not support SMTP AUTH") {
			what += " (no usable AUTH mechanism offered over this connection)"
		}
		// go-mail says "SMTP AUTH failed: " before the server's answer.
		if t := strings.TrimPrefix(err.Error(), "SMTP AUTH failed: "); t != err.Error() {
			cause = &trimmedError{msg: t, err: err}
		}
	case !dialed:
		what = "cannot connect"
	case last == "":
		what = "no SMTP greeting from the server"
	default:
		what = "SMTP " + last + " failed"
	}
	msg := prefix + ": " + what
	if cause != nil {
		msg += ": " + cause.Error()
	}
	e := &sendError{msg: s.scrub(msg), err: cause}
	if cause != nil && s.password != "" && strings.Contains(cause.Error(), s.password) {
		e.err = nil // do not hand out what would print the password
	}
	return e
}

// scrub masks the password should a server echo it.
func (s *smtpSender) scrub(msg string) string {
	if s.password == "" {
		return msg
	}
	return strings.ReplaceAll(msg, s.password, "********")
}

// sendError is what Send returns: msg names server, step and cause.
type sendError struct {
	msg string
	err error
}

func (e *sendError) Error() string { return e.msg }
func (e *sendError) Unwrap() error { return e.err }

// trimmedError is err with a shorter message.
type trimmedError struct {
	msg string
	err error
}

func (e *trimmedError) Error() string { return e.msg }
func (e *trimmedError) Unwrap() error { return e.err }

func isTLSError(err error) bool {
	var (
		cv  *tls.CertificateVerificationError
		ua  x509.UnknownAuthorityError
		he  x509.HostnameError
		ci  x509.CertificateInvalidError
		ae  tls.AlertError
		rhe tls.RecordHeaderError
	)
	return errors.As(err, &cv) || errors.As(err, &ua) || errors.As(err, &he) ||
		errors.As(err, &ci) || errors.As(err, &ae) || errors.As(err, &rhe)
}

// tlsHint says what usually causes a TLS failure.
func tlsHint(err error, security string) string {
	var (
		ua  x509.UnknownAuthorityError
		he  x509.HostnameError
		rhe tls.RecordHeaderError
	)
	switch {
	case errors.As(err, &ua):
		return " (the server certificate is not signed by mail.ca_file, or by a system CA when ca_file is empty)"
	case errors.As(err, &he):
		return " (the server certificate is not valid for mail.host)"
	case errors.As(err, &rhe) && security == "tls":
		return " (the server does not speak TLS on this port: port 587 usually wants mail.security starttls)"
	}
	return ""
}

func isAuthError(err error) bool {
	for _, e := range []error{
		gomail.ErrNoSupportedAuthDiscovered, gomail.ErrPlainAuthNotSupported, gomail.ErrLoginAuthNotSupported,
	} {
		if errors.Is(err, e) {
			return true
		}
	}
	s := err.Error()
	return strings.Contains(s, "SMTP AUTH")
}

func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
