package mail

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/passbridge/passbridge/config"
	"github.com/passbridge/passbridge/internal/testsrv"
)

func TestMain(m *testing.M) { os.Exit(testsrv.Run(m)) }

const (
	testUser     = "passbridge-relay"
	testPassword = "Tr0ub4dor&3-not-in-errors"
	testFrom     = "Passkeys <passkeys@corp.example>"
)

// mailConfig is the configuration for sending through s.
func mailConfig(s *testsrv.SMTP, host string) config.Mail {
	return config.Mail{
		Host: host, Port: s.Port, Security: s.Security,
		Username: s.Username, Password: config.Secret(s.Password),
		From: testFrom, CAFile: s.CAFile, Timeout: config.Duration(5 * time.Second),
	}
}

// addr is host:port as the errors name it.
func addr(s *testsrv.SMTP, host string) string { return net.JoinHostPort(host, strconv.Itoa(s.Port)) }

func newSender(t *testing.T, cfg config.Mail) (Sender, *testsrv.Buffer) {
	t.Helper()
	lb := &testsrv.Buffer{}
	s, err := New(cfg, slog.New(slog.NewTextHandler(lb, &slog.HandlerOptions{Level: slog.LevelDebug})))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return s, lb
}

var notice = Message{
	To:      "Zoë Ørsted <zoe@corp.example>",
	Subject: "Ihr Passkey wurde hinzugefügt",
	Text: "Hallo Zoë,\n\nIhr Bestätigungscode lautet 842119.\n\n" +
		"Diese Zeile ist absichtlich sehr lang, damit die Kodierung sie umbrechen muss, und enthält Umlaute: äöüß ÄÖÜ – und ein Euro-Zeichen €.\n",
}

func TestMailSecurityModes(t *testing.T) {
	for _, tc := range []struct {
		security, host string
		mechs          []string
		tls            bool
	}{
		{"starttls", "localhost", nil, true},
		{"starttls", "127.0.0.1", []string{"LOGIN"}, true}, // LOGIN when the server offers only that
		{"tls", "127.0.0.1", nil, true},
		{"tls", "localhost", []string{"LOGIN", "PLAIN"}, true},
		{"none", "127.0.0.1", nil, false},
		{"none", "localhost", []string{"LOGIN"}, false},
	} {
		t.Run(tc.security+"-"+tc.host+"-"+strings.Join(tc.mechs, "+"), func(t *testing.T) {
			srv := testsrv.StartSMTP(t, testsrv.SMTPOptions{Security: tc.security, Username: testUser, Password: testPassword, AuthMechanisms: tc.mechs})
			s, logs := newSender(t, mailConfig(srv, tc.host))
			if err := s.Send(t.Context(), notice); err != nil {
				t.Fatalf("Send: %v", err)
			}
			m := srv.Wait(t, "zoe@corp.example", 5*time.Second)
			if m.From != "passkeys@corp.example" || m.To != "zoe@corp.example" {
				t.Errorf("envelope %q → %q", m.From, m.To)
			}
			if m.HeaderFrom == nil || m.HeaderFrom.Name != "Passkeys" || m.HeaderFrom.Address != "passkeys@corp.example" {
				t.Errorf("From header %v", m.HeaderFrom)
			}
			if m.HeaderTo == nil || m.HeaderTo.Name != "Zoë Ørsted" || m.HeaderTo.Address != "zoe@corp.example" {
				t.Errorf("To header %v (raw %q)", m.HeaderTo, m.Header.Get("To"))
			}
			if m.Subject != notice.Subject {
				t.Errorf("subject %q (raw %q)", m.Subject, m.Header.Get("Subject"))
			}
			if strings.TrimRight(m.Text, "\n") != strings.TrimRight(notice.Text, "\n") {
				t.Errorf("text %q\nwant %q", m.Text, notice.Text)
			}
			if m.TLS != tc.tls || m.Auth != testUser {
				t.Errorf("session tls=%v auth=%q, want tls=%v auth=%q", m.TLS, m.Auth, tc.tls, testUser)
			}
			if _, err := m.Header.Date(); err != nil {
				t.Errorf("Date: %v", err)
			}
			if id := m.Header.Get("Message-Id"); !strings.HasPrefix(id, "<") || !strings.HasSuffix(id, "@corp.example>") {
				t.Errorf("Message-ID %q", id)
			}
			if got := m.Header.Get("Auto-Submitted"); got != "auto-generated" {
				t.Errorf("Auto-Submitted %q", got)
			}
			if ua := m.Header.Get("User-Agent") + m.Header.Get("X-Mailer"); ua != "" {
				t.Errorf("mailer header %q", ua)
			}
			if !sevenBit(m.Raw) {
				t.Errorf("raw message is not 7-bit")
			}
			l := logs.String()
			if !strings.Contains(l, "mail sent") || !strings.Contains(l, "zoe@corp.example") {
				t.Errorf("log %q: want one debug line naming the recipient", l)
			}
			if strings.Contains(l, "842119") || strings.Contains(l, testPassword) || strings.Count(l, "\n") != 1 {
				t.Errorf("log %q carries the body or the password, or more than one line", l)
			}
		})
	}
}

