package testsrv

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
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

	mu    sync.Mutex
	cmd   *exec.Cmd
	stdin io.WriteCloser
	done  chan struct{}
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
	p.cmd, p.stdin, p.done = cmd, stdin, done
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
	if sig == syscall.SIGSTOP {
		// kill returns before every thread has stopped: a thread already
		// running may still answer a request. Wait until all are stopped.
		return waitStopped(p.cmd.Process.Pid, 10*time.Second)
	}
	return nil
}

// waitStopped waits until every thread of pid is in the stopped state.
func waitStopped(pid int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		stopped, err := allThreadsStopped(pid)
		if err != nil || stopped {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("process %d did not stop within %s", pid, timeout)
		}
		time.Sleep(time.Millisecond)
	}
}

func allThreadsStopped(pid int) (bool, error) {
	tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/stat", pid))
	if err != nil || len(tasks) == 0 {
		return false, fmt.Errorf("threads of process %d: not found", pid)
	}
	for _, t := range tasks {
		b, err := os.ReadFile(t)
		if err != nil {
			return false, nil // a thread just exited; look again
		}
		// The state follows the command name, which is in parentheses.
		i := strings.LastIndexByte(string(b), ')')
		if i < 0 || i+2 >= len(b) {
			return false, fmt.Errorf("parse %s", t)
		}
		if st := b[i+2]; st != 'T' && st != 't' {
			return false, nil
		}
	}
	return true, nil
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

// serverDir makes a fresh temporary directory passbridge-<kind>-* that
// records the test binary's pid. Directories of test binaries that died
// without cleaning up (killed, or timed out by go test) are removed first:
// their servers died with them (Pdeathsig).
func serverDir(kind string) (string, error) {
	prefix := "passbridge-" + kind + "-"
	old, _ := filepath.Glob(filepath.Join(os.TempDir(), prefix+"*"))
	for _, d := range old {
		b, err := os.ReadFile(filepath.Join(d, "owner.pid"))
		if err != nil {
			continue // not ours, or being created right now
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil || pid <= 0 {
			continue
		}
		if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
			os.RemoveAll(d)
		}
	}
	dir, err := os.MkdirTemp("", prefix)
	if err != nil {
		return "", fmt.Errorf("%s dir: %w", kind, err)
	}
	if err := os.WriteFile(filepath.Join(dir, "owner.pid"), []byte(strconv.Itoa(os.Getpid())+"\n"), 0o600); err != nil {
		os.RemoveAll(dir)
		return "", fmt.Errorf("%s dir: %w", kind, err)
	}
	return dir, nil
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
