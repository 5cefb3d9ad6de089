package demoserver

import (
	"encoding/hex"
	"strconv"
	"strings"

	ber "github.com/go-asn1-ber/asn1-ber"
	"github.com/go-ldap/ldap/v3"
)

// tri is the three-valued logic of LDAP filters (RFC 4511 4.5.1.7): an
// item whose attribute is unknown, unreadable or has no applicable matching
// rule is Undefined, and NOT Undefined stays Undefined.
type tri int8

const (
	triFalse tri = iota
	triTrue
	triUndefined
)

// Matching rules known to extensible matches (RFC 4517 and Active Directory).
const (
	ruleCaseIgnore   = "2.5.13.2"
	ruleCaseExact    = "2.5.13.5"
	ruleDN           = "2.5.13.1"
	ruleInChain      = "1.2.840.113556.1.4.1941" // LDAP_MATCHING_RULE_IN_CHAIN
	ruleBitAnd       = "1.2.840.113556.1.4.803"
	ruleBitOr        = "1.2.840.113556.1.4.804"
	maxFilterDepth   = 64
	maxFilterLength  = 64 * 1024
	filterItemsLimit = 4096
)

var ruleNames = map[string]string{
	"caseignorematch": ruleCaseIgnore, "caseexactmatch": ruleCaseExact,
	"distinguishednamematch": ruleDN,
}

// normValue maps a value to the form under which equal values are equal
// strings for the equality rule of syn. ok is false when the value does not
// have the attribute's syntax (or the attribute is never matched).
func normValue(syn syntax, v string) (string, bool) {
	switch syn {
	case synString:
		return fold(v), true
	case synTelephone:
		return fold(phone(v)), true
	case synDN:
		k, err := normalizeDN(v)
		if err != nil {
			return "", false
		}
		return k.String(), true
	case synBoolean:
		if v == "TRUE" || v == "FALSE" {
			return v, true
		}
		return "", false
	case synTime:
		t, err := parseGeneralizedTime(v)
		if err != nil {
			return "", false
		}
		return t.UTC().Format("20060102150405.000000000Z"), true
	case synUUID:
		u, err := parseUUID(v)
		if err != nil {
			return "", false
		}
		return hex.EncodeToString(u[:]), true
	case synInteger:
		n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		if err != nil {
			return "", false
		}
		return strconv.FormatInt(n, 10), true
	}
	return "", false
}

// valuesEqual compares two values under the equality rule of syn.
func valuesEqual(syn syntax, a, b string) (eq, ok bool) {
	na, ok1 := normValue(syn, a)
	nb, ok2 := normValue(syn, b)
	if !ok1 || !ok2 {
		return false, false
	}
	return na == nb, true
}

// compileFilter turns the filter string that gldap hands over (it decodes the
// BER filter with go-ldap's DecompileFilter, which escapes every value) back
// into go-ldap's BER form, whose values are unescaped bytes again.
func compileFilter(s string) (*ber.Packet, error) {
	if len(s) > maxFilterLength {
		return nil, errFilterTooLarge
	}
	f, err := ldap.CompileFilter(s)
	if err != nil {
		return nil, err
	}
	items := 0
	var walk func(p *ber.Packet, depth int) bool
	walk = func(p *ber.Packet, depth int) bool {
		items++
		if depth > maxFilterDepth || items > filterItemsLimit {
			return false
		}
		switch p.Tag {
		case ldap.FilterAnd, ldap.FilterOr, ldap.FilterNot:
			for _, c := range p.Children {
				if !walk(c, depth+1) {
					return false
				}
			}
		}
		return true
	}
	if !walk(f, 0) {
		return nil, errFilterTooLarge
	}
	return f, nil
}

type filterError string

func (e filterError) Error() string { return string(e) }

const errFilterTooLarge = filterError("filter is too large or too deeply nested")

