package agent

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestServerLimits: every listener has all five limits, in a sane order
// (the header deadline within the read deadline within the write one).
func TestServerLimits(t *testing.T) {
	s := newServer(http.NotFoundHandler())
	if s.ReadHeaderTimeout <= 0 || s.ReadTimeout <= 0 || s.WriteTimeout <= 0 || s.IdleTimeout <= 0 || s.MaxHeaderBytes <= 0 {
		t.Fatalf("a limit is not set: %+v", serverLimits)
	}
	if s.ReadHeaderTimeout > s.ReadTimeout || s.ReadTimeout > s.WriteTimeout || s.MaxHeaderBytes > 1<<20 {
		t.Fatalf("limits out of order: %+v", serverLimits)
	}
}

// shortLimits makes the listeners' deadlines short for one test.
func shortLimits(t *testing.T, header, read, idle time.Duration) {
	saved := serverLimits
	serverLimits.ReadHeader, serverLimits.Read, serverLimits.Idle = header, read, idle
	t.Cleanup(func() { serverLimits = saved })
}

// trickle writes head, then one byte of drip every interval until the
// server closes the connection (a write or the reader fails) or limit has
// passed; it returns how long the connection lived and what the server
// sent.
func trickle(t *testing.T, addr, head string, interval, limit time.Duration) (time.Duration, string) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	start := time.Now()
	closed := make(chan string, 1)
	go func() {
		b, _ := io.ReadAll(conn) // until the server closes
		closed <- string(b)
	}()
	if _, err := io.WriteString(conn, head); err != nil {
		t.Fatal(err)
	}
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case got := <-closed:
			return time.Since(start), got
		case <-tick.C:
			if time.Since(start) > limit {
				return time.Since(start), "(still open)"
			}
			if _, err := conn.Write([]byte("a")); err != nil {
				return time.Since(start), "(write failed: " + err.Error() + ")"
			}
		}
	}
}

// TestSlowloris: clients that send their headers a byte at a time, or the
// body of a request a byte at a time, or that go idle on a kept-alive
// connection, are cut off by the server's deadlines on both listeners,
// while everyone else is served meanwhile.
func TestSlowloris(t *testing.T) {
	const header, read, idle = 1 * time.Second, 2 * time.Second, 1 * time.Second
	shortLimits(t, header, read, idle)
	cfg := testConfig(t, newDatabase(t, onSQLite), nil, "")
	cfg.Admin.Listen = "127.0.0.1:0"
	db := openApp(t, cfg)
	r := startAgent(t, cfg, db, newGateSyncer(db, cfg, "n1"), Options{NoCatchUp: true})
	listeners := map[string]string{"portal": r.addrs.Portal.String(), "admin": r.addrs.Admin.String()}

	for name, addr := range listeners {
		t.Run(name, func(t *testing.T) {
			// Ten slow-header clients at once, each sending a byte every
			// 250 ms: the trickle does not extend the header deadline.
			var wg sync.WaitGroup
			lived := make([]time.Duration, 10)
			for i := range lived {
				wg.Add(1)
				go func() {
					defer wg.Done()
					lived[i], _ = trickle(t, addr, "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ", 250*time.Millisecond, 10*time.Second)
				}()
			}
			// Meanwhile a normal client is served.
			time.Sleep(300 * time.Millisecond)
			res, err := http.Get("http://" + addr + "/healthz")
			if err != nil {
				t.Fatalf("a normal client during the slow-loris: %v", err)
			}
			res.Body.Close()
			if res.StatusCode != http.StatusOK {
				t.Fatalf("a normal client during the slow-loris: %d", res.StatusCode)
			}
			wg.Wait()
			for i, d := range lived {
				if d < header-100*time.Millisecond || d > header+2*time.Second {
					t.Errorf("slow-header client %d lived %s; ReadHeaderTimeout is %s", i, d, header)
				}
			}

			// One byte per second, as a real slow-loris does.
			if d, _ := trickle(t, addr, "GET /healthz HTTP/1.1\r\n", time.Second, 10*time.Second); d > header+2*time.Second {
				t.Errorf("a byte-per-second client lived %s", d)
			}

			// A slow body: the headers arrive at once, the body a byte at
			// a time; ReadTimeout ends the request, and nothing runs.
			head := "POST /api/v1/sync HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + testToken +
				"\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{\"full\":"
			path := "admin API"
			if name == "portal" {
				head = strings.Replace(head, "/api/v1/sync", "/healthz", 1)
				path = "portal"
			}
			d, got := trickle(t, addr, head, 200*time.Millisecond, 15*time.Second)
			if d > read+3*time.Second {
				t.Errorf("%s: a slow body lived %s; ReadTimeout is %s", path, d, read)
			}
			if strings.HasPrefix(got, "HTTP/1.1 2") && name == "admin" {
				t.Errorf("a slow body was accepted: %.200s", got)
			}

			// An idle kept-alive connection is closed after IdleTimeout.
			conn, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			if _, err := io.WriteString(conn, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
				t.Fatal(err)
			}
			br := bufio.NewReader(conn)
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			start := time.Now()
			_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
			if _, err := br.ReadByte(); err != io.EOF {
				t.Errorf("idle connection: %v, want EOF", err)
			}
			if d := time.Since(start); d > idle+2*time.Second {
				t.Errorf("an idle connection lived %s; IdleTimeout is %s", d, idle)
			}
		})
	}
}

// TestOversizedHeaders: headers over MaxHeaderBytes get a 431, on both
// listeners, without the server reading them all.
func TestOversizedHeaders(t *testing.T) {
	cfg := testConfig(t, newDatabase(t, onSQLite), nil, "")
	cfg.Admin.Listen = "127.0.0.1:0"
	db := openApp(t, cfg)
	r := startAgent(t, cfg, db, newGateSyncer(db, cfg, "n1"), Options{NoCatchUp: true})
	for _, addr := range []string{r.addrs.Portal.String(), r.addrs.Admin.String()} {
		req, _ := http.NewRequest(http.MethodGet, "http://"+addr+"/healthz", nil)
		req.Header.Set("X-Big", strings.Repeat("a", 2*serverLimits.MaxHeaderBytes))
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("%s: %v", addr, err)
		}
		res.Body.Close()
		if res.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
			t.Errorf("%s: oversized headers: %d, want 431", addr, res.StatusCode)
		}
	}
}
