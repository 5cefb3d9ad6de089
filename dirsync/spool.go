package dirsync

import (
	"bufio"
	"encoding/binary"
	"encoding/gob"
	"fmt"
	"io"
	"os"
)

// spool is an append-only list of values kept in a temporary file, so that
// memory does not grow with the size of the directory: a run's plan (an
// initial sync of 100,000 users plans 100,000 creates) and its candidate
// links are spooled. The file is unlinked at once: nothing is left behind
// if the process dies.
//
// Values are gob-encoded, unless the spool has a codec (newCodecSpool):
// then each is a record of its own encoding, prefixed by its length. The
// candidate links, one per linked identity of a first sync, have one:
// gob's reflection was most of the cost of spooling and reading them back.
type spool[T any] struct {
	what  string // for errors: "change", "candidate link"
	f     *os.File
	w     *bufio.Writer
	enc   *gob.Encoder
	codec *codec[T]
	buf   []byte
	n     int
}

// codec encodes a value by appending it to a buffer, and decodes a record
// into a zero value.
type codec[T any] struct {
	append func(b []byte, v *T) ([]byte, error)
	decode func(r *record, v *T) error
}

func newSpool[T any](what string) (*spool[T], error) {
	return newCodecSpool[T](what, nil)
}

func newCodecSpool[T any](what string, c *codec[T]) (*spool[T], error) {
	f, err := os.CreateTemp("", "passbridge-sync-spool-*")
	if err != nil {
		return nil, fmt.Errorf("create the %s spool: %w", what, err)
	}
	_ = os.Remove(f.Name())
	w := bufio.NewWriterSize(f, 1<<16)
	s := &spool[T]{what: what, f: f, w: w, codec: c}
	if c == nil {
		s.enc = gob.NewEncoder(w)
	}
	return s, nil
}

func (s *spool[T]) add(v *T) error {
	if s.codec == nil {
		if err := s.enc.Encode(v); err != nil {
			return fmt.Errorf("spool %s: %w", s.what, err)
		}
		s.n++
		return nil
	}
	b, err := s.codec.append(s.buf[:0], v)
	if err != nil {
		return fmt.Errorf("spool %s: %w", s.what, err)
	}
	var l [binary.MaxVarintLen64]byte
	if _, err := s.w.Write(l[:binary.PutUvarint(l[:], uint64(len(b)))]); err != nil {
		return fmt.Errorf("spool %s: %w", s.what, err)
	}
	if _, err := s.w.Write(b); err != nil {
		return fmt.Errorf("spool %s: %w", s.what, err)
	}
	s.buf = b
	s.n++
	return nil
}

// each calls fn for every value, in the order added; the value is fn's
// only during the call (the next record is decoded into it). Values may
// be added again afterwards.
func (s *spool[T]) each(fn func(*T) error) error {
	if err := s.w.Flush(); err != nil {
		return fmt.Errorf("spool %s: %w", s.what, err)
	}
	if _, err := s.f.Seek(0, io.SeekStart); err != nil {
		return fmt.Errorf("spool %s: %w", s.what, err)
	}
	r := bufio.NewReaderSize(s.f, 1<<16)
	var dec *gob.Decoder
	if s.codec == nil {
		dec = gob.NewDecoder(r)
	}
	var buf []byte
	// One value, reset for each record: fn must not keep the pointer
	// (resolve and plan.each copy what they keep).
	var v, zero T
	for i := 0; i < s.n; i++ {
		v = zero
		var err error
		if dec != nil {
			err = dec.Decode(&v)
		} else {
			buf, err = s.readRecord(r, buf, &v)
		}
		if err != nil {
			return fmt.Errorf("read back %s %d of %d: %w", s.what, i+1, s.n, err)
		}
		if err := fn(&v); err != nil {
			return err
		}
	}
	_, err := s.f.Seek(0, io.SeekEnd)
	return err
}

func (s *spool[T]) readRecord(r *bufio.Reader, buf []byte, v *T) ([]byte, error) {
	n, err := binary.ReadUvarint(r)
	if err != nil {
		return buf, err
	}
	if n > 1<<24 {
		return buf, fmt.Errorf("a record of %d bytes", n)
	}
	if uint64(cap(buf)) < n {
		buf = make([]byte, n)
	}
	buf = buf[:n]
	if _, err := io.ReadFull(r, buf); err != nil {
		return buf, err
	}
	// The record's strings are cut from one string of the whole record:
	// one allocation instead of one per field.
	rec := &record{b: buf, s: string(buf)}
	if err := s.codec.decode(rec, v); err != nil {
		return buf, err
	}
	if rec.err == nil && len(rec.b) > 0 {
		rec.err = fmt.Errorf("%d bytes left over", len(rec.b))
	}
	return buf, rec.err
}

func (s *spool[T]) close() {
	if s != nil && s.f != nil {
		s.f.Close()
	}
}

// Record encoding: strings and byte strings as a uvarint length and the
// bytes, integers as varints, booleans as a byte.

func appendString(b []byte, v string) []byte {
	b = binary.AppendUvarint(b, uint64(len(v)))
	return append(b, v...)
}

func appendBool(b []byte, v bool) []byte {
	if v {
		return append(b, 1)
	}
	return append(b, 0)
}

// record is a record being decoded; the first error sticks, and every
// read after it returns the zero value.
type record struct {
	b []byte
	// s, when set, is the whole record as a string: string() returns
	// parts of it instead of copies (the record's bytes are a reused
	// buffer).
	s   string
	err error
}

func (r *record) fail(what string) {
	if r.err == nil {
		r.err = fmt.Errorf("a truncated record (%s)", what)
	}
	r.b = nil
}

func (r *record) string() string {
	n, k := binary.Uvarint(r.b)
	if k <= 0 || uint64(len(r.b)-k) < n {
		r.fail("string")
		return ""
	}
	var v string
	if r.s != "" {
		at := len(r.s) - len(r.b) + k
		v = r.s[at : at+int(n)]
	} else {
		v = string(r.b[k : k+int(n)])
	}
	r.b = r.b[k+int(n):]
	return v
}

func (r *record) varint() int64 {
	v, k := binary.Varint(r.b)
	if k <= 0 {
		r.fail("integer")
		return 0
	}
	r.b = r.b[k:]
	return v
}

func (r *record) uvarint() uint64 {
	v, k := binary.Uvarint(r.b)
	if k <= 0 {
		r.fail("integer")
		return 0
	}
	r.b = r.b[k:]
	return v
}

func (r *record) byte() byte {
	if len(r.b) == 0 {
		r.fail("byte")
		return 0
	}
	v := r.b[0]
	r.b = r.b[1:]
	return v
}

func (r *record) bool() bool { return r.byte() == 1 }
