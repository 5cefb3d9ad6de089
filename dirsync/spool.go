package dirsync

import (
	"bufio"
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
type spool[T any] struct {
	what string // for errors: "change", "candidate link"
	f    *os.File
	w    *bufio.Writer
	enc  *gob.Encoder
	n    int
}

func newSpool[T any](what string) (*spool[T], error) {
	f, err := os.CreateTemp("", "passbridge-sync-spool-*")
	if err != nil {
		return nil, fmt.Errorf("create the %s spool: %w", what, err)
	}
	_ = os.Remove(f.Name())
	w := bufio.NewWriterSize(f, 1<<16)
	return &spool[T]{what: what, f: f, w: w, enc: gob.NewEncoder(w)}, nil
}

func (s *spool[T]) add(v *T) error {
	if err := s.enc.Encode(v); err != nil {
		return fmt.Errorf("spool %s: %w", s.what, err)
	}
	s.n++
	return nil
}

// each calls fn for every value, in the order added. Values may be added
// again afterwards.
func (s *spool[T]) each(fn func(*T) error) error {
	if err := s.w.Flush(); err != nil {
		return fmt.Errorf("spool %s: %w", s.what, err)
	}
	if _, err := s.f.Seek(0, io.SeekStart); err != nil {
		return fmt.Errorf("spool %s: %w", s.what, err)
	}
	dec := gob.NewDecoder(bufio.NewReaderSize(s.f, 1<<16))
	for i := 0; i < s.n; i++ {
		var v T
		if err := dec.Decode(&v); err != nil {
			return fmt.Errorf("read back %s %d of %d: %w", s.what, i+1, s.n, err)
		}
		if err := fn(&v); err != nil {
			return err
		}
	}
	_, err := s.f.Seek(0, io.SeekEnd)
	return err
}

func (s *spool[T]) close() {
	if s != nil && s.f != nil {
		s.f.Close()
	}
}
