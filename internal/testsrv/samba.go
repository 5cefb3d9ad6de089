package testsrv

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
	"unicode/utf16"

	"github.com/go-ldap/ldap/v3"
)

// Names of the Samba test domain. The DC is dc1.corp.example.
const (
	SambaRealm     = "CORP.EXAMPLE"
	SambaDomain    = "CORP"
	SambaDNSDomain = "corp.example"
	SambaBaseDN    = "DC=corp,DC=example"
	// SambaAdminPassword is Administrator's password in every test domain.
	SambaAdminPassword = "Passbridge-Adm1n!"
	// SambaBindUser is the read-only service account passbridge binds as.
	// It may use DirSync (it holds "Replicating Directory Changes" on the
	// domain) but is otherwise an ordinary Domain User.
	SambaBindUser     = "svc-passbridge"
	SambaBindPassword = "Passbridge-Svc1!"

	// UACAccountDisable is the userAccountControl bit of a disabled account.
	UACAccountDisable = 0x2
	// UACNormalAccount is userAccountControl of an enabled user.
	UACNormalAccount = 0x200
	// OIDShowDeleted is the LDAP_SERVER_SHOW_DELETED_OID control.
	OIDShowDeleted = "1.2.840.113556.1.4.417"
)

// sambaAddrFirst..sambaAddrLast are the loopback addresses 127.0.0.x that
// test Samba DCs claim, one per DC, since Samba's ports are fixed.
const sambaAddrFirst, sambaAddrLast = 20, 60

// sambaRecipe changes whenever the cached template would come out different.
const sambaRecipe = "2"

// AD is a running Samba Active Directory domain controller on its own
// loopback address, with LDAP (389, StartTLS) and LDAPS (636) using a
// throwaway CA. Simple binds need TLS, as on a real DC: Samba answers a
// plain simple bind with strongerAuthRequired (8). Binds accept a UPN
// (alice@corp.example), a DN or CORP\alice; failures are invalidCredentials
// (49) with "data 52e" (wrong password) or "data 533" (disabled).
//
// What directory sync code meets here, as on Windows AD:
//   - DirSync (1.2.840.113556.1.4.841) works only with the naming context
//     root as base (DC=corp,DC=example); below it Samba answers
//     insufficientAccessRights (50). Incremental answers carry only the
//     changed attributes plus objectGUID and instanceType; memberOf is a
//     back link and never appears (watch the groups' member instead). The
//     response flag is non-zero while more data is pending.
//   - Deletes are tombstones under DeletedObjectsDN ("CN=x\0ADEL:<guid>"),
//     isDeleted TRUE, same objectGUID, most attributes stripped; DirSync and
//     searches with the Show Deleted control (OIDShowDeleted) return them.
//     The service account was granted List Contents + Read Property on
//     CN=Deleted Objects for that, as a real deployment must do.
//   - A restored (reanimated) user comes back enabled but without password,
//     userPrincipalName, mail or group memberships: see Restore.
//   - highestCommittedUSN (rootDSE) and uSNChanged are per-DC counters; they
//     only mean something together with the DC's invocationId (see
//     InvocationID), which a DirSync cookie embeds.
//   - Every DC is a copy of one provisioned template: all share the domain
//     SID, the built-in objects' GUIDs and the invocationId. Two DCs are
//     two separate domains, not replicas of each other.
type AD struct {
	Addr     string // 127.0.0.x, the DC's own address
	LDAPURL  string // ldap://127.0.0.x:389, use StartTLS
	LDAPSURL string // ldaps://127.0.0.x:636
	Host     string // name in the certificate (also has Addr): dc1.corp.example
	CAFile   string
	CA       *CA

	Realm            string // CORP.EXAMPLE
	Domain           string // NetBIOS name CORP
	DNSDomain        string // corp.example
	BaseDN           string // DC=corp,DC=example
	UsersDN          string // CN=Users,DC=corp,DC=example
	DeletedObjectsDN string // CN=Deleted Objects,DC=corp,DC=example

	AdminDN       string
	AdminUPN      string // Administrator@corp.example
	AdminPassword string
	BindDN        string // the service account SambaBindUser
	BindUPN       string
	BindPassword  string

	// StartTime is how long starting took; Provisioned says whether that
	// included provisioning a new domain (no cached template).
	StartTime   time.Duration
	Provisioned bool

	shared bool
	dir    string
	proc   *proc
	addr   *addrClaim
	stop   sync.Once
}

var sharedSamba struct {
	mu  sync.Mutex
	srv *AD
	err error
}

