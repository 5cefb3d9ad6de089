package directory

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"sync"

	"github.com/go-ldap/ldap/v3"
)

// The lean reader: a full sync reads every user of the directory, and a
// profile of that read (bench/README.md, "Directory sync") puts half of the
// CPU in asn1-ber's ReadPacket, which turns each message into a tree of
// packets with a bytes.Buffer per node, and most of the rest in the
// garbage collector cleaning up after it. So the sync's user searches alone
// (and only their SearchResultEntry messages) are decoded here, straight
// from the bytes, into rawEntry values that point into the message.
//
// go-ldap keeps everything else: it binds, sends the requests, decodes
// SearchResultDone (result codes, the paging cookie, syncrepl's done
// control), references and intermediate responses, handles timeouts and
// every message of every other operation. The tap sits between go-ldap and
// the (TLS) connection: it frames the server's messages, hands go-ldap the
// bytes of every message it does not take, and takes the entries of the
// one search armed for it. A message the lean decoder does not accept as
// canonical (any encoding but the plain definite-length one, a control
// other than syncrepl's entry state) goes to go-ldap unchanged, and so do
// the rest of the connection's bytes if the framing itself is off: the
// lean path only ever speeds up what go-ldap would decode identically
// (FuzzLeanEntry checks that on arbitrary input).

// rawEntry is a search result entry as it arrived: the DN and every value
// are slices of the message's bytes (no copy; the message stays alive as
// long as the entry does).
type rawEntry struct {
	dn       []byte
	attrs    []rawAttr
	controls []ldap.Control
	// fromLDAP: go-ldap decoded it (rawFromLDAP), not the tap.
	fromLDAP bool
}

type rawAttr struct {
	name []byte
	vals [][]byte
}

// first is the first value of the first attribute named name (compared as
// go-ldap's GetEqualFoldAttributeValue does), nil when there is none.
func (e *rawEntry) first(name []byte) []byte {
	for i := range e.attrs {
		if bytes.EqualFold(e.attrs[i].name, name) {
			if len(e.attrs[i].vals) == 0 {
				return nil
			}
			return e.attrs[i].vals[0]
		}
	}
	return nil
}

// rawFromLDAP is the rawEntry of an entry go-ldap decoded (the messages the
// lean decoder leaves to it, and reads that are not lean).
func rawFromLDAP(e *ldap.Entry, controls []ldap.Control) *rawEntry {
	r := &rawEntry{dn: []byte(e.DN), attrs: make([]rawAttr, len(e.Attributes)), controls: controls, fromLDAP: true}
	for i, a := range e.Attributes {
		r.attrs[i] = rawAttr{name: []byte(a.Name), vals: a.ByteValues}
	}
	return r
}

// BER tags of the messages the tap looks at (RFC 4511 section 4).
const (
	berSequence    = 0x30
	berSet         = 0x31
	berInteger     = 0x02
	berBoolean     = 0x01
	berEnumerated  = 0x0a
	berOctetString = 0x04
	berControls    = 0xa0 // [0] Controls, constructed

	opSearchRequest = 0x63 // [APPLICATION 3] constructed
	opSearchEntry   = 0x64 // [APPLICATION 4]
	opSearchDone    = 0x65 // [APPLICATION 5]
)

// maxLeanMessage bounds the size of a message the tap frames; a larger one
// (and everything after it) goes to go-ldap as it comes.
const maxLeanMessage = 16 << 20

// tlv reads one definite-length BER element at the start of b: its tag
// byte, its content, and the rest of b. Single-byte tags only, and lengths
// in the short form or the long form of at most 4 bytes.
func tlv(b []byte) (tag byte, content, rest []byte, ok bool) {
	if len(b) < 2 {
		return 0, nil, nil, false
	}
	tag = b[0]
	if tag&0x1f == 0x1f {
		return 0, nil, nil, false // high tag number form
	}
	n, hdr, ok := berLength(b[1:])
	if !ok || n > len(b)-1-hdr {
		return 0, nil, nil, false
	}
	start := 1 + hdr
	return tag, b[start : start+n], b[start+n:], true
}

