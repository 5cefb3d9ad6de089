//go:build !unix

package store

// flockTry is a no-op where flock does not exist: the lock is then only
// process-local.
func flockTry(path string) (release func() error, ok bool, err error) {
	return func() error { return nil }, true, nil
}
