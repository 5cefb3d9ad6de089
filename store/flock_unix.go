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
//
// Release removes the file, so that nothing of passbridge's stays beside
// the database (after a rollback in particular). Removing a lock file is
// safe only if every taker checks, once it holds the flock, that the file
// it locked is still the one at path: another taker may have opened the
// file just before the holder removed it, and then locks an unlinked file
// while a third creates and locks a new one. The holder removes the file
// before it unlocks, so a taker that gets the flock of a removed file sees
// it gone (or replaced) and starts over on what is at path now.
func flockTry(path string) (release func() error, ok bool, err error) {
	for {
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
		same, err := samePath(f, path)
		if err != nil {
			f.Close()
			return nil, false, err
		}
		if !same {
			f.Close() // removed by the holder we waited behind: again
			continue
		}
		return func() error {
			// Remove while still holding the flock (see above), then
			// close, which releases it.
			rmErr := os.Remove(path)
			if errors.Is(rmErr, os.ErrNotExist) {
				rmErr = nil
			}
			if err := f.Close(); err != nil {
				return err
			}
			if rmErr != nil {
				return fmt.Errorf("remove lock file: %w", rmErr)
			}
			return nil
		}, true, nil
	}
}

// samePath reports whether f is the file at path now.
func samePath(f *os.File, path string) (bool, error) {
	held, err := f.Stat()
	if err != nil {
		return false, fmt.Errorf("lock file: %w", err)
	}
	now, err := os.Stat(path)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("lock file: %w", err)
	}
	return os.SameFile(held, now), nil
}
