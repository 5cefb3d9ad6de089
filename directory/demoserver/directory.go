package demoserver

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"time"
)

// Directory is an immutable set of entries loaded from LDIF. A Server serves
// one Directory at a time; Server.Replace swaps in another one atomically.
type Directory struct {
	entries  []*entry          // in file order, which puts parents first
	byKey    map[string]*entry // by dnKey.String()
	suffixes []*entry          // entries whose parent is not in the directory
	root     *entry            // the root DSE
}

type entry struct {
	dn    string // as written in the LDIF
	key   dnKey
	attrs []*attr          // user attributes in file order, then operational ones
	index map[string]*attr // by canonical lower-case name
}

type attr struct {
	name   string // spelling returned to clients
	lname  string // canonical lower-case name
	typ    attrType
	values []string
	normed []string // values under the equality rule, see normValue
	normOK []bool
}

// norm returns the normalised form of value i, computed once at load time so
// that searches only read.
func (a *attr) norm(i int) (string, bool) { return a.normed[i], a.normOK[i] }

func (a *attr) finish() {
	a.normed = make([]string, len(a.values))
	a.normOK = make([]bool, len(a.values))
	for i, v := range a.values {
		a.normed[i], a.normOK[i] = normValue(a.typ.syn, v)
	}
}

func (e *entry) finish() {
	for _, a := range e.attrs {
		a.finish()
	}
}

func (e *entry) get(lname string) *attr { return e.index[lname] }

func (e *entry) first(lname string) string {
	if a := e.index[lname]; a != nil && len(a.values) > 0 {
		return a.values[0]
	}
	return ""
}

// computed are the operational attributes the server maintains itself; an
// LDIF that sets them is refused rather than silently overridden.
var computed = map[string]bool{"memberof": true, "entrydn": true, "hassubordinates": true,
	"subschemasubentry": true, "structuralobjectclass": true}

// singleValued attributes must not carry more than one value.
var singleValued = map[string]bool{"entryuuid": true, "createtimestamp": true, "modifytimestamp": true,
	"pwdaccountlockedtime": true, "displayname": true, "uidnumber": true, "gidnumber": true}