// SambaDC returns the package's shared Samba DC, starting it on first use;
// it is stopped when the test binary ends. Tests work under their own
// NewOU and must not Kill or Freeze it: use StartSambaDC for that.
func SambaDC(tb testing.TB) *AD {
	tb.Helper()
	sambaBinaries(tb)
	sharedSamba.mu.Lock()
	defer sharedSamba.mu.Unlock()
	if sharedSamba.srv == nil && sharedSamba.err == nil {
		s, err := startSamba()
		if err != nil {
			sharedSamba.err = err
		} else {
			s.shared = true
			sharedSamba.srv = s
			onStop(s.Stop)
			tb.Logf("samba DC started at %s in %s (provisioned: %v)", s.Addr, s.StartTime.Round(time.Millisecond), s.Provisioned)
		}
	}
	if sharedSamba.err != nil {
		tb.Fatalf("shared samba DC: %v", sharedSamba.err)
	}
	return sharedSamba.srv
}

// StartSambaDC starts a Samba DC for tb alone (its own address), stopped
// when tb ends; tests may Kill, Freeze and Restart it.
func StartSambaDC(tb testing.TB) *AD {
	tb.Helper()
	sambaBinaries(tb)
	s, err := startSamba()
	if err != nil {
		tb.Fatalf("samba DC: %v", err)
	}
	onStop(s.Stop)
	tb.Cleanup(s.Stop)
	tb.Logf("samba DC started at %s in %s (provisioned: %v)", s.Addr, s.StartTime.Round(time.Millisecond), s.Provisioned)
	return s
}

func sambaBinaries(tb testing.TB) {
	tb.Helper()
	Binary(tb, "samba", "samba-ad-dc")
	Binary(tb, "samba-tool", "samba-ad-provision")
	Binary(tb, "ip", "iproute2")
	if os.Geteuid() != 0 {
		msg := "the Samba DC needs root to add its loopback address"
		if Required() {
			tb.Fatal(msg)
		}
		tb.Skip(msg)
	}
}

func startSamba() (s *AD, err error) {
	began := time.Now()
	sambaBin, err := LookBinary("samba")
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	template, provisioned, err := sambaTemplate(ctx)
	if err != nil {
		return nil, err
	}
	claim, err := claimSambaAddr(ctx)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			claim.release()
		}
	}()
	dir, err := serverDir("samba")
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			os.RemoveAll(dir)
		}
	}()
	root := filepath.Join(dir, "dc")
	if err := copyTree(template, root); err != nil {
		return nil, fmt.Errorf("copy samba template: %w", err)
	}
	ca, err := NewCA(dir, "passbridge samba test CA")
	if err != nil {
		return nil, err
	}
	host := "dc1." + SambaDNSDomain
	cert, err := ca.Issue(dir, "samba", host, claim.ip, SambaDNSDomain, "dc1")
	if err != nil {
		return nil, err
	}
	conf := filepath.Join(root, "etc", "smb.conf")
	if err := os.WriteFile(conf, []byte(sambaConf(root, claim.ip, cert, ca.CertFile)), 0o644); err != nil {
		return nil, fmt.Errorf("write smb.conf: %w", err)
	}
	s = &AD{
		Addr:             claim.ip,
		LDAPURL:          "ldap://" + claim.ip + ":389",
		LDAPSURL:         "ldaps://" + claim.ip + ":636",
		Host:             host,
		CAFile:           ca.CertFile,
		CA:               ca,
		Realm:            SambaRealm,
		Domain:           SambaDomain,
		DNSDomain:        SambaDNSDomain,
		BaseDN:           SambaBaseDN,
		UsersDN:          "CN=Users," + SambaBaseDN,
		DeletedObjectsDN: "CN=Deleted Objects," + SambaBaseDN,
		AdminDN:          "CN=Administrator,CN=Users," + SambaBaseDN,
		AdminUPN:         "Administrator@" + SambaDNSDomain,
		AdminPassword:    SambaAdminPassword,
		BindDN:           "CN=" + SambaBindUser + ",CN=Users," + SambaBaseDN,
		BindUPN:          SambaBindUser + "@" + SambaDNSDomain,
		BindPassword:     SambaBindPassword,
		Provisioned:      provisioned,
		dir:              dir,
		addr:             claim,
	}
	s.proc = &proc{
		name:    "samba",
		path:    sambaBin,
		logPath: filepath.Join(dir, "samba.log"),
		// -i: foreground, log to stdout; -M single: one process, the
		// lightest model; stdin EOF (our death) stops it.
		args:      []string{"-i", "-M", "single", "-d", "1", "-s", conf},
		keepStdin: true,
	}
	if err := s.startProc(); err != nil {
		return nil, err
	}
	s.StartTime = time.Since(began)
	return s, nil
}

