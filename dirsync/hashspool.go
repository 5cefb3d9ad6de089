package dirsync

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
)

// hashSpool finds the 64-bit hashes added more than once in memory that
// does not grow with how many there are: the hashes go to a temporary file
// as they come (8 bytes each), and dups reads the file back in passes,
// each keeping only the hashes of its share (by a mix of the hash) in a
// sorted slice of at most about hashSpoolPass of them. A first sync of
// 1,000,000 users spools 950,000 candidate links' hashes: 15 passes over a
// 7.6 MB file (in the page cache), 512 KB of memory, where a slice sorted
// after the read held 8-16 MB while it grew. The file is unlinked at once.
type hashSpool struct {
	f *os.File
	w *bufio.Writer
	n int
}

// hashSpoolPass is about how many hashes a pass of dups holds.
const hashSpoolPass = 1 << 16

func newHashSpool(what string) (*hashSpool, error) {
	f, err := os.CreateTemp("", "passbridge-sync-hashes-*")
	if err != nil {
		return nil, fmt.Errorf("create the %s spool: %w", what, err)
	}
	_ = os.Remove(f.Name())
	return &hashSpool{f: f, w: bufio.NewWriterSize(f, 1<<16)}, nil
}

func (s *hashSpool) add(h uint64) error {
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], h)
	_, err := s.w.Write(b[:])
	s.n++
	return err
}

// dups returns the hashes added more than once.
func (s *hashSpool) dups() (map[uint64]bool, error) {
	if err := s.w.Flush(); err != nil {
		return nil, err
	}
	passes := uint64(s.n/hashSpoolPass + 1)
	dup := map[uint64]bool{}
	var part []uint64
	for pass := uint64(0); pass < passes; pass++ {
		if _, err := s.f.Seek(0, io.SeekStart); err != nil {
			return nil, err
		}
		r := bufio.NewReaderSize(s.f, 1<<16)
		part = part[:0]
		var b [8]byte
		for {
			if _, err := io.ReadFull(r, b[:]); errors.Is(err, io.EOF) {
				break
			} else if err != nil {
				return nil, err
			}
			if h := binary.LittleEndian.Uint64(b[:]); ((h*0x9e3779b97f4a7c15)>>32)%passes == pass {
				part = append(part, h)
			}
		}
		slices.Sort(part)
		for i := 1; i < len(part); i++ {
			if part[i] == part[i-1] {
				dup[part[i]] = true
			}
		}
	}
	return dup, nil
}

func (s *hashSpool) close() {
	if s != nil && s.f != nil {
		s.f.Close()
	}
}
