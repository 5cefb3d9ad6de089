package demoserver

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	ber "github.com/go-asn1-ber/asn1-ber"
	"github.com/go-ldap/ldap/v3"

	"github.com/passbridge/passbridge/configs"
)

const (
	baseDN     = "dc=northwind,dc=example"
	syncDN     = "cn=passbridge-sync,ou=Services,dc=northwind,dc=example"
	syncPW     = "northwind-sync"
	employeePW = "northwind"
	pilotDN    = "cn=passkey-pilot,ou=Groups,dc=northwind,dc=example"
	smithDN    = `cn=Smith\, John,ou=Sales,ou=People,dc=northwind,dc=example`
	oliverDN   = "uid=oliver.grant,ou=Sales,ou=People,dc=northwind,dc=example"
)

func demoDirectory(t testing.TB) *Directory {
	t.Helper()
	d, err := Load("demo.ldif", bytes.NewReader(configs.DemoLDIF))
	if err != nil {
		t.Fatalf("load demo.ldif: %v", err)
	}
	return d
}

func startServer(t testing.TB, d *Directory, cfg Config) *Server {
	t.Helper()
	s, err := Start(context.Background(), d, cfg)
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := s.Stop(ctx); err != nil {
			t.Errorf("stop: %v", err)
		}
	})
	return s
}

func dial(t testing.TB, s *Server) *ldap.Conn {
	t.Helper()
	c, err := ldap.DialURL(s.URL())
	if err != nil {
		t.Fatalf("dial %s: %v", s.URL(), err)
	}
	c.SetTimeout(30 * time.Second)
	t.Cleanup(func() { c.Close() })
	return c
}

func bound(t testing.TB, s *Server) *ldap.Conn {
	t.Helper()
	c := dial(t, s)
	if err := c.Bind(syncDN, syncPW); err != nil {
		t.Fatalf("bind as the service account: %v", err)
	}
	return c
}

func search(c *ldap.Conn, base string, scope int, filter string, attrs ...string) (*ldap.SearchResult, error) {
	return c.Search(ldap.NewSearchRequest(base, scope, ldap.NeverDerefAliases, 0, 0, false, filter, attrs, nil))
}

// uids returns the sorted uid values of the entries a subtree search finds.
func uids(t *testing.T, c *ldap.Conn, filter string) []string {
	t.Helper()
	res, err := search(c, baseDN, ldap.ScopeWholeSubtree, filter, "uid")
	if err != nil {
		t.Fatalf("search %s: %v", filter, err)
	}
	out := []string{}
	for _, e := range res.Entries {
		out = append(out, e.GetAttributeValue("uid"))
	}
	sort.Strings(out)
	return out
}

func ldapCode(err error) uint16 {
	var le *ldap.Error
	if errors.As(err, &le) {
		return le.ResultCode
	}
	return 0
}

func TestDemoLDIF(t *testing.T) {
	d := demoDirectory(t)
	people, locked, ous := 0, 0, map[string]bool{}
	var nonASCII []string
	seen := map[string]bool{}
	for _, e := range d.Entries() {
		for _, a := range []string{"entryUUID", "createTimestamp", "modifyTimestamp", "entryDN"} {
			if e.First(a) == "" {
				t.Errorf("%s has no %s", e.DN, a)
			}
		}
		if seen[e.First("entryUUID")] {
			t.Errorf("%s: entryUUID %s is not unique", e.DN, e.First("entryUUID"))
		}
		seen[e.First("entryUUID")] = true
		if !slices.Contains(e.Get("objectClass"), "inetOrgPerson") {
			continue
		}
		people++
		for _, a := range []string{"uid", "cn", "sn", "givenName", "displayName", "mail", "departmentNumber", "title", "employeeNumber"} {
			if e.First(a) == "" {
				t.Errorf("%s has no %s", e.DN, a)
			}
		}
		ous[strings.SplitN(e.DN, ",", 2)[1]] = true
		if e.First("pwdAccountLockedTime") != "" {
			locked++
		}
		if strings.ContainsFunc(e.First("displayName"), func(r rune) bool { return r > 127 }) {
			nonASCII = append(nonASCII, e.First("displayName"))
		}
	}
	if people < 25 {
		t.Errorf("%d people, want at least 25", people)
	}
	if len(ous) < 2 {
		t.Errorf("people in %d OUs, want at least 2", len(ous))
	}
	if locked != 1 {
		t.Errorf("%d locked accounts, want exactly 1", locked)
	}
	for _, want := range []string{"Zoë Ørsted", "José Müller-Łukasiewicz", "Şebnem Yılmaz"} {
		if !slices.Contains(nonASCII, want) {
			t.Errorf("no person named %s (non-ASCII names: %v)", want, nonASCII)
		}
	}
	if e, ok := d.Lookup(`CN=smith\2C JOHN,ou=sales,OU=People,dc=NORTHWIND,dc=example`); !ok || e.First("uid") != "jsmith" {
		t.Errorf("the DN with an escaped comma is not found under another spelling: %+v", e)
	}
	if _, ok := d.Lookup("cn=it-admins,ou=Groups," + baseDN); !ok {
		t.Error("no IT admins group")
	}

	// The pilot group reaches exactly one person only through a nested group.
	pilot, _ := d.Lookup(pilotDN)
	direct := map[string]bool{}
	var nestedGroups []string
	for _, m := range pilot.Get("member") {
		e, ok := d.Lookup(m)
		if !ok {
			t.Errorf("pilot member %s does not exist", m)
			continue
		}
		if slices.Contains(e.Get("objectClass"), "groupOfNames") {
			nestedGroups = append(nestedGroups, m)
		} else {
			direct[e.DN] = true
		}
	}
	var onlyNested []string
	for _, g := range nestedGroups {
		ge, _ := d.Lookup(g)
		for _, m := range ge.Get("member") {
			if !direct[m] {
				onlyNested = append(onlyNested, m)
			}
		}
	}
	if len(onlyNested) != 1 || !strings.HasPrefix(onlyNested[0], "uid=ingrid.bakke,") {
		t.Errorf("people in the pilot only through a nested group: %v, want ingrid.bakke", onlyNested)
	}
	if 2*len(direct) <= people {
		t.Errorf("%d of %d people are direct pilot members, want most", len(direct), people)
	}
	// memberOf lists direct groups only, like OpenLDAP's memberof overlay.
	ingrid, _ := d.Lookup("uid=ingrid.bakke,ou=Production,ou=People," + baseDN)
	if got := ingrid.Get("memberOf"); slices.Contains(got, pilotDN) || !slices.Contains(got, "cn=plant-floor-leads,ou=Groups,"+baseDN) {
		t.Errorf("ingrid's memberOf = %v, want the direct group only", got)
	}
}

