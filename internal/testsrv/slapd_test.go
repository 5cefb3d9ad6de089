package testsrv

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/go-ldap/ldap/v3"
)

// syncResult is what one RFC 4533 refreshOnly round returned.
type syncResult struct {
	entries map[string]ldap.ControlSyncStateState // DN -> add/modify/delete/present
	uuids   map[string]string                     // DN -> entryUUID from the sync state control
	idSet   []string                              // UUIDs from syncIdSet messages
	deletes bool                                  // whether idSet lists deletions (refreshDeletes)
	cookie  []byte
}

func refreshOnly(t *testing.T, c *ldap.Conn, base string, cookie []byte) syncResult {
	t.Helper()
	req := ldap.NewSearchRequest(base, ldap.ScopeWholeSubtree, ldap.NeverDerefAliases, 0, 0, false,
		"(objectClass=inetOrgPerson)", []string{"uid", "entryUUID"}, nil)
	// A round without changes may end without a cookie: the old one stays valid.
	r := syncResult{entries: map[string]ldap.ControlSyncStateState{}, uuids: map[string]string{}, cookie: cookie}
	resp := c.Syncrepl(t.Context(), req, 16, ldap.SyncRequestModeRefreshOnly, cookie, false)
	for resp.Next() {
		for _, ctl := range resp.Controls() {
			switch ctl := ctl.(type) {
			case *ldap.ControlSyncState:
				r.entries[resp.Entry().DN] = ctl.State
				r.uuids[resp.Entry().DN] = ctl.EntryUUID.String()
			case *ldap.ControlSyncInfo:
				if ctl.SyncIdSet != nil {
					for _, u := range ctl.SyncIdSet.SyncUUIDs {
						r.idSet = append(r.idSet, u.String())
					}
					r.deletes = ctl.SyncIdSet.RefreshDeletes
					if len(ctl.SyncIdSet.Cookie) > 0 {
						r.cookie = ctl.SyncIdSet.Cookie
					}
				}
				if ctl.NewCookie != nil {
					r.cookie = ctl.NewCookie.Cookie
				}
			case *ldap.ControlSyncDone:
				if len(ctl.Cookie) > 0 {
					r.cookie = ctl.Cookie
				}
				if ctl.RefreshDeletes {
					r.deletes = true
				}
			}
		}
	}
	if err := resp.Err(); err != nil {
		t.Fatalf("syncrepl refreshOnly on %s: %v", base, err)
	}
	return r
}

