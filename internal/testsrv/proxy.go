package testsrv

import (
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"net"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

// Proxy is a TCP proxy on a loopback port between the code under test and
// a real server (a database, a directory), for fault tests: it can cut
// every connection at once, as a network failure or a failover would, or
// do so at a chosen point of the conversation (after a number of bytes, on
// a statement), and it can hold a message so that the client is left
// waiting in the middle of an operation.
type Proxy struct {
	Addr   string // 127.0.0.1:port: connect here instead of Target
	Target string

	ln     net.Listener
	mu     sync.Mutex
	conns  map[*proxyConn]struct{}
	rule   Rule
	held   chan struct{} // closed when a chunk is first held under the rule
	heldOK bool
	resume chan struct{} // closed by Release
	refuse bool
	closed bool

	up, down atomic.Int64 // bytes forwarded to the server, to the client
	cuts     atomic.Int64 // connections cut by Cut or a rule
}

// Direction is the way a chunk travels through the proxy.
type Direction int

const (
	// Upstream: from the client to the server.
	Upstream Direction = iota
	// Downstream: from the server to the client.
	Downstream
)

func (d Direction) String() string {
	if d == Upstream {
		return "upstream"
	}
	return "downstream"
}

// Action is what a Rule decides for one chunk read from one side.
type Action int

const (
	// Forward passes the chunk on.
	Forward Action = iota
	// CutAfter forwards the chunk, then cuts every connection: the peer
	// received the message, its sender never hears back.
	CutAfter
	// Drop cuts every connection without forwarding the chunk: the
	// message is lost half-way.
	Drop
	// Hold keeps the chunk and stalls the connection, open, until
	// Release (the chunk is then forwarded) or Cut.
	Hold
)

// Rule looks at every chunk before it is forwarded. It is called from the
// connections' goroutines, one chunk at a time per direction and
// connection; a stateful rule must lock.
type Rule func(dir Direction, chunk []byte) Action

// StartProxy listens on a free loopback port and forwards each connection
// to target (host:port); it is closed when tb ends.
func StartProxy(tb testing.TB, target string) *Proxy {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("proxy: %v", err)
	}
	p := &Proxy{Addr: ln.Addr().String(), Target: target, ln: ln, conns: map[*proxyConn]struct{}{}}
	go p.accept()
	tb.Cleanup(p.Close)
	return p
}

// Close stops listening and closes every connection.
func (p *Proxy) Close() {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	p.ln.Close()
	p.Cut()
}

// SetRule applies r to every later chunk (nil: forward everything) and
// resets Held.
func (p *Proxy) SetRule(r Rule) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.rule = r
	p.held = make(chan struct{})
	p.heldOK = false
	if p.resume == nil {
		p.resume = make(chan struct{})
	}
}

// Held is closed once a chunk is held under the rule last set.
func (p *Proxy) Held() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.held == nil {
		p.held = make(chan struct{})
	}
	return p.held
}

// Release forwards the held chunks and lets their connections go on.
func (p *Proxy) Release() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.resume != nil {
		close(p.resume)
	}
	p.resume = make(chan struct{})
}

// Refuse makes the proxy close new connections at once (a server that is
// down) until Refuse(false).
func (p *Proxy) Refuse(on bool) {
	p.mu.Lock()
	p.refuse = on
	p.mu.Unlock()
}

// Cut closes every open connection at once, both sides, with a reset: the
// client sees its connection broken, the server the client gone. New
// connections still pass. It returns how many were cut.
func (p *Proxy) Cut() int {
	p.mu.Lock()
	conns := make([]*proxyConn, 0, len(p.conns))
	for c := range p.conns {
		conns = append(conns, c)
	}
	p.mu.Unlock()
	p.cuts.Add(int64(len(conns))) // before: a client may see the cut at once
	for _, c := range conns {
		c.close(true)
	}
	return len(conns)
}

// Conns is the number of open connections.
func (p *Proxy) Conns() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.conns)
}

// Bytes is what has been forwarded so far: to the server, to the client.
func (p *Proxy) Bytes() (up, down int64) { return p.up.Load(), p.down.Load() }

// Cuts is the number of connections cut so far.
func (p *Proxy) Cuts() int64 { return p.cuts.Load() }

// RewriteDSN returns dsn (a postgres:// URL or a go-sql-driver/mysql DSN
// with tcp(host:port)) with the server's address replaced by the proxy's.
func (p *Proxy) RewriteDSN(dsn string) string {
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		u, err := url.Parse(dsn)
		if err != nil {
			panic(fmt.Sprintf("proxy: bad DSN: %v", err))
		}
		u.Host = p.Addr
		return u.String()
	}
	i := strings.Index(dsn, "@tcp(")
	j := strings.Index(dsn[max(i, 0):], ")")
	if i < 0 || j < 0 {
		panic("proxy: a DSN with neither postgres:// nor @tcp(host:port)")
	}
	return dsn[:i] + "@tcp(" + p.Addr + dsn[i+j:]
}