func TestBind(t *testing.T) {
	s := startServer(t, demoDirectory(t), Config{BindDN: "cn=admin,dc=northwind,dc=example", BindPassword: "configured-secret"})
	cases := []struct {
		name, dn, pw string
		code         uint16 // 0: success
	}{
		{"service account from the LDIF", syncDN, syncPW, 0},
		{"configured service account", "CN=Admin,DC=Northwind,DC=Example", "configured-secret", 0},
		{"configured service account, wrong password", "cn=admin,dc=northwind,dc=example", "northwind", ldap.LDAPResultInvalidCredentials},
		{"employee", "uid=zoe.orsted,ou=Engineering,ou=People," + baseDN, employeePW, 0},
		{"DN with an escaped comma", smithDN, employeePW, 0},
		{"same DN in another spelling", `CN=SMITH\2c john , ou=Sales,ou=People,dc=northwind,dc=example`, employeePW, 0},
		{"wrong password", "uid=zoe.orsted,ou=Engineering,ou=People," + baseDN, "Northwind", ldap.LDAPResultInvalidCredentials},
		{"unknown DN", "uid=nobody,ou=IT,ou=People," + baseDN, employeePW, ldap.LDAPResultInvalidCredentials},
		{"entry without a password", "ou=IT,ou=People," + baseDN, employeePW, ldap.LDAPResultInvalidCredentials},
		{"locked account with the right password", oliverDN, employeePW, ldap.LDAPResultInvalidCredentials},
		{"invalid DN", "uid=zoe.orsted,,", employeePW, ldap.LDAPResultInvalidDNSyntax},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := dial(t, s)
			err := c.Bind(tc.dn, tc.pw)
			if got := ldapCode(err); got != tc.code || (tc.code == 0 && err != nil) {
				t.Fatalf("bind %q: %v (code %d), want code %d", tc.dn, err, got, tc.code)
			}
		})
	}

	t.Run("unauthenticated bind is refused", func(t *testing.T) {
		c := dial(t, s)
		err := c.UnauthenticatedBind(syncDN)
		if ldapCode(err) != ldap.LDAPResultUnwillingToPerform {
			t.Fatalf("unauthenticated bind: %v, want unwillingToPerform", err)
		}
	})

	t.Run("anonymous can read the root DSE only", func(t *testing.T) {
		c := dial(t, s)
		if err := c.UnauthenticatedBind(""); err != nil {
			t.Fatalf("anonymous bind: %v", err)
		}
		if _, err := search(c, "", ldap.ScopeBaseObject, "(objectClass=*)"); err != nil {
			t.Fatalf("root DSE: %v", err)
		}
		_, err := search(c, baseDN, ldap.ScopeWholeSubtree, "(uid=*)")
		if ldapCode(err) != ldap.LDAPResultInsufficientAccessRights {
			t.Fatalf("anonymous search: %v, want insufficientAccessRights", err)
		}
	})

	t.Run("a failed bind makes the connection anonymous", func(t *testing.T) {
		c := bound(t, s)
		if _, err := search(c, baseDN, ldap.ScopeWholeSubtree, "(uid=wei.li)"); err != nil {
			t.Fatalf("search after bind: %v", err)
		}
		if err := c.Bind(syncDN, "wrong"); ldapCode(err) != ldap.LDAPResultInvalidCredentials {
			t.Fatalf("bad bind: %v", err)
		}
		_, err := search(c, baseDN, ldap.ScopeWholeSubtree, "(uid=wei.li)")
		if ldapCode(err) != ldap.LDAPResultInsufficientAccessRights {
			t.Fatalf("search after a failed bind: %v, want insufficientAccessRights", err)
		}
	})

	t.Run("an employee may search", func(t *testing.T) {
		c := dial(t, s)
		if err := c.Bind(smithDN, employeePW); err != nil {
			t.Fatal(err)
		}
		if got := uids(t, c, "(uid=jsmith)"); !slices.Equal(got, []string{"jsmith"}) {
			t.Fatalf("got %v", got)
		}
	})
}