func sambaConf(root, ip string, cert *ServerCert, caFile string) string {
	run := filepath.Join(root, "run")
	lines := []string{
		"[global]",
		"netbios name = DC1",
		"realm = " + SambaRealm,
		"workgroup = " + SambaDomain,
		"server role = active directory domain controller",
		"interfaces = " + ip,
		"bind interfaces only = yes",
		"private dir = " + filepath.Join(root, "private"),
		"lock directory = " + root,
		"state directory = " + filepath.Join(root, "state"),
		"cache directory = " + filepath.Join(root, "cache"),
		"binddns dir = " + filepath.Join(root, "bind-dns"),
		"pid directory = " + run,
		"ncalrpc dir = " + filepath.Join(run, "ncalrpc"),
		"winbindd socket directory = " + filepath.Join(run, "winbindd"),
		"ntp signd socket directory = " + filepath.Join(run, "ntp_signd"),
		"log file = " + filepath.Join(root, "samba.log"),
		// LDAP and Kerberos only: no SMB, DNS, NetBIOS, RPC or replication
		// services, which are slow to start and unused by passbridge.
		"server services = ldap kdc",
		"tls enabled = yes",
		"tls keyfile = " + cert.KeyFile,
		"tls certfile = " + cert.CertFile,
		"tls cafile = " + caFile,
		// The default, spelled out: simple binds only over TLS.
		"ldap server require strong auth = yes",
		"idmap_ldb:use rfc2307 = yes",
	}
	return strings.Join(lines, "\n\t") + "\n"
}

func (s *AD) startProc() error {
	if err := s.proc.start(); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := s.waitReady(ctx); err != nil {
		_ = s.proc.kill()
		return fmt.Errorf("samba did not start: %w\n%s", err, s.proc.logTail())
	}
	return nil
}