// berLength decodes a definite length: its value and how many bytes it took.
func berLength(b []byte) (n, size int, ok bool) {
	if len(b) == 0 {
		return 0, 0, false
	}
	l := b[0]
	if l < 0x80 {
		return int(l), 1, true
	}
	k := int(l & 0x7f)
	if k == 0 || k > 4 || len(b) < 1+k { // 0x80: indefinite; 0xff and long lengths: not ours
		return 0, 0, false
	}
	for _, c := range b[1 : 1+k] {
		n = n<<8 | int(c)
	}
	if n > maxLeanMessage {
		return 0, 0, false
	}
	return n, 1 + k, true
}

// berInt is asn1-ber's ParseInt64 for 1 to 8 content bytes.
func berInt(b []byte) (int64, bool) {
	if len(b) == 0 || len(b) > 8 {
		return 0, false
	}
	var v int64
	for _, c := range b {
		v = v<<8 | int64(c)
	}
	shift := 64 - uint(len(b))*8
	return v << shift >> shift, true
}

// messageHead reads the message ID and the protocol operation's tag of an
// LDAPMessage whose content starts b (b may be cut short).
func messageHead(b []byte) (id int64, op byte, ok bool) {
	tag, content, rest, ok := tlv(b)
	if !ok || tag != berInteger || len(rest) == 0 {
		return 0, 0, false
	}
	id, ok = berInt(content)
	return id, rest[0], ok
}

// syncStateOID is the syncrepl entry state control (RFC 4533).
var syncStateOID = []byte(ldap.ControlTypeSyncState)

// decodeEntry decodes one whole LDAPMessage holding a SearchResultEntry in
// its plain encoding. ok is false for anything else, which then goes to
// go-ldap: ok means go-ldap would decode the same message into the same
// DN, attributes and controls. vals and attrs are appended to (and the
// entry's slices point into them), so a batch of entries shares two arrays.
func decodeEntry(msg []byte, attrs []rawAttr, vals [][]byte) (e rawEntry, attrsOut []rawAttr, valsOut [][]byte, ok bool) {
	tag, body, rest, ok := tlv(msg)
	if !ok || tag != berSequence || len(rest) != 0 {
		return e, attrs, vals, false
	}
	tag, _, body, ok = tlv(body) // messageID
	if !ok || tag != berInteger {
		return e, attrs, vals, false
	}
	tag, op, body, ok := tlv(body)
	if !ok || tag != opSearchEntry {
		return e, attrs, vals, false
	}
	var controls []byte
	hasControls := false
	if len(body) > 0 {
		tag, controls, rest, ok = tlv(body)
		if !ok || tag != berControls || len(rest) != 0 {
			return e, attrs, vals, false
		}
		hasControls = true
	}
	tag, dn, op, ok := tlv(op)
	if !ok || tag != berOctetString {
		return e, attrs, vals, false
	}
	tag, list, op, ok := tlv(op)
	if !ok || tag != berSequence || len(op) != 0 {
		return e, attrs, vals, false
	}
	a0, v0 := len(attrs), len(vals)
	for len(list) > 0 {
		var attr, name, set []byte
		tag, attr, list, ok = tlv(list)
		if !ok || tag != berSequence {
			return e, attrs[:a0], vals[:v0], false
		}
		tag, name, attr, ok = tlv(attr)
		if !ok || tag != berOctetString {
			return e, attrs[:a0], vals[:v0], false
		}
		tag, set, attr, ok = tlv(attr)
		if !ok || tag != berSet || len(attr) != 0 {
			return e, attrs[:a0], vals[:v0], false
		}
		start := len(vals)
		for len(set) > 0 {
			var v []byte
			tag, v, set, ok = tlv(set)
			if !ok || tag != berOctetString {
				return e, attrs[:a0], vals[:v0], false
			}
			vals = append(vals, v)
		}
		attrs = append(attrs, rawAttr{name: name, vals: vals[start:len(vals):len(vals)]})
	}
	e = rawEntry{dn: dn, attrs: attrs[a0:len(attrs):len(attrs)]}
	if hasControls {
		// go-ldap's decodeSearchResultEntry leaves Controls nil when the
		// element holds none.
		for len(controls) > 0 {
			var c []byte
			tag, c, controls, ok = tlv(controls)
			if !ok || tag != berSequence {
				return e, attrs[:a0], vals[:v0], false
			}
			st, ok := decodeSyncState(c)
			if !ok {
				return e, attrs[:a0], vals[:v0], false
			}
			e.controls = append(e.controls, st)
		}
	}
	return e, attrs, vals, true
}

