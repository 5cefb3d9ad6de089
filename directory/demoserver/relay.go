package demoserver

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	ber "github.com/go-asn1-ber/asn1-ber"
	"github.com/go-ldap/ldap/v3"
	"github.com/jimlambrt/gldap"
)

// maxResponseBytes bounds one message from gldap to the client; entries are
// small, so anything larger is a bug and ends the connection.
const maxResponseBytes = 64 << 20

var (
	errMalformed = errors.New("malformed LDAP message")
	errTooLarge  = errors.New("LDAP message too large")
)

// readMessage reads one LDAPMessage (RFC 4511 4.1.1): a BER SEQUENCE with a
// definite length, which is the only length form LDAP allows (5.1).
func readMessage(r *bufio.Reader, max int) ([]byte, error) {
	tag, err := r.ReadByte()
	if err != nil {
		return nil, err
	}
	if tag != 0x30 {
		return nil, fmt.Errorf("%w: starts with 0x%02x, not a SEQUENCE", errMalformed, tag)
	}
	first, err := r.ReadByte()
	if err != nil {
		return nil, unexpected(err)
	}
	header := []byte{tag, first}
	length := int(first)
	switch {
	case first == 0x80:
		return nil, fmt.Errorf("%w: indefinite length", errMalformed)
	case first > 0x80:
		n := int(first & 0x7f)
		if n > 4 {
			return nil, fmt.Errorf("%w: %d length bytes", errTooLarge, n)
		}
		length = 0
		for i := 0; i < n; i++ {
			b, err := r.ReadByte()
			if err != nil {
				return nil, unexpected(err)
			}
			header = append(header, b)
			length = length<<8 | int(b)
		}
	}
	if length > max {
		return nil, fmt.Errorf("%w: %d bytes (at most %d)", errTooLarge, length, max)
	}
	msg := make([]byte, len(header)+length)
	copy(msg, header)
	if _, err := io.ReadFull(r, msg[len(header):]); err != nil {
		return nil, unexpected(err)
	}
	return msg, nil
}

func unexpected(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

// peekOperation returns the message ID and the protocolOp tag of a framed
// message without decoding the rest.
func peekOperation(msg []byte) (id int64, op ber.Tag, err error) {
	body := msg[2:]
	if msg[1] > 0x80 {
		body = msg[2+int(msg[1]&0x7f):]
	}
	// messageID INTEGER (0 .. 2^31-1)
	if len(body) < 3 || body[0] != 0x02 || body[1] == 0 || body[1] > 4 || len(body) < 2+int(body[1]) {
		return 0, 0, fmt.Errorf("%w: no message ID", errMalformed)
	}
	n := int(body[1])
	if body[2]&0x80 != 0 {
		return 0, 0, fmt.Errorf("%w: negative message ID", errMalformed)
	}
	for _, b := range body[2 : 2+n] {
		id = id<<8 | int64(b)
	}
	rest := body[2+n:]
	if len(rest) == 0 || rest[0]&0xc0 != 0x40 || rest[0]&0x1f == 0x1f {
		return 0, 0, fmt.Errorf("%w: no protocol operation", errMalformed)
	}
	return id, ber.Tag(rest[0] & 0x1f), nil
}

// ldapResult encodes an LDAPMessage holding an LDAPResult of the given
// application tag.
func ldapResult(id int64, app ber.Tag, code int, diag string, extra ...*ber.Packet) []byte {
	p := ber.Encode(ber.ClassUniversal, ber.TypeConstructed, ber.TagSequence, nil, "LDAP Response")
	p.AppendChild(ber.NewInteger(ber.ClassUniversal, ber.TypePrimitive, ber.TagInteger, id, "MessageID"))
	res := ber.Encode(ber.ClassApplication, ber.TypeConstructed, app, nil, "Result")
	res.AppendChild(ber.NewInteger(ber.ClassUniversal, ber.TypePrimitive, ber.TagEnumerated, int64(code), "resultCode"))
	res.AppendChild(ber.NewString(ber.ClassUniversal, ber.TypePrimitive, ber.TagOctetString, "", "matchedDN"))
	res.AppendChild(ber.NewString(ber.ClassUniversal, ber.TypePrimitive, ber.TagOctetString, diag, "diagnosticMessage"))
	for _, x := range extra {
		res.AppendChild(x)
	}
	p.AppendChild(res)
	return p.Bytes()
}

// noticeOfDisconnection is the unsolicited notification a server sends
// before it closes a connection (RFC 4511 4.4.1).
func noticeOfDisconnection(code int, diag string) []byte {
	name := ber.NewString(ber.ClassContext, ber.TypePrimitive, 10, "1.3.6.1.4.1.1466.20036", "responseName")
	return ldapResult(0, gldap.ApplicationExtendedResponse, code, diag, name)
}

func (s *Server) accept() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			// Out of file descriptors and the like: back off, keep serving.
			s.log.Warn("demo directory: accept", "err", err)
			time.Sleep(50 * time.Millisecond)
			continue
		}
		s.wg.Add(1)
		go s.relay(c)
	}
}