func TestSearchFilters(t *testing.T) {
	s := startServer(t, demoDirectory(t), Config{})
	c := bound(t, s)
	ingridUUID := strings.ToUpper(demoDirectory(t).Entries()[firstIndex(t, "ingrid.bakke")].First("entryUUID"))
	pilotAll := []string{"ava.chen", "aoife.obrien", "bjorn.akesson", "carlos.mendes", "dmitri.volkov", "emily.carter",
		"fatima.haddad", "hannah.schmidt", "ingrid.bakke", "jose.mueller", "jsmith", "kenji.watanabe", "lena.fischer",
		"lucas.moreau", "marco.rossi", "nina.kowalski", "oliver.grant", "rajesh.patel", "samuel.okafor", "sebnem.yilmaz",
		"tomasz.nowak", "wei.li", "zoe.orsted"}
	pilotDirect := slices.DeleteFunc(slices.Clone(pilotAll), func(s string) bool { return s == "ingrid.bakke" })
	cases := []struct {
		filter string
		want   []string
	}{
		{"(uid=AVA.CHEN)", []string{"ava.chen"}},
		{`(cn=Smith\2C John)`, []string{"jsmith"}},
		{`(cn=smith\2c   JOHN )`, []string{"jsmith"}},
		{"(sn=Müller-Łukasiewicz)", []string{"jose.mueller"}},
		{`(sn=M\c3\bcller-*)`, []string{"jose.mueller"}},
		{"(givenName=zoË)", []string{"zoe.orsted"}},
		{"(sn=yılmaz)", []string{"sebnem.yilmaz"}},
		// Dotless ı is not i in Unicode case folding: no Turkish mapping.
		{"(sn=YILMAZ)", []string{}},
		{"(displayName=Aoife O'Brien)", []string{"aoife.obrien"}},
		{"(&(departmentNumber=sales)(!(uid=jsmith)))", []string{"emily.carter", "lucas.moreau", "oliver.grant", "priya.nair"}},
		{"(|(uid=wei.li)(mail=GRACE.LIU@northwind.example))", []string{"grace.liu", "wei.li"}},
		{"(&(objectClass=inetOrgPerson)(!(telephoneNumber=*)))", []string{"aoife.obrien", "dmitri.volkov", "kenji.watanabe", "nina.kowalski"}},
		{"(telephoneNumber=+497115550104)", []string{"ava.chen"}},
		{"(cn=*ller-Ł*)", []string{"jose.mueller"}},
		{"(cn=a*chen)", []string{"ava.chen"}},
		{"(title=*engineer*)", []string{"ava.chen", "jose.mueller", "lena.fischer", "lucas.moreau", "sebnem.yilmaz", "tomasz.nowak", "zoe.orsted"}},
		{"(cn~=AVA chen)", []string{"ava.chen"}},
		{"(employeeNumber>=NW-1090)", []string{"aoife.obrien", "carlos.mendes", "priya.nair", "sofia.lindqvist"}},
		{"(&(objectClass=inetOrgPerson)(modifyTimestamp>=20250201000000Z))", []string{"fatima.haddad", "hannah.schmidt", "lena.fischer", "nina.kowalski", "oliver.grant", "priya.nair", "sofia.lindqvist", "zoe.orsted"}},
		{"(&(objectClass=inetOrgPerson)(createTimestamp<=20160301000000Z))", []string{"ava.chen", "marco.rossi"}},
		// 11:15 at +01:00 is 10:15Z, zoe's modifyTimestamp exactly.
		{"(&(objectClass=inetOrgPerson)(modifyTimestamp>=20250303111500+0100))", []string{"zoe.orsted"}},
		{"(&(objectClass=inetOrgPerson)(modifyTimestamp>=2025030310Z))", []string{"zoe.orsted"}},
		{"(memberOf=CN=IT-Admins, OU=Groups,DC=Northwind,DC=Example)", []string{"hannah.schmidt", "samuel.okafor", "wei.li"}},
		{"(&(objectClass=inetOrgPerson)(memberOf=" + pilotDN + "))", pilotDirect},
		{"(&(objectClass=inetOrgPerson)(memberOf:1.2.840.113556.1.4.1941:=" + pilotDN + "))", pilotAll},
		{"(manager:1.2.840.113556.1.4.1941:=uid=ava.chen,ou=Engineering,ou=People," + baseDN + ")",
			[]string{"jose.mueller", "lena.fischer", "nina.kowalski", "rajesh.patel", "sebnem.yilmaz", "tomasz.nowak", "zoe.orsted"}},
		{`(manager=cn=smith\5c, john,ou=sales,ou=people,dc=northwind,dc=example)`, []string{"emily.carter", "lucas.moreau", "oliver.grant", "priya.nair"}},
		{"(entryUUID=" + ingridUUID + ")", []string{"ingrid.bakke"}},
		{"(pwdAccountLockedTime=*)", []string{"oliver.grant"}},
		{"(&(objectClass=inetOrgPerson)(ou:dn:=Finance))", []string{"bjorn.akesson", "grace.liu", "martin.dubois", "sofia.lindqvist"}},
		{"(&(objectClass=inetOrgPerson)(ou=Finance))", []string{}},
		{"(&(objectClass=inetOrgPerson)(:dn:2.5.13.2:=FINANCE))", []string{"bjorn.akesson", "grace.liu", "martin.dubois", "sofia.lindqvist"}},
		{"(&(objectClass=inetOrgPerson)(:caseExactMatch:=Zoë Ørsted))", []string{"zoe.orsted"}},
		{"(&(objectClass=inetOrgPerson)(:1.2.3.4:=x))", []string{}},
		{"(uid:caseExactMatch:=Ava.Chen)", []string{}},
		{"(uid:caseExactMatch:=ava.chen)", []string{"ava.chen"}},
		// userPassword cannot be read, so every test on it is Undefined,
		// and NOT Undefined is Undefined: neither filter matches anything.
		{"(userPassword=*)", []string{}},
		{"(&(objectClass=inetOrgPerson)(!(userPassword=*)))", []string{}},
		// An assertion that is not a time is Undefined too.
		{"(&(objectClass=inetOrgPerson)(!(modifyTimestamp>=yesterday)))", []string{}},
		{"(|(modifyTimestamp>=yesterday)(uid=wei.li))", []string{"wei.li"}},
		{"(uidNumber=5)", []string{}},
		{"(unknownAttribute=x)", []string{}},
	}
	for _, tc := range cases {
		t.Run(tc.filter, func(t *testing.T) {
			want := slices.Clone(tc.want)
			sort.Strings(want)
			if got := uids(t, c, tc.filter); !slices.Equal(got, want) {
				t.Errorf("%s\n got %v\nwant %v", tc.filter, got, want)
			}
		})
	}
}

func firstIndex(t *testing.T, uid string) int {
	for i, e := range demoDirectory(t).Entries() {
		if e.First("uid") == uid {
			return i
		}
	}
	t.Fatalf("no uid %s", uid)
	return -1
}

