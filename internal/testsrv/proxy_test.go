package testsrv

import (
	"bufio"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// echoServer answers every line with the same line.
func echoServer(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); io.Copy(c, c) }()
		}
	}()
	return ln.Addr().String()
}

func dialLine(t *testing.T, addr string) (net.Conn, *bufio.Reader) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	return c, bufio.NewReader(c)
}

func roundTrip(c net.Conn, r *bufio.Reader, line string) (string, error) {
	if _, err := io.WriteString(c, line+"\n"); err != nil {
		return "", err
	}
	s, err := r.ReadString('\n')
	return strings.TrimSuffix(s, "\n"), err
}

// TestProxy: forwarding, Cut, the rules (cut on a pattern, drop after n
// bytes, hold then release), Refuse, and DSN rewriting.
func TestProxy(t *testing.T) {
	p := StartProxy(t, echoServer(t))
	c, r := dialLine(t, p.Addr)
	if got, err := roundTrip(c, r, "hello"); err != nil || got != "hello" {
		t.Fatalf("forward: %q %v", got, err)
	}
	if n := p.Cut(); n != 1 {
		t.Fatalf("Cut cut %d connections, want 1", n)
	}
	if _, err := roundTrip(c, r, "again"); err == nil {
		t.Fatal("a cut connection still answers")
	}

	// CutAfter: the server got the line (it echoes), the client hears nothing.
	p.SetRule(CutOn(Upstream, "COMMIT", CutAfter))
	c, r = dialLine(t, p.Addr)
	if got, err := roundTrip(c, r, "select 1"); err != nil || got != "select 1" {
		t.Fatalf("before the pattern: %q %v", got, err)
	}
	if _, err := roundTrip(c, r, "commit"); err == nil {
		t.Fatal("the connection survived the pattern")
	}
	c, r = dialLine(t, p.Addr)
	if got, err := roundTrip(c, r, "commit"); err != nil || got != "commit" {
		t.Fatalf("the rule must fire once: %q %v", got, err)
	}

	// DropAfter: the chunk over the limit never arrives.
	p.SetRule(DropAfter(Upstream, 4))
	c, r = dialLine(t, p.Addr)
	if got, err := roundTrip(c, r, "abc"); err != nil || got != "abc" {
		t.Fatalf("under the limit: %q %v", got, err)
	}
	if _, err := roundTrip(c, r, "defgh"); err == nil {
		t.Fatal("over the limit still answers")
	}

	// Hold, then Release.
	p.SetRule(HoldOn(Upstream, "wait"))
	c, r = dialLine(t, p.Addr)
	answered := make(chan string, 1)
	go func() { s, _ := roundTrip(c, r, "wait for me"); answered <- s }()
	select {
	case <-p.Held():
	case <-time.After(5 * time.Second):
		t.Fatal("nothing held")
	}
	select {
	case s := <-answered:
		t.Fatalf("a held line was answered: %q", s)
	case <-time.After(100 * time.Millisecond):
	}
	p.Release()
	if s := <-answered; s != "wait for me" {
		t.Fatalf("after release: %q", s)
	}
	p.SetRule(nil)

	// Refuse.
	p.Refuse(true)
	c, r = dialLine(t, p.Addr)
	if _, err := roundTrip(c, r, "x"); err == nil {
		t.Fatal("a refusing proxy answered")
	}
	p.Refuse(false)
	c, r = dialLine(t, p.Addr)
	if got, err := roundTrip(c, r, "back"); err != nil || got != "back" {
		t.Fatalf("after Refuse(false): %q %v", got, err)
	}
	if up, down := p.Bytes(); up == 0 || down == 0 || p.Cuts() < 3 {
		t.Fatalf("counters: up %d down %d cuts %d", up, down, p.Cuts())
	}

	if got := p.RewriteDSN("postgres://u:p@127.0.0.1:5432/db?sslmode=disable"); got != "postgres://u:p@"+p.Addr+"/db?sslmode=disable" {
		t.Fatalf("postgres DSN: %s", got)
	}
	if got := p.RewriteDSN("u:p@tcp(127.0.0.1:3306)/db?parseTime=true"); got != "u:p@tcp("+p.Addr+")/db?parseTime=true" {
		t.Fatalf("mysql DSN: %s", got)
	}
}
