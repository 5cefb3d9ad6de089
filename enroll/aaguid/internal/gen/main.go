// Command gen refreshes enroll/aaguid/aaguids.json, the bundled table of
// passkey provider names, from the community list at
// github.com/passkeydeveloper/passkey-authenticator-aaguids.
//
// Usage (from enroll/aaguid, as `go generate` runs it):
//
//	go run ./internal/gen -o aaguids.json                  # download (needs network)
//	go run ./internal/gen -from combined_aaguid.json -o aaguids.json   # offline copy
//
// The input is a JSON object keyed by AAGUID. Each value is either an object
// with a "name" (the upstream combined_aaguid.json / aaguid.json format; the
// icon_dark/icon_light data URLs are dropped) or a plain name string (the
// upstream dist/index.json format, and this program's own output). Every key
// must be an 8-4-4-4-12 AAGUID (written out in lowercase), not all zeros, and
// appear once; every name is trimmed and must be non-empty, printable UTF-8
// and at most 256 bytes. The list must have at least -min entries: upstream
// says it will become an empty object when the list is retired, and that
// must not silently empty the table.
//
// The output is written atomically (a temporary file in the same directory,
// renamed over the target), so a failed run never leaves a truncated file.
// Any failure prints a message and exits with status 1 (2 for bad flags).
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// DefaultURL is the upstream combined list (curated providers plus the FIDO
// Metadata Service entries).
const DefaultURL = "https://raw.githubusercontent.com/passkeydeveloper/passkey-authenticator-aaguids/main/combined_aaguid.json"

const (
	maxInput   = 64 << 20 // the combined list with icons is a few MB
	maxNameLen = 256
)

func main() {
	os.Exit(run(context.Background(), os.Args[1:], os.Stdout, os.Stderr))
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("gen", flag.ContinueOnError)
	fs.SetOutput(stderr)
	out := fs.String("o", "aaguids.json", "output `file`")
	url := fs.String("url", DefaultURL, "download the list from `URL`")
	from := fs.String("from", "", "read the list from a local `file` instead of downloading it")
	minEntries := fs.Int("min", 100, "fail when the list has fewer than `n` entries")
	timeout := fs.Duration("timeout", 60*time.Second, "download timeout")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() != 0 {
		fmt.Fprintf(stderr, "gen: unexpected arguments: %q\n", fs.Args())
		return 2
	}
	urlSet := false
	fs.Visit(func(f *flag.Flag) { urlSet = urlSet || f.Name == "url" })
	if urlSet && *from != "" {
		fmt.Fprintln(stderr, "gen: -url and -from are exclusive")
		return 2
	}
	if *out == "" {
		fmt.Fprintln(stderr, "gen: -o must name the output file")
		return 2
	}

	var (
		data   []byte
		source string
		err    error
	)
	if *from != "" {
		source = *from
		data, err = readFile(*from)
	} else {
		source = *url
		data, err = download(ctx, *url, *timeout)
	}
	if err != nil {
		fmt.Fprintf(stderr, "gen: %v\n", err)
		return 1
	}
	names, err := parse(data)
	if err != nil {
		fmt.Fprintf(stderr, "gen: %s: %v\n", source, err)
		return 1
	}
	if len(names) < *minEntries {
		fmt.Fprintf(stderr, "gen: %s: only %d entries (want at least %d; -min to override); %s left unchanged\n",
			source, len(names), *minEntries, *out)
		return 1
	}
	encoded, err := encode(names)
	if err != nil {
		fmt.Fprintf(stderr, "gen: %v\n", err)
		return 1
	}
	if err := writeAtomic(*out, encoded); err != nil {
		fmt.Fprintf(stderr, "gen: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "gen: wrote %d entries from %s to %s\n", len(names), source, *out)
	fmt.Fprintln(stdout, "gen: now update the source line (commit or date) in enroll/aaguid/README.md and the package doc")
	return 0
}

func readFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return readLimited(f, path)
}

func download(ctx context.Context, url string, timeout time.Duration) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, fmt.Errorf("download %s: %w", url, err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("download: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("download %s: HTTP status %s", url, resp.Status)
	}
	data, err := readLimited(resp.Body, url)
	if err != nil {
		return nil, fmt.Errorf("download: %w", err)
	}
	return data, nil
}

func readLimited(r io.Reader, name string) ([]byte, error) {
	data, err := io.ReadAll(io.LimitReader(r, maxInput+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	if len(data) > maxInput {
		return nil, fmt.Errorf("read %s: larger than %d bytes", name, maxInput)
	}
	return data, nil
}

// parse validates the list and returns lowercase AAGUID -> trimmed name.
func parse(data []byte) (map[string]string, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	tok, err := dec.Token()
	if err != nil {
		return nil, fmt.Errorf("malformed JSON: %w", err)
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return nil, errors.New("malformed list: want a JSON object keyed by AAGUID")
	}
	names := make(map[string]string)
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, fmt.Errorf("malformed JSON: %w", err)
		}
		key := tok.(string) // object keys are always strings
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return nil, fmt.Errorf("malformed JSON at key %q: %w", key, err)
		}
		id, err := canonicalKey(key)
		if err != nil {
			return nil, err
		}
		if _, dup := names[id]; dup {
			return nil, fmt.Errorf("key %q: AAGUID listed twice", key)
		}
		name, err := entryName(raw)
		if err != nil {
			return nil, fmt.Errorf("key %q: %w", key, err)
		}
		names[id] = name
	}
	if _, err := dec.Token(); err != nil { // the closing '}'
		return nil, fmt.Errorf("malformed JSON: %w", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("malformed JSON: data after the top-level object")
	}
	return names, nil
}

// canonicalKey checks the 8-4-4-4-12 form and returns it in lowercase.
func canonicalKey(key string) (string, error) {
	bad := fmt.Errorf("key %q is not an 8-4-4-4-12 AAGUID", key)
	if len(key) != 36 {
		return "", bad
	}
	allZero := true
	for i := 0; i < len(key); i++ {
		c := key[i]
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return "", bad
			}
		default:
			if !strings.ContainsRune("0123456789abcdefABCDEF", rune(c)) {
				return "", bad
			}
			allZero = allZero && c == '0'
		}
	}
	if allZero {
		return "", fmt.Errorf("key %q: the all-zero AAGUID names no provider", key)
	}
	return strings.ToLower(key), nil
}