// eval evaluates a compiled filter against an entry.
func (d *Directory) eval(f *ber.Packet, e *entry) tri {
	switch f.Tag {
	case ldap.FilterAnd:
		res := triTrue
		for _, c := range f.Children {
			switch d.eval(c, e) {
			case triFalse:
				return triFalse
			case triUndefined:
				res = triUndefined
			}
		}
		return res
	case ldap.FilterOr:
		res := triFalse
		for _, c := range f.Children {
			switch d.eval(c, e) {
			case triTrue:
				return triTrue
			case triUndefined:
				res = triUndefined
			}
		}
		return res
	case ldap.FilterNot:
		if len(f.Children) != 1 {
			return triUndefined
		}
		switch d.eval(f.Children[0], e) {
		case triTrue:
			return triFalse
		case triFalse:
			return triTrue
		}
		return triUndefined
	case ldap.FilterPresent:
		lname, typ := canonicalAttr(f.Data.String())
		if typ.syn == synSecret {
			return triUndefined
		}
		if a := e.get(lname); a != nil && len(a.values) > 0 {
			return triTrue
		}
		return triFalse
	case ldap.FilterEqualityMatch, ldap.FilterApproxMatch:
		// No approximate matching rule: like OpenLDAP, fall back to equality.
		if len(f.Children) != 2 {
			return triUndefined
		}
		return equality(e, f.Children[0].Data.String(), f.Children[1].Data.String())
	case ldap.FilterGreaterOrEqual, ldap.FilterLessOrEqual:
		if len(f.Children) != 2 {
			return triUndefined
		}
		lname, typ := canonicalAttr(f.Children[0].Data.String())
		assertion := f.Children[1].Data.String()
		if typ.syn == synSecret {
			return triUndefined
		}
		if _, ok := compareValues(typ.syn, assertion, assertion); !ok {
			return triUndefined // no ordering rule, or the assertion has the wrong syntax
		}
		a := e.get(lname)
		if a == nil {
			return triFalse
		}
		res := triFalse
		for _, v := range a.values {
			c, ok := compareValues(typ.syn, v, assertion)
			if !ok {
				res = triUndefined
				continue
			}
			if (f.Tag == ldap.FilterGreaterOrEqual && c >= 0) || (f.Tag == ldap.FilterLessOrEqual && c <= 0) {
				return triTrue
			}
		}
		return res
	case ldap.FilterSubstrings:
		return substrings(e, f)
	case ldap.FilterExtensibleMatch:
		return d.extensible(e, f)
	}
	return triUndefined
}

// equality evaluates attr=value with the attribute's equality rule.
func equality(e *entry, attrDesc, assertion string) tri {
	lname, typ := canonicalAttr(attrDesc)
	if typ.syn == synSecret {
		return triUndefined
	}
	want, ok := normValue(typ.syn, assertion)
	if !ok {
		return triUndefined
	}
	if a := e.get(lname); a != nil {
		for i := range a.values {
			if got, ok := a.norm(i); ok && got == want {
				return triTrue
			}
		}
	}
	return triFalse
}

func substrings(e *entry, f *ber.Packet) tri {
	if len(f.Children) != 2 {
		return triUndefined
	}
	lname, typ := canonicalAttr(f.Children[0].Data.String())
	var norm func(string) string
	switch typ.syn {
	case synString:
		norm = foldSubstring
	case synTelephone:
		norm = func(s string) string { return fold(phone(s)) }
	default:
		return triUndefined // DNs, times, UUIDs and integers have no substring rule
	}
	var (
		initial, final       string
		hasInitial, hasFinal bool
		anys                 []string
	)
	for _, p := range f.Children[1].Children {
		v := norm(p.Data.String())
		switch p.Tag {
		case ldap.FilterSubstringsInitial:
			initial, hasInitial = v, true
		case ldap.FilterSubstringsAny:
			anys = append(anys, v)
		case ldap.FilterSubstringsFinal:
			final, hasFinal = v, true
		default:
			return triUndefined
		}
	}
	a := e.get(lname)
	if a == nil {
		return triFalse
	}
	for _, raw := range a.values {
		v := fold(raw)
		if typ.syn == synTelephone {
			v = fold(phone(raw))
		}
		if matchSubstrings(v, initial, anys, final, hasInitial, hasFinal) {
			return triTrue
		}
	}
	return triFalse
}

func matchSubstrings(v, initial string, anys []string, final string, hasInitial, hasFinal bool) bool {
	if hasInitial {
		if !strings.HasPrefix(v, initial) {
			return false
		}
		v = v[len(initial):]
	}
	if hasFinal {
		if !strings.HasSuffix(v, final) {
			return false
		}
		v = v[:len(v)-len(final)]
	}
	for _, s := range anys {
		i := strings.Index(v, s)
		if i < 0 {
			return false
		}
		v = v[i+len(s):]
	}
	return true
}