func serviceConn(t *testing.T, s *LDAP, ldaps bool) *ldap.Conn {
	t.Helper()
	var c *ldap.Conn
	var err error
	if ldaps {
		c, err = dialLDAP(s.LDAPSURL, s.TLSConfig(), false, s.BindDN, s.BindPassword)
	} else {
		c, err = dialLDAP(s.URL, s.TLSConfig(), true, s.BindDN, s.BindPassword)
	}
	if err != nil {
		t.Fatalf("service account: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestSlapdTLSAndIdentity(t *testing.T) {
	s := Slapd(t)
	ou := s.NewOU(t)
	alice := s.AddUser(t, ou, "alice", map[string][]string{"mail": {"Alice.Smith@corp.example"}})

	for _, ldaps := range []bool{false, true} {
		c := serviceConn(t, s, ldaps)
		if _, ok := c.TLSConnectionState(); !ok {
			t.Fatalf("ldaps=%v: connection is not TLS", ldaps)
		}
		res, err := c.Search(ldap.NewSearchRequest(ou, ldap.ScopeWholeSubtree, ldap.NeverDerefAliases, 0, 0, false,
			"(uid=alice)", []string{"mail", "entryUUID", "userPassword"}, nil))
		if err != nil {
			t.Fatalf("ldaps=%v: search: %v", ldaps, err)
		}
		if len(res.Entries) != 1 || res.Entries[0].DN != alice {
			t.Fatalf("ldaps=%v: want %s, got %+v", ldaps, alice, res.Entries)
		}
		e := res.Entries[0]
		if len(e.GetAttributeValue("entryUUID")) != 36 || e.GetAttributeValue("mail") != "Alice.Smith@corp.example" {
			t.Errorf("ldaps=%v: entry %v", ldaps, e.Attributes)
		}
		if e.GetAttributeValue("userPassword") != "" {
			t.Errorf("the service account can read userPassword")
		}
	}

	// A CA that did not sign the server certificate is refused.
	other := UnrelatedCA(t)
	_, err := dialLDAP(s.LDAPSURL, other.TLSConfig(s.Host), false, s.BindDN, s.BindPassword)
	if err == nil || !strings.Contains(err.Error(), "certificate signed by unknown authority") {
		t.Fatalf("LDAPS with an unrelated CA: want unknown authority, got %v", err)
	}
	_, err = dialLDAP(s.URL, other.TLSConfig(s.Host), true, s.BindDN, s.BindPassword)
	if err == nil || !strings.Contains(err.Error(), "certificate signed by unknown authority") {
		t.Fatalf("StartTLS with an unrelated CA: want unknown authority, got %v", err)
	}

	// The service account is read-only.
	c := serviceConn(t, s, true)
	err = c.Modify(&ldap.ModifyRequest{DN: alice, Changes: []ldap.Change{{Operation: ldap.ReplaceAttribute,
		Modification: ldap.PartialAttribute{Type: "mail", Vals: []string{"x@corp.example"}}}}})
	if !ldap.IsErrorWithCode(err, ldap.LDAPResultInsufficientAccessRights) {
		t.Fatalf("service account modify: want insufficient access, got %v", err)
	}

	// Renames and moves keep entryUUID.
	uuid := s.UUID(t, alice)
	renamed := s.Rename(t, alice, "uid=alice2")
	sub := s.AddOU(t, ou, "moved")
	moved := s.Move(t, renamed, sub)
	if moved != "uid=alice2,"+sub {
		t.Fatalf("moved DN %q", moved)
	}
	if got := s.UUID(t, moved); got != uuid {
		t.Fatalf("entryUUID changed on rename+move: %s -> %s", uuid, got)
	}
}

func TestSlapdPasswordsAndDisable(t *testing.T) {
	s := Slapd(t)
	ou := s.NewOU(t)
	bob := s.AddUser(t, ou, "bob", nil)
	bind := func(pw string) error {
		c, err := dialLDAP(s.LDAPSURL, s.TLSConfig(), false, bob, pw)
		if err == nil {
			c.Close()
		}
		return err
	}
	if err := bind(DefaultUserPassword); err != nil {
		t.Fatalf("bind with the default password: %v", err)
	}
	// ppolicy hashes cleartext passwords on add.
	if pw := s.Entry(t, bob, "userPassword").GetAttributeValue("userPassword"); !strings.HasPrefix(pw, "{SSHA}") {
		t.Fatalf("stored password %q is not hashed", pw)
	}
	s.SetPassword(t, bob, "New-Passw0rd-2")
	if err := bind("New-Passw0rd-2"); err != nil {
		t.Fatalf("bind with the new password: %v", err)
	}
	if err := bind(DefaultUserPassword); !ldap.IsErrorWithCode(err, ldap.LDAPResultInvalidCredentials) {
		t.Fatalf("old password: want invalid credentials, got %v", err)
	}

	s.Disable(t, bob)
	if got := s.Entry(t, bob, "pwdAccountLockedTime").GetAttributeValue("pwdAccountLockedTime"); got != LockedTime {
		t.Fatalf("pwdAccountLockedTime = %q", got)
	}
	if err := bind("New-Passw0rd-2"); !ldap.IsErrorWithCode(err, ldap.LDAPResultInvalidCredentials) {
		t.Fatalf("disabled user: want invalid credentials, got %v", err)
	}
	s.Enable(t, bob)
	if err := bind("New-Passw0rd-2"); err != nil {
		t.Fatalf("re-enabled user: %v", err)
	}
}

func TestSlapdMemberOf(t *testing.T) {
	s := Slapd(t)
	ou := s.NewOU(t)
	carol := s.AddUser(t, ou, "carol", nil)
	dave := s.AddUser(t, ou, "dave", nil)
	staff := s.AddGroup(t, ou, "staff", carol)
	all := s.AddGroup(t, ou, "all", staff) // nested
	s.AddMember(t, staff, dave)

	memberOf := func(dn string) []string {
		return s.Entry(t, dn, "memberOf").GetAttributeValues("memberOf")
	}
	if got := memberOf(carol); len(got) != 1 || got[0] != staff {
		t.Fatalf("carol memberOf = %v, want [%s]", got, staff)
	}
	if got := memberOf(staff); len(got) != 1 || got[0] != all {
		t.Fatalf("staff memberOf = %v, want [%s]", got, all)
	}
	if got := memberOf(dave); len(got) != 1 || got[0] != staff {
		t.Fatalf("dave memberOf = %v", got)
	}
	s.RemoveMember(t, staff, dave)
	if got := memberOf(dave); len(got) != 0 {
		t.Fatalf("dave memberOf after removal = %v", got)
	}
	// refint: renaming a member rewrites the group's member value.
	carol2 := s.Rename(t, carol, "uid=carol2")
	members := s.Entry(t, staff, "member").GetAttributeValues("member")
	if len(members) != 1 || members[0] != carol2 {
		t.Fatalf("staff members after rename = %v, want [%s]", members, carol2)
	}
	// Deleting a member removes it from the group.
	s.AddMember(t, staff, dave)
	s.Delete(t, dave)
	members = s.Entry(t, staff, "member").GetAttributeValues("member")
	if len(members) != 1 || members[0] != carol2 {
		t.Fatalf("staff members after delete = %v, want [%s]", members, carol2)
	}
}

func TestSlapdSyncrepl(t *testing.T) {
	s := Slapd(t)
	ou := s.NewOU(t)
	erin := s.AddUser(t, ou, "erin", nil)
	frank := s.AddUser(t, ou, "frank", nil)
	c := serviceConn(t, s, false)

	first := refreshOnly(t, c, ou, nil)
	if len(first.cookie) == 0 {
		t.Fatal("refreshOnly returned no cookie")
	}
	if len(first.entries) != 2 || first.entries[erin] != ldap.SyncStateAdd || first.entries[frank] != ldap.SyncStateAdd {
		t.Fatalf("initial refresh: %v", first.entries)
	}
	frankUUID := first.uuids[frank]
	if frankUUID != s.UUID(t, frank) {
		t.Fatalf("sync state UUID %s != entryUUID %s", frankUUID, s.UUID(t, frank))
	}

	// Nothing changed: the delta is empty.
	again := refreshOnly(t, c, ou, first.cookie)
	if len(again.entries) != 0 || len(again.idSet) != 0 {
		t.Fatalf("delta without changes: %v %v", again.entries, again.idSet)
	}

	gina := s.AddUser(t, ou, "gina", nil)
	s.Modify(t, erin, map[string][]string{"displayName": {"Erin E."}})
	s.Delete(t, frank)
	delta := refreshOnly(t, c, ou, again.cookie)
	if len(delta.cookie) == 0 || string(delta.cookie) == string(again.cookie) {
		t.Fatalf("delta cookie %q after %q", delta.cookie, again.cookie)
	}
	if delta.entries[gina] != ldap.SyncStateAdd || delta.entries[erin] != ldap.SyncStateAdd {
		t.Fatalf("delta entries: %v", delta.entries)
	}
	if len(delta.entries) != 2 {
		t.Fatalf("delta has unchanged entries: %v", delta.entries)
	}
	// With the session log, a delete arrives as a syncIdSet of deleted UUIDs.
	if !delta.deletes || len(delta.idSet) != 1 || delta.idSet[0] != frankUUID {
		t.Fatalf("delete: deletes=%v idSet=%v, want [%s]", delta.deletes, delta.idSet, frankUUID)
	}

	// memberof maintains memberOf without touching the user's entryCSN, so a
	// membership change shows up in the delta as the group, not the user.
	grp := s.AddGroup(t, ou, "grp", erin)
	before := refreshOnly(t, c, ou, delta.cookie)
	s.AddMember(t, grp, gina)
	if got := s.Entry(t, gina, "memberOf").GetAttributeValues("memberOf"); len(got) != 1 || got[0] != grp {
		t.Fatalf("gina memberOf %v", got)
	}
	after := refreshOnly(t, c, ou, before.cookie)
	if len(after.entries) != 0 {
		t.Fatalf("memberOf change reported users %v: the sync engineers rely on it not doing so", after.entries)
	}
}

func TestSlapdKillRestartFreeze(t *testing.T) {
	s := StartSlapd(t, SlapdOptions{})
	ou := s.NewOU(t)
	u := s.AddUser(t, ou, "henry", nil)
	uuid := s.UUID(t, u)

	c := serviceConn(t, s, false)
	before := refreshOnly(t, c, ou, nil)
	gone := s.AddUser(t, ou, "gone", nil)
	goneUUID := s.UUID(t, gone)
	mid := refreshOnly(t, c, ou, before.cookie)
	s.Delete(t, gone)

	s.Kill(t)
	if s.Running() {
		t.Fatal("slapd still running after Kill")
	}
	if _, err := s.dialAdmin(); err == nil || !isConnError(err) {
		t.Fatalf("dial a killed slapd: want a connection error, got %v", err)
	}
	s.Restart(t)
	if got := s.UUID(t, u); got != uuid {
		t.Fatalf("after restart entryUUID %s, want %s", got, uuid)
	}
	// The session log is in memory: after a restart a delete is reported by
	// a present phase (the UUIDs still there, refreshDeletes false), and the
	// client removes everything not listed.
	c = serviceConn(t, s, false)
	r := refreshOnly(t, c, ou, mid.cookie)
	if r.deletes || len(r.idSet) != 1 || r.idSet[0] != uuid || len(r.entries) != 0 {
		t.Fatalf("delta after restart: deletes=%v idSet=%v entries=%v; want present [%s] (deleted %s)",
			r.deletes, r.idSet, r.entries, uuid, goneUUID)
	}

	s.Freeze(t)
	nc, err := net.Dial("tcp", strings.TrimPrefix(s.URL, "ldap://"))
	if err != nil {
		t.Fatalf("dial a frozen slapd (the kernel still accepts): %v", err)
	}
	fc := ldap.NewConn(nc, false)
	fc.Start()
	fc.SetTimeout(300 * time.Millisecond)
	err = fc.Bind(s.BindDN, s.BindPassword)
	fc.Close()
	if err == nil {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", s.proc.pid()))
		t.Fatalf("bind to a frozen slapd succeeded; local %s remote %s; stat %s", nc.LocalAddr(), nc.RemoteAddr(), b)
	}
	s.Thaw(t)
	if got := s.UUID(t, u); got != uuid {
		t.Fatalf("after thaw entryUUID %s, want %s", got, uuid)
	}
}

func TestSlapdSeedAndStop(t *testing.T) {
	const users, groups = 1200, 3
	s := StartSlapd(t, SlapdOptions{Users: users, Groups: groups})
	c := serviceConn(t, s, true)
	res, err := c.SearchWithPaging(ldap.NewSearchRequest(s.PeopleDN, ldap.ScopeSingleLevel, ldap.NeverDerefAliases, 0, 0, false,
		"(objectClass=inetOrgPerson)", []string{"uid", "entryUUID", "memberOf"}, nil), 500)
	if err != nil {
		t.Fatalf("paged search: %v", err)
	}
	if len(res.Entries) != users {
		t.Fatalf("%d seeded users, want %d", len(res.Entries), users)
	}
	for _, e := range res.Entries {
		if e.GetAttributeValue("entryUUID") == "" || len(e.GetAttributeValues("memberOf")) != 1 {
			t.Fatalf("seeded user %v", e)
		}
	}
	// A seeded user binds with the seed password.
	u, err := dialLDAP(s.LDAPSURL, s.TLSConfig(), false, "uid="+SeedUID(users)+","+s.PeopleDN, SeedUserPassword)
	if err != nil {
		t.Fatalf("seeded user bind: %v", err)
	}
	u.Close()
	// Groups hold what memberOf says.
	g := s.Entry(t, "cn="+SeedGroupCN(1)+","+s.GroupsDN, "member")
	if n := len(g.GetAttributeValues("member")); n != users/groups {
		t.Fatalf("%s has %d members, want %d", g.DN, n, users/groups)
	}
	// syncrepl works on seeded data: slapadd -w wrote the contextCSN.
	if r := refreshOnly(t, c, s.PeopleDN, nil); len(r.cookie) == 0 || len(r.entries) != users {
		t.Fatalf("refresh of seeded data: %d entries, cookie %q", len(r.entries), r.cookie)
	}

	pid := s.proc.pid()
	s.Stop()
	if s.Running() {
		t.Fatal("slapd running after Stop")
	}
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Fatalf("slapd pid %d still exists: %v", pid, err)
	}
	if _, err := os.Stat(s.dir); !os.IsNotExist(err) {
		t.Fatalf("slapd dir %s still exists: %v", s.dir, err)
	}
	if err := WaitTCP(ctxTimeout(t, 200*time.Millisecond), strings.TrimPrefix(s.URL, "ldap://")); err == nil {
		t.Fatal("slapd port still accepts connections after Stop")
	}
}

func TestSlapdProductionCheckpointAfterKill(t *testing.T) {
	s := StartSlapd(t, SlapdOptions{ProductionCheckpoint: true})
	ou := s.NewOU(t)
	s.AddUser(t, ou, "ivan", nil)
	judy := s.AddUser(t, ou, "judy", nil)
	c := serviceConn(t, s, false)
	r := refreshOnly(t, c, ou, nil)
	// After a delete no entry carries the newest CSN, so the contextCSN
	// that slapd rebuilds from the entries at start is older than the cookie.
	s.Delete(t, judy)
	r = refreshOnly(t, c, ou, r.cookie)
	c.Close()
	s.Kill(t)
	s.Restart(t)
	c = serviceConn(t, s, false)
	req := ldap.NewSearchRequest(ou, ldap.ScopeWholeSubtree, ldap.NeverDerefAliases, 0, 0, false,
		"(objectClass=*)", []string{"1.1"}, nil)
	resp := c.Syncrepl(t.Context(), req, 16, ldap.SyncRequestModeRefreshOnly, r.cookie, false)
	for resp.Next() {
	}
	err := resp.Err()
	if !ldap.IsErrorWithCode(err, ldap.LDAPResultUnwillingToPerform) || !strings.Contains(err.Error(), "newer than provider") {
		t.Fatalf("cookie after a crash: want unwillingToPerform 'consumer state is newer than provider', got %v", err)
	}
	// The next write moves the contextCSN past the cookie again.
	s.AddUser(t, ou, "ken", nil)
	if r2 := refreshOnly(t, c, ou, r.cookie); len(r2.entries) != 1 {
		t.Fatalf("delta after the next write: %v", r2.entries)
	}
}

func ctxTimeout(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), d)
	t.Cleanup(cancel)
	return ctx
}

