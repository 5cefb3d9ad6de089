package demoserver

import (
	"bytes"
	"encoding/hex"
	"errors"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// The demo directory has no schema engine. It knows the matching rules of
// the attributes that passbridge and the usual LDAP tools use; every other
// attribute is a case-insensitive string, which is what directory strings
// are in the standard schemas.

// syntax selects the matching rules of an attribute.
type syntax int

const (
	synString    syntax = iota // caseIgnoreMatch, caseIgnoreOrderingMatch, caseIgnoreSubstringsMatch
	synDN                      // distinguishedNameMatch
	synTime                    // generalizedTimeMatch, generalizedTimeOrderingMatch
	synUUID                    // uuidMatch, uuidOrderingMatch
	synInteger                 // integerMatch, integerOrderingMatch
	synBoolean                 // booleanMatch
	synTelephone               // telephoneNumberMatch, telephoneNumberSubstringsMatch
	synSecret                  // userPassword: never readable, never matched
)

type attrType struct {
	name        string // canonical spelling, as returned to clients
	syn         syntax
	operational bool // returned only when asked for by name or with "+"
}

// attrTypes is keyed by the lower-case canonical name.
var attrTypes = map[string]attrType{}

// attrAliases maps lower-case alternative names to the canonical lower-case
// name (RFC 4519 short and long names).
var attrAliases = map[string]string{
	"commonname": "cn", "surname": "sn", "userid": "uid", "rfc822mailbox": "mail",
	"organizationname": "o", "organizationalunitname": "ou", "localityname": "l",
	"gn": "givenname", "domaincomponent": "dc", "countryname": "c",
	"stateorprovincename": "st", "streetaddress": "street",
}

func init() {
	add := func(syn syntax, operational bool, names ...string) {
		for _, n := range names {
			attrTypes[strings.ToLower(n)] = attrType{name: n, syn: syn, operational: operational}
		}
	}
	add(synString, false, "objectClass", "cn", "sn", "givenName", "displayName", "uid", "mail",
		"o", "ou", "dc", "l", "c", "st", "street", "title", "description", "departmentNumber",
		"employeeNumber", "employeeType", "initials", "businessCategory", "physicalDeliveryOfficeName",
		"preferredLanguage", "postalCode", "postalAddress")
	add(synTelephone, false, "telephoneNumber", "mobile", "facsimileTelephoneNumber", "homePhone", "pager")
	add(synDN, false, "member", "uniqueMember", "manager", "owner", "seeAlso", "secretary", "roleOccupant")
	add(synInteger, false, "uidNumber", "gidNumber", "userAccountControl")
	add(synBoolean, false, "nsAccountLock")
	add(synSecret, false, "userPassword")

	// Operational attributes (RFC 4512, RFC 4530, the ppolicy draft and the
	// memberof overlay): a client gets them only by name or with "+".
	add(synUUID, true, "entryUUID")
	add(synDN, true, "entryDN", "memberOf", "creatorsName", "modifiersName", "subschemaSubentry")
	add(synTime, true, "createTimestamp", "modifyTimestamp", "pwdAccountLockedTime", "pwdChangedTime",
		"pwdFailureTime")
	add(synBoolean, true, "hasSubordinates")
	add(synString, true, "structuralObjectClass")
}

// canonicalAttr returns the lower-case canonical name of an attribute
// description and its type (a case-insensitive string when unknown).
func canonicalAttr(name string) (string, attrType) {
	l := strings.ToLower(name)
	if c, ok := attrAliases[l]; ok {
		l = c
	}
	if t, ok := attrTypes[l]; ok {
		return l, t
	}
	return l, attrType{name: name, syn: synString}
}

// fold maps a string to a form in which two strings that differ only in
// letter case are equal (Unicode simple case folding, as strings.EqualFold),
// and in which runs of white space count as one space and leading and
// trailing space do not count (RFC 4518 insignificant space handling).
func fold(s string) string {
	var b strings.Builder
	b.Grow(len(s))
	space := false
	for _, r := range s {
		if unicode.IsSpace(r) {
			space = b.Len() > 0
			continue
		}
		if space {
			b.WriteByte(' ')
			space = false
		}
		b.WriteRune(foldRune(r))
	}
	return b.String()
}

// foldSubstring folds one piece of a substring assertion. Unlike fold it
// keeps a leading or trailing space, which is significant inside "a *b".
func foldSubstring(s string) string {
	var b strings.Builder
	b.Grow(len(s))
	prevSpace := false
	for _, r := range s {
		if unicode.IsSpace(r) {
			if !prevSpace {
				b.WriteByte(' ')
			}
			prevSpace = true
			continue
		}
		prevSpace = false
		b.WriteRune(foldRune(r))
	}
	return b.String()
}

func foldRune(r rune) rune {
	if r < utf8.RuneSelf {
		if 'A' <= r && r <= 'Z' {
			return r + 'a' - 'A'
		}
		return r
	}
	// The smallest rune of the case-folding orbit represents it.
	for {
		r2 := unicode.SimpleFold(r)
		if r2 <= r {
			return r2
		}
		r = r2
	}
}

// phone removes what telephoneNumberMatch ignores: spaces and hyphens.
func phone(s string) string {
	return strings.Map(func(r rune) rune {
		if r == ' ' || r == '-' || unicode.IsSpace(r) {
			return -1
		}
		return r
	}, s)
}

// parseGeneralizedTime parses the GeneralizedTime syntax (RFC 4517 3.3.13):
// YYYYMMDDHH[MM[SS]][(.|,)fraction](Z|(+|-)HHMM).
func parseGeneralizedTime(s string) (time.Time, error) {
	errSyntax := errors.New("not a GeneralizedTime (YYYYMMDDHHMMSSZ)")
	if len(s) < 11 {
		return time.Time{}, errSyntax
	}
	digits := func(str string) (int, bool) {
		n := 0
		for i := 0; i < len(str); i++ {
			if str[i] < '0' || str[i] > '9' {
				return 0, false
			}
			n = n*10 + int(str[i]-'0')
		}
		return n, true
	}
	year, ok1 := digits(s[0:4])
	month, ok2 := digits(s[4:6])
	day, ok3 := digits(s[6:8])
	hour, ok4 := digits(s[8:10])
	if !ok1 || !ok2 || !ok3 || !ok4 {
		return time.Time{}, errSyntax
	}
	rest := s[10:]
	minute, sec := 0, 0
	var frac time.Duration
	// unit is what a fraction is a fraction of: the last field given.
	unit := time.Hour
	if len(rest) >= 2 && rest[0] >= '0' && rest[0] <= '9' {
		m, ok := digits(rest[:2])
		if !ok {
			return time.Time{}, errSyntax
		}
		minute, rest, unit = m, rest[2:], time.Minute
		if len(rest) >= 2 && rest[0] >= '0' && rest[0] <= '9' {
			sv, ok := digits(rest[:2])
			if !ok {
				return time.Time{}, errSyntax
			}
			sec, rest, unit = sv, rest[2:], time.Second
		}
	}
	if len(rest) > 0 && (rest[0] == '.' || rest[0] == ',') {
		i := 1
		for i < len(rest) && rest[i] >= '0' && rest[i] <= '9' {
			i++
		}
		if i == 1 {
			return time.Time{}, errSyntax
		}
		f, err := strconv.ParseFloat("0."+rest[1:i], 64)
		if err != nil {
			return time.Time{}, errSyntax
		}
		frac = time.Duration(f * float64(unit))
		rest = rest[i:]
	}
	loc := time.UTC
	switch {
	case rest == "Z":
	case len(rest) == 5 && (rest[0] == '+' || rest[0] == '-'):
		hh, ok1 := digits(rest[1:3])
		mm, ok2 := digits(rest[3:5])
		if !ok1 || !ok2 || hh > 23 || mm > 59 {
			return time.Time{}, errSyntax
		}
		off := hh*3600 + mm*60
		if rest[0] == '-' {
			off = -off
		}
		loc = time.FixedZone("", off)
	default:
		// A local time without a zone is ambiguous; directories store UTC.
		return time.Time{}, errSyntax
	}
	if month < 1 || month > 12 || day < 1 || day > 31 || hour > 23 || minute > 59 || sec > 60 {
		return time.Time{}, errSyntax
	}
	t := time.Date(year, time.Month(month), day, hour, minute, sec, 0, loc).Add(frac)
	if t.Day() != day && frac == 0 && sec < 60 {
		return time.Time{}, errSyntax // 31 February and the like
	}
	return t, nil
}

// parseUUID parses the UUID syntax of RFC 4530 (8-4-4-4-12 hex digits).
func parseUUID(s string) ([16]byte, error) {
	var u [16]byte
	if len(s) != 36 || s[8] != '-' || s[13] != '-' || s[18] != '-' || s[23] != '-' {
		return u, errors.New("not a UUID (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)")
	}
	h := s[0:8] + s[9:13] + s[14:18] + s[19:23] + s[24:36]
	if _, err := hex.Decode(u[:], []byte(h)); err != nil {
		return u, errors.New("not a UUID: " + err.Error())
	}
	return u, nil
}

// compareValues compares a stored value with an assertion value under the
// ordering rule of syn. ok is false when the rule does not apply, which makes
// the filter item Undefined (RFC 4511 4.5.1.7).
func compareValues(syn syntax, stored, assertion string) (cmp int, ok bool) {
	switch syn {
	case synString:
		return strings.Compare(fold(stored), fold(assertion)), true
	case synTime:
		a, err1 := parseGeneralizedTime(stored)
		b, err2 := parseGeneralizedTime(assertion)
		if err1 != nil || err2 != nil {
			return 0, false
		}
		return a.Compare(b), true
	case synUUID:
		a, err1 := parseUUID(stored)
		b, err2 := parseUUID(assertion)
		if err1 != nil || err2 != nil {
			return 0, false
		}
		return bytes.Compare(a[:], b[:]), true
	case synInteger:
		a, err1 := strconv.ParseInt(strings.TrimSpace(stored), 10, 64)
		b, err2 := strconv.ParseInt(strings.TrimSpace(assertion), 10, 64)
		if err1 != nil || err2 != nil {
			return 0, false
		}
		switch {
		case a < b:
			return -1, true
		case a > b:
			return 1, true
		}
		return 0, true
	}
	return 0, false
}