func TestSearchScopes(t *testing.T) {
	d := demoDirectory(t)
	s := startServer(t, d, Config{})
	c := bound(t, s)
	count := func(base string, scope int) int {
		t.Helper()
		res, err := search(c, base, scope, "(objectClass=*)", "1.1")
		if err != nil {
			t.Fatalf("search %q scope %d: %v", base, scope, err)
		}
		return len(res.Entries)
	}
	people := "ou=People," + baseDN
	if got := count("ou=IT,"+people, ldap.ScopeBaseObject); got != 1 {
		t.Errorf("base: %d entries", got)
	}
	if got := count(people, ldap.ScopeSingleLevel); got != 5 {
		t.Errorf("one level under People: %d entries, want the 5 OUs", got)
	}
	if got := count("OU=it,"+people, ldap.ScopeWholeSubtree); got != 5 {
		t.Errorf("subtree of IT: %d entries, want the OU and 4 people", got)
	}
	if got := count(baseDN, ldap.ScopeWholeSubtree); got != d.Len() {
		t.Errorf("subtree of the suffix: %d entries, want %d", got, d.Len())
	}
	res, err := search(c, "", ldap.ScopeSingleLevel, "(objectClass=*)", "1.1")
	if err != nil || len(res.Entries) != 1 || res.Entries[0].DN != baseDN {
		t.Errorf("one level under the root: %v %v", err, res)
	}
	_, err = search(c, "uid=nobody,ou=Nowhere,"+people, ldap.ScopeWholeSubtree, "(objectClass=*)")
	var le *ldap.Error
	if !errors.As(err, &le) || le.ResultCode != ldap.LDAPResultNoSuchObject || le.MatchedDN != people {
		t.Errorf("missing base: %v (matched %q), want noSuchObject matching %s", err, func() string {
			if le != nil {
				return le.MatchedDN
			}
			return ""
		}(), people)
	}
}

func TestAttributeSelection(t *testing.T) {
	s := startServer(t, demoDirectory(t), Config{})
	c := bound(t, s)
	names := func(attrs ...string) []string {
		t.Helper()
		res, err := search(c, oliverDN, ldap.ScopeBaseObject, "(objectClass=*)", attrs...)
		if err != nil || len(res.Entries) != 1 {
			t.Fatalf("search %v: %v", attrs, err)
		}
		var out []string
		for _, a := range res.Entries[0].Attributes {
			out = append(out, a.Name)
		}
		return out
	}
	all := names()
	if !slices.Contains(all, "mail") || slices.Contains(all, "entryUUID") || slices.Contains(all, "userPassword") || slices.Contains(all, "pwdAccountLockedTime") {
		t.Errorf("default attributes: %v", all)
	}
	if star := names("*"); !slices.Equal(star, all) {
		t.Errorf("* = %v, want %v", star, all)
	}
	op := names("+")
	for _, want := range []string{"entryUUID", "createTimestamp", "modifyTimestamp", "memberOf", "entryDN", "pwdAccountLockedTime"} {
		if !slices.Contains(op, want) {
			t.Errorf("+ lacks %s: %v", want, op)
		}
	}
	if slices.Contains(op, "mail") {
		t.Errorf("+ returned user attributes: %v", op)
	}
	if got := names("1.1"); len(got) != 0 {
		t.Errorf("1.1 returned %v", got)
	}
	if got := names("ENTRYUUID", "Mail", "rfc822Mailbox", "userPassword", "1.1"); !slices.Equal(got, []string{"mail", "entryUUID"}) {
		t.Errorf("named attributes: %v, want canonical names in entry order", got)
	}
	res, err := c.Search(ldap.NewSearchRequest(oliverDN, ldap.ScopeBaseObject, ldap.NeverDerefAliases, 0, 0, true, "(objectClass=*)", []string{"cn", "sn"}, nil))
	if err != nil || len(res.Entries) != 1 {
		t.Fatalf("types only: %v", err)
	}
	for _, a := range res.Entries[0].Attributes {
		if len(a.Values) != 0 {
			t.Errorf("types only returned values for %s: %v", a.Name, a.Values)
		}
	}
}

func TestRootDSE(t *testing.T) {
	s := startServer(t, demoDirectory(t), Config{})
	c := dial(t, s) // no bind: the root DSE is public
	res, err := search(c, "", ldap.ScopeBaseObject, "(objectClass=*)", "namingContexts", "supportedControl", "supportedLDAPVersion")
	if err != nil || len(res.Entries) != 1 {
		t.Fatalf("root DSE: %v", err)
	}
	e := res.Entries[0]
	if e.DN != "" || !slices.Equal(e.GetAttributeValues("namingContexts"), []string{baseDN}) ||
		!slices.Contains(e.GetAttributeValues("supportedControl"), ldap.ControlTypePaging) ||
		!slices.Equal(e.GetAttributeValues("supportedLDAPVersion"), []string{"3"}) {
		t.Errorf("root DSE: %+v", e.Attributes)
	}
	// The filter applies to the root DSE too.
	res, err = search(c, "", ldap.ScopeBaseObject, "(namingContexts=nothing)")
	if err != nil || len(res.Entries) != 0 {
		t.Errorf("root DSE with a false filter: %v %v", err, res.Entries)
	}
}

