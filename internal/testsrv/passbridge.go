package testsrv

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

var (
	buildOnce sync.Once
	buildBin  string
	buildErr  error
)

// Passbridge builds the real passbridge binary as `make build` does (static,
// CGO_ENABLED=0, -trimpath), once per test binary: every later call returns
// the same file, removed when the test binary ends (testsrv.Run).
func Passbridge(tb testing.TB) string {
	tb.Helper()
	buildOnce.Do(func() {
		out, err := exec.Command("go", "env", "GOMOD").Output()
		mod := strings.TrimSpace(string(out))
		if err != nil || mod == "" || mod == os.DevNull {
			buildErr = fmt.Errorf("find the module root (go env GOMOD = %q): %v", mod, err)
			return
		}
		dir, err := os.MkdirTemp("", "passbridge-bin-")
		if err != nil {
			buildErr = err
			return
		}
		onStop(func() { os.RemoveAll(dir) })
		bin := filepath.Join(dir, "passbridge")
		build := exec.Command("go", "build", "-trimpath", "-o", bin, "./cmd/passbridge")
		build.Dir = filepath.Dir(mod)
		build.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := build.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build ./cmd/passbridge: %v\n%s", err, out)
			return
		}
		buildBin = bin
	})
	if buildErr != nil {
		tb.Fatal(buildErr)
	}
	return buildBin
}

// DirectoryYAML is the directory block of a passbridge configuration that
// reads base on this server (OpenLDAP preset, StartTLS with the server's
// CA, the read-only service account), for tests that run the real binary.
// Each extra line ("max_deletions: 5%") is added to the block.
func (s *LDAP) DirectoryYAML(base string, extra ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "directory:\n  kind: openldap\n  urls: [%q]\n  start_tls: true\n  ca_file: %q\n  bind_dn: %q\n  bind_password: %q\n  base_dn: %q\n",
		s.URL, s.CAFile, s.BindDN, s.BindPassword, base)
	for _, l := range extra {
		b.WriteString("  " + l + "\n")
	}
	return b.String()
}

// DirectoryYAML is the directory block of a passbridge configuration that
// reads base on this domain controller (AD preset, LDAPS with the DC's CA,
// the read-only service account's UPN), for tests that run the real binary.
func (s *AD) DirectoryYAML(base string, extra ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "directory:\n  kind: ad\n  urls: [%q]\n  ca_file: %q\n  bind_dn: %q\n  bind_password: %q\n  base_dn: %q\n",
		s.LDAPSURL, s.CAFile, s.BindUPN, s.BindPassword, base)
	for _, l := range extra {
		b.WriteString("  " + l + "\n")
	}
	return b.String()
}
