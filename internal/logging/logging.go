// Package logging builds the process logger: readable text on a terminal,
// JSON lines otherwise (what log collectors want), at the configured level.
// Three rules hold for every line whoever logs it: each key appears once
// per object, a duration is a number of milliseconds under a key ending in
// _ms, and the secret of an enrollment or recovery link never appears
// (redact.Secrets).
package logging

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/passbridge/passbridge/internal/redact"
)

// New returns a logger writing to w. format is auto, text or json; auto
// picks text when w is a terminal.
func New(w io.Writer, level, format string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("log level %q: expected debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lv, ReplaceAttr: milliseconds}
	var h slog.Handler
	switch strings.ToLower(format) {
	case "json":
		h = slog.NewJSONHandler(w, opts)
	case "text":
		h = slog.NewTextHandler(w, opts)
	case "auto", "":
		if isTerminal(w) {
			h = slog.NewTextHandler(w, opts)
		} else {
			h = slog.NewJSONHandler(w, opts)
		}
	default:
		return nil, fmt.Errorf("log format %q: expected auto, text or json", format)
	}
	return slog.New(&oneKey{inner: h, frames: []frame{{}}}), nil
}

// milliseconds writes a duration as milliseconds (to the microsecond)
// under the key with _ms added: slog's own form is nanoseconds in JSON and
// "8ms" in text, and a log pipeline wants one unit everywhere.
func milliseconds(_ []string, a slog.Attr) slog.Attr {
	if a.Value.Kind() != slog.KindDuration {
		return a
	}
	if !strings.HasSuffix(a.Key, "_ms") {
		a.Key += "_ms"
	}
	a.Value = slog.Float64Value(math.Round(float64(a.Value.Duration())/float64(time.Microsecond)) / 1000)
	return a
}

// oneKey is the handler under every passbridge logger. It keeps the
// attributes of With and WithGroup itself and writes each record with every
// key once per object, the last value given winning at the place of the
// first: a logger handed down through packages easily gets a key twice
// ("component" from the daemon and again from a package), and most JSON log
// pipelines refuse such a line.
type oneKey struct {
	inner  slog.Handler
	frames []frame // frames[0] is the top level; one more per open group
}

type frame struct {
	group string
	attrs []slog.Attr
}

func (h *oneKey) Enabled(ctx context.Context, l slog.Level) bool { return h.inner.Enabled(ctx, l) }

func (h *oneKey) WithAttrs(as []slog.Attr) slog.Handler {
	if len(as) == 0 {
		return h
	}
	n := &oneKey{inner: h.inner, frames: slices.Clone(h.frames)}
	last := &n.frames[len(n.frames)-1]
	last.attrs = append(slices.Clip(last.attrs), as...)
	return n
}

func (h *oneKey) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	return &oneKey{inner: h.inner, frames: append(slices.Clip(h.frames), frame{group: name})}
}

func (h *oneKey) Handle(ctx context.Context, r slog.Record) error {
	attrs := slices.Clip(h.frames[len(h.frames)-1].attrs)
	r.Attrs(func(a slog.Attr) bool {
		attrs = append(attrs, a)
		return true
	})
	attrs = unique(attrs)
	for i := len(h.frames) - 1; i > 0; i-- {
		g := slog.Attr{Key: h.frames[i].group, Value: slog.GroupValue(attrs...)}
		attrs = unique(append(slices.Clip(h.frames[i-1].attrs), g))
	}
	out := slog.NewRecord(r.Time, r.Level, redact.Secrets(r.Message), r.PC)
	for i := range attrs {
		attrs[i] = redactAttr(attrs[i])
	}
	out.AddAttrs(attrs...)
	return h.inner.Handle(ctx, out)
}

// redactAttr takes link secrets out of an attribute's text (strings,
// errors, Stringers, inside groups too), whoever logged it: a request path
// or an error that quotes a URL must never put a usable enrollment link in
// the log.
func redactAttr(a slog.Attr) slog.Attr {
	switch v := a.Value; v.Kind() {
	case slog.KindString:
		a.Value = slog.StringValue(redact.Secrets(v.String()))
	case slog.KindGroup:
		g := slices.Clone(v.Group())
		for i := range g {
			g[i] = redactAttr(g[i])
		}
		a.Value = slog.GroupValue(g...)
	case slog.KindAny:
		var s string
		switch x := v.Any().(type) {
		case error:
			s = x.Error()
		case fmt.Stringer:
			s = x.String()
		default:
			return a
		}
		if r := redact.Secrets(s); r != s {
			a.Value = slog.StringValue(r)
		}
	}
	return a
}

// unique returns attrs with each key once (groups merged into their
// parent when their key is empty, deduplicated inside), the last value of a
// key at the place of its first.
func unique(attrs []slog.Attr) []slog.Attr {
	var flat []slog.Attr
	for _, a := range attrs {
		a.Value = a.Value.Resolve()
		if a.Value.Kind() == slog.KindGroup {
			if a.Key == "" {
				flat = append(flat, unique(a.Value.Group())...)
				continue
			}
			a.Value = slog.GroupValue(unique(a.Value.Group())...)
		}
		flat = append(flat, a)
	}
	at := make(map[string]int, len(flat))
	out := flat[:0]
	for _, a := range flat {
		if i, ok := at[a.Key]; ok {
			out[i] = a
			continue
		}
		at[a.Key] = len(out)
		out = append(out, a)
	}
	return out
}

// CheckLine reports whether line is one JSON object in which no object
// repeats a key and no duration hides under the bare key "ms" (a duration
// is <what>_ms, the same everywhere): the promise every log line keeps
// (tests check real output with it).
func CheckLine(line []byte) error {
	if t := bytes.TrimSpace(line); len(t) == 0 || t[0] != '{' {
		return errors.New("not a JSON object")
	}
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.UseNumber()
	if err := checkValue(dec, ""); err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("more than one JSON value on the line")
	}
	return nil
}

func checkValue(dec *json.Decoder, path string) error {
	tok, err := dec.Token()
	if err != nil {
		return fmt.Errorf("not JSON: %w", err)
	}
	switch tok {
	case json.Delim('{'):
		seen := map[string]bool{}
		for dec.More() {
			k, err := dec.Token()
			if err != nil {
				return fmt.Errorf("not JSON: %w", err)
			}
			key := k.(string)
			if seen[key] {
				return fmt.Errorf("key %q repeated in %s", key, cmp.Or(strings.TrimPrefix(path, "."), "the line"))
			}
			seen[key] = true
			if key == "ms" {
				return fmt.Errorf(`key "ms" in %s: a duration is logged as <what>_ms`, cmp.Or(strings.TrimPrefix(path, "."), "the line"))
			}
			if err := checkValue(dec, path+"."+key); err != nil {
				return err
			}
		}
	case json.Delim('['):
		for dec.More() {
			if err := checkValue(dec, path+"[]"); err != nil {
				return err
			}
		}
	default:
		return nil
	}
	_, err = dec.Token() // the closing delimiter
	return err
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}