func TestPagedSearch(t *testing.T) {
	d := demoDirectory(t)
	s := startServer(t, d, Config{})
	c := bound(t, s)
	var want []string
	for _, e := range d.Entries() {
		want = append(want, e.DN)
	}

	t.Run("go-ldap SearchWithPaging gets every entry once", func(t *testing.T) {
		res, err := c.SearchWithPaging(ldap.NewSearchRequest(baseDN, ldap.ScopeWholeSubtree, ldap.NeverDerefAliases, 0, 0, false, "(objectClass=*)", []string{"1.1"}, nil), 5)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, e := range res.Entries {
			got = append(got, e.DN)
		}
		if !slices.Equal(got, want) {
			t.Fatalf("got %d entries %v\nwant %d %v", len(got), got, len(want), want)
		}
	})

	t.Run("pages of at most 5 with a cookie until the last", func(t *testing.T) {
		paging := ldap.NewControlPaging(5)
		req := ldap.NewSearchRequest(baseDN, ldap.ScopeWholeSubtree, ldap.NeverDerefAliases, 0, 0, false, "(objectClass=*)", []string{"entryUUID"}, []ldap.Control{paging})
		seen := map[string]int{}
		pages := 0
		for {
			res, err := c.Search(req)
			if err != nil {
				t.Fatalf("page %d: %v", pages+1, err)
			}
			pages++
			if len(res.Entries) > 5 {
				t.Fatalf("page %d has %d entries", pages, len(res.Entries))
			}
			for _, e := range res.Entries {
				seen[e.DN]++
			}
			ctl, ok := ldap.FindControl(res.Controls, ldap.ControlTypePaging).(*ldap.ControlPaging)
			if !ok {
				t.Fatalf("page %d has no paging control", pages)
			}
			if ctl.PagingSize != uint32(len(want)) {
				t.Errorf("page %d: size estimate %d, want %d", pages, ctl.PagingSize, len(want))
			}
			if len(ctl.Cookie) == 0 {
				if len(res.Entries) == 0 {
					t.Errorf("last page %d is empty", pages)
				}
				break
			}
			if len(res.Entries) != 5 {
				t.Errorf("page %d before the last has %d entries", pages, len(res.Entries))
			}
			paging.SetCookie(ctl.Cookie)
		}
		if wantPages := (len(want) + 4) / 5; pages != wantPages {
			t.Errorf("%d pages, want %d", pages, wantPages)
		}
		for _, dn := range want {
			if seen[dn] != 1 {
				t.Errorf("%s returned %d times", dn, seen[dn])
			}
		}
		if len(seen) != len(want) {
			t.Errorf("%d distinct entries, want %d", len(seen), len(want))
		}
	})

	firstPage := func(t *testing.T, c *ldap.Conn, filter string) (*ldap.ControlPaging, *ldap.SearchRequest) {
		t.Helper()
		paging := ldap.NewControlPaging(5)
		req := ldap.NewSearchRequest(baseDN, ldap.ScopeWholeSubtree, ldap.NeverDerefAliases, 0, 0, false, filter, []string{"1.1"}, []ldap.Control{paging})
		res, err := c.Search(req)
		if err != nil {
			t.Fatal(err)
		}
		ctl := ldap.FindControl(res.Controls, ldap.ControlTypePaging).(*ldap.ControlPaging)
		if len(ctl.Cookie) == 0 {
			t.Fatal("no cookie after the first page")
		}
		paging.SetCookie(ctl.Cookie)
		return paging, req
	}

	t.Run("a cookie works once, for the same search, on the same connection", func(t *testing.T) {
		paging, req := firstPage(t, c, "(objectClass=*)")
		cookie := slices.Clone(paging.Cookie)
		other := ldap.NewSearchRequest(baseDN, ldap.ScopeWholeSubtree, ldap.NeverDerefAliases, 0, 0, false, "(uid=*)", []string{"1.1"}, []ldap.Control{paging})
		if _, err := c.Search(other); ldapCode(err) != ldap.LDAPResultUnwillingToPerform {
			t.Errorf("cookie with another filter: %v, want unwillingToPerform", err)
		}
		c2 := bound(t, s)
		if _, err := c2.Search(req); ldapCode(err) != ldap.LDAPResultUnwillingToPerform {
			t.Errorf("cookie on another connection: %v, want unwillingToPerform", err)
		}
		if _, err := c.Search(req); err != nil {
			t.Fatalf("second page: %v", err)
		}
		paging.SetCookie(cookie)
		if _, err := c.Search(req); ldapCode(err) != ldap.LDAPResultUnwillingToPerform {
			t.Errorf("reused cookie: %v, want unwillingToPerform", err)
		}
	})

	t.Run("page size 0 abandons the search", func(t *testing.T) {
		paging, req := firstPage(t, c, "(objectClass=*)")
		cookie := slices.Clone(paging.Cookie)
		paging.PagingSize = 0
		res, err := c.Search(req)
		if err != nil || len(res.Entries) != 0 {
			t.Fatalf("abandon: %v, %d entries", err, len(res.Entries))
		}
		if ctl := ldap.FindControl(res.Controls, ldap.ControlTypePaging).(*ldap.ControlPaging); len(ctl.Cookie) != 0 {
			t.Errorf("abandon returned a cookie")
		}
		paging.PagingSize = 5
		paging.SetCookie(cookie)
		if _, err := c.Search(req); ldapCode(err) != ldap.LDAPResultUnwillingToPerform {
			t.Errorf("cookie after abandon: %v", err)
		}
	})

	t.Run("the client's size limit applies to the whole paged search", func(t *testing.T) {
		req := ldap.NewSearchRequest(baseDN, ldap.ScopeWholeSubtree, ldap.NeverDerefAliases, 12, 0, false, "(objectClass=*)", []string{"1.1"}, nil)
		res, err := c.SearchWithPaging(req, 5)
		if ldapCode(err) != ldap.LDAPResultSizeLimitExceeded || len(res.Entries) != 12 {
			t.Errorf("got %d entries, %v; want 12 and sizeLimitExceeded", len(res.Entries), err)
		}
	})

	t.Run("a page size above the maximum is capped", func(t *testing.T) {
		s := startServer(t, d, Config{MaxPageSize: 10})
		c := bound(t, s)
		req := ldap.NewSearchRequest(baseDN, ldap.ScopeWholeSubtree, ldap.NeverDerefAliases, 0, 0, false, "(objectClass=*)", []string{"1.1"}, []ldap.Control{ldap.NewControlPaging(1000)})
		res, err := c.Search(req)
		if err != nil || len(res.Entries) != 10 {
			t.Errorf("got %d entries, %v; want 10", len(res.Entries), err)
		}
	})
}