// Load reads a directory from LDIF content records. name is used in error
// messages. Every entry needs objectClass and a fixed entryUUID (the stable
// identity that passbridge keys on, so it must survive restarts);
// createTimestamp and modifyTimestamp default to the load time when absent.
// memberOf is computed from the member and uniqueMember values of the groups
// (direct membership only, as OpenLDAP's memberof overlay maintains it).
func Load(name string, r io.Reader) (*Directory, error) {
	records, err := parseLDIF(name, r)
	if err != nil {
		return nil, err
	}
	now := time.Now().UTC().Format("20060102150405Z")
	d := &Directory{byKey: make(map[string]*entry, len(records))}
	uuids := map[[16]byte]string{}

	for _, rec := range records {
		errAt := func(line int, format string, args ...any) error {
			return fmt.Errorf("%s:%d: %s: %s", name, line, rec.dn, fmt.Sprintf(format, args...))
		}
		key, err := normalizeDN(rec.dn)
		if err != nil {
			return nil, fmt.Errorf("%s:%d: %w", name, rec.line, err)
		}
		if len(key.rdns) == 0 {
			return nil, errAt(rec.line, "the empty DN is the root DSE, which the server builds itself")
		}
		if prev, dup := d.byKey[key.String()]; dup {
			return nil, errAt(rec.line, "duplicate entry (same DN as %q)", prev.dn)
		}
		e := &entry{dn: rec.dn, key: key, index: map[string]*attr{}}
		for _, la := range rec.attrs {
			lname, typ := canonicalAttr(la.name)
			if computed[lname] {
				return nil, errAt(la.line, "%s is computed by the server; remove it from the LDIF", la.name)
			}
			if err := checkValue(lname, typ, la.value); err != nil {
				return nil, errAt(la.line, "%s: %v", la.name, err)
			}
			a := e.index[lname]
			if a == nil {
				a = &attr{name: typ.name, lname: lname, typ: typ}
				if _, known := attrTypes[lname]; !known {
					a.name = la.name // keep the writer's spelling of unknown attributes
				}
				e.index[lname] = a
				e.attrs = append(e.attrs, a)
			}
			for _, v := range a.values {
				if eq, _ := valuesEqual(typ.syn, v, la.value); eq || v == la.value {
					return nil, errAt(la.line, "%s: duplicate value %q", la.name, la.value)
				}
			}
			if singleValued[lname] && len(a.values) > 0 {
				return nil, errAt(la.line, "%s is single-valued", la.name)
			}
			a.values = append(a.values, la.value)
		}
		if e.get("objectclass") == nil {
			return nil, errAt(rec.line, "entry has no objectClass")
		}
		id := e.first("entryuuid")
		if id == "" {
			return nil, errAt(rec.line, "entry has no entryUUID: write a fixed one into the LDIF so that identities stay stable across restarts")
		}
		u, _ := parseUUID(id) // syntax checked by checkValue
		if other, dup := uuids[u]; dup {
			return nil, errAt(rec.line, "entryUUID %s is also the entryUUID of %q", id, other)
		}
		uuids[u] = rec.dn
		if err := checkRDN(e); err != nil {
			return nil, errAt(rec.line, "%v", err)
		}
		created, modified := e.first("createtimestamp"), e.first("modifytimestamp")
		switch {
		case created == "" && modified == "":
			created, modified = now, now
		case created == "":
			created = modified
		case modified == "":
			modified = created
		}
		e.setOperational("createTimestamp", created)
		e.setOperational("modifyTimestamp", modified)
		e.setOperational("entryDN", e.dn)

		d.byKey[key.String()] = e
		d.entries = append(d.entries, e)
	}

	// Parents, naming contexts, hasSubordinates.
	children := map[string]int{}
	for _, e := range d.entries {
		p := e.key.parent()
		if len(p.rdns) == 0 {
			d.suffixes = append(d.suffixes, e)
			continue
		}
		if _, ok := d.byKey[p.String()]; ok {
			children[p.String()]++
			continue
		}
		// A parent that is missing while an ancestor exists is a typo or a
		// forgotten OU; only a top-level entry may be a naming context.
		for a := p.parent(); len(a.rdns) > 0; a = a.parent() {
			if anc, ok := d.byKey[a.String()]; ok {
				return nil, fmt.Errorf("%s: %s: parent entry is missing (the nearest ancestor in the file is %q)", name, e.dn, anc.dn)
			}
		}
		d.suffixes = append(d.suffixes, e)
	}
	for _, e := range d.entries {
		sub := "FALSE"
		if children[e.key.String()] > 0 {
			sub = "TRUE"
		}
		e.setOperational("hasSubordinates", sub)
	}

	// memberOf: the direct groups of each entry, in file order of the groups.
	memberOf := map[string][]string{}
	for _, g := range d.entries {
		for _, an := range []string{"member", "uniquemember"} {
			a := g.get(an)
			if a == nil {
				continue
			}
			for _, v := range a.values {
				k, _ := normalizeDN(v) // syntax checked at load
				if m, ok := d.byKey[k.String()]; ok && !slices.Contains(memberOf[m.key.String()], g.dn) {
					memberOf[m.key.String()] = append(memberOf[m.key.String()], g.dn)
				}
			}
		}
	}
	for _, e := range d.entries {
		if groups := memberOf[e.key.String()]; len(groups) > 0 {
			e.setOperational("memberOf", groups...)
		}
		e.finish()
	}
	d.root = d.rootDSE()
	return d, nil
}

func (e *entry) setOperational(name string, values ...string) {
	lname, typ := canonicalAttr(name)
	if a := e.index[lname]; a != nil {
		a.values = values
		return
	}
	a := &attr{name: typ.name, lname: lname, typ: typ, values: values}
	e.index[lname] = a
	e.attrs = append(e.attrs, a)
}

// checkValue validates a value against the syntax of its attribute.
func checkValue(lname string, typ attrType, v string) error {
	switch typ.syn {
	case synDN:
		if _, err := normalizeDN(v); err != nil {
			return err
		}
	case synTime:
		if _, err := parseGeneralizedTime(v); err != nil {
			return err
		}
	case synUUID:
		if _, err := parseUUID(v); err != nil {
			return err
		}
	case synBoolean:
		if v != "TRUE" && v != "FALSE" {
			return fmt.Errorf("boolean values are TRUE or FALSE, got %q", v)
		}
	case synSecret:
		return checkPasswordSyntax(v)
	}
	if lname == "objectclass" && strings.TrimSpace(v) == "" {
		return fmt.Errorf("empty objectClass")
	}
	return nil
}

