package directory

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"reflect"
	"testing"
	"time"

	ber "github.com/go-asn1-ber/asn1-ber"
	"github.com/go-ldap/ldap/v3"
)

// FuzzLeanEntry: whatever bytes a server answers a search with, a lean
// search (the tap decoding entries, go-ldap the rest) hands its consumer
// exactly what go-ldap alone hands it: the same entries (DN, attribute
// names, values byte for byte), controls, referrals, in the same order, and
// the same error. Both read from a fake server that answers the search
// request with the fuzzed bytes, then a SearchResultDone.
func FuzzLeanEntry(f *testing.F) {
	for _, seed := range leanSeeds() {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, wire []byte) {
		want := searchOver(t, wire, false)
		got := searchOver(t, wire, true)
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("wire %x:\nlean:    %+v\ngo-ldap: %+v", wire, got, want)
		}
	})
}

// TestLeanEntryDecodes: the seeds' plain entries are decoded by the tap,
// not left to go-ldap (FuzzLeanEntry alone would also pass if the tap took
// nothing).
func TestLeanEntryDecodes(t *testing.T) {
	for i, e := range []*ber.Packet{entryMessage(1, "uid=a,ou=people,dc=corp,dc=example", true), entryMessage(7, "", false)} {
		msg := e.Bytes()
		got, _, _, ok := decodeEntry(msg, nil, nil)
		if !ok {
			t.Fatalf("seed %d: the lean decoder refused a plain entry %x", i, msg)
		}
		if len(got.attrs) == 0 {
			t.Fatalf("seed %d: no attributes decoded", i)
		}
	}
	// A long-form length is still plain (asn1-ber reads it the same).
	if _, _, _, ok := decodeEntry(longForm(entryMessage(1, "uid=a", false)), nil, nil); !ok {
		t.Error("decodeEntry refused a long-form length")
	}
	// The other encodings are refused, for go-ldap to decode.
	utf8DN := envelope(1, entryOp(ber.NewString(ber.ClassUniversal, ber.TypePrimitive, ber.TagUTF8String, "uid=a", "")))
	for _, msg := range [][]byte{
		utf8DN.Bytes(),
		envelope(1, entryMessage(1, "uid=a", false).Children[1], syncStateControl(ldap.SyncStateAdd, false, ""), octets("x")).Bytes(),
		indefinite(entryMessage(1, "uid=a", false)),
		append(entryMessage(1, "uid=a", false).Bytes(), 0),
	} {
		if _, _, _, ok := decodeEntry(msg, nil, nil); ok {
			t.Errorf("decodeEntry accepted %x", msg)
		}
	}
}

// searched is what one search handed its consumer.
type searched struct {
	Results []searchedResult
	Err     string
}

type searchedResult struct {
	DN       string
	Attrs    []string // name=hex values, in order
	Controls []ldap.Control
	Referral string
	Entry    bool
}

