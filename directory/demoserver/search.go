package demoserver

import (
	"crypto/rand"
	"fmt"
	"strings"

	ber "github.com/go-asn1-ber/asn1-ber"
	"github.com/jimlambrt/gldap"
)

// pagedSearch is the state of a paged search between pages (RFC 2696): the
// full result, fixed when the first page was asked for, so that every entry
// is returned exactly once even if the directory is replaced meanwhile.
type pagedSearch struct {
	fingerprint string
	results     []*entry
	next        int
	truncated   bool // the client's size limit cut the results
}

// selection is the attribute list of a search request (RFC 4511 4.5.1.8,
// RFC 3673).
type selection struct {
	user, operational bool
	names             map[string]bool
}

func newSelection(attrs []string) selection {
	sel := selection{names: map[string]bool{}}
	noAttrs := false
	for _, a := range attrs {
		switch a = strings.TrimSpace(a); a {
		case "*":
			sel.user = true
		case "+":
			sel.operational = true
		case "1.1":
			noAttrs = true
		case "":
		default:
			l, _ := canonicalAttr(a)
			sel.names[l] = true
		}
	}
	// No list, or an empty one, means all user attributes; "1.1" alone means
	// none (it is ignored when other attributes are listed too).
	if len(attrs) == 0 || (!noAttrs && !sel.operational && len(sel.names) == 0 && !sel.user) {
		sel.user = true
	}
	return sel
}

func (sel selection) includes(a *attr) bool {
	switch {
	case a.typ.syn == synSecret:
		return false // userPassword is never read over LDAP
	case sel.names[a.lname]:
		return true
	case a.typ.operational:
		return sel.operational
	}
	return sel.user
}

func (s *Server) handleSearch(w *gldap.ResponseWriter, r *gldap.Request) {
	done := r.NewSearchDoneResponse()
	finished := false
	reply := func(code int, diag string) {
		if finished {
			return
		}
		finished = true
		done.SetResultCode(code)
		done.SetDiagnosticMessage(diag)
		if err := w.Write(done); err != nil {
			s.log.Debug("demo directory: write search result", "err", err)
		}
	}
	defer s.recoverHandler("search", reply)

	m, err := r.GetSearchMessage()
	if err != nil {
		reply(gldap.ResultProtocolError, "not a search request")
		return
	}
	conn := r.ConnectionID()
	if oid := criticalUnsupported(m.Controls, supportedControls...); oid != "" {
		reply(gldap.ResultUnavailableCriticalExtension, "critical control "+oid+" is not supported")
		return
	}
	var paging *gldap.ControlPaging
	for _, c := range m.Controls {
		if p, ok := c.(*gldap.ControlPaging); ok {
			paging = p
		}
	}
	if m.Scope < gldap.BaseObject || m.Scope > gldap.WholeSubtree {
		reply(gldap.ResultProtocolError, fmt.Sprintf("invalid search scope %d", m.Scope))
		return
	}
	base, err := normalizeDN(m.BaseDN)
	if err != nil {
		reply(gldap.ResultInvalidDNSyntax, "invalid base DN syntax")
		return
	}
	filter, err := compileFilter(m.Filter)
	if err != nil {
		reply(gldap.ResultProtocolError, "invalid filter: "+err.Error())
		return
	}
	dir := s.dir.Load()
	rootDSE := len(base.rdns) == 0 && m.Scope == gldap.BaseObject
	// The root DSE is readable before a bind, as in every directory server;
	// everything else needs an authenticated connection.
	if !rootDSE && s.boundDN(conn) == "" {
		reply(gldap.ResultInsufficientAccessRights, "anonymous searches are not allowed: bind first")
		return
	}
	sel := newSelection(m.Attributes)

	var (
		results   []*entry
		truncated bool
		cookie    []byte
		total     int
		page      *pagedSearch
	)
	fingerprint := fmt.Sprintf("%s\x00%d\x00%d\x00%t\x00%d\x00%s\x00%s", base, m.Scope, m.DerefAliases,
		m.TypesOnly, m.SizeLimit, m.Filter, strings.ToLower(strings.Join(m.Attributes, "\x00")))

	if paging != nil && len(paging.Cookie) > 0 {
		page, err = s.takePage(conn, string(paging.Cookie), fingerprint)
		if err != nil {
			reply(gldap.ResultUnwillingToPerform, err.Error())
			return
		}
		total = len(page.results)
		if paging.PagingSize == 0 {
			// A page size of 0 abandons the paged search (RFC 2696 3).
			done.SetControls(&gldap.ControlPaging{PagingSize: uint32(total)})
			reply(gldap.ResultSuccess, "")
			return
		}
	} else {
		var code int
		var diag, matched string
		results, code, diag, matched = dir.search(base, m.Scope, filter)
		if code != gldap.ResultSuccess {
			done.SetMatchedDN(matched)
			reply(code, diag)
			return
		}
		if limit := int(m.SizeLimit); limit > 0 && len(results) > limit {
			results, truncated = results[:limit], true
		}
		total = len(results)
		if paging == nil {
			if limit := s.cfg.SizeLimit; limit > 0 && len(results) > limit {
				results, truncated = results[:limit], true
			}
		} else {
			page = &pagedSearch{fingerprint: fingerprint, results: results, truncated: truncated}
			if paging.PagingSize == 0 {
				// Only the size estimate, no entries.
				done.SetControls(&gldap.ControlPaging{PagingSize: uint32(total)})
				reply(gldap.ResultSuccess, "")
				return
			}
		}
	}
	if page != nil {
		size := min(int(paging.PagingSize), s.cfg.MaxPageSize)
		end := min(page.next+size, len(page.results))
		results = page.results[page.next:end]
		page.next = end
		truncated = false
		if page.next < len(page.results) {
			cookie, err = s.keepPage(conn, page)
			if err != nil {
				reply(gldap.ResultOperationsError, err.Error())
				return
			}
		} else {
			truncated = page.truncated
		}
	}

	for _, e := range results {
		resp := r.NewSearchResponseEntry(e.dn)
		for _, a := range e.attrs {
			if !sel.includes(a) {
				continue
			}
			if m.TypesOnly {
				resp.AddAttribute(a.name, nil)
			} else {
				resp.AddAttribute(a.name, a.values)
			}
		}
		if err := w.Write(resp); err != nil {
			s.log.Debug("demo directory: write search entry", "err", err)
			return // the client is gone
		}
	}
	if paging != nil {
		c := &gldap.ControlPaging{PagingSize: uint32(total)}
		c.SetCookie(cookie)
		done.SetControls(c)
	}
	s.log.Debug("demo directory: search", "conn", conn, "base", m.BaseDN, "scope", int(m.Scope),
		"filter", m.Filter, "entries", len(results), "paged", paging != nil, "more", len(cookie) > 0)
	if truncated {
		reply(gldap.ResultSizeLimitExceeded, "size limit exceeded")
		return
	}
	reply(gldap.ResultSuccess, "")
}