// decodeSyncState decodes the content of a Control that is syncrepl's
// entry state in its plain encoding (what go-ldap's DecodeControl and
// NewControlSyncState return for it).
func decodeSyncState(c []byte) (*ldap.ControlSyncState, bool) {
	tag, oid, c, ok := tlv(c)
	if !ok || tag != berOctetString || !bytes.Equal(oid, syncStateOID) {
		return nil, false
	}
	if len(c) > 0 && c[0] == berBoolean {
		// criticality: go-ldap reads it and then ignores it
		var crit []byte
		tag, crit, c, ok = tlv(c)
		if !ok || len(crit) != 1 {
			return nil, false
		}
	}
	tag, value, c, ok := tlv(c)
	if !ok || tag != berOctetString || len(c) != 0 {
		return nil, false
	}
	tag, seq, rest, ok := tlv(value)
	if !ok || tag != berSequence || len(rest) != 0 {
		return nil, false
	}
	tag, state, seq, ok := tlv(seq)
	if !ok || (tag != berEnumerated && tag != berInteger) {
		return nil, false
	}
	code, ok := berInt(state)
	if !ok {
		return nil, false
	}
	tag, id, seq, ok := tlv(seq)
	if !ok || tag != berOctetString || len(id) != 16 {
		return nil, false
	}
	st := &ldap.ControlSyncState{State: ldap.ControlSyncStateState(code)}
	copy(st.EntryUUID[:], id)
	if len(seq) > 0 {
		var cookie []byte
		tag, cookie, seq, ok = tlv(seq)
		if !ok || tag != berOctetString || len(seq) != 0 {
			return nil, false
		}
		st.Cookie = cookie
	}
	return st, true
}

// hotBatch is a run of entries of the armed search, in the order they
// arrived. handoff, when set, means that go-ldap gets the next message: the
// tap waits until the consumer closes handoff (it has taken every entry
// before that message), so that nothing go-ldap then delivers (that
// message's result, or the error of a connection it found broken) can
// overtake them. mode says what the consumer does next.
type hotBatch struct {
	entries []rawEntry
	handoff chan struct{}
	mode    int
}

// wellFormed reports whether b is a sequence of definite-length BER
// elements whose constructed ones are exactly filled by their children:
// then asn1-ber's ReadPacket reads exactly b (or fails inside it).
func wellFormed(b []byte, depth int) bool {
	if depth > 64 {
		return false
	}
	for len(b) > 0 {
		tag, content, rest, ok := tlv(b)
		if !ok || (tag&0x20 != 0 && !wellFormed(content, depth+1)) {
			return false
		}
		b = rest
	}
	return true
}

// How a flush ends (hotBatch.mode).
const (
	flushEntries = iota // hand over the entries decoded so far
	flushSync           // and wait until the consumer has them: a message of another operation for go-ldap
	flushHandoff        // the same, with a message of this search: the consumer waits for go-ldap's result of it
	flushRaw            // the same, and the rest of the search is go-ldap's alone
)

// hotSearch is the search whose entries the tap decodes.
type hotSearch struct {
	id   int64 // its message ID, once its request has been written
	ch   chan hotBatch
	done chan struct{} // closed when its consumer is gone
	stop sync.Once

	// The tap's reading goroutine only: the entries decoded and not yet
	// handed over are ents[sent:]. A batch is a capped slice of ents, and
	// entries point into attrs and vals: these arrays are shared by many
	// batches and replaced when full, never grown, so a batch handed over
	// is never written again.
	ents  []rawEntry
	sent  int
	attrs []rawAttr
	vals  [][]byte
}

// Sizes of hotSearch's shared arrays.
const (
	leanEntries = 1024
	leanValues  = 8 * leanEntries
)

