package dirsync

import "hash/maphash"

// seen is what a run has seen of the directory, in memory that does not
// grow with the size of the directory's strings: a full read of 1,000,000
// users used to keep every directory ID in a map (about 100 bytes each).
//
// A stored identity is known by its row ID, and a bit per row ID says how
// the run saw it (flags: upserted, reported present, gone): a few bits per
// row of the identities table, in chunks of 65,536 IDs so that sparse IDs
// cost nothing. An identity that is not stored yet (a create) is known by
// a 64-bit hash of its directory ID in a hashSet (about 8 bytes each), only
// to tell a second entry with the same ID: the hash is seeded anew each run, so a collision of two
// different IDs (a chance of about 1 in 10^7 per run at 1,000,000 new
// identities) makes one entry count as invalid for that run only (the
// safe side: deletions are skipped that run, nothing is linked wrongly).
type seen struct {
	rows  map[int64]*seenChunk
	fresh *hashSet
	seed  maphash.Seed
}

const seenChunkBits = 16

// seenChunk holds the flags of 65,536 consecutive row IDs, one bitmap per
// flag (seenUpsert, seenPresent, seenGone).
type seenChunk [3][1 << seenChunkBits / 64]uint64

func newSeen() *seen {
	return &seen{rows: map[int64]*seenChunk{}, fresh: new(hashSet), seed: maphash.MakeSeed()}
}

func flagIndex(flag uint8) int {
	switch flag {
	case seenUpsert:
		return 0
	case seenPresent:
		return 1
	}
	return 2
}

// has reports whether row id was seen with any of flags.
func (s *seen) has(id int64, flags uint8) bool {
	c := s.rows[id>>seenChunkBits]
	if c == nil {
		return false
	}
	bit := uint64(id) & (1<<seenChunkBits - 1)
	for _, f := range []uint8{seenUpsert, seenPresent, seenGone} {
		if flags&f != 0 && c[flagIndex(f)][bit/64]&(1<<(bit%64)) != 0 {
			return true
		}
	}
	return false
}

// mark records that row id was seen with flag.
func (s *seen) mark(id int64, flag uint8) {
	c := s.rows[id>>seenChunkBits]
	if c == nil {
		c = new(seenChunk)
		s.rows[id>>seenChunkBits] = c
	}
	bit := uint64(id) & (1<<seenChunkBits - 1)
	c[flagIndex(flag)][bit/64] |= 1 << (bit % 64)
}

// addFresh records the directory ID of an identity not stored yet; false
// when an entry of this run had the same ID already.
func (s *seen) addFresh(directoryID string) bool {
	return s.fresh.add(maphash.String(s.seed, directoryID))
}