// checkRDN enforces that the values named in the RDN are values of the
// entry, as every LDAP server does.
func checkRDN(e *entry) error {
	first, err := firstRDN(e.dn)
	if err != nil {
		return err
	}
	for _, ava := range first {
		lname, typ := canonicalAttr(ava.Type)
		found := false
		if a := e.get(lname); a != nil {
			for _, v := range a.values {
				if eq, _ := valuesEqual(typ.syn, v, ava.Value); eq {
					found = true
					break
				}
			}
		}
		if !found {
			return fmt.Errorf("the RDN value %s=%s is not a value of the entry", ava.Type, ava.Value)
		}
	}
	return nil
}

// rootDSE builds the root DSE (RFC 4512 5.1). Its attributes are returned
// for "*" as Active Directory does, so that a plain base search on "" shows
// what the server supports.
func (d *Directory) rootDSE() *entry {
	e := &entry{index: map[string]*attr{}}
	add := func(name string, values ...string) {
		a := &attr{name: name, lname: strings.ToLower(name), typ: attrType{name: name, syn: synString}, values: values}
		e.index[a.lname] = a
		e.attrs = append(e.attrs, a)
	}
	contexts := make([]string, 0, len(d.suffixes))
	for _, s := range d.suffixes {
		contexts = append(contexts, s.dn)
	}
	add("objectClass", "top")
	add("namingContexts", contexts...)
	add("supportedControl", supportedControls...)
	add("supportedLDAPVersion", "3")
	// 1.3.6.1.4.1.4203.1.5.1: "+" returns all operational attributes (RFC 3673).
	add("supportedFeatures", "1.3.6.1.4.1.4203.1.5.1")
	add("vendorName", "passbridge")
	add("vendorVersion", "passbridge demo directory")
	e.finish()
	return e
}

// Entry is a copy of a directory entry, for Go code that wants the data the
// server serves (tests, the demo's printout). It holds the user attributes
// and the operational ones, but never userPassword.
type Entry struct {
	DN         string
	Attributes []Attribute
}

// Attribute is one attribute of an Entry, named in its canonical spelling.
type Attribute struct {
	Name   string
	Values []string
}

// Get returns the values of an attribute, by any case or alias of its name.
func (e Entry) Get(name string) []string {
	lname, _ := canonicalAttr(name)
	for _, a := range e.Attributes {
		if l, _ := canonicalAttr(a.Name); l == lname {
			return a.Values
		}
	}
	return nil
}

// First returns the first value of an attribute, or "".
func (e Entry) First(name string) string {
	if v := e.Get(name); len(v) > 0 {
		return v[0]
	}
	return ""
}

func (e *entry) export() Entry {
	out := Entry{DN: e.dn}
	for _, a := range e.attrs {
		if a.typ.syn == synSecret {
			continue
		}
		out.Attributes = append(out.Attributes, Attribute{Name: a.name, Values: slices.Clone(a.values)})
	}
	return out
}

// Entries returns every entry in file order.
func (d *Directory) Entries() []Entry {
	out := make([]Entry, 0, len(d.entries))
	for _, e := range d.entries {
		out = append(out, e.export())
	}
	return out
}

// Lookup returns the entry with the given DN (compared as LDAP compares DNs).
func (d *Directory) Lookup(dn string) (Entry, bool) {
	k, err := normalizeDN(dn)
	if err != nil {
		return Entry{}, false
	}
	e := d.byKey[k.String()]
	if e == nil {
		return Entry{}, false
	}
	return e.export(), true
}

// Len returns the number of entries.
func (d *Directory) Len() int { return len(d.entries) }

// NamingContexts returns the DNs of the top entries (the suffixes).
func (d *Directory) NamingContexts() []string {
	out := make([]string, 0, len(d.suffixes))
	for _, e := range d.suffixes {
		out = append(out, e.dn)
	}
	return out
}