// waitReady waits until Administrator can bind over LDAPS and ldap://
// accepts connections.
func (s *AD) waitReady(ctx context.Context) error {
	exited := s.proc.exited()
	for {
		c, err := s.dialAdmin()
		if err == nil {
			c.Close()
			err = WaitTCP(ctx, s.Addr+":389")
			if err == nil {
				return nil
			}
		}
		select {
		case <-exited:
			return fmt.Errorf("samba exited: %v", err)
		case <-ctx.Done():
			return fmt.Errorf("%w: %v", ctx.Err(), err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// TLSConfig trusts only this DC's CA and expects its host name.
func (s *AD) TLSConfig() *tls.Config { return s.CA.TLSConfig(s.Host) }

// Stop ends samba, removes its directory and loopback address and
// releases the address for other test binaries. Safe to call twice.
func (s *AD) Stop() {
	s.stop.Do(func() {
		if s.proc != nil {
			_ = s.proc.terminate(15 * time.Second)
		}
		os.RemoveAll(s.dir)
		s.addr.release()
	})
}

func (s *AD) mustBeDedicated(tb testing.TB, what string) {
	tb.Helper()
	if s.shared {
		tb.Fatalf("%s on the shared Samba DC would break other tests: use StartSambaDC", what)
	}
}

// Kill ends samba abruptly (SIGKILL); Restart brings it back with its data.
func (s *AD) Kill(tb testing.TB) {
	tb.Helper()
	s.mustBeDedicated(tb, "Kill")
	if err := s.proc.kill(); err != nil {
		tb.Fatalf("kill samba: %v", err)
	}
}

// Restart starts a killed DC again, or restarts a running one gracefully.
func (s *AD) Restart(tb testing.TB) {
	tb.Helper()
	s.mustBeDedicated(tb, "Restart")
	if err := s.proc.terminate(15 * time.Second); err != nil {
		tb.Fatalf("stop samba: %v", err)
	}
	if err := s.startProc(); err != nil {
		tb.Fatalf("restart samba: %v", err)
	}
}

// Freeze suspends samba (SIGSTOP) so that it accepts connections but never
// answers; Thaw resumes it.
func (s *AD) Freeze(tb testing.TB) {
	tb.Helper()
	s.mustBeDedicated(tb, "Freeze")
	if err := s.proc.signalGroup(syscall.SIGSTOP); err != nil {
		tb.Fatalf("freeze samba: %v", err)
	}
}

// Thaw resumes a frozen samba.
func (s *AD) Thaw(tb testing.TB) {
	tb.Helper()
	if err := s.proc.signalGroup(syscall.SIGCONT); err != nil {
		tb.Fatalf("thaw samba: %v", err)
	}
}

// Running reports whether the samba process is alive.
func (s *AD) Running() bool { return s.proc.running() }

func (s *AD) dialAdmin() (*ldap.Conn, error) {
	return dialLDAP(s.LDAPSURL, s.TLSConfig(), false, s.AdminUPN, s.AdminPassword)
}

// Conn is an Administrator connection over LDAPS, closed when tb ends.
func (s *AD) Conn(tb testing.TB) *ldap.Conn {
	tb.Helper()
	return connFor(tb, s.dialAdmin)
}

// NewOU creates OU=t-<random> under BaseDN for one test and deletes it
// with everything below (tree delete) when the test ends. Deleted objects
// stay as tombstones in CN=Deleted Objects.
func (s *AD) NewOU(tb testing.TB) string {
	tb.Helper()
	dn := s.AddOU(tb, s.BaseDN, randomName("t-"))
	tb.Cleanup(func() {
		if !s.Running() {
			return
		}
		c, err := s.dialAdmin()
		if err != nil {
			tb.Errorf("delete test OU %s: %v", dn, err)
			return
		}
		defer c.Close()
		err = deleteEntry(c, dn, ldap.NewControlSubtreeDelete())
		if err != nil && !ldap.IsErrorWithCode(err, ldap.LDAPResultNoSuchObject) {
			tb.Errorf("delete test OU %s: %v", dn, err)
		}
	})
	return dn
}

// AddOU adds OU=<name>,<parent> and returns its DN.
func (s *AD) AddOU(tb testing.TB, parent, name string) string {
	tb.Helper()
	dn := "OU=" + ldap.EscapeDN(name) + "," + parent
	withConn(tb, s.dialAdmin, "add OU", func(c *ldap.Conn) error {
		return addEntry(c, dn, map[string][]string{"objectClass": {"top", "organizationalUnit"}, "ou": {name}})
	})
	return dn
}

// AddUser adds an enabled user CN=<sam>,<parent> and returns its DN. It has
// sAMAccountName <sam>, userPrincipalName <sam>@corp.example, mail
// <sam>@corp.example, givenName, sn, displayName and the password
// DefaultUserPassword; attrs override these (an empty list drops one) and
// add others. A unicodePwd in attrs is the plain password: AddUser encodes it.
func (s *AD) AddUser(tb testing.TB, parent, sam string, attrs map[string][]string) string {
	tb.Helper()
	dn := "CN=" + ldap.EscapeDN(sam) + "," + parent
	all := map[string][]string{
		"objectClass":        {"top", "person", "organizationalPerson", "user"},
		"sAMAccountName":     {sam},
		"userPrincipalName":  {sam + "@" + s.DNSDomain},
		"givenName":          {sam},
		"sn":                 {sam},
		"displayName":        {sam},
		"mail":               {sam + "@" + s.DNSDomain},
		"unicodePwd":         {DefaultUserPassword},
		"userAccountControl": {strconv.Itoa(UACNormalAccount)},
	}
	for k, v := range attrs {
		all[k] = v
	}
	if pw := all["unicodePwd"]; len(pw) == 1 {
		all["unicodePwd"] = []string{encodeADPassword(pw[0])}
	}
	withConn(tb, s.dialAdmin, "add user", func(c *ldap.Conn) error { return addEntry(c, dn, all) })
	return dn
}

// AddGroup adds a global security group CN=<cn>,<parent> (sAMAccountName
// <cn>) with members (users or groups, for nesting) and returns its DN.
func (s *AD) AddGroup(tb testing.TB, parent, cn string, members ...string) string {
	tb.Helper()
	dn := "CN=" + ldap.EscapeDN(cn) + "," + parent
	withConn(tb, s.dialAdmin, "add group", func(c *ldap.Conn) error {
		return addEntry(c, dn, map[string][]string{
			"objectClass":    {"top", "group"},
			"sAMAccountName": {cn},
			"groupType":      {"-2147483646"}, // global security group
			"member":         members,
		})
	})
	return dn
}

// AddMember adds member to group.
func (s *AD) AddMember(tb testing.TB, group, member string) {
	tb.Helper()
	withConn(tb, s.dialAdmin, "add member", func(c *ldap.Conn) error { return modifyMember(c, group, member, true) })
}

// RemoveMember removes member from group.
func (s *AD) RemoveMember(tb testing.TB, group, member string) {
	tb.Helper()
	withConn(tb, s.dialAdmin, "remove member", func(c *ldap.Conn) error { return modifyMember(c, group, member, false) })
}

// Modify replaces attributes of dn; an empty list removes the attribute.
func (s *AD) Modify(tb testing.TB, dn string, attrs map[string][]string) {
	tb.Helper()
	withConn(tb, s.dialAdmin, "modify", func(c *ldap.Conn) error { return replaceAttrs(c, dn, attrs) })
}

// SetPassword resets dn's password as an administrator (unicodePwd over
// LDAPS). Samba's complexity rules apply.
func (s *AD) SetPassword(tb testing.TB, dn, password string) {
	tb.Helper()
	withConn(tb, s.dialAdmin, "set password", func(c *ldap.Conn) error {
		return replaceAttrs(c, dn, map[string][]string{"unicodePwd": {encodeADPassword(password)}})
	})
}

// Disable sets the ACCOUNTDISABLE bit (0x2) of userAccountControl.
func (s *AD) Disable(tb testing.TB, dn string) {
	tb.Helper()
	s.setUAC(tb, dn, UACAccountDisable, true)
}

// Enable clears the ACCOUNTDISABLE bit of userAccountControl.
func (s *AD) Enable(tb testing.TB, dn string) {
	tb.Helper()
	s.setUAC(tb, dn, UACAccountDisable, false)
}

func (s *AD) setUAC(tb testing.TB, dn string, bit int, set bool) {
	tb.Helper()
	withConn(tb, s.dialAdmin, "set userAccountControl", func(c *ldap.Conn) error {
		e, err := readEntry(c, dn, []string{"userAccountControl"})
		if err != nil {
			return err
		}
		uac, err := strconv.Atoi(e.GetAttributeValue("userAccountControl"))
		if err != nil {
			return fmt.Errorf("userAccountControl of %s: %w", dn, err)
		}
		if set {
			uac |= bit
		} else {
			uac &^= bit
		}
		return replaceAttrs(c, dn, map[string][]string{"userAccountControl": {strconv.Itoa(uac)}})
	})
}

// Rename changes dn's RDN (e.g. "CN=New Name") and returns the new DN.
// sAMAccountName and userPrincipalName stay: change them with Modify.
func (s *AD) Rename(tb testing.TB, dn, newRDN string) string {
	tb.Helper()
	var out string
	withConn(tb, s.dialAdmin, "rename", func(c *ldap.Conn) (err error) { out, err = modDN(c, dn, newRDN, ""); return err })
	return out
}

// Move moves dn under newParent, keeping its RDN, and returns the new DN.
func (s *AD) Move(tb testing.TB, dn, newParent string) string {
	tb.Helper()
	var out string
	withConn(tb, s.dialAdmin, "move", func(c *ldap.Conn) (err error) { out, err = modDN(c, dn, "", newParent); return err })
	return out
}

// Delete deletes one object: AD turns it into a tombstone under
// DeletedObjectsDN (isDeleted TRUE, most attributes stripped, objectGUID
// kept), which Restore can bring back.
func (s *AD) Delete(tb testing.TB, dn string) {
	tb.Helper()
	withConn(tb, s.dialAdmin, "delete", func(c *ldap.Conn) error { return deleteEntry(c, dn) })
}

// Restore reanimates the tombstone with objectGUID guid at dn (tombstone
// reanimation: a modify under the Show Deleted control that removes
// isDeleted and sets distinguishedName). Attributes that the tombstone
// dropped (mail, givenName, memberships, the password...) are gone: put
// back what the test needs with Modify, SetPassword and Enable.
func (s *AD) Restore(tb testing.TB, guid []byte, dn string) {
	tb.Helper()
	withConn(tb, s.dialAdmin, "restore", func(c *ldap.Conn) error {
		showDeleted := ldap.NewControlMicrosoftShowDeleted()
		res, err := c.Search(ldap.NewSearchRequest(s.BaseDN, ldap.ScopeWholeSubtree, ldap.NeverDerefAliases, 0, 0, false,
			"(&(objectGUID="+EscapeFilterBytes(guid)+")(isDeleted=TRUE))", []string{"1.1"}, []ldap.Control{showDeleted}))
		if err != nil {
			return fmt.Errorf("find tombstone: %w", err)
		}
		if len(res.Entries) != 1 {
			return fmt.Errorf("find tombstone: %d deleted objects with objectGUID %x", len(res.Entries), guid)
		}
		req := ldap.NewModifyRequest(res.Entries[0].DN, []ldap.Control{showDeleted})
		req.Delete("isDeleted", nil)
		req.Replace("distinguishedName", []string{dn})
		if err := c.Modify(req); err != nil {
			return fmt.Errorf("reanimate %s as %s: %w", res.Entries[0].DN, dn, err)
		}
		return nil
	})
}

// Entry reads dn as Administrator; attrs default to all user and
// operational attributes.
func (s *AD) Entry(tb testing.TB, dn string, attrs ...string) *ldap.Entry {
	tb.Helper()
	var e *ldap.Entry
	withConn(tb, s.dialAdmin, "read entry", func(c *ldap.Conn) (err error) { e, err = readEntry(c, dn, attrs); return err })
	return e
}

// GUID returns dn's objectGUID (16 bytes, as stored), the stable identity
// of an AD object.
func (s *AD) GUID(tb testing.TB, dn string) []byte {
	tb.Helper()
	g := s.Entry(tb, dn, "objectGUID").GetRawAttributeValue("objectGUID")
	if len(g) != 16 {
		tb.Fatalf("%s: objectGUID %x is not 16 bytes", dn, g)
	}
	return g
}

// InvocationID returns the DC's invocationId: the objectGUID-like value on
// the NTDS Settings object named by the rootDSE's dsServiceName. A USN or
// DirSync cookie is only meaningful together with it: it changes when the
// DC's database is restored from a backup.
func (s *AD) InvocationID(tb testing.TB) []byte {
	tb.Helper()
	var id []byte
	withConn(tb, s.dialAdmin, "read invocationId", func(c *ldap.Conn) error {
		root, err := readEntry(c, "", []string{"dsServiceName"})
		if err != nil {
			return err
		}
		ntds, err := readEntry(c, root.GetAttributeValue("dsServiceName"), []string{"invocationId"})
		if err != nil {
			return err
		}
		id = ntds.GetRawAttributeValue("invocationId")
		if len(id) != 16 {
			return fmt.Errorf("invocationId %x is not 16 bytes", id)
		}
		return nil
	})
	return id
}

// HighestUSN returns the rootDSE's highestCommittedUSN.
func (s *AD) HighestUSN(tb testing.TB) int64 {
	tb.Helper()
	var usn int64
	withConn(tb, s.dialAdmin, "read highestCommittedUSN", func(c *ldap.Conn) error {
		root, err := readEntry(c, "", []string{"highestCommittedUSN"})
		if err != nil {
			return err
		}
		usn, err = strconv.ParseInt(root.GetAttributeValue("highestCommittedUSN"), 10, 64)
		return err
	})
	return usn
}

// FormatGUID renders an objectGUID the way Windows tools do
// ({xxxxxxxx-xxxx-...} without braces): the first three groups are
// little-endian.
func FormatGUID(g []byte) string {
	if len(g) != 16 {
		return fmt.Sprintf("invalid-guid-%x", g)
	}
	return fmt.Sprintf("%08x-%04x-%04x-%x-%x", binary.LittleEndian.Uint32(g[0:4]),
		binary.LittleEndian.Uint16(g[4:6]), binary.LittleEndian.Uint16(g[6:8]), g[8:10], g[10:16])
}

// EscapeFilterBytes escapes binary data (an objectGUID) for an LDAP filter.
func EscapeFilterBytes(b []byte) string {
	var sb strings.Builder
	for _, c := range b {
		fmt.Fprintf(&sb, "\\%02x", c)
	}
	return sb.String()
}

// encodeADPassword is the unicodePwd value for password: the quoted
// password in UTF-16LE.
func encodeADPassword(password string) string {
	u := utf16.Encode([]rune(`"` + password + `"`))
	b := make([]byte, 2*len(u))
	for i, r := range u {
		binary.LittleEndian.PutUint16(b[2*i:], r)
	}
	return string(b)
}

// sambaTemplate returns a provisioned domain to copy, provisioning it into
// the cache on first use. Provisioning takes several seconds of CPU; a
// copy takes a fraction of one. The template depends only on the Samba
// version and this file's recipe: the DC's address lives in smb.conf,
// which each copy writes afresh.
func sambaTemplate(ctx context.Context) (dir string, provisioned bool, err error) {
	sambaBin, err := LookBinary("samba")
	if err != nil {
		return "", false, err
	}
	version, err := exec.CommandContext(ctx, sambaBin, "--version").Output()
	if err != nil {
		return "", false, fmt.Errorf("samba --version: %w", err)
	}
	key := "samba-" + fileSafe(strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(string(version)), "Version "))) + "-r" + sambaRecipe
	cache := os.Getenv("PASSBRIDGE_TEST_SAMBA_CACHE")
	if cache == "off" {
		// Provision a fresh domain every time, for measuring it.
		tmp, err := serverDir("samba-template")
		if err != nil {
			return "", false, err
		}
		onStop(func() { os.RemoveAll(tmp) })
		return filepath.Join(tmp, key), true, provisionSamba(ctx, filepath.Join(tmp, key))
	}
	if cache == "" {
		if base, err := os.UserCacheDir(); err == nil {
			cache = filepath.Join(base, "passbridge")
		} else {
			cache = filepath.Join(os.TempDir(), "passbridge-samba-cache")
		}
	}
	if err := os.MkdirAll(cache, 0o700); err != nil {
		return "", false, fmt.Errorf("samba template cache: %w", err)
	}
	dir = filepath.Join(cache, key)
	ready := filepath.Join(dir, "READY")
	if _, err := os.Stat(ready); err == nil {
		return dir, false, nil
	}
	// One test binary provisions; the others wait for it on the lock.
	unlock, err := flockWait(ctx, filepath.Join(cache, key+".lock"))
	if err != nil {
		return "", false, err
	}
	defer unlock()
	if _, err := os.Stat(ready); err == nil {
		return dir, false, nil
	}
	// Leftovers of an interrupted provisioning are never trusted.
	if err := os.RemoveAll(dir); err != nil {
		return "", false, fmt.Errorf("remove incomplete samba template: %w", err)
	}
	tmp := dir + ".tmp"
	if err := os.RemoveAll(tmp); err != nil {
		return "", false, fmt.Errorf("remove incomplete samba template: %w", err)
	}
	if err := provisionSamba(ctx, tmp); err != nil {
		os.RemoveAll(tmp)
		return "", false, err
	}
	if err := os.WriteFile(filepath.Join(tmp, "READY"), version, 0o600); err != nil {
		return "", false, fmt.Errorf("samba template: %w", err)
	}
	if err := os.Rename(tmp, dir); err != nil {
		return "", false, fmt.Errorf("samba template: %w", err)
	}
	return dir, true, nil
}

// provisionSamba provisions the test domain into dir and adds what every
// test expects: no password expiry (a cached template may be months old)
// and the DirSync-capable service account.
func provisionSamba(ctx context.Context, dir string) error {
	tool, err := LookBinary("samba-tool")
	if err != nil {
		return err
	}
	run := func(args ...string) error {
		cmd := exec.CommandContext(ctx, tool, args...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			return fmt.Errorf("samba-tool %s: %w\n%s", args[0]+" "+args[1], err, tailString(string(out), 3000))
		}
		return nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("samba template: %w", err)
	}
	if err := run("domain", "provision",
		"--use-rfc2307",
		"--realm="+SambaRealm,
		"--domain="+SambaDomain,
		"--server-role=dc",
		"--dns-backend=SAMBA_INTERNAL",
		"--adminpass="+SambaAdminPassword,
		"--host-name=dc1",
		"--host-ip=127.0.0.1",
		"--targetdir="+dir,
		"--option=interfaces=127.0.0.1",
		"--option=bind interfaces only=yes",
		"--option=dns forwarder=127.0.0.1",
	); err != nil {
		return err
	}
	conf := filepath.Join(dir, "etc", "smb.conf")
	db := "tdb://" + filepath.Join(dir, "private", "sam.ldb")
	if err := run("domain", "passwordsettings", "set", "-s", conf, "-H", db,
		"--max-pwd-age=0", "--min-pwd-age=0"); err != nil {
		return err
	}
	if err := run("user", "create", SambaBindUser, SambaBindPassword, "-s", conf, "-H", db,
		"--description=passbridge directory sync (read-only)"); err != nil {
		return err
	}
	// samba-tool dsacl cannot reach CN=Deleted Objects (it does not ask
	// for deleted objects), so both grants use Samba's Python bindings.
	python, err := sambaPython(tool)
	if err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, python, "-c", sambaGrantScript, conf, "CN="+SambaBindUser+",CN=Users,"+SambaBaseDN)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("grant the service account its rights: %w\n%s", err, tailString(string(out), 3000))
	}
	return nil
}

