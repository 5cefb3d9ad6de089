package dirsync

import "slices"

// hashSet is a set of 64-bit hashes that costs about 8 bytes a hash and
// never one large allocation: what a first sync keeps per new identity
// (the hash of its directory ID, of its candidate link's row) scales with
// the directory, and a Go map of 1,000,000 such hashes held about 40 bytes
// each (a heap profile of the first sync: seen.addFresh was 70 % of the
// live heap at 300,000 users), which the garbage collector's heap target
// doubles again in resident memory.
//
// The hashes are spread over hashSetBuckets sorted slices by their top
// bits (after a multiplicative mix, so that a hash whose high bits are
// poorly spread, FNV of similar keys say, still spreads): a lookup is a
// binary search of one bucket, an insert moves a bucket's tail (a few
// hundred words at 1,000,000), and a growing bucket reallocates only its
// own 1/4096 of the set.
type hashSet struct {
	buckets [hashSetBuckets][]uint64
	n       int
}

const (
	hashSetBits    = 12
	hashSetBuckets = 1 << hashSetBits
)

// add inserts h; false when it was in the set already.
func (s *hashSet) add(h uint64) bool {
	b := &s.buckets[(h*0x9e3779b97f4a7c15)>>(64-hashSetBits)]
	i, found := slices.BinarySearch(*b, h)
	if found {
		return false
	}
	*b = slices.Insert(*b, i, h)
	s.n++
	return true
}

// len is the number of hashes in the set.
func (s *hashSet) len() int { return s.n }
