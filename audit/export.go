package audit

import (
	"bufio"
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/passbridge/passbridge/config"
	"github.com/passbridge/passbridge/schema"
	"github.com/passbridge/passbridge/store"
)

// Export formats.
const (
	FormatCSV  = "csv"
	FormatJSON = "json"
)

// CSVHeader is the header row of a CSV export.
var CSVHeader = []string{"id", "at", "event", "success", "actor", "target", "ip", "user_agent", "detail"}

// Export writes the events that f selects to w, newest first, as CSV (a
// header row, then one row per event; "" means csv) or as one JSON array,
// streaming as it reads. It returns how many events it wrote. Nothing is
// written when the filter or the format is wrong; an error after the first
// event leaves w with a truncated export.
//
// CSV cells are safe to open in a spreadsheet: a cell that begins with =, +,
// -, @, a tab or a carriage return gets a leading single quote, so that it
// cannot be taken for a formula (OWASP, CSV injection). Times are RFC 3339
// in UTC with nanoseconds; the detail is compact JSON.
func Export(ctx context.Context, db *store.DB, cfg *config.Config, f Filter, format string, w io.Writer) (n int, err error) {
	var enc encoder
	switch strings.ToLower(format) {
	case "", FormatCSV:
		enc = newCSVEncoder(w)
	case FormatJSON:
		enc = newJSONEncoder(w)
	default:
		return 0, fmt.Errorf("export format %q: expected csv or json", format)
	}
	// The filter is checked before anything is written.
	if _, _, err := f.where(schema.NamesFor(cfg)); err != nil {
		return 0, err
	}
	if err := enc.begin(); err != nil {
		return 0, err
	}
	err = Query(ctx, db, cfg, f, func(e Event) error {
		if err := enc.event(e); err != nil {
			return err
		}
		n++
		return nil
	})
	if err != nil {
		enc.flush() // what was written stays written
		return n, err
	}
	return n, enc.end()
}

type encoder interface {
	begin() error
	event(Event) error
	end() error
	flush()
}

// csvEncoder writes CSV (RFC 4180 quoting, \n line ends).
type csvEncoder struct {
	w   *csv.Writer
	row []string
}

func newCSVEncoder(w io.Writer) *csvEncoder {
	return &csvEncoder{w: csv.NewWriter(w), row: make([]string, len(CSVHeader))}
}

func (c *csvEncoder) begin() error { return c.w.Write(CSVHeader) }

func (c *csvEncoder) event(e Event) error {
	r := c.row
	r[0] = strconv.FormatInt(e.ID, 10)
	r[1] = e.At.UTC().Format(time.RFC3339Nano)
	r[2] = SafeCell(e.Event)
	r[3] = strconv.FormatBool(e.Success)
	r[4] = SafeCell(e.Actor)
	r[5] = SafeCell(e.Target)
	r[6] = SafeCell(e.IP)
	r[7] = SafeCell(e.UserAgent)
	r[8] = SafeCell(string(e.Detail))
	return c.w.Write(r)
}

func (c *csvEncoder) end() error {
	c.w.Flush()
	return c.w.Error()
}

func (c *csvEncoder) flush() { c.w.Flush() }

// SafeCell defuses a CSV cell that a spreadsheet would run as a formula:
// one that begins with =, +, -, @, a tab or a carriage return gets a
// leading single quote (OWASP's advice against CSV injection). The CSV
// writer then quotes commas, quotes and line breaks.
func SafeCell(s string) string {
	if s != "" && strings.ContainsRune("=+-@\t\r", rune(s[0])) {
		return "'" + s
	}
	return s
}

// jsonEncoder writes one JSON array, an event per line.
type jsonEncoder struct {
	w     *bufio.Writer
	buf   bytes.Buffer
	enc   *json.Encoder
	first bool
}

func newJSONEncoder(w io.Writer) *jsonEncoder {
	j := &jsonEncoder{w: bufio.NewWriterSize(w, 32<<10), first: true}
	j.enc = json.NewEncoder(&j.buf)
	j.enc.SetEscapeHTML(false)
	return j
}

func (j *jsonEncoder) begin() error {
	_, err := j.w.WriteString("[")
	return err
}

func (j *jsonEncoder) event(e Event) error {
	j.buf.Reset()
	if err := j.enc.Encode(e); err != nil {
		return fmt.Errorf("encode audit event %d: %w", e.ID, err)
	}
	sep := ",\n"
	if j.first {
		sep, j.first = "\n", false
	}
	if _, err := j.w.WriteString(sep); err != nil {
		return err
	}
	_, err := j.w.Write(bytes.TrimRight(j.buf.Bytes(), "\n"))
	return err
}

func (j *jsonEncoder) end() error {
	end := "\n]\n"
	if j.first {
		end = "]\n"
	}
	if _, err := j.w.WriteString(end); err != nil {
		return err
	}
	return j.w.Flush()
}

func (j *jsonEncoder) flush() { j.w.Flush() }