func TestSlapdReplicaFailover(t *testing.T) {
	p := StartSlapd(t, SlapdOptions{})
	ou := p.NewOU(t)
	kim := p.AddUser(t, ou, "kim", nil)
	lee := p.AddUser(t, ou, "lee", nil)
	grp := p.AddGroup(t, ou, "grp", kim)
	p.Disable(t, lee)

	r := p.StartReplica(t)
	if r.URL == p.URL || r.LDAPSURL == p.LDAPSURL {
		t.Fatalf("replica shares the provider's URLs")
	}
	if r.UUID(t, kim) != p.UUID(t, kim) {
		t.Fatal("replica has another entryUUID")
	}
	if got := r.Entry(t, kim, "memberOf").GetAttributeValues("memberOf"); len(got) != 1 || got[0] != grp {
		t.Fatalf("memberOf on the replica: %v", got)
	}
	// One CA file trusts both servers; the replica enforces the lock.
	bind := func(s *LDAP, dn string) error {
		c, err := dialLDAP(s.LDAPSURL, p.TLSConfig(), false, dn, DefaultUserPassword)
		if err == nil {
			c.Close()
		}
		return err
	}
	if err := bind(r, kim); err != nil {
		t.Fatalf("user bind on the replica: %v", err)
	}
	if err := bind(r, lee); !ldap.IsErrorWithCode(err, ldap.LDAPResultInvalidCredentials) {
		t.Fatalf("locked user on the replica: want invalid credentials, got %v", err)
	}
	// Writes are referred to the provider.
	rc := r.Conn(t)
	err := rc.Modify(&ldap.ModifyRequest{DN: kim, Changes: []ldap.Change{{Operation: ldap.ReplaceAttribute,
		Modification: ldap.PartialAttribute{Type: "mail", Vals: []string{"x@corp.example"}}}}})
	if !ldap.IsErrorWithCode(err, ldap.LDAPResultReferral) {
		t.Fatalf("write on the replica: want a referral, got %v", err)
	}

	// A cookie from the provider is good on the replica.
	pc := serviceConn(t, p, false)
	base := refreshOnly(t, pc, ou, nil)
	mia := p.AddUser(t, ou, "mia", nil)
	r.WaitReplicated(t)
	if d := refreshOnly(t, serviceConn(t, r, false), ou, base.cookie); len(d.entries) != 1 || d.entries[mia] != ldap.SyncStateAdd {
		t.Fatalf("provider cookie on the replica: %v", d.entries)
	}

	// The provider dies: the replica keeps answering, then catches up.
	p.Kill(t)
	if r.UUID(t, mia) == "" {
		t.Fatal("replica lost data when the provider died")
	}
	p.Restart(t)
	ned := p.AddUser(t, ou, "ned", nil)
	r.WaitReplicated(t)
	if r.UUID(t, ned) != p.UUID(t, ned) {
		t.Fatal("replica did not catch up after the provider came back")
	}
}