// sevenBit reports whether b is 7-bit (what quoted-printable and RFC 2047
// promise).
func sevenBit(b []byte) bool {
	for _, c := range b {
		if c >= 0x80 {
			return false
		}
	}
	return true
}

func TestMailWrongPassword(t *testing.T) {
	srv := testsrv.StartSMTP(t, testsrv.SMTPOptions{Username: testUser, Password: "the-real-one"})
	cfg := mailConfig(srv, "localhost")
	cfg.Password = testPassword
	s, logs := newSender(t, cfg)
	err := s.Send(t.Context(), notice)
	if err == nil {
		t.Fatal("sent with a wrong password")
	}
	msg := err.Error()
	t.Logf("error: %s", msg)
	if !strings.Contains(strings.ToLower(msg), "auth") || !strings.Contains(msg, addr(srv, cfg.Host)) || !strings.Contains(msg, "535") {
		t.Errorf("error %q: want auth, %s and the server's 535", msg, addr(srv, cfg.Host))
	}
	if strings.Contains(msg, testPassword) || strings.Contains(logs.String(), testPassword) {
		t.Errorf("the password leaks: %q / %q", msg, logs.String())
	}
	for e := errors.Unwrap(err); e != nil; e = errors.Unwrap(e) {
		if strings.Contains(e.Error(), testPassword) {
			t.Errorf("a wrapped error carries the password: %q", e.Error())
		}
	}
	if a := srv.AuthAttempts(); len(a) != 1 || a[0].OK || !a[0].TLS {
		t.Errorf("auth attempts %+v", a)
	}
	if n := len(srv.Messages()); n != 0 {
		t.Errorf("%d messages delivered", n)
	}
}

func TestMailRefusesDowngradeWithoutSTARTTLS(t *testing.T) {
	srv := testsrv.StartSMTP(t, testsrv.SMTPOptions{NoSTARTTLS: true, Username: testUser, Password: testPassword})
	cfg := mailConfig(srv, "localhost")
	s, _ := newSender(t, cfg)
	err := s.Send(t.Context(), notice)
	if err == nil {
		t.Fatal("sent without STARTTLS")
	}
	t.Logf("error: %s", err)
	if !strings.Contains(err.Error(), "STARTTLS") || !strings.Contains(err.Error(), addr(srv, cfg.Host)) {
		t.Errorf("error %q: want STARTTLS and %s", err, addr(srv, cfg.Host))
	}
	if a := srv.AuthAttempts(); len(a) != 0 {
		t.Errorf("credentials sent in clear: %+v", a)
	}
	if n := len(srv.Messages()); n != 0 {
		t.Errorf("%d messages sent in clear", n)
	}
}

func TestMailWrongCA(t *testing.T) {
	for _, security := range []string{"starttls", "tls"} {
		t.Run(security, func(t *testing.T) {
			srv := testsrv.StartSMTP(t, testsrv.SMTPOptions{Security: security, Username: testUser, Password: testPassword})
			cfg := mailConfig(srv, "localhost")
			cfg.CAFile = testsrv.UnrelatedCA(t).CertFile
			s, _ := newSender(t, cfg)
			err := s.Send(t.Context(), notice)
			if err == nil {
				t.Fatal("sent to a server whose certificate the CA did not sign")
			}
			t.Logf("error: %s", err)
			if msg := err.Error(); !strings.Contains(msg, "TLS") || !strings.Contains(msg, "ca_file") || !strings.Contains(msg, addr(srv, cfg.Host)) {
				t.Errorf("error %q: want TLS, ca_file and %s", msg, addr(srv, cfg.Host))
			}
			if a := srv.AuthAttempts(); len(a) != 0 {
				t.Errorf("credentials sent: %+v", a)
			}
		})
	}
}

func TestMailImplicitTLSToSTARTTLSPort(t *testing.T) {
	srv := testsrv.StartSMTP(t, testsrv.SMTPOptions{Security: "starttls"})
	cfg := mailConfig(srv, "localhost")
	cfg.Security = "tls"
	cfg.Timeout = config.Duration(2 * time.Second)
	s, _ := newSender(t, cfg)
	err := s.Send(t.Context(), notice)
	if err == nil || !strings.Contains(err.Error(), "TLS") {
		t.Fatalf("implicit TLS to a plain port: %v", err)
	}
	t.Logf("error: %s", err)
}

func TestMailServerDown(t *testing.T) {
	srv := testsrv.StartSMTP(t, testsrv.SMTPOptions{Security: "tls"})
	srv.Stop()
	cfg := mailConfig(srv, "127.0.0.1")
	s, _ := newSender(t, cfg)
	start := time.Now()
	err := s.Send(t.Context(), notice)
	if err == nil {
		t.Fatal("sent to a stopped server")
	}
	t.Logf("error: %s", err)
	if !strings.Contains(err.Error(), addr(srv, cfg.Host)) || !strings.Contains(err.Error(), "connect") {
		t.Errorf("error %q: want %s and connect", err, addr(srv, cfg.Host))
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("took %s", d)
	}
}