func (s *Server) track(conns ...net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopping {
		return false
	}
	for _, c := range conns {
		s.conns[c] = struct{}{}
	}
	return true
}

func (s *Server) untrack(conns ...net.Conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range conns {
		delete(s.conns, c)
	}
}

// relay carries one client connection to gldap and back, one whole LDAP
// message at a time.
func (s *Server) relay(client net.Conn) {
	defer s.wg.Done()
	defer client.Close()
	backend, err := net.DialTimeout("tcp", s.backend, 5*time.Second)
	if err != nil {
		s.log.Warn("demo directory: connect to the LDAP engine", "err", err)
		return
	}
	defer backend.Close()
	if !s.track(client, backend) {
		return
	}
	defer s.untrack(client, backend)

	var writeMu sync.Mutex // the relay itself answers some requests
	write := func(b []byte) error {
		writeMu.Lock()
		defer writeMu.Unlock()
		_, err := client.Write(b)
		return err
	}

	fromBackend := make(chan struct{})
	go func() {
		defer close(fromBackend)
		// gldap closes its side after an unbind, a request it cannot
		// parse, or at shutdown; the client connection ends with it.
		defer client.Close()
		br := bufio.NewReader(backend)
		for {
			msg, err := readMessage(br, maxResponseBytes)
			if err != nil {
				return
			}
			if write(msg) != nil {
				return
			}
		}
	}()

	cr := bufio.NewReader(client)
	for {
		msg, err := readMessage(cr, s.cfg.MaxMessageBytes)
		if err == nil {
			var forward, reply []byte
			if forward, reply, err = s.intercept(msg); err == nil {
				if reply != nil {
					err = write(reply)
				} else {
					_, err = backend.Write(forward)
				}
			}
		}
		if err == nil {
			continue
		}
		if errors.Is(err, errMalformed) || errors.Is(err, errTooLarge) {
			s.log.Debug("demo directory: closing a connection", "remote", client.RemoteAddr(), "err", err)
			_ = write(noticeOfDisconnection(gldap.ResultProtocolError, err.Error()))
		}
		break
	}
	// Let gldap finish the requests it has and close its side.
	if tc, ok := backend.(*net.TCPConn); ok {
		_ = tc.CloseWrite()
	} else {
		backend.Close()
	}
	<-fromBackend
}

// swallowed is the reply of intercept for a request that gets no response.
var swallowed = []byte{}

