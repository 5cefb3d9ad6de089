package main

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const icon = "data:image/svg+xml;base64,PHN2ZyB4bWxucz0iaHR0cDovL3d3dy53My5vcmcvMjAwMC9zdmciLz4="

// combined is the upstream combined_aaguid.json format, unsorted, with
// icons, upper-case hex and a name with a trailing space.
var combined = `{
  "fbfc3007-154e-4ecc-8c0b-6e020557d7bd": {"name": "Apple Passwords", "icon_dark": "` + icon + `", "icon_light": "` + icon + `"},
  "EA9B8D66-4D01-1D21-3CE4-B6B48CB575D4": {"name": "Google Password Manager", "icon_dark": "` + icon + `"},
  "c611b55c-77b2-4527-8082-590e931b2f08": {"name": "GoTrust Idem Key "},
  "08987058-cadc-4b81-b6e1-30de50dcbe96": {"name": "Windows Hello & Co <x>"}
}`

const wantCombined = `{
  "08987058-cadc-4b81-b6e1-30de50dcbe96": "Windows Hello & Co <x>",
  "c611b55c-77b2-4527-8082-590e931b2f08": "GoTrust Idem Key",
  "ea9b8d66-4d01-1d21-3ce4-b6b48cb575d4": "Google Password Manager",
  "fbfc3007-154e-4ecc-8c0b-6e020557d7bd": "Apple Passwords"
}
`

const previous = "{\n  \"ea9b8d66-4d01-1d21-3ce4-b6b48cb575d4\": \"previous\"\n}\n"

type result struct {
	code           int
	stdout, stderr string
}

func gen(t *testing.T, args ...string) result {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), args, &stdout, &stderr)
	return result{code, stdout.String(), stderr.String()}
}

func writeFile(t *testing.T, path, data string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

// checkUntouched checks that out still holds previous and that no
// temporary file was left beside it.
func checkUntouched(t *testing.T, out string) {
	t.Helper()
	got, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != previous {
		t.Errorf("output changed on failure:\n%s", got)
	}
	checkNoTemp(t, filepath.Dir(out))
}

func checkNoTemp(t *testing.T, dir string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if strings.Contains(e.Name(), ".tmp-") {
			t.Errorf("temporary file left behind: %s", e.Name())
		}
	}
}

func TestFromCombinedFile(t *testing.T) {
	dir := t.TempDir()
	in, out := filepath.Join(dir, "combined.json"), filepath.Join(dir, "aaguids.json")
	writeFile(t, in, combined)
	writeFile(t, out, previous)
	r := gen(t, "-from", in, "-o", out, "-min", "1")
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	if !strings.Contains(r.stdout, "wrote 4 entries") {
		t.Errorf("stdout = %q", r.stdout)
	}
	got, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != wantCombined {
		t.Errorf("output:\n%s\nwant:\n%s", got, wantCombined)
	}
	if fi, err := os.Stat(out); err != nil || fi.Mode().Perm() != 0o644 {
		t.Errorf("output mode = %v, %v; want 0644", fi.Mode(), err)
	}
	checkNoTemp(t, dir)

	// Its own output (the names-only format) is accepted and gives the
	// same bytes back.
	out2 := filepath.Join(dir, "again.json")
	if r := gen(t, "-from", out, "-o", out2, "-min", "1"); r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	if again, _ := os.ReadFile(out2); !bytes.Equal(again, got) {
		t.Errorf("regenerating from the output changed it:\n%s", again)
	}
}

// TestBundledFileIsCanonical regenerates the committed table from itself:
// it must be exactly what the generator writes.
func TestBundledFileIsCanonical(t *testing.T) {
	bundled := filepath.Join("..", "..", "aaguids.json")
	want, err := os.ReadFile(bundled)
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "aaguids.json")
	r := gen(t, "-from", bundled, "-o", out)
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	if got, _ := os.ReadFile(out); !bytes.Equal(got, want) {
		t.Error("aaguids.json is not in the generator's canonical form; regenerate it")
	}
}

func TestRejectsBadInput(t *testing.T) {
	const gpm = `"ea9b8d66-4d01-1d21-3ce4-b6b48cb575d4"`
	for _, tc := range []struct {
		desc, input, want string
	}{
		{"empty file", ``, "malformed JSON"},
		{"truncated", combined[:len(combined)/2], "malformed JSON"},
		{"not an object", `["a"]`, "want a JSON object"},
		{"trailing data", `{` + gpm + `: "x"} {}`, "data after"},
		{"bad key", `{"ea9b8d66-4d01-1d21-3ce4-b6b48cb575dz": {"name": "x"}}`, `"ea9b8d66-4d01-1d21-3ce4-b6b48cb575dz" is not an 8-4-4-4-12 AAGUID`},
		{"key without hyphens", `{"ea9b8d664d011d213ce4b6b48cb575d4": {"name": "x"}}`, "is not an 8-4-4-4-12 AAGUID"},
		{"key in braces", `{"{ea9b8d66-4d01-1d21-3ce4-b6b48cb575d4}": {"name": "x"}}`, "is not an 8-4-4-4-12 AAGUID"},
		{"zero key", `{"00000000-0000-0000-0000-000000000000": {"name": "x"}}`, "all-zero"},
		{"duplicate key", `{` + gpm + `: {"name": "a"}, "EA9B8D66-4D01-1D21-3CE4-B6B48CB575D4": {"name": "b"}}`, "listed twice"},
		{"no name", `{` + gpm + `: {"icon_dark": "` + icon + `"}}`, `no "name"`},
		{"empty name", `{` + gpm + `: {"name": "  "}}`, "empty name"},
		{"name not a string", `{` + gpm + `: {"name": 42}}`, "bad entry"},
		{"number value", `{` + gpm + `: 42}`, "value must be"},
		{"control character", `{` + gpm + `: {"name": "a\u0007b"}}`, "non-printable"},
		{"long name", `{` + gpm + `: "` + strings.Repeat("x", 300) + `"}`, "longer than"},
		{"retired list", `{}`, "only 0 entries"},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			dir := t.TempDir()
			in, out := filepath.Join(dir, "in.json"), filepath.Join(dir, "aaguids.json")
			writeFile(t, in, tc.input)
			writeFile(t, out, previous)
			r := gen(t, "-from", in, "-o", out, "-min", "1")
			if tc.desc == "retired list" {
				r = gen(t, "-from", in, "-o", out)
			}
			if r.code != 1 {
				t.Errorf("exit %d, want 1 (stderr %q)", r.code, r.stderr)
			}
			if !strings.Contains(r.stderr, tc.want) {
				t.Errorf("stderr = %q, want it to mention %q", r.stderr, tc.want)
			}
			checkUntouched(t, out)
		})
	}
}

