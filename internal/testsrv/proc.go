package testsrv

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// proc is one server process that tests may kill, freeze and restart.
type proc struct {
	name    string
	path    string
	args    []string
	logPath string
	// keepStdin gives the process a pipe as stdin that stays open while it
	// runs: samba in the foreground exits when its stdin reaches EOF, so it
	// dies with the test binary even when that is killed.
	keepStdin bool

	mu     sync.Mutex
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	done   chan struct{}
	frozen bool
}

// start runs the process; the caller waits for it to be ready.
func (p *proc) start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil && !isClosed(p.done) {
		return fmt.Errorf("%s is already running (pid %d)", p.name, p.cmd.Process.Pid)
	}
	logf, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("open %s log: %w", p.name, err)
	}
	cmd := exec.Command(p.path, p.args...)
	cmd.Dir = filepath.Dir(p.logPath)
	cmd.Stdout = logf
	cmd.Stderr = logf
	cmd.SysProcAttr = &syscall.SysProcAttr{
		// Own process group, so that the whole server and anything it
		// spawned can be signalled at once.
		Setpgid: true,
		// Never outlive the test binary, even when it is killed: an orphan
		// would keep the ports or the Samba address busy.
		Pdeathsig: syscall.SIGKILL,
	}
	var stdin io.WriteCloser
	if p.keepStdin {
		if stdin, err = cmd.StdinPipe(); err != nil {
			logf.Close()
			return fmt.Errorf("%s stdin: %w", p.name, err)
		}
	}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("start %s: %w", p.name, err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		logf.Close()
		close(done)
	}()
	p.cmd, p.stdin, p.done, p.frozen = cmd, stdin, done, false
	return nil
}

// exited is closed when the current process ends (nil before the first start).
func (p *proc) exited() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.done
}

func (p *proc) running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cmd != nil && !isClosed(p.done)
}

func (p *proc) pid() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil || isClosed(p.done) {
		return 0
	}
	return p.cmd.Process.Pid
}

// signalGroup sends sig to the server's process group.
func (p *proc) signalGroup(sig syscall.Signal) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil || isClosed(p.done) {
		return fmt.Errorf("%s is not running", p.name)
	}
	if err := syscall.Kill(-p.cmd.Process.Pid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("signal %s: %w", p.name, err)
	}
	switch sig {
	case syscall.SIGSTOP:
		p.frozen = true
	case syscall.SIGCONT:
		p.frozen = false
	}
	return nil
}

// kill ends the process abruptly (SIGKILL) and waits until it is gone.
func (p *proc) kill() error {
	if err := p.signalGroup(syscall.SIGKILL); err != nil {
		return err
	}
	return p.wait(30 * time.Second)
}

// terminate asks the process to stop (SIGTERM), waits, and kills it if it
// does not stop in time. It does nothing when the process is not running.
func (p *proc) terminate(grace time.Duration) error {
	if !p.running() {
		return nil
	}
	// A stopped process only acts on SIGTERM once it is continued.
	_ = p.signalGroup(syscall.SIGCONT)
	p.mu.Lock()
	if p.stdin != nil {
		p.stdin.Close()
	}
	p.mu.Unlock()
	_ = p.signalGroup(syscall.SIGTERM)
	if err := p.wait(grace); err == nil {
		return nil
	}
	_ = p.signalGroup(syscall.SIGKILL)
	return p.wait(30 * time.Second)
}

func (p *proc) wait(timeout time.Duration) error {
	done := p.exited()
	if done == nil {
		return nil
	}
	select {
	case <-done:
		return nil
	case <-time.After(timeout):
		return fmt.Errorf("%s did not exit within %s", p.name, timeout)
	}
}

// logTail returns the end of the server's log for error messages.
func (p *proc) logTail() string {
	b, err := os.ReadFile(p.logPath)
	if err != nil {
		return ""
	}
	const max = 3000
	if len(b) > max {
		b = b[len(b)-max:]
	}
	return strings.TrimSpace(string(b))
}

func isClosed(ch <-chan struct{}) bool {
	if ch == nil {
		return true
	}
	select {
	case <-ch:
		return true
	default:
		return false
	}
}