// extensible evaluates an extensible match (RFC 4511 4.5.1.7.7).
func (d *Directory) extensible(e *entry, f *ber.Packet) tri {
	var rule, typeDesc, value string
	dnAttrs := false
	for _, c := range f.Children {
		switch c.Tag {
		case ldap.MatchingRuleAssertionMatchingRule:
			rule = c.Data.String()
		case ldap.MatchingRuleAssertionType:
			typeDesc = c.Data.String()
		case ldap.MatchingRuleAssertionMatchValue:
			value = c.Data.String()
		case ldap.MatchingRuleAssertionDNAttributes:
			dnAttrs, _ = c.Value.(bool)
		}
	}
	if strings.HasPrefix(rule, dnAttrsMarker) {
		rule, dnAttrs = rule[len(dnAttrsMarker):], true
	}
	if r, ok := ruleNames[strings.ToLower(rule)]; ok {
		rule = r
	}
	if typeDesc != "" {
		lname, _ := canonicalAttr(typeDesc)
		return d.applyRule(e, rule, lname, value, dnAttrs)
	}
	if rule == "" {
		return triUndefined // RFC 4511: a rule or a type is required
	}
	// No type: the rule applies to every attribute it suits, including the
	// attributes of the DN when dnAttributes is set.
	types := []string{}
	for _, a := range e.attrs {
		types = append(types, a.lname)
	}
	if dnAttrs {
		avas, _ := dnAVAs(e.dn)
		for _, ava := range avas {
			l, _ := canonicalAttr(ava.Type)
			types = append(types, l)
		}
	}
	switch rule {
	case ruleCaseIgnore, ruleCaseExact, ruleDN, ruleInChain, ruleBitAnd, ruleBitOr:
	default:
		return triUndefined // a rule this server does not know
	}
	seen := map[string]bool{}
	for _, l := range types {
		if seen[l] {
			continue
		}
		seen[l] = true
		// Attributes the rule does not suit give Undefined and are
		// skipped, as the RFC asks.
		if d.applyRule(e, rule, l, value, dnAttrs) == triTrue {
			return triTrue
		}
	}
	return triFalse
}

// applyRule evaluates one attribute of an entry under a matching rule; ""
// is the attribute's own equality rule. With dnAttrs the values of that
// attribute in the entry's DN count too.
func (d *Directory) applyRule(e *entry, rule, lname, value string, dnAttrs bool) tri {
	_, typ := canonicalAttr(lname)
	if typ.syn == synSecret {
		return triUndefined
	}
	var values []string
	if a := e.get(lname); a != nil {
		values = append(values, a.values...)
	}
	if dnAttrs {
		avas, _ := dnAVAs(e.dn)
		for _, ava := range avas {
			if l, _ := canonicalAttr(ava.Type); l == lname {
				values = append(values, ava.Value)
			}
		}
	}
	var match func(v string) bool
	switch rule {
	case "", ruleCaseIgnore, ruleDN:
		syn := typ.syn
		if (rule == ruleCaseIgnore && syn != synString) || (rule == ruleDN && syn != synDN) {
			return triUndefined // the rule does not suit the attribute
		}
		want, ok := normValue(syn, value)
		if !ok {
			return triUndefined
		}
		match = func(v string) bool { n, ok := normValue(syn, v); return ok && n == want }
	case ruleCaseExact:
		if typ.syn != synString {
			return triUndefined
		}
		want := strings.Join(strings.Fields(value), " ")
		match = func(v string) bool { return strings.Join(strings.Fields(v), " ") == want }
	case ruleInChain:
		if typ.syn != synDN {
			return triUndefined
		}
		target, err := normalizeDN(value)
		if err != nil {
			return triUndefined
		}
		if d.inChain(e, lname, target.String()) {
			return triTrue
		}
		return triFalse
	case ruleBitAnd, ruleBitOr:
		if typ.syn != synInteger {
			return triUndefined
		}
		mask, err := strconv.ParseInt(strings.TrimSpace(value), 10, 64)
		if err != nil {
			return triUndefined
		}
		match = func(v string) bool {
			n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			if err != nil {
				return false
			}
			if rule == ruleBitAnd {
				return n&mask == mask
			}
			return n&mask != 0
		}
	default:
		return triUndefined // a rule this server does not know
	}
	for _, v := range values {
		if match(v) {
			return triTrue
		}
	}
	return triFalse
}

// inChain follows a DN-valued attribute transitively (memberOf upwards,
// member downwards, manager up the line) and reports whether target is
// reachable. Cycles in the data end the walk rather than loop.
func (d *Directory) inChain(e *entry, lname, target string) bool {
	seen := map[string]bool{}
	var queue []string
	push := func(x *entry) {
		if a := x.get(lname); a != nil {
			for i := range a.values {
				if k, ok := a.norm(i); ok {
					queue = append(queue, k)
				}
			}
		}
	}
	push(e)
	for len(queue) > 0 {
		k := queue[0]
		queue = queue[1:]
		if k == target {
			return true
		}
		if seen[k] {
			continue
		}
		seen[k] = true
		if next := d.byKey[k]; next != nil {
			push(next)
		}
	}
	return false
}
