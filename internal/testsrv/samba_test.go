package testsrv

import (
	"bytes"
	"errors"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/go-ldap/ldap/v3"
)

func adServiceConn(t *testing.T, s *AD) *ldap.Conn {
	t.Helper()
	c, err := dialLDAP(s.LDAPSURL, s.TLSConfig(), false, s.BindUPN, s.BindPassword)
	if err != nil {
		t.Fatalf("service account: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func adBind(s *AD, url, user, password string) error {
	c, err := dialLDAP(url, s.TLSConfig(), strings.HasPrefix(url, "ldap://"), user, password)
	if err == nil {
		c.Close()
	}
	return err
}

func TestSambaTLSAndBinds(t *testing.T) {
	s := SambaDC(t)

	// Administrator and the service account bind over LDAPS and StartTLS.
	for _, url := range []string{s.LDAPSURL, s.LDAPURL} {
		for user, pw := range map[string]string{s.AdminUPN: s.AdminPassword, s.BindUPN: s.BindPassword, s.BindDN: s.BindPassword} {
			if err := adBind(s, url, user, pw); err != nil {
				t.Errorf("bind %s at %s: %v", user, url, err)
			}
		}
	}

	// A simple bind without TLS is refused, as on a real DC.
	c, err := ldap.DialURL(s.LDAPURL)
	if err != nil {
		t.Fatalf("dial %s: %v", s.LDAPURL, err)
	}
	err = c.Bind(s.AdminUPN, s.AdminPassword)
	c.Close()
	if !ldap.IsErrorWithCode(err, ldap.LDAPResultStrongAuthRequired) {
		t.Fatalf("plain simple bind: want strongerAuthRequired, got %v", err)
	}

	// A CA that did not sign the DC's certificate is refused.
	other := UnrelatedCA(t)
	if _, err := dialLDAP(s.LDAPSURL, other.TLSConfig(s.Host), false, s.BindUPN, s.BindPassword); err == nil ||
		!strings.Contains(err.Error(), "certificate signed by unknown authority") {
		t.Fatalf("LDAPS with an unrelated CA: want unknown authority, got %v", err)
	}
	// The certificate is valid for the DC's address too.
	if _, err := dialLDAP(s.LDAPSURL, s.CA.TLSConfig(s.Addr), false, s.BindUPN, s.BindPassword); err != nil {
		t.Fatalf("LDAPS by address: %v", err)
	}

	ou := s.NewOU(t)
	alice := s.AddUser(t, ou, "alice", map[string][]string{"mail": {"Alice.Smith@corp.example"}})
	for _, name := range []string{"alice@" + s.DNSDomain, alice, s.Domain + `\alice`} {
		if err := adBind(s, s.LDAPSURL, name, DefaultUserPassword); err != nil {
			t.Errorf("bind as %s: %v", name, err)
		}
	}
	err = adBind(s, s.LDAPSURL, "alice@"+s.DNSDomain, "Wrong-Passw0rd!")
	if !ldap.IsErrorWithCode(err, ldap.LDAPResultInvalidCredentials) || !strings.Contains(err.Error(), "data 52e") {
		t.Fatalf("wrong password: want invalidCredentials data 52e, got %v", err)
	}

	// The service account reads users, objectGUID included, and cannot write.
	svc := adServiceConn(t, s)
	res, err := svc.Search(ldap.NewSearchRequest(s.BaseDN, ldap.ScopeWholeSubtree, ldap.NeverDerefAliases, 0, 0, false,
		"(&(objectClass=user)(sAMAccountName=alice))", []string{"objectGUID", "mail", "userAccountControl", "userPrincipalName"}, nil))
	if err != nil {
		t.Fatalf("search: %v", err)
	}
	if len(res.Entries) != 1 || !strings.EqualFold(res.Entries[0].DN, alice) {
		t.Fatalf("search found %v", res.Entries)
	}
	e := res.Entries[0]
	if g := e.GetRawAttributeValue("objectGUID"); !bytes.Equal(g, s.GUID(t, alice)) {
		t.Fatalf("objectGUID %x, want %x", g, s.GUID(t, alice))
	}
	if e.GetAttributeValue("mail") != "Alice.Smith@corp.example" || e.GetAttributeValue("userAccountControl") != "512" ||
		e.GetAttributeValue("userPrincipalName") != "alice@corp.example" {
		t.Fatalf("alice: %v", e.Attributes)
	}
	err = svc.Modify(&ldap.ModifyRequest{DN: alice, Changes: []ldap.Change{{Operation: ldap.ReplaceAttribute,
		Modification: ldap.PartialAttribute{Type: "mail", Vals: []string{"x@corp.example"}}}}})
	if !ldap.IsErrorWithCode(err, ldap.LDAPResultInsufficientAccessRights) {
		t.Fatalf("service account modify: want insufficient access, got %v", err)
	}
}

func TestSambaUserLifecycle(t *testing.T) {
	s := SambaDC(t)
	ou := s.NewOU(t)
	bob := s.AddUser(t, ou, "bob", nil)
	guid := s.GUID(t, bob)
	upn := "bob@" + s.DNSDomain

	s.Disable(t, bob)
	if uac := s.Entry(t, bob, "userAccountControl").GetAttributeValue("userAccountControl"); uac != "514" {
		t.Fatalf("disabled userAccountControl %s", uac)
	}
	if err := adBind(s, s.LDAPSURL, upn, DefaultUserPassword); !ldap.IsErrorWithCode(err, ldap.LDAPResultInvalidCredentials) ||
		!strings.Contains(err.Error(), "data 533") {
		t.Fatalf("disabled user bind: want invalidCredentials data 533, got %v", err)
	}
	s.Enable(t, bob)
	s.SetPassword(t, bob, "Other-Passw0rd-3")
	if err := adBind(s, s.LDAPSURL, upn, "Other-Passw0rd-3"); err != nil {
		t.Fatalf("bind after enable and password reset: %v", err)
	}

	// Rename and move keep objectGUID.
	renamed := s.Rename(t, bob, "CN=Bob Builder")
	sub := s.AddOU(t, ou, "moved")
	moved := s.Move(t, renamed, sub)
	if !strings.EqualFold(moved, "CN=Bob Builder,"+sub) {
		t.Fatalf("moved DN %q", moved)
	}
	if g := s.GUID(t, moved); !bytes.Equal(g, guid) {
		t.Fatalf("objectGUID changed: %x -> %x", guid, g)
	}
	if sam := s.Entry(t, moved, "sAMAccountName").GetAttributeValue("sAMAccountName"); sam != "bob" {
		t.Fatalf("sAMAccountName after rename: %q", sam)
	}

	// Delete makes a tombstone under Deleted Objects with the same GUID.
	s.Delete(t, moved)
	adm := s.Conn(t)
	show := []ldap.Control{ldap.NewControlMicrosoftShowDeleted()}
	res, err := adm.Search(ldap.NewSearchRequest(s.BaseDN, ldap.ScopeWholeSubtree, ldap.NeverDerefAliases, 0, 0, false,
		"(objectGUID="+EscapeFilterBytes(guid)+")", []string{"isDeleted", "lastKnownParent", "sAMAccountName", "mail"}, show))
	if err != nil || len(res.Entries) != 1 {
		t.Fatalf("tombstone search: %v %v", err, res)
	}
	tomb := res.Entries[0]
	if tomb.GetAttributeValue("isDeleted") != "TRUE" || !strings.HasSuffix(strings.ToLower(tomb.DN), strings.ToLower(","+s.DeletedObjectsDN)) ||
		!strings.EqualFold(tomb.GetAttributeValue("lastKnownParent"), sub) || tomb.GetAttributeValue("sAMAccountName") != "bob" ||
		tomb.GetAttributeValue("mail") != "" {
		t.Fatalf("tombstone %s: %v", tomb.DN, tomb.Attributes)
	}
	if err := adBind(s, s.LDAPSURL, upn, "Other-Passw0rd-3"); err == nil {
		t.Fatal("a deleted user can still bind")
	}

	// Restore brings the same object back; the tombstone lost mail and the
	// password, so the test puts back what it needs.
	back := "CN=bob," + ou
	s.Restore(t, guid, back)
	if g := s.GUID(t, back); !bytes.Equal(g, guid) {
		t.Fatalf("restored objectGUID %x, want %x", g, guid)
	}
	restored := s.Entry(t, back, "mail", "userAccountControl", "isDeleted", "sAMAccountName")
	if restored.GetAttributeValue("mail") != "" || restored.GetAttributeValue("isDeleted") != "" ||
		restored.GetAttributeValue("sAMAccountName") != "bob" {
		t.Fatalf("restored: %v", restored.Attributes)
	}
	s.Modify(t, back, map[string][]string{"userPrincipalName": {upn}, "mail": {upn}})
	s.SetPassword(t, back, "Third-Passw0rd-4")
	s.Enable(t, back)
	if err := adBind(s, s.LDAPSURL, upn, "Third-Passw0rd-4"); err != nil {
		t.Fatalf("bind after restore: %v", err)
	}
}

func TestSambaNestedGroups(t *testing.T) {
	s := SambaDC(t)
	ou := s.NewOU(t)
	carol := s.AddUser(t, ou, "carol", nil)
	dave := s.AddUser(t, ou, "dave", nil)
	staff := s.AddGroup(t, ou, "staff", carol)
	all := s.AddGroup(t, ou, "all", staff)
	empty := s.AddGroup(t, ou, "empty")
	s.AddMember(t, empty, dave)
	s.RemoveMember(t, empty, dave)

	if got := s.Entry(t, carol, "memberOf").GetAttributeValues("memberOf"); len(got) != 1 || !strings.EqualFold(got[0], staff) {
		t.Fatalf("carol memberOf %v", got)
	}
	// LDAP_MATCHING_RULE_IN_CHAIN resolves nesting on the server.
	svc := adServiceConn(t, s)
	res, err := svc.Search(ldap.NewSearchRequest(ou, ldap.ScopeWholeSubtree, ldap.NeverDerefAliases, 0, 0, false,
		"(&(objectClass=user)(memberOf:1.2.840.113556.1.4.1941:="+ldap.EscapeFilter(all)+"))", []string{"sAMAccountName"}, nil))
	if err != nil {
		t.Fatalf("in-chain search: %v", err)
	}
	if len(res.Entries) != 1 || res.Entries[0].GetAttributeValue("sAMAccountName") != "carol" {
		t.Fatalf("nested members of all: %v", res.Entries)
	}
}

type dirSyncRound struct {
	entries map[string]*ldap.Entry // by FormatGUID(objectGUID)
	cookie  []byte
}

func dirSync(t *testing.T, c *ldap.Conn, s *AD, cookie []byte) dirSyncRound {
	t.Helper()
	req := ldap.NewSearchRequest(s.BaseDN, ldap.ScopeWholeSubtree, ldap.NeverDerefAliases, 0, 0, false,
		"(objectClass=user)", []string{"sAMAccountName", "mail", "userAccountControl", "isDeleted", "objectGUID"}, nil)
	r := dirSyncRound{entries: map[string]*ldap.Entry{}}
	for {
		res, err := c.DirSync(req, 0, 0, cookie)
		if err != nil {
			t.Fatalf("dirsync: %v", err)
		}
		for _, e := range res.Entries {
			r.entries[FormatGUID(e.GetRawAttributeValue("objectGUID"))] = e
		}
		ctl, ok := ldap.FindControl(res.Controls, ldap.ControlTypeDirSync).(*ldap.ControlDirSync)
		if !ok || len(ctl.Cookie) == 0 {
			t.Fatalf("dirsync answer without a cookie: %v", res.Controls)
		}
		cookie = ctl.Cookie
		req.Controls = nil
		if ctl.Flags == 0 { // no more data
			r.cookie = cookie
			return r
		}
	}
}

func TestSambaDirSyncAndUSN(t *testing.T) {
	s := SambaDC(t)
	ou := s.NewOU(t)
	erin := s.AddUser(t, ou, "erin", nil)
	svc := adServiceConn(t, s)

	inv := s.InvocationID(t)
	if len(inv) != 16 || bytes.Equal(inv, make([]byte, 16)) {
		t.Fatalf("invocationId %x", inv)
	}
	usn := s.HighestUSN(t)

	// DirSync only works on a naming context root.
	_, err := svc.DirSync(ldap.NewSearchRequest(ou, ldap.ScopeWholeSubtree, ldap.NeverDerefAliases, 0, 0, false,
		"(objectClass=user)", []string{"sAMAccountName"}, nil), 0, 0, nil)
	if !ldap.IsErrorWithCode(err, ldap.LDAPResultInsufficientAccessRights) {
		t.Fatalf("DirSync below the domain root: want insufficientAccessRights, got %v", err)
	}

	first := dirSync(t, svc, s, nil)
	erinID := FormatGUID(s.GUID(t, erin))
	if e := first.entries[erinID]; e == nil || e.GetAttributeValue("sAMAccountName") != "erin" {
		t.Fatalf("initial DirSync lacks erin: %d entries", len(first.entries))
	}
	if quiet := dirSync(t, svc, s, first.cookie); len(quiet.entries) != 0 {
		t.Fatalf("DirSync without changes returned %d entries", len(quiet.entries))
	}

	s.Modify(t, erin, map[string][]string{"mail": {"erin.new@corp.example"}})
	frank := s.AddUser(t, ou, "frank", nil)
	frankID := FormatGUID(s.GUID(t, frank))
	delta := dirSync(t, svc, s, first.cookie)
	if len(delta.entries) != 2 {
		t.Fatalf("delta has %d entries, want erin and frank", len(delta.entries))
	}
	// Only changed attributes come back (plus objectGUID and instanceType).
	if e := delta.entries[erinID]; e.GetAttributeValue("mail") != "erin.new@corp.example" || e.GetAttributeValue("sAMAccountName") != "" {
		t.Fatalf("erin delta: %v", e.Attributes)
	}
	if s.HighestUSN(t) <= usn {
		t.Fatal("highestCommittedUSN did not grow")
	}

	// A delete shows as the tombstone: isDeleted TRUE, same objectGUID.
	s.Delete(t, frank)
	del := dirSync(t, svc, s, delta.cookie)
	tomb := del.entries[frankID]
	if len(del.entries) != 1 || tomb == nil || tomb.GetAttributeValue("isDeleted") != "TRUE" ||
		!strings.Contains(strings.ToLower(tomb.DN), strings.ToLower(s.DeletedObjectsDN)) {
		t.Fatalf("delete in DirSync: %v", del.entries)
	}

	// Disabling is a userAccountControl change.
	s.Disable(t, erin)
	dis := dirSync(t, svc, s, del.cookie)
	if e := dis.entries[erinID]; len(dis.entries) != 1 || e == nil || e.GetAttributeValue("userAccountControl") != "514" {
		t.Fatalf("disable in DirSync: %v", dis.entries)
	}
}

func TestSambaKillRestartStop(t *testing.T) {
	s := StartSambaDC(t)
	shared := SambaDC(t)
	if s.Addr == shared.Addr {
		t.Fatalf("two DCs share %s", s.Addr)
	}
	ou := s.NewOU(t)
	u := s.AddUser(t, ou, "henry", nil)
	guid := s.GUID(t, u)
	inv := s.InvocationID(t)

	s.Kill(t)
	if s.Running() {
		t.Fatal("samba still running after Kill")
	}
	if err := adBind(s, s.LDAPSURL, s.BindUPN, s.BindPassword); err == nil || !isConnError(err) {
		t.Fatalf("bind to a killed DC: want a connection error, got %v", err)
	}
	s.Restart(t)
	if g := s.GUID(t, u); !bytes.Equal(g, guid) {
		t.Fatalf("after restart objectGUID %x, want %x", g, guid)
	}
	if got := s.InvocationID(t); !bytes.Equal(got, inv) {
		t.Fatalf("invocationId changed on restart: %x -> %x", inv, got)
	}
	if err := adBind(s, s.LDAPSURL, "henry@"+s.DNSDomain, DefaultUserPassword); err != nil {
		t.Fatalf("user bind after restart: %v", err)
	}

	s.Freeze(t)
	nc, err := net.Dial("tcp", net.JoinHostPort(s.Addr, "389"))
	if err != nil {
		t.Fatalf("dial a frozen DC (the kernel still accepts): %v", err)
	}
	fc := ldap.NewConn(nc, false)
	fc.Start()
	fc.SetTimeout(300 * time.Millisecond)
	_, err = fc.Search(ldap.NewSearchRequest("", ldap.ScopeBaseObject, ldap.NeverDerefAliases, 0, 0, false,
		"(objectClass=*)", []string{"dsServiceName"}, nil))
	fc.Close()
	if err == nil {
		t.Fatal("a frozen DC answered")
	}
	s.Thaw(t)
	if err := adBind(s, s.LDAPSURL, s.BindUPN, s.BindPassword); err != nil {
		t.Fatalf("bind after thaw: %v", err)
	}

	pid, dir, addr, added := s.proc.pid(), s.dir, s.Addr, s.addr.added
	s.Stop()
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Fatalf("samba pid %d still exists: %v", pid, err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("samba dir %s still exists: %v", dir, err)
	}
	// The address is gone from lo (unless it was there before, not added
	// by a test) and its lock is free again.
	out, err := exec.Command("ip", "-o", "addr", "show", "dev", "lo").Output()
	if err != nil {
		t.Fatalf("ip addr: %v", err)
	}
	if strings.Contains(string(out), " "+addr+"/32") == added {
		t.Fatalf("%s added by the test: %v; lo now:\n%s", addr, added, out)
	}
	f, err := os.OpenFile(os.TempDir()+"/passbridge-samba-"+addr+".lock", os.O_RDWR, 0)
	if err != nil {
		t.Fatalf("lock file: %v", err)
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		t.Fatalf("address lock still held after Stop: %v", err)
	}
	syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
	if c, err := net.Dial("tcp", net.JoinHostPort(addr, strconv.Itoa(636))); err == nil {
		c.Close()
		t.Fatalf("%s:636 still accepts connections", addr)
	}
}