// takePage returns the paged search a cookie names and forgets it (keepPage
// stores it again under a fresh cookie when pages remain, so a cookie works
// once).
func (s *Server) takePage(conn int, cookie, fingerprint string) (*pagedSearch, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sess := s.sessions[conn]
	if sess == nil || sess.paged[cookie] == nil {
		return nil, fmt.Errorf("paged results cookie is invalid or was already used")
	}
	p := sess.paged[cookie]
	if p.fingerprint != fingerprint {
		return nil, fmt.Errorf("paged results cookie belongs to a different search: repeat the same search with the cookie")
	}
	delete(sess.paged, cookie)
	return p, nil
}

func (s *Server) keepPage(conn int, p *pagedSearch) ([]byte, error) {
	raw := make([]byte, 16)
	if _, err := rand.Read(raw); err != nil {
		return nil, fmt.Errorf("paged results cookie: %w", err)
	}
	cookie := string(raw)
	s.mu.Lock()
	defer s.mu.Unlock()
	sess := s.session(conn)
	sess.paged[cookie] = p
	sess.order = append(sess.order, cookie)
	// Forget used cookies, then the oldest searches beyond the bound.
	live := sess.order[:0]
	for _, c := range sess.order {
		if sess.paged[c] != nil {
			live = append(live, c)
		}
	}
	sess.order = live
	for len(sess.order) > maxPagedPerConn {
		delete(sess.paged, sess.order[0])
		sess.order = sess.order[1:]
	}
	return raw, nil
}

// search returns the entries in scope that match the filter, in file order.
// A missing base gives noSuchObject with the nearest existing ancestor as
// the matched DN.
func (d *Directory) search(base dnKey, scope gldap.Scope, f *ber.Packet) (results []*entry, code int, diag, matched string) {
	var candidates []*entry
	if len(base.rdns) == 0 {
		switch scope {
		case gldap.BaseObject:
			candidates = []*entry{d.root}
		case gldap.SingleLevel:
			candidates = d.suffixes
		default:
			// The root DSE is not part of a subtree search (RFC 4511 4.5.1.2).
			candidates = d.entries
		}
	} else {
		b := d.byKey[base.String()]
		if b == nil {
			for a := base.parent(); len(a.rdns) > 0; a = a.parent() {
				if e := d.byKey[a.String()]; e != nil {
					matched = e.dn
					break
				}
			}
			return nil, gldap.ResultNoSuchObject, "no such object", matched
		}
		switch scope {
		case gldap.BaseObject:
			candidates = []*entry{b}
		default:
			for _, e := range d.entries {
				depth, ok := e.key.within(base)
				if ok && (scope == gldap.WholeSubtree || depth == 1) {
					candidates = append(candidates, e)
				}
			}
		}
	}
	for _, e := range candidates {
		if d.eval(f, e) == triTrue {
			results = append(results, e)
		}
	}
	return results, gldap.ResultSuccess, "", ""
}
