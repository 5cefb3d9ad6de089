package testsrv

import (
	"errors"
	"net"
	"net/textproto"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

const smtpTestMsg = "From: =?utf-8?q?Passkeys_f=C3=BCr_Alle?= <passkeys@corp.example>\r\n" +
	"To: =?utf-8?q?Zo=C3=AB_=C3=98rsted?= <zoe@corp.example>\r\n" +
	"Subject: =?utf-8?q?Ihr_Passkey_wurde_hinzugef=C3=BCgt?=\r\n" +
	"MIME-Version: 1.0\r\n" +
	"Content-Type: text/plain; charset=UTF-8\r\n" +
	"Content-Transfer-Encoding: quoted-printable\r\n" +
	"\r\n" +
	"Hallo Zo=C3=AB,\r\n" +
	"ein langer Satz, der wegen der Zeilenl=C3=A4nge umbrochen werden muss und =\r\n" +
	"weitergeht.\r\n"

const smtpTestText = "Hallo Zoë,\nein langer Satz, der wegen der Zeilenlänge umbrochen werden muss und weitergeht.\n"

func TestSMTPStartTLS(t *testing.T) {
	s := StartSMTP(t, SMTPOptions{Username: "relay", Password: "s3cret"})
	if s.Security != "starttls" || s.Host != "127.0.0.1" || s.Port == 0 {
		t.Fatalf("server %+v", s)
	}
	// Before STARTTLS: no AUTH offered, AUTH refused, no mail without it.
	tc, err := textproto.Dial("tcp", s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	if _, _, err := tc.ReadResponse(220); err != nil {
		t.Fatal(err)
	}
	rawCmd := func(want int, cmd string) string {
		t.Helper()
		id, err := tc.Cmd("%s", cmd)
		if err != nil {
			t.Fatal(err)
		}
		tc.StartResponse(id)
		defer tc.EndResponse(id)
		code, msg, err := tc.ReadResponse(want)
		if err != nil {
			t.Fatalf("%s: %d %s: %v", cmd, code, msg, err)
		}
		return msg
	}
	ehlo := rawCmd(250, "EHLO client.test")
	if !strings.Contains(ehlo, "STARTTLS") || strings.Contains(ehlo, "AUTH") {
		t.Fatalf("EHLO before TLS: %q, want STARTTLS and no AUTH", ehlo)
	}
	rawCmd(523, "AUTH PLAIN AHJlbGF5AHMzY3JldA==") // \0relay\0s3cret
	rawCmd(530, "MAIL FROM:<passkeys@corp.example>")
	rawCmd(221, "QUIT")

	c, err := smtp.DialStartTLS(s.Addr(), s.CA.TLSConfig("localhost"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Auth(sasl.NewPlainClient("", "relay", "wrong")); err == nil {
		t.Fatal("wrong password accepted")
	}
	if err := c.Auth(sasl.NewPlainClient("", "relay", "s3cret")); err != nil {
		t.Fatal(err)
	}
	if err := c.SendMail("passkeys@corp.example", []string{"zoe@corp.example", "it@corp.example"}, strings.NewReader(smtpTestMsg)); err != nil {
		t.Fatal(err)
	}
	c.Quit()

	m := s.Wait(t, "ZOE@corp.example", 5*time.Second)
	if m.From != "passkeys@corp.example" || m.To != "zoe@corp.example" || !m.TLS || m.Auth != "relay" {
		t.Errorf("envelope %q → %q, tls %v, auth %q", m.From, m.To, m.TLS, m.Auth)
	}
	if m.Subject != "Ihr Passkey wurde hinzugefügt" {
		t.Errorf("subject %q", m.Subject)
	}
	if m.Text != smtpTestText {
		t.Errorf("text %q, want %q", m.Text, smtpTestText)
	}
	if m.HeaderTo == nil || m.HeaderTo.Name != "Zoë Ørsted" || m.HeaderTo.Address != "zoe@corp.example" {
		t.Errorf("header To %v", m.HeaderTo)
	}
	if m.HeaderFrom == nil || m.HeaderFrom.Name != "Passkeys für Alle" {
		t.Errorf("header From %v", m.HeaderFrom)
	}
	if got := len(s.Messages()); got != 2 {
		t.Errorf("%d messages, want one per recipient (2)", got)
	}
	auths := s.AuthAttempts()
	if len(auths) != 2 || auths[0].OK || !auths[1].OK || !auths[1].TLS || auths[1].Mechanism != "PLAIN" {
		t.Errorf("auth attempts %+v", auths)
	}

	s.Stop()
	if c, err := net.DialTimeout("tcp", s.Addr(), time.Second); err == nil {
		c.Close()
		t.Fatal("stopped server still accepts connections")
	}
}

func TestSMTPImplicitTLSAndLogin(t *testing.T) {
	s := StartSMTP(t, SMTPOptions{Security: "tls", Username: "relay", Password: "pw", AuthMechanisms: []string{"LOGIN"}})
	c, err := smtp.DialTLS(s.Addr(), s.CA.TLSConfig("127.0.0.1"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Hello("client.test"); err != nil {
		t.Fatal(err)
	}
	if ok, _ := c.Extension("STARTTLS"); ok {
		t.Error("STARTTLS offered over implicit TLS")
	}
	if ok, mechs := c.Extension("AUTH"); !ok || mechs != "LOGIN" {
		t.Errorf("AUTH %v %q, want LOGIN", ok, mechs)
	}
	if err := c.Auth(sasl.NewLoginClient("relay", "pw")); err != nil {
		t.Fatal(err)
	}
	if err := c.SendMail("a@corp.example", []string{"b@corp.example"}, strings.NewReader("Subject: hi\r\n\r\nhello\r\n")); err != nil {
		t.Fatal(err)
	}
	if m := s.Wait(t, "b@corp.example", 5*time.Second); m.Text != "hello\n" || m.Subject != "hi" || !m.TLS {
		t.Errorf("got %+v", m)
	}
}

func TestSMTPNoneAndNoSTARTTLS(t *testing.T) {
	for _, o := range []SMTPOptions{
		{Security: "none", Username: "u", Password: "p"},
		{NoSTARTTLS: true, Username: "u", Password: "p"},
	} {
		s := StartSMTP(t, o)
		c, err := smtp.Dial(s.Addr())
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Hello("client.test"); err != nil {
			t.Fatal(err)
		}
		if ok, _ := c.Extension("STARTTLS"); ok {
			t.Errorf("%+v: STARTTLS offered", o)
		}
		if err := c.Auth(sasl.NewPlainClient("", "u", "p")); err != nil {
			t.Errorf("%+v: AUTH in clear: %v", o, err)
		}
		c.Close()
		if a := s.AuthAttempts(); len(a) != 1 || a[0].TLS || !a[0].OK {
			t.Errorf("%+v: auth attempts %+v", o, a)
		}
	}
}

func TestSMTPRejectAndStall(t *testing.T) {
	s := StartSMTP(t, SMTPOptions{Security: "none", RejectRecipients: []string{"gone@corp.example"}})
	rc, err := smtp.Dial(s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	if err := rc.Mail("a@corp.example", nil); err != nil {
		t.Fatal(err)
	}
	if err := rc.Rcpt("ok@corp.example", nil); err != nil {
		t.Fatal(err)
	}
	err = rc.Rcpt("Gone@corp.example", nil)
	var se *smtp.SMTPError
	if !errors.As(err, &se) || se.Code != 550 {
		t.Fatalf("rejected recipient: %v, want 550", err)
	}

	st := StartSMTP(t, SMTPOptions{Security: "none", Stall: true})
	conn, err := net.Dial("tcp", st.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c := smtp.NewClient(conn)
	done := make(chan error, 1)
	go func() { done <- c.Hello("client.test") }()
	select {
	case err := <-done:
		t.Fatalf("stalled server answered EHLO: %v", err)
	case <-time.After(300 * time.Millisecond):
	}
	st.Stop()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("EHLO still hangs after Stop")
	}
}

func TestSMTPDecode(t *testing.T) {
	raw := "Subject: =?UTF-8?B?SWhyIFBhc3NrZXkgd3VyZGUgaGluenVnZWbDvGd0?=\r\n" +
		"MIME-Version: 1.0\r\n" +
		"Content-Type: multipart/alternative; boundary=XYZ\r\n" +
		"\r\n" +
		"--XYZ\r\n" +
		"Content-Type: text/html; charset=utf-8\r\n" +
		"\r\n" +
		"<p>nope</p>\r\n" +
		"--XYZ\r\n" +
		"Content-Type: text/plain; charset=utf-8\r\n" +
		"Content-Transfer-Encoding: base64\r\n" +
		"\r\n" +
		"Q29kZTogODQyIDExOQpab8OrIMOYcnN0ZWQK\r\n" +
		"--XYZ--\r\n"
	m, err := parseReceivedMail([]byte(raw))
	if err != nil {
		t.Fatal(err)
	}
	if m.Subject != "Ihr Passkey wurde hinzugefügt" || m.Text != "Code: 842 119\nZoë Ørsted\n" {
		t.Errorf("subject %q text %q", m.Subject, m.Text)
	}
	latin := "Subject: =?iso-8859-1?q?gr=FC=DFe?=\r\nContent-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nZo=EB\r\n"
	if m, err := parseReceivedMail([]byte(latin)); err != nil || m.Subject != "grüße" || m.Text != "Zoë\n" {
		t.Errorf("latin-1: %q %q %v", m.Subject, m.Text, err)
	}
}
