package logging

import (
	"bytes"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"
)

func TestFormatsAndLevels(t *testing.T) {
	var buf bytes.Buffer
	log, err := New(&buf, "warn", "auto") // a buffer is not a terminal: JSON
	if err != nil {
		t.Fatal(err)
	}
	log.Info("hidden")
	log.Warn("shown", "k", "v")
	var rec map[string]any
	if err := json.Unmarshal(buf.Bytes(), &rec); err != nil {
		t.Fatalf("auto format on a non-terminal is not one JSON line: %q", buf.String())
	}
	if rec["msg"] != "shown" || rec["k"] != "v" {
		t.Errorf("record = %v", rec)
	}

	buf.Reset()
	log, _ = New(&buf, "debug", "text")
	log.Debug("hello", "user", "zoe")
	if !strings.Contains(buf.String(), "msg=hello user=zoe") {
		t.Errorf("text output = %q", buf.String())
	}

	if _, err := New(&buf, "loud", "json"); err == nil || !strings.Contains(err.Error(), "debug, info, warn or error") {
		t.Errorf("bad level: %v", err)
	}
	if _, err := New(&buf, "info", "xml"); err == nil || !strings.Contains(err.Error(), "auto, text or json") {
		t.Errorf("bad format: %v", err)
	}
}

// TestEachKeyOnce: a key given twice (by two With calls, by With and the
// record, or twice in one record) is written once, the last value winning,
// at the top level and inside groups: log processors refuse an object with
// a repeated key.
func TestEachKeyOnce(t *testing.T) {
	var buf bytes.Buffer
	log, err := New(&buf, "info", "json")
	if err != nil {
		t.Fatal(err)
	}
	log.With("component", "portal").With("component", "portal", "subsystem", "directory").
		Info("one", "subsystem", "directory", "err", "a", "err", "b")
	log.WithGroup("req").With("id", 1).With("id", 2).Info("two", "id", 3, "path", "/x")
	log.With("a", 1).WithGroup("g").WithGroup("h").Info("three") // empty groups are left out
	for _, line := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		if err := CheckLine([]byte(line)); err != nil {
			t.Errorf("%v: %s", err, line)
		}
	}
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	for i, want := range []string{
		`"msg":"one","component":"portal","subsystem":"directory","err":"b"}`,
		`"msg":"two","req":{"id":3,"path":"/x"}}`,
		`"msg":"three","a":1}`,
	} {
		if !strings.HasSuffix(lines[i], want) {
			t.Errorf("line %d = %s, want the end %s", i, lines[i], want)
		}
	}
	if err := CheckLine([]byte(`{"a":1,"b":{"c":1,"c":2}}`)); err == nil {
		t.Error("CheckLine accepts a repeated key in a group")
	}
	if err := CheckLine([]byte(`{"msg":"migrate step","ms":2}`)); err == nil {
		t.Error(`CheckLine accepts a duration under the bare key "ms"`)
	}
	if err := CheckLine([]byte(`{"a":1`)); err == nil {
		t.Error("CheckLine accepts a line that is not JSON")
	}
}

// TestDurationsInMilliseconds: every duration is written the same way, as a
// number of milliseconds under a key ending in _ms.
func TestDurationsInMilliseconds(t *testing.T) {
	var buf bytes.Buffer
	log, _ := New(&buf, "info", "json")
	log.Info("done", "took", 8*time.Millisecond+250*time.Microsecond, "wait_ms", 3*time.Second, "n", 5)
	if !strings.HasSuffix(strings.TrimSpace(buf.String()), `"msg":"done","took_ms":8.25,"wait_ms":3000,"n":5}`) {
		t.Errorf("durations: %s", buf.String())
	}
	buf.Reset()
	log, _ = New(&buf, "info", "text")
	log.Info("done", "took", 1500*time.Microsecond)
	if !strings.Contains(buf.String(), "took_ms=1.5") {
		t.Errorf("durations in text: %s", buf.String())
	}
}

// TestLinkSecretsRedacted: whoever logs it, in the message, a string, an
// error or inside a group, the secret of a /link/ URL never reaches a line.
func TestLinkSecretsRedacted(t *testing.T) {
	const secret = "YaEbLpAnSuqajo4kpF76LrTaZ1ee1PUWpz6HxL1H_9k"
	for _, format := range []string{"json", "text"} {
		var buf bytes.Buffer
		log, err := New(&buf, "debug", format)
		if err != nil {
			t.Fatal(err)
		}
		log.With("url", "https://passkeys.corp.example/link/"+secret).WithGroup("req").Error("GET /link/"+secret+" failed",
			"path", "/link/"+secret, "err", errors.New("read /link/"+secret+": timeout"), slog.Group("g", "p", "/link/"+secret+"/x"))
		out := buf.String()
		if strings.Contains(out, secret) {
			t.Errorf("%s: the secret is in the line: %s", format, out)
		}
		if strings.Count(out, "/link/[redacted:") != 5 {
			t.Errorf("%s: want 5 redacted links: %s", format, out)
		}
		if format == "json" {
			if err := CheckLine(buf.Bytes()); err != nil {
				t.Errorf("%v: %s", err, out)
			}
		}
	}
}