func TestMailRejectedRecipient(t *testing.T) {
	srv := testsrv.StartSMTP(t, testsrv.SMTPOptions{Username: testUser, Password: testPassword, RejectRecipients: []string{"zoe@corp.example"}})
	s, _ := newSender(t, mailConfig(srv, "localhost"))
	err := s.Send(t.Context(), notice)
	if err == nil {
		t.Fatal("no error for a rejected recipient")
	}
	t.Logf("error: %s", err)
	if msg := err.Error(); !strings.Contains(msg, "rejected the recipient zoe@corp.example") || !strings.Contains(msg, "550") || strings.Contains(msg, testPassword) {
		t.Errorf("error %q", msg)
	}
}

func TestMailContext(t *testing.T) {
	srv := testsrv.StartSMTP(t, testsrv.SMTPOptions{Security: "none", Stall: true})
	cfg := mailConfig(srv, "127.0.0.1")
	s, _ := newSender(t, cfg)

	t.Run("cancelled-before", func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		err := s.Send(ctx, notice)
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Send: %v, want context.Canceled", err)
		}
	})
	t.Run("cancelled-during", func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		time.AfterFunc(200*time.Millisecond, cancel)
		start := time.Now()
		err := s.Send(ctx, notice)
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Send: %v, want context.Canceled", err)
		}
		t.Logf("error: %s", err)
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("returned %s after the cancel", d)
		}
		if !strings.Contains(err.Error(), addr(srv, cfg.Host)) || !strings.Contains(err.Error(), "cancelled") {
			t.Errorf("error %q", err)
		}
	})
	t.Run("mail.timeout", func(t *testing.T) {
		cfg := cfg
		cfg.Timeout = config.Duration(300 * time.Millisecond)
		s, _ := newSender(t, cfg)
		start := time.Now()
		err := s.Send(t.Context(), notice)
		if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "timed out") {
			t.Fatalf("Send: %v, want a timeout", err)
		}
		t.Logf("error: %s", err)
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("took %s with a 300ms timeout", d)
		}
	})
}

func TestMailNew(t *testing.T) {
	if _, err := New(config.Mail{}, nil); !errors.Is(err, ErrNotConfigured) {
		t.Errorf("empty host: %v, want ErrNotConfigured", err)
	}
	for security, port := range map[string]int{"starttls": 587, "tls": 465, "none": 25} {
		s, err := New(config.Mail{Host: "localhost", Security: security, From: testFrom, Timeout: config.Duration(time.Second)}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if got := s.(*smtpSender).port; got != port {
			t.Errorf("%s: default port %d, want %d", security, got, port)
		}
	}
	if _, err := New(config.Mail{Host: "mail.corp.example", Security: "none", From: testFrom}, nil); err == nil {
		t.Error("security none to a remote host accepted")
	}
	if _, err := New(config.Mail{Host: "mail.corp.example", Security: "starttls", From: testFrom, CAFile: "/nonexistent/ca.pem"}, nil); err == nil || !strings.Contains(err.Error(), "ca_file") {
		t.Errorf("missing ca_file: %v", err)
	}
	if _, err := New(config.Mail{Host: "mail.corp.example", Security: "starttls", From: "not an address"}, nil); err == nil {
		t.Error("bad from accepted")
	}
	if _, err := New(config.Mail{Host: "mail.corp.example", Security: "starttls", From: testFrom}, nil); err != nil {
		t.Errorf("system roots: %v", err)
	}
}

func TestMailHeaderInjection(t *testing.T) {
	srv := testsrv.StartSMTP(t, testsrv.SMTPOptions{Security: "none"})
	s, _ := newSender(t, mailConfig(srv, "127.0.0.1"))
	err := s.Send(t.Context(), Message{To: "zoe@corp.example", Subject: "Code\r\nBcc: mallory@evil.example", Text: "x"})
	if err != nil {
		t.Fatal(err)
	}
	m := srv.Wait(t, "zoe@corp.example", 5*time.Second)
	if m.Subject != "Code Bcc: mallory@evil.example" || m.Header.Get("Bcc") != "" || len(srv.Messages()) != 1 {
		t.Errorf("subject %q, Bcc %q, %d messages", m.Subject, m.Header.Get("Bcc"), len(srv.Messages()))
	}
	if err := s.Send(t.Context(), Message{To: "zoe@corp.example\r\nBcc: mallory@evil.example", Subject: "x", Text: "x"}); err == nil {
		t.Error("a recipient with a line break was accepted")
	}
}

func TestMailBadRecipient(t *testing.T) {
	s, err := New(config.Mail{Host: "localhost", Security: "none", From: testFrom}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Send(t.Context(), Message{To: "not an address", Subject: "x", Text: "x"}); err == nil {
		t.Error("bad recipient accepted")
	}
}
