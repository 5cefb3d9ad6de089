package logging

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
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
