package demoserver

import (
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/go-ldap/ldap/v3"
)

// dnKey is a DN in a normalised form that two DNs share when
// distinguishedNameMatch says they are equal: attribute types by canonical
// name, values case-folded with insignificant spaces removed, the AVAs of a
// multi-valued RDN sorted, escaping undone. rdns[0] is the leftmost RDN.
type dnKey struct {
	rdns []string
}

func (k dnKey) String() string { return strings.Join(k.rdns, ",") }

// parent returns the key of the parent entry; the key of a root is empty.
func (k dnKey) parent() dnKey {
	if len(k.rdns) == 0 {
		return k
	}
	return dnKey{rdns: k.rdns[1:]}
}

// within reports whether k is base or below it; depth is how many levels
// below (0 for base itself).
func (k dnKey) within(base dnKey) (depth int, ok bool) {
	d := len(k.rdns) - len(base.rdns)
	if d < 0 {
		return 0, false
	}
	for i := range base.rdns {
		if k.rdns[d+i] != base.rdns[i] {
			return 0, false
		}
	}
	return d, true
}

// normalizeDN parses a DN (RFC 4514) and returns its key.
func normalizeDN(s string) (dnKey, error) {
	dn, err := ldap.ParseDN(s)
	if err != nil {
		return dnKey{}, fmt.Errorf("invalid DN %q: %w", s, err)
	}
	k := dnKey{rdns: make([]string, 0, len(dn.RDNs))}
	for _, rdn := range dn.RDNs {
		avas := make([]string, 0, len(rdn.Attributes))
		for _, a := range rdn.Attributes {
			if a.Type == "" {
				return dnKey{}, fmt.Errorf("invalid DN %q: empty attribute type", s)
			}
			name, t := canonicalAttr(a.Type)
			v := a.Value
			switch t.syn {
			case synTelephone:
				v = fold(phone(v))
			default:
				v = fold(v)
			}
			// Length-prefixed, so that no value can forge a separator.
			avas = append(avas, name+"="+strconv.Itoa(len(v))+":"+v)
		}
		sort.Strings(avas)
		k.rdns = append(k.rdns, strings.Join(avas, "+"))
	}
	return k, nil
}

// dnAVAs returns the attribute type and value pairs of every RDN of a DN,
// leftmost first, for extensible matches with dnAttributes and for
// validation.
func dnAVAs(s string) ([]*ldap.AttributeTypeAndValue, error) {
	dn, err := ldap.ParseDN(s)
	if err != nil {
		return nil, err
	}
	var out []*ldap.AttributeTypeAndValue
	for _, rdn := range dn.RDNs {
		out = append(out, rdn.Attributes...)
	}
	return out, nil
}

// firstRDN returns the attribute type and value pairs of the leftmost RDN.
func firstRDN(s string) ([]*ldap.AttributeTypeAndValue, error) {
	dn, err := ldap.ParseDN(s)
	if err != nil {
		return nil, err
	}
	if len(dn.RDNs) == 0 {
		return nil, fmt.Errorf("empty DN")
	}
	return dn.RDNs[0].Attributes, nil
}