func TestTooFewEntries(t *testing.T) {
	dir := t.TempDir()
	in, out := filepath.Join(dir, "in.json"), filepath.Join(dir, "aaguids.json")
	writeFile(t, in, combined)
	writeFile(t, out, previous)
	r := gen(t, "-from", in, "-o", out) // default -min 100
	if r.code != 1 || !strings.Contains(r.stderr, "only 4 entries") {
		t.Errorf("exit %d, stderr %q", r.code, r.stderr)
	}
	checkUntouched(t, out)
}

func TestMissingInput(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "aaguids.json")
	writeFile(t, out, previous)
	r := gen(t, "-from", filepath.Join(dir, "nope.json"), "-o", out)
	if r.code != 1 || !strings.Contains(r.stderr, "nope.json") {
		t.Errorf("exit %d, stderr %q", r.code, r.stderr)
	}
	checkUntouched(t, out)
}

func TestDownload(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/combined_aaguid.json":
			fmt.Fprint(w, combined)
		case "/truncated":
			w.Header().Set("Content-Length", "100000")
			fmt.Fprint(w, combined[:200])
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()

	t.Run("ok", func(t *testing.T) {
		out := filepath.Join(t.TempDir(), "aaguids.json")
		r := gen(t, "-url", srv.URL+"/combined_aaguid.json", "-o", out, "-min", "1")
		if r.code != 0 {
			t.Fatalf("exit %d: %s", r.code, r.stderr)
		}
		if got, _ := os.ReadFile(out); string(got) != wantCombined {
			t.Errorf("output:\n%s", got)
		}
	})
	for _, tc := range []struct{ desc, url, want string }{
		{"HTTP 404", srv.URL + "/missing", "404"},
		{"cut off", srv.URL + "/truncated", "download"},
		{"bad URL", "::not a url", "download"},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			dir := t.TempDir()
			out := filepath.Join(dir, "aaguids.json")
			writeFile(t, out, previous)
			r := gen(t, "-url", tc.url, "-o", out, "-min", "1")
			if r.code != 1 || !strings.Contains(r.stderr, tc.want) {
				t.Errorf("exit %d, stderr %q; want 1 and %q", r.code, r.stderr, tc.want)
			}
			checkUntouched(t, out)
		})
	}
}

func TestNetworkError(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL + "/combined_aaguid.json"
	srv.Close() // nothing listens there any more: connection refused
	dir := t.TempDir()
	out := filepath.Join(dir, "aaguids.json")
	writeFile(t, out, previous)
	r := gen(t, "-url", url, "-o", out, "-timeout", "5s")
	if r.code != 1 || !strings.Contains(r.stderr, "gen: download") {
		t.Errorf("exit %d, stderr %q", r.code, r.stderr)
	}
	checkUntouched(t, out)
}

func TestFlags(t *testing.T) {
	for _, args := range [][]string{
		{"-url", "http://127.0.0.1:1/x", "-from", "x.json"},
		{"-o", ""},
		{"extra"},
		{"-nosuchflag"},
	} {
		if r := gen(t, args...); r.code != 2 {
			t.Errorf("gen %q: exit %d, want 2 (stderr %q)", args, r.code, r.stderr)
		}
	}
}

func TestWriteFailureLeavesNoTemp(t *testing.T) {
	dir := t.TempDir()
	in := filepath.Join(dir, "in.json")
	writeFile(t, in, combined)
	// The target is a non-empty directory: the final rename fails.
	out := filepath.Join(dir, "aaguids.json")
	if err := os.MkdirAll(filepath.Join(out, "keep"), 0o755); err != nil {
		t.Fatal(err)
	}
	r := gen(t, "-from", in, "-o", out, "-min", "1")
	if r.code != 1 || !strings.Contains(r.stderr, "write") {
		t.Errorf("exit %d, stderr %q", r.code, r.stderr)
	}
	checkNoTemp(t, dir)

	// The output directory does not exist.
	r = gen(t, "-from", in, "-o", filepath.Join(dir, "no", "such", "dir", "a.json"), "-min", "1")
	if r.code != 1 || !strings.Contains(r.stderr, "write") {
		t.Errorf("exit %d, stderr %q", r.code, r.stderr)
	}
}
