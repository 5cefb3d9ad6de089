package dirsync

import (
	"reflect"
	"testing"

	"github.com/passbridge/passbridge/directory"
)

// TestClaimSpool: a candidate link comes back from its spool as it went in,
// whatever its users key's type (the drivers' int64, string and uint64,
// and any other gob knows), with and without a stored row; a cut record is
// an error, never a wrong claim.
func TestClaimSpool(t *testing.T) {
	it := directory.Identity{DirectoryID: "6f1c-é", DN: "uid=zoë,ou=Ventes,dc=corp", Username: "zoë", Email: "zoe@corp.example",
		DisplayName: "Zoë Ästrøm", Department: "", Disabled: true, DisabledReason: "locked out"}
	in := []claim{
		{It: it, Res: linkResult{State: "linked", Key: int64(-42), Rule: "email", Detail: "users row 42 by email"}},
		{It: it, Row: &claimRow{ID: 7, DirectoryID: "6f1c-é", LinkState: "ambiguous", LinkDetail: "two rows"},
			Res: linkResult{State: "linked", Key: "b7e3a9f0-uuid", Rule: "username"}},
		{It: directory.Identity{}, Res: linkResult{Key: uint64(1) << 63}},
		{It: it, Res: linkResult{State: "linked", Key: 3.5}},
		{It: it, Res: linkResult{State: "unmatched"}},
	}
	sp, err := newCodecSpool("candidate link", &claimCodec)
	if err != nil {
		t.Fatal(err)
	}
	defer sp.close()
	for round := range 2 { // values may be added after a read
		for i := range in {
			if err := sp.add(&in[i]); err != nil {
				t.Fatal(err)
			}
		}
		var out []claim
		if err := sp.each(func(c *claim) error { out = append(out, *c); return nil }); err != nil {
			t.Fatal(err)
		}
		want := in
		if round == 1 {
			want = append(append([]claim(nil), in...), in...)
		}
		if !reflect.DeepEqual(out, want) {
			t.Fatalf("round %d: read back\n%+v\nwant\n%+v", round, out, want)
		}
	}

	// Every cut of a record is an error.
	for i := range in {
		b, err := claimCodec.append(nil, &in[i])
		if err != nil {
			t.Fatal(err)
		}
		for cut := range len(b) {
			var c claim
			rec := &record{b: b[:cut]}
			err := claimCodec.decode(rec, &c)
			if err == nil {
				err = rec.err
			}
			if err == nil {
				t.Fatalf("claim %d cut at %d of %d bytes: no error (%+v)", i, cut, len(b), c)
			}
		}
	}
}
