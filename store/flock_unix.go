//go:build unix

package store

import (
	"errors"
	"fmt"
	"os"
	"syscall"
)

// flockTry takes an exclusive flock on path (created if missing) without
// waiting. flock belongs to the open file, so a second attempt from this
// same process also fails, as it should.
func flockTry(path string) (release func() error, ok bool, err error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, false, fmt.Errorf("open lock file: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, false, nil
		}
		return nil, false, fmt.Errorf("flock %s: %w", path, err)
	}
	return func() error {
		// Closing the file releases the lock. The file stays: removing it
		// would race with another process that has just opened it.
		return f.Close()
	}, true, nil
}