// leanBatch is how many entries a hotBatch holds at most, and leanBatches
// how many batches may wait for the consumer: together as many entries as
// streamBuffer lets go-ldap decode ahead, so backpressure is the same.
const (
	leanBatch   = 128
	leanBatches = streamBuffer / leanBatch
)

// tap is the connection go-ldap reads from and writes to (see above).
type tap struct {
	net.Conn
	br *bufio.Reader

	mu    sync.Mutex
	armed *hotSearch // takes the message ID of the next search request written
	hot   *hotSearch

	// The read side: go-ldap's reader goroutine only.
	replay []byte // a message the tap read but go-ldap decodes
	pass   int    // bytes of the current message left in br for go-ldap
	raw    bool   // the framing failed: go-ldap reads the bytes as they come
	arena  []byte // the messages the lean decoder took
}

// arenaSize is how much of the wire one chunk of the arena holds: several
// hundred entries.
const arenaSize = 256 << 10

func newTap(c net.Conn) *tap {
	return &tap{Conn: c, br: bufio.NewReaderSize(c, 64<<10)}
}

// arm makes the next search request written the hot one.
func (t *tap) arm() *hotSearch {
	h := &hotSearch{ch: make(chan hotBatch, leanBatches), done: make(chan struct{})}
	t.mu.Lock()
	t.armed = h
	t.mu.Unlock()
	return h
}

// disarm says that the consumer of h is gone: the tap drops what is left of
// its entries (go-ldap would drop them too: nobody waits for them).
func (t *tap) disarm(h *hotSearch) {
	h.stop.Do(func() { close(h.done) })
	t.mu.Lock()
	if t.armed == h {
		t.armed = nil
	}
	t.mu.Unlock()
}

// Write sees go-ldap's requests go out: the armed search gets its message
// ID here, before the server can answer. go-ldap writes one whole message
// per call.
func (t *tap) Write(b []byte) (int, error) {
	t.mu.Lock()
	if t.armed != nil {
		if tag, body, _, ok := tlv(b); ok && tag == berSequence {
			if id, op, ok := messageHead(body); ok && op == opSearchRequest {
				t.armed.id = id
				t.hot, t.armed = t.armed, nil
			}
		}
	}
	t.mu.Unlock()
	return t.Conn.Write(b)
}

// Read is go-ldap's reader asking for bytes: it gets those of every
// message the tap does not take, unchanged and in order.
func (t *tap) Read(p []byte) (int, error) {
	for len(t.replay) == 0 && t.pass == 0 && !t.raw {
		t.next()
	}
	if len(t.replay) > 0 {
		n := copy(p, t.replay)
		t.replay = t.replay[n:]
		return n, nil
	}
	if t.raw {
		return t.br.Read(p)
	}
	if len(p) > t.pass {
		p = p[:t.pass]
	}
	n, err := t.br.Read(p)
	t.pass -= n
	if err != nil {
		t.raw = true
	}
	return n, err
}

// peek returns the next n bytes of the stream, handing the hot search's
// decoded entries to its consumer first when they are not all there yet (a
// server that pauses must not hold back entries that have arrived).
func (t *tap) peek(h *hotSearch, n int) ([]byte, error) {
	if t.br.Buffered() < n {
		t.flush(h, flushEntries)
	}
	return t.br.Peek(n)
}

