package appsignin_test

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/passbridge/passbridge/internal/testsrv"
)

// nodeDir installs the Node packages of testdata/node/package.json (exact
// versions, from the npm registry) once per machine, under a directory
// named by the file's hash in the user's cache, and returns a fresh
// directory holding the scripts of testdata/node with those packages: the
// non-Go clients are installed by the test itself, as CI runs on a fresh
// clone.
func nodeDir(t testing.TB) string {
	t.Helper()
	testsrv.Binary(t, "node", "nodejs")
	npm := testsrv.Binary(t, "npm", "nodejs")

	pkg, err := os.ReadFile("testdata/node/package.json")
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(pkg)
	cache, err := os.UserCacheDir()
	if err != nil {
		t.Fatal(err)
	}
	final := filepath.Join(cache, "passbridge", "npm-"+hex.EncodeToString(sum[:8]))
	if _, err := os.Stat(filepath.Join(final, "node_modules", "jose")); err != nil {
		if err := os.MkdirAll(filepath.Dir(final), 0o755); err != nil {
			t.Fatal(err)
		}
		tmp, err := os.MkdirTemp(filepath.Dir(final), "npm-install-")
		if err != nil {
			t.Fatal(err)
		}
		defer os.RemoveAll(tmp)
		if err := os.WriteFile(filepath.Join(tmp, "package.json"), pkg, 0o644); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(npm, "install", "--no-audit", "--no-fund", "--no-package-lock", "--loglevel=error")
		cmd.Dir = tmp
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("npm install (%s): %v\n%s", strings.TrimSpace(string(pkg)), err, out)
		}
		// Another test process may have installed it meanwhile: its copy
		// is as good.
		if err := os.Rename(tmp, final); err != nil {
			if _, serr := os.Stat(filepath.Join(final, "node_modules", "jose")); serr != nil {
				t.Fatalf("install the Node packages: %v", err)
			}
		}
	}
	dir := t.TempDir()
	if err := os.Symlink(filepath.Join(final, "node_modules"), filepath.Join(dir, "node_modules")); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"package.json", "backend.mjs", "rp.mjs"} {
		b, err := os.ReadFile(filepath.Join("testdata/node", f))
		if err != nil {
			continue
		}
		if err := os.WriteFile(filepath.Join(dir, f), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// startNode runs a Node script that prints its port as its first line
// ({"port": N}) and serves until the test ends.
func startNode(t testing.TB, dir, script string, env ...string) int {
	t.Helper()
	cmd := exec.Command(testsrv.Binary(t, "node", "nodejs"), script)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	var stderr testsrv.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		if sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	select {
	case line, ok := <-lines:
		var m struct{ Port int }
		if !ok || json.Unmarshal([]byte(line), &m) != nil || m.Port == 0 {
			t.Fatalf("node %s did not start: %q\n%s", script, line, stderr.String())
		}
		return m.Port
	case <-time.After(30 * time.Second):
		t.Fatalf("node %s did not start\n%s", script, stderr.String())
	}
	return 0
}
