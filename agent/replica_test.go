package agent

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/passbridge/passbridge/config"
	"github.com/passbridge/passbridge/internal/testsrv"
	"github.com/passbridge/passbridge/store"
)

// A replica is the test binary run again as a daemon process: the same
// wiring as `passbridge run` (store, migrate, the directory engine, the
// agent, SIGTERM handling), so that tests can kill it for real.
const (
	replicaNodeEnv = "PASSBRIDGE_TEST_AGENT_NODE"
	replicaAddrEnv = "PASSBRIDGE_TEST_AGENT_ADDR_FILE"
)

func init() { replicaMain = runReplica }

func runReplica() int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	log := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	fail := func(err error) int {
		log.Error("replica failed", "err", err)
		return 1
	}
	cfg, err := config.Load(os.Getenv(replicaEnv), nil)
	if err != nil {
		return fail(err)
	}
	db, err := store.Open(ctx, cfg.Database, log)
	if err != nil {
		return fail(err)
	}
	defer db.Close()
	if err := prepareApp(ctx, db, cfg); err != nil {
		return fail(err)
	}
	a, err := NewDaemon(cfg, db, log, Options{
		Node:      os.Getenv(replicaNodeEnv),
		ProbeTTL:  200 * time.Millisecond,
		RetryBase: 200 * time.Millisecond,
	})
	if err != nil {
		return fail(err)
	}
	go ReloadOnSIGHUP(ctx, a, func() (*config.Config, error) { return config.Load(os.Getenv(replicaEnv), nil) })
	err = a.Run(ctx, func(ad Addrs) {
		// Written whole then renamed: the test never reads half a line.
		p := os.Getenv(replicaAddrEnv)
		if werr := os.WriteFile(p+".tmp", []byte(ad.Portal.String()), 0o600); werr == nil {
			_ = os.Rename(p+".tmp", p)
		}
	})
	if err != nil {
		return fail(err)
	}
	return 0
}

// replica is one daemon process started by a test.
type replica struct {
	node string
	cmd  *exec.Cmd
	base string
	logf string
	done chan error
}

// writeConfig writes cfg's essentials as a YAML file a replica loads.
func writeConfig(t testing.TB, cfg *config.Config) string {
	t.Helper()
	y := fmt.Sprintf(`database:
  driver: %s
  dsn: %q
  connect_timeout: 20s
directory:
  kind: openldap
  urls: [%q]
  bind_dn: %q
  bind_password: %q
  base_dn: %q
  connect_timeout: 2s
  timeout: 30s
  max_deletions: 100%%
schedule:
  incremental: %q
  full: %q
portal:
  listen: 127.0.0.1:0
  rp_id: localhost
  origins: [http://localhost:8080]
admin:
  token: %q
  shutdown_grace: %s
  ready_max_sync_age: %s
`, cfg.Database.Driver, cfg.Database.DSN.Reveal(), cfg.Directory.URLs[0], cfg.Directory.BindDN,
		cfg.Directory.BindPassword.Reveal(), cfg.Directory.BaseDN, cfg.Schedule.Incremental, cfg.Schedule.Full,
		cfg.Admin.Token.Reveal(), cfg.Admin.ShutdownGrace, cfg.Admin.ReadyMaxAge)
	p := filepath.Join(t.TempDir(), "passbridge.yaml")
	if err := os.WriteFile(p, []byte(y), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := config.Load(p, nil); err != nil {
		t.Fatalf("replica configuration: %v\n%s", err, y)
	}
	return p
}

func startReplica(t testing.TB, cfgPath, node string) *replica {
	t.Helper()
	dir := t.TempDir()
	addrFile := filepath.Join(dir, "addr")
	r := &replica{node: node, logf: filepath.Join(dir, node+".log"), done: make(chan error, 1)}
	logw, err := os.Create(r.logf)
	if err != nil {
		t.Fatal(err)
	}
	r.cmd = exec.Command(os.Args[0], "-test.run=^$")
	r.cmd.Env = append(os.Environ(), replicaEnv+"="+cfgPath, replicaNodeEnv+"="+node, replicaAddrEnv+"="+addrFile)
	r.cmd.Stdout, r.cmd.Stderr = logw, logw
	// Its own process group: a signal to the test does not reach it, and
	// the kill below reaches only it.
	r.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := r.cmd.Start(); err != nil {
		t.Fatalf("start replica %s: %v", node, err)
	}
	go func() {
		r.done <- r.cmd.Wait()
		logw.Close()
	}()
	t.Cleanup(func() {
		if r.cmd.ProcessState == nil {
			_ = r.cmd.Process.Kill()
			<-r.done
		}
		if t.Failed() {
			r.dumpLog(t)
		}
	})
	waitFor(t, 60*time.Second, "replica "+node+" to listen", func() bool {
		select {
		case err := <-r.done:
			r.dumpLog(t)
			t.Fatalf("replica %s exited before listening: %v", node, err)
		default:
		}
		b, err := os.ReadFile(addrFile)
		if err == nil && len(b) > 0 {
			r.base = "http://" + strings.TrimSpace(string(b))
			return true
		}
		return false
	})
	return r
}

func (r *replica) dumpLog(t testing.TB) {
	b, _ := os.ReadFile(r.logf)
	t.Logf("--- log of replica %s ---\n%s", r.node, b)
}

// syncing reports whether the replica is inside a sync right now.
func (r *replica) syncing(t testing.TB) bool {
	v, _ := scrape(t, r.base+"/metrics")["passbridge_sync_running"].value(nil)
	return v == 1
}

// wait waits for the process to exit and returns its exit code.
func (r *replica) wait(t testing.TB, within time.Duration) int {
	t.Helper()
	select {
	case <-r.done:
	case <-time.After(within):
		t.Fatalf("replica %s still running %s after the signal", r.node, within)
	}
	return r.cmd.ProcessState.ExitCode()
}

// seedOU makes an OU with n users for one test.
func seedOU(t testing.TB, s *testsrv.LDAP, n int) string {
	t.Helper()
	ou := s.NewOU(t)
	for i := range n {
		s.AddUser(t, ou, fmt.Sprintf("u%03d", i), nil)
	}
	return ou
}