// next frames the next message and either takes it (an entry of the hot
// search) or leaves it for go-ldap (pass, replay or raw).
func (t *tap) next() {
	// Entries decoded so far go to the consumer before the tap waits for
	// the network (peek): cur is the search hot until now.
	t.mu.Lock()
	cur := t.hot
	t.mu.Unlock()
	head, _ := t.peek(cur, 2)
	if len(head) == 2 && head[1] > 0x80 && head[1] != 0xff {
		head, _ = t.peek(cur, 2+int(head[1]&0x7f))
	}
	if len(head) < 2 || head[0] != berSequence {
		t.toRaw(cur) // the end of the stream, an error, or not an LDAPMessage
		return
	}
	n, size, ok := berLength(head[1:])
	if !ok {
		t.toRaw(cur)
		return
	}
	hdr := 1 + size
	total := hdr + n
	// The message ID and the operation's tag (an ID of up to 8 bytes).
	head, _ = t.peek(cur, min(total, hdr+2+8+1))
	// Which search is hot is read now that the message is here: its
	// request went out before the server could answer it, so a message
	// of a search that was just armed is never taken for another's.
	t.mu.Lock()
	h := t.hot
	t.mu.Unlock()
	if h != cur {
		t.flush(cur, flushSync)
	}
	if h == nil {
		t.pass = total
		return
	}
	id, op, ok := messageHead(head[min(hdr, len(head)):])
	if !ok {
		// Not a message this tap can route: to be sure that nothing of
		// the hot search overtakes its entries, go-ldap reads everything
		// from here on.
		t.toRaw(h)
		return
	}
	if id != h.id {
		// Another operation's message: go-ldap's, after the hot search's
		// entries so far (it could find the connection broken).
		t.flush(h, flushSync)
		t.pass = total
		return
	}
	// A message of the hot search: read it whole, into the arena.
	if total > cap(t.arena)-len(t.arena) {
		t.arena = make([]byte, 0, max(arenaSize, total))
	}
	at := len(t.arena)
	msg := t.arena[at : at+total]
	if t.br.Buffered() < total {
		t.flush(h, flushEntries)
	}
	got, err := io.ReadFull(t.br, msg)
	if err != nil {
		// Cut short: go-ldap gets what there was, then the error, as it
		// would have.
		t.toRaw(h)
		t.replay = msg[:got]
		return
	}
	t.arena = t.arena[:at+total]
	if op != opSearchEntry {
		// Done, a reference, an intermediate response: go-ldap's, after
		// the entries before it. The consumer then waits for go-ldap's
		// result of it, so go-ldap must read exactly this message: a well
		// formed one (otherwise it could read on into the next messages,
		// which the tap may be taking, and both would wait for the other).
		if !wellFormed(msg, 0) {
			t.toRaw(h)
			t.replay = msg
			return
		}
		t.flush(h, flushHandoff)
		if op == opSearchDone {
			t.mu.Lock()
			if t.hot == h {
				t.hot = nil
			}
			t.mu.Unlock()
		}
		t.replay = msg
		return
	}
	select {
	case <-h.done:
		return // nobody wants it any more
	default:
	}
	// An entry has at most one value per 2 bytes of its message: room
	// for that many, or fresh arrays.
	if need := total / 2; cap(h.attrs)-len(h.attrs) < need || cap(h.vals)-len(h.vals) < need {
		h.attrs, h.vals = make([]rawAttr, 0, max(leanValues, need)), make([][]byte, 0, max(leanValues, need))
	}
	e, attrs, vals, ok := decodeEntry(msg, h.attrs, h.vals)
	if !ok {
		// Not the plain encoding: go-ldap decodes it and, since it may
		// not end where the tap thinks, everything after it (as above).
		t.toRaw(h)
		t.replay = msg
		return
	}
	h.attrs, h.vals = attrs, vals
	if len(h.ents) == cap(h.ents) {
		t.flush(h, flushEntries)
		h.ents, h.sent = make([]rawEntry, 0, leanEntries), 0
	}
	h.ents = append(h.ents, e)
	if len(h.ents)-h.sent >= leanBatch {
		t.flush(h, flushEntries)
	}
}

// toRaw gives the rest of the stream to go-ldap as it comes, after the
// entries decoded so far.
func (t *tap) toRaw(h *hotSearch) {
	t.flush(h, flushRaw)
	t.raw = true
	t.mu.Lock()
	t.hot, t.armed = nil, nil
	t.mu.Unlock()
}

// flush hands the entries decoded so far to the consumer and, unless mode
// is flushEntries, waits until the consumer has taken them.
func (t *tap) flush(h *hotSearch, mode int) {
	if h == nil || (len(h.ents) == h.sent && mode == flushEntries) {
		return
	}
	b := hotBatch{entries: h.ents[h.sent:len(h.ents):len(h.ents)], mode: mode}
	h.sent = len(h.ents)
	if mode != flushEntries {
		b.handoff = make(chan struct{})
	}
	select {
	case h.ch <- b:
	case <-h.done:
		return
	}
	if b.handoff != nil {
		select {
		case <-b.handoff:
		case <-h.done:
		}
	}
}