func entryName(raw json.RawMessage) (string, error) {
	var name string
	switch {
	case len(raw) > 0 && raw[0] == '"':
		if err := json.Unmarshal(raw, &name); err != nil {
			return "", err
		}
	case len(raw) > 0 && raw[0] == '{':
		var entry struct {
			Name *string `json:"name"`
		}
		if err := json.Unmarshal(raw, &entry); err != nil {
			return "", fmt.Errorf("bad entry: %w", err)
		}
		if entry.Name == nil {
			return "", errors.New(`entry has no "name"`)
		}
		name = *entry.Name
	default:
		return "", errors.New(`value must be an object with a "name" or a name string`)
	}
	name = strings.TrimSpace(name)
	switch {
	case name == "":
		return "", errors.New("empty name")
	case len(name) > maxNameLen:
		return "", fmt.Errorf("name longer than %d bytes", maxNameLen)
	case !utf8.ValidString(name):
		return "", errors.New("name is not valid UTF-8")
	case strings.IndexFunc(name, func(r rune) bool { return !unicode.IsPrint(r) }) >= 0:
		return "", fmt.Errorf("name %q has a non-printable character", name)
	}
	return name, nil
}

// encode writes one entry a line, keys sorted, without HTML escaping, so
// that refreshes give readable diffs.
func encode(names map[string]string) ([]byte, error) {
	keys := make([]string, 0, len(names))
	for k := range names {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b bytes.Buffer
	b.WriteString("{\n")
	for i, k := range keys {
		v, err := marshalString(names[k])
		if err != nil {
			return nil, err
		}
		fmt.Fprintf(&b, "  %q: %s", k, v)
		if i < len(keys)-1 {
			b.WriteByte(',')
		}
		b.WriteByte('\n')
	}
	b.WriteString("}\n")
	return b.Bytes(), nil
}

func marshalString(s string) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(s); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n")), nil
}

// writeAtomic replaces path with data, or leaves it as it was.
func writeAtomic(path string, data []byte) (err error) {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	tmp, err := os.CreateTemp(dir, "."+base+".tmp-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
			err = fmt.Errorf("write %s: %w", path, err)
		}
	}()
	if _, err = tmp.Write(data); err != nil {
		return err
	}
	if err = tmp.Chmod(0o644); err != nil {
		return err
	}
	if err = tmp.Sync(); err != nil {
		return err
	}
	if err = tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