// intercept looks at a request before gldap does. It returns the message to
// forward to gldap, or a reply that the relay sends itself for the requests
// that gldap v0.1.14 cannot parse and would drop the connection for.
func (s *Server) intercept(msg []byte) (forward, reply []byte, err error) {
	id, op, err := peekOperation(msg)
	if err != nil {
		return nil, nil, err
	}
	switch op {
	case gldap.ApplicationSearchRequest:
		// 0xa9 starts an extensible match; most searches have none, and
		// skip the decoding.
		if bytes.IndexByte(msg, 0xa9) < 0 {
			return msg, nil, nil
		}
		forward, err = rewriteDNAttributes(msg)
		return forward, nil, err
	case gldap.ApplicationAbandonRequest:
		// No response to an abandon (RFC 4511 4.11); searches here finish
		// before an abandon could reach them.
		return nil, swallowed, nil
	case gldap.ApplicationCompareRequest:
		return nil, ldapResult(id, gldap.ApplicationCompareResponse, gldap.ResultUnwillingToPerform,
			"compare is not supported by the demo directory: search with an equality filter instead"), nil
	case gldap.ApplicationModifyDNRequest:
		return nil, ldapResult(id, gldap.ApplicationModifyDNResponse, gldap.ResultUnwillingToPerform,
			"the demo directory is read-only"), nil
	}
	return msg, nil, nil
}

// dnAttrsMarker prefixes the matching rule of an extensible match whose
// dnAttributes flag the relay moved into the rule. A matching rule is an OID
// or a descriptor, neither of which can hold a ";", so it cannot collide.
const dnAttrsMarker = "x-passbridge-dnattributes;"

// rewriteDNAttributes works around go-ldap's DecompileFilter, which gldap
// uses to hand filters over as strings: it reads the dnAttributes boolean of
// an extensible match (such as "(ou:dn:=Sales)") as a decoded value, which a
// context-tagged element never has, so the request fails and gldap drops the
// connection. The relay moves the flag into the matching rule, where it
// survives the round trip, and the filter evaluator moves it back. It
// returns msg unchanged when the message holds no such filter.
func rewriteDNAttributes(msg []byte) ([]byte, error) {
	p, err := ber.DecodePacketErr(msg)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errMalformed, err)
	}
	if len(p.Children) < 2 || len(p.Children[1].Children) < 7 {
		return msg, nil // gldap reports what is missing
	}
	if !moveDNAttributes(p.Children[1].Children[6], 0) {
		return msg, nil
	}
	return reencode(p).Bytes(), nil
}

func moveDNAttributes(f *ber.Packet, depth int) bool {
	if depth > maxFilterDepth || f.ClassType != ber.ClassContext {
		return false
	}
	switch f.Tag {
	case ldap.FilterAnd, ldap.FilterOr, ldap.FilterNot:
		changed := false
		for _, c := range f.Children {
			if moveDNAttributes(c, depth+1) {
				changed = true
			}
		}
		return changed
	case ldap.FilterExtensibleMatch:
		var rule *ber.Packet
		kept := f.Children[:0]
		flag := false
		for _, c := range f.Children {
			switch c.Tag {
			case ldap.MatchingRuleAssertionDNAttributes:
				flag = len(c.Data.Bytes()) == 1 && c.Data.Bytes()[0] != 0
				continue
			case ldap.MatchingRuleAssertionMatchingRule:
				rule = c
			}
			kept = append(kept, c)
		}
		if len(kept) == len(f.Children) {
			return false
		}
		f.Children = kept
		if !flag {
			return true // an explicit FALSE is the default
		}
		name := dnAttrsMarker
		if rule != nil {
			name += rule.Data.String()
			rule.Data.Reset()
			rule.Data.WriteString(name)
			rule.Value = name
			return true
		}
		rule = ber.NewString(ber.ClassContext, ber.TypePrimitive, ldap.MatchingRuleAssertionMatchingRule, name, "matchingRule")
		f.Children = append([]*ber.Packet{rule}, f.Children...)
		return true
	}
	return false
}

// reencode rebuilds the encoded content of constructed packets after their
// children changed (ber keeps a copy of each child's bytes in its parent).
func reencode(p *ber.Packet) *ber.Packet {
	if p.TagType != ber.TypeConstructed {
		return p
	}
	children := p.Children
	p.Children = nil
	p.Data.Reset()
	for _, c := range children {
		p.AppendChild(reencode(c))
	}
	return p
}
