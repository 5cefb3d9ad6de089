package testsrv

import (
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/go-ldap/ldap/v3"
)

// opTimeout bounds every helper operation, so that a test that froze or
// killed a server fails with an error instead of hanging.
const opTimeout = 30 * time.Second

// dialLDAP connects to url (ldap:// or ldaps://), upgrades ldap:// with
// StartTLS when tlsConf is set and startTLS is true, and binds.
func dialLDAP(url string, tlsConf *tls.Config, startTLS bool, bindDN, password string) (*ldap.Conn, error) {
	opts := []ldap.DialOpt{ldap.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second})}
	if tlsConf != nil {
		opts = append(opts, ldap.DialWithTLSConfig(tlsConf))
	}
	c, err := ldap.DialURL(url, opts...)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", url, err)
	}
	c.SetTimeout(opTimeout)
	if startTLS {
		if err := c.StartTLS(tlsConf); err != nil {
			c.Close()
			return nil, fmt.Errorf("starttls %s: %w", url, err)
		}
	}
	if err := c.Bind(bindDN, password); err != nil {
		c.Close()
		return nil, fmt.Errorf("bind %s as %s: %w", url, bindDN, err)
	}
	return c, nil
}

// withConn runs fn on a fresh admin connection and fails tb on any error.
// A connection per call keeps helpers working across Kill/Restart.
func withConn(tb testing.TB, dial func() (*ldap.Conn, error), what string, fn func(*ldap.Conn) error) {
	tb.Helper()
	c, err := dial()
	if err != nil {
		tb.Fatalf("%s: %v", what, err)
	}
	defer c.Close()
	if err := fn(c); err != nil {
		tb.Fatalf("%s: %v", what, err)
	}
}

// connFor dials for a test and closes the connection when the test ends.
func connFor(tb testing.TB, dial func() (*ldap.Conn, error)) *ldap.Conn {
	tb.Helper()
	c, err := dial()
	if err != nil {
		tb.Fatalf("admin connection: %v", err)
	}
	tb.Cleanup(func() { c.Close() })
	return c
}

func addEntry(c *ldap.Conn, dn string, attrs map[string][]string) error {
	req := ldap.NewAddRequest(dn, nil)
	names := make([]string, 0, len(attrs))
	for n := range attrs {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if len(attrs[n]) > 0 {
			req.Attribute(n, attrs[n])
		}
	}
	if err := c.Add(req); err != nil {
		return fmt.Errorf("add %s: %w", dn, err)
	}
	return nil
}

// replaceAttrs replaces each attribute's values; an empty list removes the
// attribute (an LDAP replace with no values).
func replaceAttrs(c *ldap.Conn, dn string, attrs map[string][]string, controls ...ldap.Control) error {
	req := ldap.NewModifyRequest(dn, controls)
	names := make([]string, 0, len(attrs))
	for n := range attrs {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		req.Replace(n, attrs[n])
	}
	if err := c.Modify(req); err != nil {
		return fmt.Errorf("modify %s: %w", dn, err)
	}
	return nil
}

func modifyMember(c *ldap.Conn, group, member string, add bool) error {
	req := ldap.NewModifyRequest(group, nil)
	if add {
		req.Add("member", []string{member})
	} else {
		req.Delete("member", []string{member})
	}
	if err := c.Modify(req); err != nil {
		return fmt.Errorf("modify member of %s: %w", group, err)
	}
	return nil
}

// modDN renames dn to newRDN (empty: keep the RDN) under newParent (empty:
// keep the parent) and returns the new DN.
func modDN(c *ldap.Conn, dn, newRDN, newParent string) (string, error) {
	rdn, parent, err := splitDN(dn)
	if err != nil {
		return "", err
	}
	if newRDN == "" {
		newRDN = rdn
	}
	req := ldap.NewModifyDNRequest(dn, newRDN, true, newParent)
	if newParent == "" {
		newParent = parent
	}
	if err := c.ModifyDN(req); err != nil {
		return "", fmt.Errorf("modify DN of %s to %s,%s: %w", dn, newRDN, newParent, err)
	}
	return newRDN + "," + newParent, nil
}

// splitDN splits a DN into its first RDN and its parent, as written (the
// server's spelling is kept, escapes included).
func splitDN(dn string) (rdn, parent string, err error) {
	if _, err := ldap.ParseDN(dn); err != nil {
		return "", "", fmt.Errorf("parse DN %q: %w", dn, err)
	}
	for i := 0; i < len(dn); i++ {
		switch dn[i] {
		case '\\':
			i++
		case ',':
			return strings.TrimSpace(dn[:i]), strings.TrimSpace(dn[i+1:]), nil
		}
	}
	return "", "", fmt.Errorf("DN %q has no parent", dn)
}

func deleteEntry(c *ldap.Conn, dn string, controls ...ldap.Control) error {
	if err := c.Del(ldap.NewDelRequest(dn, controls)); err != nil {
		return fmt.Errorf("delete %s: %w", dn, err)
	}
	return nil
}

// deleteSubtree deletes dn and everything below it, leaves first, for
// servers without the tree delete control.
func deleteSubtree(c *ldap.Conn, dn string) error {
	res, err := c.SearchWithPaging(ldap.NewSearchRequest(dn, ldap.ScopeWholeSubtree, ldap.NeverDerefAliases,
		0, 0, false, "(objectClass=*)", []string{"1.1"}, nil), 500)
	if ldap.IsErrorWithCode(err, ldap.LDAPResultNoSuchObject) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("list %s: %w", dn, err)
	}
	type item struct {
		dn    string
		depth int
	}
	items := make([]item, 0, len(res.Entries))
	for _, e := range res.Entries {
		p, err := ldap.ParseDN(e.DN)
		if err != nil {
			return fmt.Errorf("parse DN %q: %w", e.DN, err)
		}
		items = append(items, item{e.DN, len(p.RDNs)})
	}
	sort.Slice(items, func(i, j int) bool { return items[i].depth > items[j].depth })
	for _, it := range items {
		if err := deleteEntry(c, it.dn); err != nil && !ldap.IsErrorWithCode(err, ldap.LDAPResultNoSuchObject) {
			return err
		}
	}
	return nil
}

// readEntry reads one entry with a base search; attrs default to all user
// and operational attributes.
func readEntry(c *ldap.Conn, dn string, attrs []string, controls ...ldap.Control) (*ldap.Entry, error) {
	if len(attrs) == 0 {
		attrs = []string{"*", "+"}
	}
	res, err := c.Search(ldap.NewSearchRequest(dn, ldap.ScopeBaseObject, ldap.NeverDerefAliases,
		0, 0, false, "(objectClass=*)", attrs, controls))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", dn, err)
	}
	if len(res.Entries) != 1 {
		return nil, fmt.Errorf("read %s: %d entries", dn, len(res.Entries))
	}
	return res.Entries[0], nil
}

// randomName is a short random suffix for per-test names.
func randomName(prefix string) string {
	b := make([]byte, 5)
	if _, err := rand.Read(b); err != nil {
		panic(fmt.Sprintf("crypto/rand: %v", err)) // never fails on Linux
	}
	return prefix + hex.EncodeToString(b)
}

// isConnError reports whether err means the server could not be reached at
// all (as opposed to refusing the operation).
func isConnError(err error) bool {
	var le *ldap.Error
	if errors.As(err, &le) {
		return le.ResultCode == ldap.ErrorNetwork
	}
	var ne net.Error
	return errors.As(err, &ne)
}