// sambaGrantScript gives the service account (argv[2]) what a directory
// sync tool needs on a real AD: "Replicating Directory Changes" on the
// domain, for DirSync, and List Contents + Read Property on CN=Deleted
// Objects (dsacls "CN=Deleted Objects,..." /G svc:LCRP), without which
// Samba's DirSync and Show Deleted searches hide deletions from it.
const sambaGrantScript = `
import sys, ldb
from samba.samdb import SamDB
from samba.auth import system_session
from samba.param import LoadParm
from samba.ndr import ndr_unpack, ndr_pack
from samba.dcerpc import security
conf, trustee = sys.argv[1], sys.argv[2]
lp = LoadParm()
lp.load(conf)
db = SamDB(url=lp.private_path("sam.ldb"), session_info=system_session(), lp=lp)
sid = ndr_unpack(security.dom_sid, db.search(base=trustee, scope=ldb.SCOPE_BASE, attrs=["objectSid"])[0]["objectSid"][0])
GET_CHANGES = "1131f6aa-9c07-11d1-f79f-00c04fc2dcd2"
def grant(dn, ace):
    ctl = ["show_deleted:1", "sd_flags:1:4"]
    res = db.search(base=dn, scope=ldb.SCOPE_BASE, attrs=["nTSecurityDescriptor"], controls=ctl)
    sd = ndr_unpack(security.descriptor, res[0]["nTSecurityDescriptor"][0])
    sd.dacl_add(ace)
    m = ldb.Message()
    m.dn = ldb.Dn(db, dn)
    m["nTSecurityDescriptor"] = ldb.MessageElement(ndr_pack(sd), ldb.FLAG_MOD_REPLACE, "nTSecurityDescriptor")
    db.modify(m, controls=ctl)
base = str(db.domain_dn())
def ace(sddl):
    return security.descriptor.from_sddl("D:" + sddl, sid).dacl.aces[0]
grant(base, ace("(OA;;CR;%s;;%s)" % (GET_CHANGES, sid)))
grant("CN=Deleted Objects," + base, ace("(A;;LCRP;;;%s)" % sid))
`