func TestSizeLimit(t *testing.T) {
	s := startServer(t, demoDirectory(t), Config{SizeLimit: 10})
	c := bound(t, s)
	res, err := search(c, baseDN, ldap.ScopeWholeSubtree, "(objectClass=*)", "1.1")
	if ldapCode(err) != ldap.LDAPResultSizeLimitExceeded || len(res.Entries) != 10 {
		t.Errorf("unpaged: %d entries, %v; want 10 and sizeLimitExceeded", len(res.Entries), err)
	}
	req := ldap.NewSearchRequest(baseDN, ldap.ScopeWholeSubtree, ldap.NeverDerefAliases, 3, 0, false, "(objectClass=*)", []string{"1.1"}, nil)
	if res, err := c.Search(req); ldapCode(err) != ldap.LDAPResultSizeLimitExceeded || len(res.Entries) != 3 {
		t.Errorf("client limit 3: %d entries, %v", len(res.Entries), err)
	}
	// Paging is the way to read more than the server's limit.
	res, err = c.SearchWithPaging(ldap.NewSearchRequest(baseDN, ldap.ScopeWholeSubtree, ldap.NeverDerefAliases, 0, 0, false, "(objectClass=*)", []string{"1.1"}, nil), 5)
	if err != nil || len(res.Entries) != s.Directory().Len() {
		t.Errorf("paged: %d entries, %v", len(res.Entries), err)
	}
}

func TestControls(t *testing.T) {
	s := startServer(t, demoDirectory(t), Config{})
	c := bound(t, s)
	req := func(ctl ldap.Control) *ldap.SearchRequest {
		return ldap.NewSearchRequest(baseDN, ldap.ScopeWholeSubtree, ldap.NeverDerefAliases, 0, 0, false, "(uid=wei.li)", []string{"1.1"}, []ldap.Control{ctl})
	}
	if _, err := c.Search(req(ldap.NewControlString("1.3.6.1.4.1.99999.1", true, ""))); ldapCode(err) != ldap.LDAPResultUnavailableCriticalExtension {
		t.Errorf("unknown critical control: %v, want unavailableCriticalExtension", err)
	}
	if res, err := c.Search(req(ldap.NewControlString("1.3.6.1.4.1.99999.1", false, "x"))); err != nil || len(res.Entries) != 1 {
		t.Errorf("unknown non-critical control must be ignored: %v", err)
	}
	if res, err := c.Search(req(ldap.NewControlManageDsaIT(true))); err != nil || len(res.Entries) != 1 {
		t.Errorf("critical ManageDsaIT is supported: %v", err)
	}
	if _, err := c.Search(req(ldap.NewControlMicrosoftShowDeleted())); ldapCode(err) != ldap.LDAPResultUnavailableCriticalExtension {
		t.Errorf("show deleted: %v, want unavailableCriticalExtension", err)
	}
	bind := ldap.NewSimpleBindRequest(syncDN, syncPW, []ldap.Control{ldap.NewControlString("1.3.6.1.4.1.99999.2", true, "")})
	if _, err := c.SimpleBind(bind); ldapCode(err) != ldap.LDAPResultUnavailableCriticalExtension {
		t.Errorf("bind with an unknown critical control: %v", err)
	}
}

func TestOtherOperations(t *testing.T) {
	s := startServer(t, demoDirectory(t), Config{})
	c := bound(t, s)
	if err := c.Modify(ldap.NewModifyRequest(oliverDN, nil)); ldapCode(err) != ldap.LDAPResultUnwillingToPerform {
		t.Errorf("modify: %v, want unwillingToPerform", err)
	}
	if err := c.Del(ldap.NewDelRequest(oliverDN, nil)); ldapCode(err) != ldap.LDAPResultUnwillingToPerform {
		t.Errorf("delete: %v, want unwillingToPerform", err)
	}
	if err := c.ModifyDN(ldap.NewModifyDNRequest(oliverDN, "uid=oliver", true, "")); ldapCode(err) != ldap.LDAPResultUnwillingToPerform {
		t.Errorf("modify DN: %v, want unwillingToPerform", err)
	}
	if _, err := c.Compare(oliverDN, "uid", "oliver.grant"); ldapCode(err) != ldap.LDAPResultUnwillingToPerform {
		t.Errorf("compare: %v, want unwillingToPerform", err)
	}
	// go-ldap leaves a connection unusable after a refused StartTLS (it
	// does not restart its reader), so that one gets its own connection.
	if err := dial(t, s).StartTLS(nil); ldapCode(err) != ldap.LDAPResultProtocolError {
		t.Errorf("StartTLS: %v, want protocolError", err)
	}
	// None of that cost the connection.
	if got := uids(t, c, "(uid=wei.li)"); !slices.Equal(got, []string{"wei.li"}) {
		t.Errorf("after the refused operations: %v", got)
	}
}

// rawConn speaks raw bytes to the server, for requests no client library
// would send.
func rawConn(t *testing.T, s *Server) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", s.Addr(), 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(30 * time.Second))
	t.Cleanup(func() { c.Close() })
	return c
}

func envelope(id int64, op *ber.Packet, controls ...*ber.Packet) []byte {
	p := ber.Encode(ber.ClassUniversal, ber.TypeConstructed, ber.TagSequence, nil, "LDAP Request")
	p.AppendChild(ber.NewInteger(ber.ClassUniversal, ber.TypePrimitive, ber.TagInteger, id, "MessageID"))
	p.AppendChild(op)
	if len(controls) > 0 {
		cs := ber.Encode(ber.ClassContext, ber.TypeConstructed, 0, nil, "Controls")
		for _, c := range controls {
			cs.AppendChild(c)
		}
		p.AppendChild(cs)
	}
	return p.Bytes()
}

// searchOp is a search request for (objectClass=*) with its first fields
// fields (8 is all of them).
func searchOp(base string, scope int64, fields int) *ber.Packet {
	op := ber.Encode(ber.ClassApplication, ber.TypeConstructed, 3, nil, "Search Request")
	all := []*ber.Packet{
		ber.NewString(ber.ClassUniversal, ber.TypePrimitive, ber.TagOctetString, base, "Base DN"),
		ber.NewInteger(ber.ClassUniversal, ber.TypePrimitive, ber.TagEnumerated, scope, "Scope"),
		ber.NewInteger(ber.ClassUniversal, ber.TypePrimitive, ber.TagEnumerated, 0, "Deref"),
		ber.NewInteger(ber.ClassUniversal, ber.TypePrimitive, ber.TagInteger, 0, "Size"),
		ber.NewInteger(ber.ClassUniversal, ber.TypePrimitive, ber.TagInteger, 0, "Time"),
		ber.NewBoolean(ber.ClassUniversal, ber.TypePrimitive, ber.TagBoolean, false, "Types only"),
		ber.NewString(ber.ClassContext, ber.TypePrimitive, 7, "objectClass", "Present"),
		ber.Encode(ber.ClassUniversal, ber.TypeConstructed, ber.TagSequence, nil, "Attributes"),
	}
	for _, f := range all[:fields] {
		op.AppendChild(f)
	}
	return op
}