// searchOver runs one search against a fake server that answers with wire
// and then a SearchResultDone, through the tap (lean) or not.
func searchOver(t *testing.T, wire []byte, lean bool) searched {
	t.Helper()
	cl, sv := net.Pipe()
	var nc net.Conn = cl
	var tp *tap
	if lean {
		tp = newTap(cl)
		nc = tp
	}
	l := ldap.NewConn(nc, false)
	l.Start()
	l.SetTimeout(5 * time.Second)
	c := &Conn{Conn: l, URL: "fake", timeout: 5 * time.Second, tap: tp}
	defer c.Close()

	served := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(served)
		defer sv.Close()
		req, err := ber.ReadPacket(sv)
		if err != nil {
			return
		}
		id, _ := req.Children[0].Value.(int64)
		// Everything is written (a pipe's Write returns once read), then
		// the connection stays open until the search ends, or for a
		// moment when it cannot (the fuzzed bytes swallowed the done).
		if _, err := sv.Write(wire); err != nil {
			return
		}
		if _, err := sv.Write(doneMessage(id).Bytes()); err != nil {
			return
		}
		go func() { _, _ = io.Copy(io.Discard, sv) }()
		select {
		case <-finished:
		case <-time.After(100 * time.Millisecond):
		}
	}()

	var out searched
	req := ldap.NewSearchRequest("dc=corp,dc=example", ldap.ScopeWholeSubtree, ldap.NeverDerefAliases, 0, 0, false, "(objectClass=*)", []string{"uid"}, nil)
	err := c.stream(context.Background(), req, 0, lean, func(r result) error {
		var e *rawEntry
		switch {
		case r.raw != nil:
			e = r.raw
		case r.entry != nil:
			e = rawFromLDAP(r.entry, r.controls)
		}
		sr := searchedResult{Referral: r.referral, Controls: r.controls}
		if e != nil {
			sr.Entry, sr.DN = true, string(e.dn)
			for _, a := range e.attrs {
				s := string(a.name) + "="
				for _, v := range a.vals {
					s += fmt.Sprintf("%x,", v)
				}
				sr.Attrs = append(sr.Attrs, s)
			}
		}
		out.Results = append(out.Results, sr)
		return nil
	})
	close(finished)
	if err != nil {
		out.Err = err.Error()
	}
	<-served
	return out
}

// Messages as an LDAP server sends them.

func envelope(id int64, op *ber.Packet, controls ...*ber.Packet) *ber.Packet {
	p := ber.Encode(ber.ClassUniversal, ber.TypeConstructed, ber.TagSequence, nil, "")
	p.AppendChild(ber.NewInteger(ber.ClassUniversal, ber.TypePrimitive, ber.TagInteger, id, ""))
	p.AppendChild(op)
	if len(controls) > 0 {
		cs := ber.Encode(ber.ClassContext, ber.TypeConstructed, 0, nil, "")
		for _, c := range controls {
			cs.AppendChild(c)
		}
		p.AppendChild(cs)
	}
	return p
}

func octets(s string) *ber.Packet {
	return ber.NewString(ber.ClassUniversal, ber.TypePrimitive, ber.TagOctetString, s, "")
}

func entryMessage(id int64, dn string, syncState bool) *ber.Packet {
	op := entryOp(octets(dn))
	if !syncState {
		return envelope(id, op)
	}
	return envelope(id, op, syncStateControl(ldap.SyncStateAdd, true, "cookie"))
}

func entryOp(dn *ber.Packet) *ber.Packet {
	op := ber.Encode(ber.ClassApplication, ber.TypeConstructed, ldap.ApplicationSearchResultEntry, nil, "")
	op.AppendChild(dn)
	attrs := ber.Encode(ber.ClassUniversal, ber.TypeConstructed, ber.TagSequence, nil, "")
	for _, a := range []struct {
		name string
		vals []string
	}{
		{"entryUUID", []string{"0c1ac2f2-4f5d-103f-8f1e-b5b5a2d9c0a1"}}, {"uid", []string{"zoe.orsted"}},
		{"mail", []string{"Zoë.Ørsted@corp.example", "zoe@corp.example"}}, {"displayName", []string{"Zoë Ørsted"}},
		{"departmentNumber", nil}, {"jpegPhoto", []string{"\xff\xd8\xff\x00\x01"}}, {"description", []string{""}},
	} {
		attr := ber.Encode(ber.ClassUniversal, ber.TypeConstructed, ber.TagSequence, nil, "")
		attr.AppendChild(octets(a.name))
		set := ber.Encode(ber.ClassUniversal, ber.TypeConstructed, ber.TagSet, nil, "")
		for _, v := range a.vals {
			set.AppendChild(octets(v))
		}
		attr.AppendChild(set)
		attrs.AppendChild(attr)
	}
	op.AppendChild(attrs)
	return op
}