// sambaPython is the interpreter samba-tool runs with: the one that has
// Samba's bindings (PATH may lead to another python3).
func sambaPython(sambaTool string) (string, error) {
	f, err := os.Open(sambaTool)
	if err != nil {
		return "", fmt.Errorf("samba python: %w", err)
	}
	defer f.Close()
	buf := make([]byte, 256)
	n, _ := io.ReadFull(f, buf)
	line, _, _ := strings.Cut(string(buf[:n]), "\n")
	fields := strings.Fields(strings.TrimPrefix(line, "#!"))
	if !strings.HasPrefix(line, "#!") || len(fields) == 0 {
		return "", fmt.Errorf("samba python: %s has no #! line", sambaTool)
	}
	if filepath.Base(fields[0]) == "env" && len(fields) > 1 {
		return exec.LookPath(fields[1])
	}
	return fields[0], nil
}

func tailString(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// copyTree copies a directory of regular files, directories and symlinks;
// sockets and other special files (left by nothing we need) are skipped.
func copyTree(src, dst string) error {
	return filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, path)
		if err != nil {
			return err
		}
		target := filepath.Join(dst, rel)
		info, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case d.IsDir():
			return os.MkdirAll(target, info.Mode().Perm())
		case d.Type()&fs.ModeSymlink != 0:
			link, err := os.Readlink(path)
			if err != nil {
				return err
			}
			return os.Symlink(link, target)
		case d.Type().IsRegular():
			return copyFile(path, target, info.Mode().Perm())
		}
		return nil
	})
}

