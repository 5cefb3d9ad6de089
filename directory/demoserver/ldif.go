package demoserver

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"fmt"
	"io"
	"strings"
	"unicode/utf8"
)

// ldifRecord is one content record of an LDIF file (RFC 2849).
type ldifRecord struct {
	line  int // line of the dn: line, for error messages
	dn    string
	attrs []ldifAttr
}

type ldifAttr struct {
	line  int
	name  string
	value string
}

// maxLDIFLine bounds one logical (unfolded) line so that a broken file cannot
// make the loader buffer without limit.
const maxLDIFLine = 1 << 20

// parseLDIF reads the content records of an LDIF file. It supports what
// slapcat writes and people write by hand: comments, folded lines, base64
// values (attr:: ...), an optional "version: 1" line and CRLF line ends. It
// refuses change records and URL values (attr:< file://...) rather than
// silently misreading them. name prefixes error messages ("demo.ldif:12: ...").
func parseLDIF(name string, r io.Reader) ([]ldifRecord, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64*1024), maxLDIFLine)

	var (
		records []ldifRecord
		cur     *ldifRecord
		logical strings.Builder // the current unfolded line
		logLine int             // where the current logical line started
		inComm  bool            // the current logical line is a comment
		lineNo  int
		first   = true
	)
	errAt := func(line int, format string, args ...any) error {
		return fmt.Errorf("%s:%d: %s", name, line, fmt.Sprintf(format, args...))
	}

	flush := func() error {
		if logLine == 0 {
			return nil
		}
		text, at, comment := logical.String(), logLine, inComm
		logical.Reset()
		logLine, inComm = 0, false
		if comment {
			return nil
		}
		attrName, value, err := parseLDIFLine(text)
		if err != nil {
			return errAt(at, "%v", err)
		}
		lname := strings.ToLower(attrName)
		if first {
			first = false
			if lname == "version" {
				if value != "1" {
					return errAt(at, "unsupported LDIF version %q (only 1)", value)
				}
				return nil
			}
		}
		switch {
		case cur == nil && lname != "dn":
			return errAt(at, "expected a dn: line to start a record, got %q", attrName)
		case cur == nil:
			cur = &ldifRecord{line: at, dn: value}
		case lname == "dn":
			return errAt(at, "second dn: line in one record (records are separated by a blank line)")
		case lname == "changetype":
			return errAt(at, "change records (changetype: %s) are not supported: the file must hold entries only", value)
		case lname == "control":
			return errAt(at, "LDIF controls are not supported")
		default:
			cur.attrs = append(cur.attrs, ldifAttr{line: at, name: attrName, value: value})
		}
		return nil
	}
	endRecord := func() {
		if cur != nil {
			records = append(records, *cur)
			cur = nil
		}
	}

	for sc.Scan() {
		lineNo++
		line := strings.TrimSuffix(sc.Text(), "\r")
		if !utf8.ValidString(line) {
			return nil, errAt(lineNo, "invalid UTF-8 (use attr:: base64 for binary values)")
		}
		switch {
		case strings.HasPrefix(line, " "):
			// A folded continuation, of a comment too (RFC 2849 note 2).
			if logLine == 0 {
				return nil, errAt(lineNo, "continuation line (starting with a space) with nothing to continue")
			}
			if logical.Len()+len(line) > maxLDIFLine {
				return nil, errAt(logLine, "line longer than %d bytes", maxLDIFLine)
			}
			logical.WriteString(line[1:])
		case line == "":
			if err := flush(); err != nil {
				return nil, err
			}
			endRecord()
		default:
			if err := flush(); err != nil {
				return nil, err
			}
			logLine = lineNo
			inComm = strings.HasPrefix(line, "#")
			logical.WriteString(line)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: read: %w", name, err)
	}
	if err := flush(); err != nil {
		return nil, err
	}
	endRecord()
	return records, nil
}

// parseLDIFLine splits "attr: value", "attr:: base64" and refuses "attr:< url".
func parseLDIFLine(text string) (name, value string, err error) {
	i := strings.IndexByte(text, ':')
	if i <= 0 {
		return "", "", fmt.Errorf("expected \"attribute: value\", got %q", truncate(text, 60))
	}
	name, rest := text[:i], text[i+1:]
	if strings.ContainsAny(name, " \t") {
		return "", "", fmt.Errorf("attribute name %q contains a space", name)
	}
	if strings.Contains(name, ";") {
		return "", "", fmt.Errorf("attribute options (%s) are not supported", name)
	}
	switch {
	case strings.HasPrefix(rest, ":"):
		raw := strings.TrimLeft(rest[1:], " ")
		b, err := base64.StdEncoding.DecodeString(raw)
		if err != nil {
			return "", "", fmt.Errorf("%s:: is not valid base64: %v", name, err)
		}
		if !utf8.Valid(b) || bytes.IndexByte(b, 0) >= 0 {
			return "", "", fmt.Errorf("%s:: holds binary data; the demo directory serves text attributes only", name)
		}
		return name, string(b), nil
	case strings.HasPrefix(rest, "<"):
		return "", "", fmt.Errorf("%s:< URL values are not supported", name)
	default:
		// RFC 2849: SAFE-STRING may not start with a space, so leading
		// spaces are the separator.
		return name, strings.TrimLeft(rest, " "), nil
	}
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
