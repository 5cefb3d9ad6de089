package testsrv

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// dbProc is a database server process (postgres, mariadbd) started for the
// tests of one package.
type dbProc struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	done    chan struct{} // closed once the process has exited and been reaped
	stopMu  sync.Mutex
}

// startDBProc starts cmd with its output appended to logPath, as the given
// user when cred is not nil. deathSig is sent to the server by the kernel if
// the test binary dies without stopping it (go test -timeout, SIGKILL): the
// signal is tied to the thread that forked, so that thread stays locked to
// the goroutine that waits for the process for the process's whole life.
func startDBProc(name string, cmd *exec.Cmd, logPath string, cred *syscall.Credential, deathSig syscall.Signal) (*dbProc, error) {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open %s log: %w", name, err)
	}
	cmd.Stdout = logf
	cmd.Stderr = logf
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Credential: cred,
		// Own process group: ^C in the terminal reaches the test binary,
		// which stops the server in order, instead of killing it mid-write.
		Setpgid:   true,
		Pdeathsig: deathSig,
	}
	p := &dbProc{name: name, cmd: cmd, logPath: logPath, done: make(chan struct{})}
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		// Never unlocked: when this goroutine ends the thread ends too, and
		// by then the process is gone.
		if err := cmd.Start(); err != nil {
			logf.Close()
			started <- err
			close(p.done)
			return
		}
		started <- nil
		_ = cmd.Wait()
		logf.Close()
		close(p.done)
	}()
	if err := <-started; err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	return p, nil
}

func (p *dbProc) pid() int { return p.cmd.Process.Pid }

// exited reports whether the process has ended.
func (p *dbProc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends sig, waits up to grace for the process to exit, and kills it
// (and its process group) if it does not. It is safe to call more than once.
func (p *dbProc) stop(sig syscall.Signal, grace time.Duration) error {
	p.stopMu.Lock()
	defer p.stopMu.Unlock()
	if p.exited() {
		return nil
	}
	if err := p.cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("signal %s: %w", p.name, err)
	}
	select {
	case <-p.done:
		return nil
	case <-time.After(grace):
	}
	_ = syscall.Kill(-p.pid(), syscall.SIGKILL)
	select {
	case <-p.done:
		return fmt.Errorf("%s did not stop within %s after %s and was killed", p.name, grace, sig)
	case <-time.After(30 * time.Second):
		return fmt.Errorf("%s (pid %d) survived SIGKILL", p.name, p.pid())
	}
}

// logTail returns the end of the server's log for error messages.
func (p *dbProc) logTail() string { return dbLogTail(p.logPath) }

func dbLogTail(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	const max = 3000
	if len(b) > max {
		b = b[len(b)-max:]
	}
	return strings.TrimSpace(string(b))
}

// dbSystemUser returns the credential to run a server as the named system
// user when the tests run as root (PostgreSQL refuses to run as root, and a
// server should not run as root anyway), or nil otherwise. uid and gid are
// the owner the server's files must have.
func dbSystemUser(name, debianPackage string) (cred *syscall.Credential, uid, gid int, err error) {
	if os.Geteuid() != 0 {
		return nil, os.Geteuid(), os.Getegid(), nil
	}
	u, err := user.Lookup(name)
	if err != nil {
		return nil, 0, 0, fmt.Errorf("running as root needs the system user %q to run the server (the Debian package %s creates it): %w", name, debianPackage, err)
	}
	uid, err = strconv.Atoi(u.Uid)
	if err != nil {
		return nil, 0, 0, fmt.Errorf("user %s: uid %q: %w", name, u.Uid, err)
	}
	gid, err = strconv.Atoi(u.Gid)
	if err != nil {
		return nil, 0, 0, fmt.Errorf("user %s: gid %q: %w", name, u.Gid, err)
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, uid, gid, nil
}

// dbChownR gives dir and everything below it to uid:gid (a no-op when they
// already are the current user's).
func dbChownR(dir string, uid, gid int) error {
	if uid == os.Geteuid() && gid == os.Getegid() {
		return nil
	}
	return filepath.WalkDir(dir, func(path string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(path, uid, gid)
	})
}

// dbTempDir makes the server's directory, removed when the test binary ends
// (registered before the server's own stop, so it runs after it).
func dbTempDir(pattern string) (string, error) {
	dir, err := os.MkdirTemp("", "passbridge-"+pattern+"-")
	if err != nil {
		return "", fmt.Errorf("temp dir: %w", err)
	}
	onStop(func() { os.RemoveAll(dir) })
	return dir, nil
}

// dbRandomHex returns n random bytes as hex: passwords that need no quoting
// in SQL literals, DSNs or URLs.
func dbRandomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	return hex.EncodeToString(b)
}

// dbTestName turns a test name into a database name that needs no quoting
// and fits the 63-byte PostgreSQL and 64-character MySQL limits.
func dbTestName(testName string, n int64) string {
	var b strings.Builder
	b.WriteString("t_")
	for _, r := range strings.ToLower(testName) {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
			b.WriteRune(r)
		default:
			b.WriteByte('_')
		}
		if b.Len() >= 44 {
			break
		}
	}
	return fmt.Sprintf("%s_%d", b.String(), n)
}