func copyFile(src, dst string, mode fs.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// flockWait takes an exclusive lock on path, waiting for other processes.
func flockWait(ctx context.Context, path string) (unlock func(), err error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() { f.Close() }, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", path, ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// addrClaim is a loopback address held for one DC by an flock'd file, so
// that test binaries running in parallel never pick the same one.
type addrClaim struct {
	ip      string
	added   bool // by a test binary: delete it from lo at release
	release func()
}

// addrMark in a lock file says that a test binary added the address to lo.
const addrMark = "added"

func claimSambaAddr(ctx context.Context) (*addrClaim, error) {
	ipTool, err := LookBinary("ip")
	if err != nil {
		return nil, err
	}
	for x := sambaAddrFirst; x <= sambaAddrLast; x++ {
		ip := "127.0.0." + strconv.Itoa(x)
		f, err := os.OpenFile(filepath.Join(os.TempDir(), "passbridge-samba-"+ip+".lock"), os.O_CREATE|os.O_RDWR, 0o600)
		if err != nil {
			return nil, fmt.Errorf("samba address lock: %w", err)
		}
		if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
			f.Close()
			continue
		}
		// Something not started by a test binary (or one that outlived it)
		// may listen there: leave that address alone.
		if portInUse(ip, 389) || portInUse(ip, 636) || portInUse(ip, 88) {
			f.Close()
			continue
		}
		present, err := onLoopback(ctx, ipTool, ip)
		if err != nil {
			f.Close()
			return nil, err
		}
		added := false
		if present {
			// Ours if a test binary that died before its cleanup said so in
			// the lock file; otherwise someone else's, left alone at Stop.
			mark := make([]byte, 16)
			n, _ := f.ReadAt(mark, 0)
			added = strings.HasPrefix(string(mark[:n]), addrMark)
		} else {
			out, err := exec.CommandContext(ctx, ipTool, "addr", "add", ip+"/32", "dev", "lo").CombinedOutput()
			if err != nil {
				f.Close()
				return nil, fmt.Errorf("ip addr add %s/32 dev lo: %w: %s", ip, err, strings.TrimSpace(string(out)))
			}
			added = true
		}
		if added {
			if err := f.Truncate(0); err == nil {
				_, _ = f.WriteAt([]byte(addrMark+"\n"), 0)
			}
		}
		c := &addrClaim{ip: ip, added: added}
		var once sync.Once
		c.release = func() {
			once.Do(func() {
				if c.added {
					if exec.Command(ipTool, "addr", "del", ip+"/32", "dev", "lo").Run() == nil {
						_ = f.Truncate(0)
					}
				}
				f.Close()
			})
		}
		return c, nil
	}
	return nil, fmt.Errorf("no free loopback address for a Samba DC in 127.0.0.%d-%d", sambaAddrFirst, sambaAddrLast)
}

// onLoopback reports whether ip is configured on lo: Samba binds only to
// addresses it finds on an interface.
func onLoopback(ctx context.Context, ipTool, ip string) (bool, error) {
	out, err := exec.CommandContext(ctx, ipTool, "-o", "-4", "addr", "show", "dev", "lo").Output()
	if err != nil {
		return false, fmt.Errorf("ip addr show dev lo: %w", err)
	}
	return strings.Contains(string(out), " "+ip+"/"), nil
}

func portInUse(ip string, port int) bool {
	c, err := net.DialTimeout("tcp", net.JoinHostPort(ip, strconv.Itoa(port)), 200*time.Millisecond)
	if err != nil {
		return false
	}
	c.Close()
	return true
}
