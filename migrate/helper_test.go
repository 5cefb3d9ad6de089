package migrate

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/passbridge/passbridge/config"
	"github.com/passbridge/passbridge/store"
)

// The kill -9 tests re-run this test binary as a helper process that
// applies (or rolls back) the plan and stops dead at a chosen point, where
// the test SIGKILLs it: a real process death, with its connections cut by
// the kernel, not a cancelled context.

const (
	helperEnv = "PASSBRIDGE_TEST_MIGRATE_HELPER"
	pausedMsg = "PASSBRIDGE-HELPER-PAUSED"
)

type helperSpec struct {
	Database config.Database   `json:"database"`
	DSN      string            `json:"dsn"`
	Users    config.UsersTable `json:"users_table"`
	Prefix   string            `json:"prefix"`
	Chunk    int               `json:"chunk"`
	// Pause is "point:n": stop at hook point (before, executed, chunk) of
	// step n (0-based; for chunk: after baseline chunk n).
	Pause string `json:"pause"`
	Op    string `json:"op"` // apply | rollback
}

func helperMain() int {
	var spec helperSpec
	if err := json.Unmarshal([]byte(os.Getenv(helperEnv)), &spec); err != nil {
		fmt.Fprintln(os.Stderr, "helper spec:", err)
		return 2
	}
	spec.Database.DSN = config.Secret(spec.DSN)
	cfg := testConfig(spec.Database, spec.Users)
	if spec.Prefix != "" {
		cfg.Migrate.Prefix = spec.Prefix
	}
	ctx := context.Background()
	db, err := store.Open(ctx, cfg.Database, nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, "open:", err)
		return 2
	}
	opts := Options{chunk: spec.Chunk, Force: true, ExportPath: os.DevNull + ".unused"}
	opts.hook = func(point string, n int, s Step) {
		if fmt.Sprintf("%s:%d", point, n) == spec.Pause {
			fmt.Println(pausedMsg, s.ID())
			os.Stdout.Sync()
			time.Sleep(time.Hour) // until SIGKILL
		}
	}
	switch spec.Op {
	case "rollback":
		_, err = Rollback(ctx, db, cfg, opts)
	default:
		_, err = Apply(ctx, db, cfg, opts)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "helper:", err)
		return 1
	}
	fmt.Println("PASSBRIDGE-HELPER-DONE")
	return 0
}

// killAt runs the helper until it pauses at point, then SIGKILLs it. It
// fails the test if the helper finishes without reaching the point.
func killAt(t *testing.T, cfg *config.Config, op, pause string, chunk int) string {
	t.Helper()
	spec := helperSpec{Database: cfg.Database, DSN: cfg.Database.DSN.Reveal(), Users: cfg.UsersTable,
		Prefix: cfg.Migrate.Prefix, Chunk: chunk, Pause: pause, Op: op}
	js, _ := json.Marshal(spec)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"="+string(js))
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), pausedMsg) {
				done <- strings.TrimSpace(strings.TrimPrefix(sc.Text(), pausedMsg))
				io.Copy(io.Discard, stdout)
				return
			}
		}
		done <- ""
	}()
	var step string
	select {
	case step = <-done:
	case <-time.After(3 * time.Minute):
		cmd.Process.Kill()
		t.Fatalf("helper did not reach %s within 3 minutes; stderr:\n%s", pause, stderr.String())
	}
	if step == "" {
		cmd.Wait()
		t.Fatalf("helper ended without pausing at %s; stderr:\n%s", pause, stderr.String())
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	err = cmd.Wait()
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("helper was not killed by SIGKILL: %v", err)
	}
	return step
}