func TestMalformedRequests(t *testing.T) {
	s := startServer(t, demoDirectory(t), Config{MaxMessageBytes: 64 << 10})
	// A healthy connection that must survive all of it.
	healthy := bound(t, s)

	brokenPaging := ber.Encode(ber.ClassUniversal, ber.TypeConstructed, ber.TagSequence, nil, "Control")
	brokenPaging.AppendChild(ber.NewString(ber.ClassUniversal, ber.TypePrimitive, ber.TagOctetString, ldap.ControlTypePaging, "Type"))
	brokenPaging.AppendChild(ber.NewString(ber.ClassUniversal, ber.TypePrimitive, ber.TagOctetString, "\x30\x03\x02\x01\x05", "Value without a cookie"))
	deep := strings.Repeat("(!", 200) + "(uid=x)" + strings.Repeat(")", 200)
	deepFilter, err := ldap.CompileFilter(deep)
	if err != nil {
		t.Fatal(err)
	}
	deepSearch := searchOp(baseDN, 2, 6)
	deepSearch.AppendChild(deepFilter)
	deepSearch.AppendChild(ber.Encode(ber.ClassUniversal, ber.TypeConstructed, ber.TagSequence, nil, "Attributes"))
	badBind := ber.Encode(ber.ClassApplication, ber.TypeConstructed, 0, nil, "Bind Request")
	badBind.AppendChild(ber.NewInteger(ber.ClassUniversal, ber.TypePrimitive, ber.TagInteger, 3, "Version"))
	badBind.AppendChild(ber.NewInteger(ber.ClassUniversal, ber.TypePrimitive, ber.TagInteger, 42, "Name that is not a string"))

	cases := []struct {
		name string
		data []byte
	}{
		{"text instead of BER", []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n")},
		{"TLS client hello", []byte{0x16, 0x03, 0x01, 0x00, 0xa5, 0x01, 0x00, 0x00, 0xa1, 0x03, 0x03}},
		{"length beyond the limit", []byte{0x30, 0x84, 0x7f, 0xff, 0xff, 0xff, 0x02, 0x01, 0x01}},
		{"indefinite length", []byte{0x30, 0x80, 0x02, 0x01, 0x01, 0x00, 0x00}},
		{"no message ID", []byte{0x30, 0x05, 0x63, 0x03, 0x04, 0x01, 0x41}},
		{"truncated message", envelope(1, searchOp(baseDN, 2, 8))[:10]},
		{"search without a filter", envelope(1, searchOp(baseDN, 2, 6))},
		{"search without fields", envelope(2, searchOp(baseDN, 2, 0))},
		{"paging control without a cookie", envelope(3, searchOp(baseDN, 2, 8), brokenPaging)},
		{"filter nested 200 deep", envelope(4, deepSearch)},
		{"bind with a number as name", envelope(5, badBind)},
		{"unknown operation", envelope(6, ber.Encode(ber.ClassApplication, ber.TypeConstructed, 30, nil, "?"))},
		{"message ID that is a string", func() []byte {
			p := ber.Encode(ber.ClassUniversal, ber.TypeConstructed, ber.TagSequence, nil, "")
			p.AppendChild(ber.NewString(ber.ClassUniversal, ber.TypePrimitive, ber.TagOctetString, "1", ""))
			p.AppendChild(searchOp(baseDN, 2, 8))
			return p.Bytes()
		}()},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := rawConn(t, s)
			if _, err := c.Write(tc.data); err != nil {
				t.Fatal(err)
			}
			if tcp, ok := c.(*net.TCPConn); ok && tc.name == "truncated message" {
				tcp.CloseWrite()
			}
			// The server answers with an error result, or with a notice
			// of disconnection and closes; it must neither hang nor die.
			drain(t, c)

			fresh := bound(t, s)
			if got := uids(t, fresh, "(uid=wei.li)"); !slices.Equal(got, []string{"wei.li"}) {
				t.Fatalf("new connection after %s: %v", tc.name, got)
			}
			if got := uids(t, healthy, "(uid=jsmith)"); !slices.Equal(got, []string{"jsmith"}) {
				t.Fatalf("existing connection after %s: %v", tc.name, got)
			}
		})
	}
}

// drain reads until the server answers a request (a response with a
// message ID other than 0) or closes the connection.
func drain(t *testing.T, c net.Conn) {
	t.Helper()
	for {
		p, err := ber.ReadPacket(c)
		if err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed) || strings.Contains(err.Error(), "reset by peer") {
				return
			}
			t.Fatalf("reading the server's answer: %v", err)
		}
		if len(p.Children) > 0 {
			if id, ok := p.Children[0].Value.(int64); ok && id != 0 {
				return
			}
		}
	}
}

func TestAbandonIsSwallowed(t *testing.T) {
	s := startServer(t, demoDirectory(t), Config{})
	c := rawConn(t, s)
	abandon := ber.NewInteger(ber.ClassApplication, ber.TypePrimitive, 16, 7, "Abandon Request")
	if _, err := c.Write(append(envelope(8, abandon), envelope(9, searchOp("", 0, 8))...)); err != nil {
		t.Fatal(err)
	}
	// The first message back answers the root DSE search: the abandon
	// got no answer, and did not cost the connection.
	p, err := ber.ReadPacket(c)
	if err != nil {
		t.Fatal(err)
	}
	if id := p.Children[0].Value.(int64); id != 9 {
		t.Fatalf("first response is for message %d, want 9", id)
	}
}

