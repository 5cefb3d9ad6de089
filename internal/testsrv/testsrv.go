// Package testsrv starts throwaway real servers for tests, from the binaries
// of Debian packages: PostgreSQL, MariaDB, OpenLDAP slapd, a Samba AD domain
// controller and headless Chromium. Each server starts at most once per test
// package, lazily on first use, in a temporary directory on a loopback
// address, and is always stopped: a package that uses testsrv has
//
//	func TestMain(m *testing.M) { os.Exit(testsrv.Run(m)) }
//
// When a binary is missing the test is skipped with the package to install,
// except under `make test` (PASSBRIDGE_TEST_REQUIRE_SERVERS=1), where it fails.
package testsrv

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"
)

var (
	stopMu sync.Mutex
	stops  []func()
)

// onStop registers fn to run when the test binary ends (LIFO).
func onStop(fn func()) {
	stopMu.Lock()
	defer stopMu.Unlock()
	stops = append(stops, fn)
}

func stopAll() {
	stopMu.Lock()
	fns := stops
	stops = nil
	stopMu.Unlock()
	for i := len(fns) - 1; i >= 0; i-- {
		fns[i]()
	}
}

// Run runs the tests and then stops every server they started, also when the
// test binary is interrupted.
func Run(m *testing.M) int {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	go func() {
		if _, ok := <-sig; ok {
			stopAll()
			os.Exit(130)
		}
	}()
	code := m.Run()
	signal.Stop(sig)
	close(sig)
	stopAll()
	return code
}

// Required reports whether missing servers must fail rather than skip.
func Required() bool { return os.Getenv("PASSBRIDGE_TEST_REQUIRE_SERVERS") == "1" }

// extraBinDirs are searched after PATH: Debian puts server binaries in sbin
// and PostgreSQL's in a versioned lib directory.
var extraBinDirs = []string{"/usr/sbin", "/sbin", "/usr/lib/postgresql/15/bin", "/usr/local/sbin"}

// Binary finds an executable or skips (fails under make test) naming the
// Debian package that provides it.
func Binary(tb testing.TB, name, debianPackage string) string {
	tb.Helper()
	if p, err := LookBinary(name); err == nil {
		return p
	}
	msg := fmt.Sprintf("%s not found: install the Debian package %s (make test installs it when run as root)", name, debianPackage)
	if Required() {
		tb.Fatal(msg)
	}
	tb.Skip(msg)
	return ""
}

// LookBinary finds an executable in PATH or the usual server directories.
func LookBinary(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, d := range extraBinDirs {
		p := filepath.Join(d, name)
		if st, err := os.Stat(p); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s: not found", name)
}

// FreePort returns a TCP port on 127.0.0.1 that is free now.
func FreePort(tb testing.TB) int {
	tb.Helper()
	p, err := freePort()
	if err != nil {
		tb.Fatal(err)
	}
	return p
}

// Ports for test servers come from below the kernel's ephemeral range
// (32768-60999 on Linux): a port the kernel handed out for ":0" is soon
// reused as the source port of some outgoing connection, and the server
// that was meant to bind it then fails with "address already in use".
const portLow, portHigh = 20000, 32000

// freePort picks a random port in [portLow, portHigh) that can be bound on
// 127.0.0.1 right now.
func freePort() (int, error) {
	for range 200 {
		p := portLow + rand.IntN(portHigh-portLow)
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err != nil {
			continue
		}
		l.Close()
		return p, nil
	}
	return 0, fmt.Errorf("free port: none free between %d and %d on 127.0.0.1", portLow, portHigh)
}

// WaitTCP waits until addr accepts connections or ctx ends.
func WaitTCP(ctx context.Context, addr string) error {
	var d net.Dialer
	for {
		c, err := d.DialContext(ctx, "tcp", addr)
		if err == nil {
			c.Close()
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s did not accept connections: %w", addr, err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// TempDir makes a directory that outlives single tests (servers are shared
// by a whole package) and is removed when the test binary ends.
func TempDir(tb testing.TB, pattern string) string {
	tb.Helper()
	dir, err := os.MkdirTemp("", "passbridge-"+pattern+"-")
	if err != nil {
		tb.Fatal(err)
	}
	onStop(func() { os.RemoveAll(dir) })
	return dir
}

// DSN makes an empty database of driver ("sqlite", "postgres" or "mysql",
// as in database.driver) for one test and returns its DSN: an SQLite file
// in the test's temporary directory, or a new database on the shared
// PostgreSQL 15 or MariaDB server.
func DSN(tb testing.TB, driver string) string {
	tb.Helper()
	switch driver {
	case "sqlite":
		return filepath.Join(tb.TempDir(), "app.db")
	case "postgres":
		return Postgres(tb).NewDatabase(tb)
	case "mysql":
		return MariaDB(tb).NewDatabase(tb)
	}
	tb.Fatalf("unknown database driver %q (want sqlite, postgres or mysql)", driver)
	return ""
}

// Buffer is a bytes.Buffer that one goroutine may write (a process's
// output, a log handler) while the test reads it.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

// String is what has been written so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
