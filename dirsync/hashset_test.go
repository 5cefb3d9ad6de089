package dirsync

import (
	"math/rand/v2"
	"testing"
)

// TestHashSet: every hash is added once and found again, whatever bucket
// it falls in (hashes that differ in their low bits only, the same high
// bits, zero and the largest value included), and the count is of distinct
// hashes.
func TestHashSet(t *testing.T) {
	var s hashSet
	r := rand.New(rand.NewPCG(1, 2))
	want := map[uint64]bool{}
	var order []uint64
	for i := 0; i < 200_000; i++ {
		h := r.Uint64()
		switch i % 4 {
		case 1:
			h &= 0xff // low bits only
		case 2:
			h = 0xabcd<<48 | h&0xffff // same high bits
		}
		order = append(order, h)
	}
	order = append(order, 0, ^uint64(0))
	for _, h := range order {
		if got := s.add(h); got == want[h] {
			t.Fatalf("add(%#x) = %v with the hash %s in the set", h, got, map[bool]string{true: "already", false: "not"}[want[h]])
		}
		want[h] = true
	}
	for _, h := range order {
		if s.add(h) {
			t.Fatalf("add(%#x) = true the second time", h)
		}
	}
	if s.len() != len(want) {
		t.Fatalf("len %d, want %d", s.len(), len(want))
	}
	for _, b := range s.buckets {
		for i := 1; i < len(b); i++ {
			if b[i-1] >= b[i] {
				t.Fatalf("bucket not sorted: %#x before %#x", b[i-1], b[i])
			}
		}
	}
}

// TestHashSpool: the hashes added more than once are found, and only
// they, with enough hashes for several passes of dups over the file.
func TestHashSpool(t *testing.T) {
	s, err := newHashSpool("test")
	if err != nil {
		t.Fatal(err)
	}
	defer s.close()
	r := rand.New(rand.NewPCG(3, 4))
	want := map[uint64]bool{}
	var added []uint64
	for i := 0; i < 3*hashSpoolPass; i++ {
		h := r.Uint64()
		if i%1000 == 999 { // a repeat of an earlier hash
			h = added[r.IntN(len(added))]
			want[h] = true
		}
		added = append(added, h)
		if err := s.add(h); err != nil {
			t.Fatal(err)
		}
	}
	got, err := s.dups()
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Fatalf("%d duplicates found, want %d", len(got), len(want))
	}
	for h := range want {
		if !got[h] {
			t.Fatalf("duplicate %#x not found", h)
		}
	}
	// Read again after more are added (as the spool of the claims is not).
	if err := s.add(added[0]); err != nil {
		t.Fatal(err)
	}
	if got, err = s.dups(); err != nil || !got[added[0]] {
		t.Fatalf("after adding %#x again: %v, %v", added[0], got[added[0]], err)
	}
}