func syncStateControl(state ldap.ControlSyncStateState, critical bool, cookie string) *ber.Packet {
	value := ber.Encode(ber.ClassUniversal, ber.TypeConstructed, ber.TagSequence, nil, "")
	value.AppendChild(ber.NewInteger(ber.ClassUniversal, ber.TypePrimitive, ber.TagEnumerated, int64(state), ""))
	value.AppendChild(octets("\x0c\x1a\xc2\xf2\x4f\x5d\x10\x3f\x8f\x1e\xb5\xb5\xa2\xd9\xc0\xa1"))
	if cookie != "" {
		value.AppendChild(octets(cookie))
	}
	c := ber.Encode(ber.ClassUniversal, ber.TypeConstructed, ber.TagSequence, nil, "")
	c.AppendChild(octets(ldap.ControlTypeSyncState))
	if critical {
		c.AppendChild(ber.NewBoolean(ber.ClassUniversal, ber.TypePrimitive, ber.TagBoolean, false, ""))
	}
	c.AppendChild(octets(string(value.Bytes())))
	return c
}

func doneMessage(id int64, controls ...*ber.Packet) *ber.Packet {
	op := ber.Encode(ber.ClassApplication, ber.TypeConstructed, ldap.ApplicationSearchResultDone, nil, "")
	op.AppendChild(ber.NewInteger(ber.ClassUniversal, ber.TypePrimitive, ber.TagEnumerated, int64(0), ""))
	op.AppendChild(octets(""))
	op.AppendChild(octets(""))
	return envelope(id, op, controls...)
}

func referenceMessage(id int64, url string) *ber.Packet {
	op := ber.Encode(ber.ClassApplication, ber.TypeConstructed, ldap.ApplicationSearchResultReference, nil, "")
	op.AppendChild(octets(url))
	return envelope(id, op)
}

// longForm re-encodes the message's outer length in the long form.
func longForm(p *ber.Packet) []byte {
	b := p.Bytes()
	n, size, _ := berLength(b[1:])
	return append([]byte{b[0], 0x84, byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)}, b[1+size:]...)
}

// indefinite re-encodes the message with an indefinite outer length.
func indefinite(p *ber.Packet) []byte {
	b := p.Bytes()
	_, size, _ := berLength(b[1:])
	return append(append([]byte{b[0], 0x80}, b[1+size:]...), 0, 0)
}

func leanSeeds() [][]byte {
	cat := func(ps ...[]byte) []byte { return bytes.Join(ps, nil) }
	e := entryMessage(1, "uid=zoe.orsted,ou=people,dc=corp,dc=example", false).Bytes()
	s := entryMessage(1, "uid=zoe.orsted,ou=people,dc=corp,dc=example", true).Bytes()
	other := entryMessage(2, "uid=other,dc=corp,dc=example", true).Bytes()
	paging := ldap.NewControlPaging(1000)
	paging.SetCookie([]byte("next"))
	noCookie := syncStateControl(ldap.SyncStatePresent, false, "")
	unknown := ber.Encode(ber.ClassUniversal, ber.TypeConstructed, ber.TagSequence, nil, "")
	unknown.AppendChild(octets("1.2.3.4"))
	utf8Entry := envelope(1, entryOp(ber.NewString(ber.ClassUniversal, ber.TypePrimitive, ber.TagUTF8String, "uid=a", ""))).Bytes()
	op := entryOp(octets("uid=x"))
	return [][]byte{
		utf8Entry,
		e, s, cat(s, s, s), cat(e, referenceMessage(1, "ldap://other/dc=x").Bytes(), s),
		cat(other, s), cat(s, other, e),
		envelope(1, op, noCookie).Bytes(), envelope(1, op, unknown).Bytes(), envelope(1, op, noCookie, unknown).Bytes(),
		envelope(1, op, paging.Encode()).Bytes(),
		cat(s, doneMessage(1, paging.Encode()).Bytes(), e),
		longForm(entryMessage(1, "uid=long", true)), cat(indefinite(entryMessage(1, "uid=indef", false)), s),
		s[:len(s)-3], cat(s, e[:10]), {0x30}, {0x30, 0x84, 0xff, 0xff, 0xff, 0xff}, {0x02, 0x01, 0x01},
		envelope(0x7fffffff, op).Bytes(), envelope(-1, op).Bytes(),
	}
}