func TestStopClosesIdleConnections(t *testing.T) {
	s, err := Start(context.Background(), demoDirectory(t), Config{})
	if err != nil {
		t.Fatal(err)
	}
	idle := make([]*ldap.Conn, 3)
	for i := range idle {
		idle[i], err = ldap.DialURL(s.URL())
		if err != nil {
			t.Fatal(err)
		}
		defer idle[i].Close()
		if err := idle[i].Bind(syncDN, syncPW); err != nil {
			t.Fatal(err)
		}
	}
	// Bounded only so that a regression fails instead of hanging the suite.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.Stop(ctx); err != nil {
		t.Fatalf("stop with idle clients: %v", err)
	}
	if err := s.Stop(ctx); err != nil {
		t.Fatalf("second stop: %v", err)
	}
	if _, err := search(idle[0], baseDN, ldap.ScopeBaseObject, "(objectClass=*)"); err == nil {
		t.Error("a connection still works after Stop")
	}
	if c, err := net.DialTimeout("tcp", s.Addr(), 5*time.Second); err == nil {
		c.Close()
		t.Error("the listener still accepts after Stop")
	}
}

func TestConcurrentClients(t *testing.T) {
	d := demoDirectory(t)
	s := startServer(t, d, Config{})
	var people []Entry
	for _, e := range d.Entries() {
		if e.First("uid") != "" && e.First("pwdAccountLockedTime") == "" {
			people = append(people, e)
		}
	}
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < 10; i++ {
				p := people[(w*10+i)%len(people)]
				err := func() error {
					c, err := ldap.DialURL(s.URL())
					if err != nil {
						return err
					}
					defer c.Close()
					if err := c.Bind(p.DN, employeePW); err != nil {
						return fmt.Errorf("bind %s: %w", p.DN, err)
					}
					res, err := c.SearchWithPaging(ldap.NewSearchRequest(baseDN, ldap.ScopeWholeSubtree, ldap.NeverDerefAliases, 0, 0, false, "(objectClass=inetOrgPerson)", []string{"uid"}, nil), 4)
					if err != nil {
						return err
					}
					if len(res.Entries) != len(people)+1 { // +1: the locked account
						return fmt.Errorf("%d people, want %d", len(res.Entries), len(people)+1)
					}
					filter := "(uid=" + ldap.EscapeFilter(p.First("uid")) + ")"
					res, err = search(c, baseDN, ldap.ScopeWholeSubtree, filter, "entryUUID")
					if err != nil || len(res.Entries) != 1 || res.Entries[0].GetAttributeValue("entryUUID") != p.First("entryUUID") {
						return fmt.Errorf("own entry of %s: %v", p.DN, err)
					}
					return c.Unbind()
				}()
				if err != nil {
					errs <- err
					return
				}
			}
		}(w)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestReplace(t *testing.T) {
	d := demoDirectory(t)
	s := startServer(t, d, Config{})
	c := bound(t, s)

	// A paged search that started on the old directory finishes on it.
	paging := ldap.NewControlPaging(5)
	req := ldap.NewSearchRequest(baseDN, ldap.ScopeWholeSubtree, ldap.NeverDerefAliases, 0, 0, false, "(objectClass=*)", []string{"1.1"}, []ldap.Control{paging})
	res, err := c.Search(req)
	if err != nil {
		t.Fatal(err)
	}
	paging.SetCookie(ldap.FindControl(res.Controls, ldap.ControlTypePaging).(*ldap.ControlPaging).Cookie)

	changed := strings.Replace(string(configs.DemoLDIF), "title: Shift Supervisor, Line 2", "title: Production Manager", 1)
	changed = strings.Replace(changed, "pwdAccountLockedTime: 000001010000Z\n", "", 1)
	d2, err := Load("changed.ldif", strings.NewReader(changed))
	if err != nil {
		t.Fatal(err)
	}
	s.Replace(d2)
	total := len(res.Entries)
	for len(paging.Cookie) > 0 {
		res, err = c.Search(req)
		if err != nil {
			t.Fatal(err)
		}
		total += len(res.Entries)
		paging.SetCookie(ldap.FindControl(res.Controls, ldap.ControlTypePaging).(*ldap.ControlPaging).Cookie)
	}
	if total != d.Len() {
		t.Errorf("paged search across Replace returned %d entries, want %d", total, d.Len())
	}
	if got := uids(t, c, "(title=Production Manager)"); !slices.Equal(got, []string{"ingrid.bakke"}) {
		t.Errorf("after Replace: %v", got)
	}
	// The unlocked account can bind now.
	oc := dial(t, s)
	if err := oc.Bind(oliverDN, employeePW); err != nil {
		t.Errorf("bind after unlocking: %v", err)
	}
}

func TestStartRefusesNonLoopback(t *testing.T) {
	for _, addr := range []string{"0.0.0.0:0", ":0", "192.0.2.1:389", "example.com:389"} {
		if s, err := Start(context.Background(), demoDirectory(t), Config{Addr: addr}); err == nil {
			s.Stop(context.Background())
			t.Errorf("Start on %s succeeded", addr)
		}
	}
}

func BenchmarkPagedSearch(b *testing.B) {
	d := demoDirectory(b)
	s := startServer(b, d, Config{})
	c := bound(b, s)
	req := ldap.NewSearchRequest(baseDN, ldap.ScopeWholeSubtree, ldap.NeverDerefAliases, 0, 0, false,
		"(&(objectClass=inetOrgPerson)(memberOf:1.2.840.113556.1.4.1941:="+pilotDN+"))", []string{"*", "+"}, nil)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		req.Controls = nil
		res, err := c.SearchWithPaging(req, 5)
		if err != nil || len(res.Entries) == 0 {
			b.Fatalf("%v, %d entries", err, len(res.Entries))
		}
	}
}

func BenchmarkBind(b *testing.B) {
	s := startServer(b, demoDirectory(b), Config{})
	c := dial(b, s)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := c.Bind(smithDN, employeePW); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkLoadAndStart(b *testing.B) {
	for i := 0; i < b.N; i++ {
		d := demoDirectory(b)
		s, err := Start(context.Background(), d, Config{})
		if err != nil {
			b.Fatal(err)
		}
		if err := s.Stop(context.Background()); err != nil {
			b.Fatal(err)
		}
	}
}