// CutOn is a rule that cuts every connection once a chunk going dir that
// contains pattern (case-insensitively) has been forwarded (CutAfter) or
// instead of forwarding it (Drop), the first time only.
func CutOn(dir Direction, pattern string, action Action) Rule {
	return onceOn(dir, pattern, action)
}

// HoldOn is a rule that holds the first chunk going dir that contains
// pattern (case-insensitively).
func HoldOn(dir Direction, pattern string) Rule { return onceOn(dir, pattern, Hold) }

func onceOn(dir Direction, pattern string, action Action) Rule {
	pat := bytes.ToLower([]byte(pattern))
	var mu sync.Mutex
	done := false
	return func(d Direction, chunk []byte) Action {
		mu.Lock()
		defer mu.Unlock()
		if done || d != dir || !bytes.Contains(bytes.ToLower(chunk), pat) {
			return Forward
		}
		done = true
		return action
	}
}

// DropAfter is a rule that cuts every connection, losing the chunk in
// flight, once more than n bytes have gone dir under it.
func DropAfter(dir Direction, n int64) Rule {
	var mu sync.Mutex
	var seen int64
	done := false
	return func(d Direction, chunk []byte) Action {
		mu.Lock()
		defer mu.Unlock()
		if done || d != dir {
			return Forward
		}
		seen += int64(len(chunk))
		if seen > n {
			done = true
			return Drop
		}
		return Forward
	}
}

func (p *Proxy) accept() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		refuse := p.refuse || p.closed
		p.mu.Unlock()
		if refuse {
			c.Close()
			continue
		}
		go p.serve(c)
	}
}

type proxyConn struct {
	client, server net.Conn
	once           sync.Once
	done           chan struct{}
	// mute is set before a CutAfter chunk is forwarded: from then on
	// nothing more is forwarded either way, so the answer to that chunk
	// cannot slip through before the cut (the peer can answer as soon as
	// it has the chunk).
	mute atomic.Bool
}

func (c *proxyConn) close(reset bool) {
	c.once.Do(func() {
		if reset {
			for _, n := range []net.Conn{c.client, c.server} {
				if tc, ok := n.(*net.TCPConn); ok {
					tc.SetLinger(0)
				}
			}
		}
		c.client.Close()
		c.server.Close()
		close(c.done)
	})
}

func (p *Proxy) serve(client net.Conn) {
	server, err := net.Dial("tcp", p.Target)
	if err != nil {
		client.Close()
		return
	}
	c := &proxyConn{client: client, server: server, done: make(chan struct{})}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		c.close(true)
		return
	}
	p.conns[c] = struct{}{}
	p.mu.Unlock()
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); p.pump(c, Upstream, client, server, &p.up) }()
	go func() { defer wg.Done(); p.pump(c, Downstream, server, client, &p.down) }()
	wg.Wait()
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
}

func (p *Proxy) pump(c *proxyConn, dir Direction, from, to net.Conn, count *atomic.Int64) {
	defer c.close(false)
	buf := make([]byte, 32<<10)
	for {
		n, err := from.Read(buf)
		if n > 0 {
			chunk := buf[:n]
			p.mu.Lock()
			rule := p.rule
			p.mu.Unlock()
			action := Forward
			if rule != nil {
				action = rule(dir, chunk)
			}
			switch action {
			case Drop:
				p.Cut()
				return
			case Hold:
				p.mu.Lock()
				if !p.heldOK {
					p.heldOK = true
					close(p.held)
				}
				resume := p.resume
				p.mu.Unlock()
				select {
				case <-resume:
				case <-c.done:
					return
				}
			}
			if action == CutAfter {
				c.mute.Store(true)
			} else if c.mute.Load() {
				// Swallowed: the cut that follows closes both sides (closing
				// here would let the client go on before the cut).
				continue
			}
			if _, werr := to.Write(chunk); werr != nil {
				return
			}
			count.Add(int64(n))
			if action == CutAfter {
				p.Cut()
				return
			}
		}
		if err != nil {
			return // EOF or a reset: the other side is closed too
		}
	}
}

// Churn takes n connections of db's pool at once, pings each and returns
// them to the pool: the pool of a busy process whose goroutines take and
// return connections, as it is a moment before a cut. Drivers hand such a
// connection out again without a ping (pgx within a second of its last
// use), which is what a test of what follows a cut needs.
func Churn(tb testing.TB, db *sql.DB, n int) {
	tb.Helper()
	ctx := context.Background()
	var conns []*sql.Conn
	for range n {
		c, err := db.Conn(ctx)
		if err != nil {
			tb.Fatal(err)
		}
		conns = append(conns, c)
	}
	for _, c := range conns {
		if err := c.PingContext(ctx); err != nil {
			tb.Fatal(err)
		}
		c.Close()
	}
}
