package testsrv

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/go-ldap/ldap/v3"
)

// Well-known names of every slapd test directory.
const (
	SlapdBaseDN = "dc=corp,dc=example"
	// SlapdMailDomain is the domain of the default mail attribute of users.
	SlapdMailDomain = "corp.example"
	// DefaultUserPassword is the password AddUser gives users of both slapd
	// and Samba; it satisfies Samba's default complexity rules.
	DefaultUserPassword = "Correct-Horse-7"
	// SeedUserPassword is the password of users loaded with SlapdOptions.Users.
	SeedUserPassword = "Seed-Passw0rd-1"
	// LockedTime is the pwdAccountLockedTime value that locks an OpenLDAP
	// account until an administrator removes it (what Disable writes).
	LockedTime = "000001010000Z"
)

// LDAP is a running OpenLDAP slapd with the memberof, refint, ppolicy and
// syncprov overlays, on 127.0.0.1.
//
// The directory holds:
//
//	dc=corp,dc=example                         BaseDN
//	cn=admin,dc=corp,dc=example                AdminDN (rootdn, not an entry)
//	ou=services / cn=passbridge                BindDN: the read-only service account
//	ou=policies / cn=default, cn=service       ppolicy: default locks after 5 failures
//	ou=people                                  PeopleDN: seeded users (SlapdOptions.Users)
//	ou=groups                                  GroupsDN: seeded groups
//
// Anyone bound may read everything but passwords; the service account has
// no size or time limit (other users get slapd's default of 500 entries per
// unpaged search). Tests put their own entries under NewOU.
//
// What directory sync code meets here (RFC 4533 refreshOnly with cookies):
//   - A round without changes may end without a new cookie: keep the old.
//   - Deletes since the cookie come as a syncIdSet with refreshDeletes TRUE
//     (from syncprov's in-memory session log). After a restart that log is
//     empty and slapd runs a present phase instead: a syncIdSet of the
//     UUIDs still there, refreshDeletes FALSE; everything not listed is gone.
//   - memberof maintains memberOf without changing the user's entryCSN, so
//     membership changes show up as the group's entry, never the user's.
//   - Disable writes pwdAccountLockedTime, which does change the entry.
//   - With SlapdOptions.ProductionCheckpoint, a cookie newer than the
//     contextCSN saved before a crash is refused with unwillingToPerform
//     (53) "consumer state is newer than provider!" until the next write.
type LDAP struct {
	URL        string // ldap://127.0.0.1:port, StartTLS capable
	LDAPSURL   string // ldaps://127.0.0.1:port
	Host       string // 127.0.0.1, which is in the server certificate
	CAFile     string // PEM of the CA that signed the server certificate
	CA         *CA
	BaseDN     string
	PeopleDN   string
	GroupsDN   string
	PolicyDN   string // the default password policy
	MailDomain string

	AdminDN       string // rootdn: may do anything, bypasses ACLs and ppolicy
	AdminPassword string
	BindDN        string // read-only service account, as passbridge binds
	BindPassword  string
	// ConfigAdminDN/ConfigPassword bind to cn=config, for tests that must
	// change server settings.
	ConfigAdminDN  string
	ConfigPassword string

	// StartTime is how long the first start took, including slapadd.
	StartTime time.Duration

	shared   bool
	provider *LDAP // set on a replica
	dir      string
	proc     *proc
	stop     sync.Once
}

// SlapdOptions configure a dedicated slapd.
type SlapdOptions struct {
	// Users loads this many users into PeopleDN offline with slapadd
	// before the server starts (fast: a benchmark seeds 100,000). User i
	// (1-based) is uid=SeedUID(i),ou=people,... with mail SeedUID(i)@corp.example
	// and password SeedUserPassword.
	Users int
	// Groups spreads the seeded users over this many groupOfNames
	// cn=SeedGroupCN(j),ou=groups,...: user i is in group i%Groups, and
	// memberOf is written too (slapadd runs no overlays).
	Groups int
	// ProductionCheckpoint makes syncprov save its contextCSN only every 100
	// writes or 10 minutes, as production servers do, instead of after every
	// write. After Kill a client's newer cookie is then refused with
	// "consumer state is newer than provider!" (53, unwillingToPerform)
	// until the next write: the real crash behaviour, for tests of it.
	ProductionCheckpoint bool
}

// SeedUID is the uid of the i-th seeded user.
func SeedUID(i int) string { return fmt.Sprintf("user%06d", i) }

// SeedGroupCN is the cn of the j-th seeded group (0-based).
func SeedGroupCN(j int) string { return fmt.Sprintf("group%03d", j) }

var sharedSlapd struct {
	mu  sync.Mutex
	srv *LDAP
	err error
}

// Slapd returns the package's shared slapd, starting it on first use; it is
// stopped when the test binary ends. Tests share it, so each test works
// under its own NewOU and must not Kill, Freeze or reconfigure it: use
// StartSlapd for that.
func Slapd(tb testing.TB) *LDAP {
	tb.Helper()
	slapdBinaries(tb)
	sharedSlapd.mu.Lock()
	defer sharedSlapd.mu.Unlock()
	if sharedSlapd.srv == nil && sharedSlapd.err == nil {
		s, err := startSlapd(SlapdOptions{}, nil)
		if err != nil {
			sharedSlapd.err = err
		} else {
			s.shared = true
			sharedSlapd.srv = s
			onStop(s.Stop)
			tb.Logf("slapd started at %s in %s", s.URL, s.StartTime.Round(time.Millisecond))
		}
	}
	if sharedSlapd.err != nil {
		tb.Fatalf("shared slapd: %v", sharedSlapd.err)
	}
	return sharedSlapd.srv
}

// StartSlapd starts a slapd for tb alone, stopped when tb ends; tests may
// Kill, Freeze and Restart it.
func StartSlapd(tb testing.TB, opts SlapdOptions) *LDAP {
	tb.Helper()
	slapdBinaries(tb)
	s, err := startSlapd(opts, nil)
	if err != nil {
		tb.Fatalf("slapd: %v", err)
	}
	onStop(s.Stop)
	tb.Cleanup(s.Stop)
	tb.Logf("slapd started at %s in %s (%d seeded users)", s.URL, s.StartTime.Round(time.Millisecond), opts.Users)
	return s
}

func slapdBinaries(tb testing.TB) {
	tb.Helper()
	Binary(tb, "slapd", "slapd")
	Binary(tb, "slapadd", "slapd")
}

// StartReplica starts a second slapd for tb alone that replicates s with
// syncrepl (refreshAndPersist), like a second domain controller: same
// entries, same entryUUIDs, its own ports, a certificate from the same CA
// (s.CAFile trusts both), the same admin and service account passwords.
// It is read-only: writes go to s (it answers them with a referral). It
// returns once the replica has caught up; use WaitReplicated after later
// writes. Killing s leaves the replica serving the last state, and it
// catches up again when s is back.
func (s *LDAP) StartReplica(tb testing.TB) *LDAP {
	tb.Helper()
	slapdBinaries(tb)
	r, err := startSlapd(SlapdOptions{}, s)
	if err != nil {
		tb.Fatalf("slapd replica: %v", err)
	}
	onStop(r.Stop)
	tb.Cleanup(r.Stop)
	tb.Logf("slapd replica of %s started at %s in %s", s.URL, r.URL, r.StartTime.Round(time.Millisecond))
	return r
}

// WaitReplicated waits until the replica s has every change its provider
// had when WaitReplicated was called (their contextCSNs match).
func (s *LDAP) WaitReplicated(tb testing.TB) {
	tb.Helper()
	if s.provider == nil {
		tb.Fatalf("WaitReplicated: %s is not a replica", s.URL)
	}
	ctx, cancel := context.WithTimeout(tb.Context(), 60*time.Second)
	defer cancel()
	if err := s.waitReplicated(ctx); err != nil {
		tb.Fatalf("replica %s: %v", s.URL, err)
	}
}

func (s *LDAP) waitReplicated(ctx context.Context) error {
	want, err := s.provider.contextCSN()
	if err != nil {
		return fmt.Errorf("provider contextCSN: %w", err)
	}
	for {
		got, err := s.contextCSN()
		if err == nil && got == want {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("not caught up with %s (contextCSN %q, want %q, err %v): %w", s.provider.URL, got, want, err, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// contextCSN is the suffix's contextCSN values (one per server ID), joined.
func (s *LDAP) contextCSN() (string, error) {
	c, err := s.dialAdmin()
	if err != nil {
		return "", err
	}
	defer c.Close()
	e, err := readEntry(c, s.BaseDN, []string{"contextCSN"})
	if err != nil {
		return "", err
	}
	v := e.GetAttributeValues("contextCSN")
	sort.Strings(v)
	return strings.Join(v, " "), nil
}

func startSlapd(opts SlapdOptions, provider *LDAP) (s *LDAP, err error) {
	if opts.Users < 0 || opts.Groups < 0 {
		return nil, fmt.Errorf("slapd options: negative count %+v", opts)
	}
	if opts.Groups > 0 && opts.Users == 0 {
		return nil, fmt.Errorf("slapd options: %d groups need seeded users", opts.Groups)
	}
	began := time.Now()
	slapd, err := LookBinary("slapd")
	if err != nil {
		return nil, err
	}
	slapadd, err := LookBinary("slapadd")
	if err != nil {
		return nil, err
	}
	dir, err := serverDir("slapd")
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			os.RemoveAll(dir)
		}
	}()
	var ca *CA
	if provider != nil {
		ca = provider.CA
	} else if ca, err = NewCA(dir, "passbridge slapd test CA"); err != nil {
		return nil, err
	}
	cert, err := ca.Issue(dir, "slapd", "127.0.0.1", "localhost")
	if err != nil {
		return nil, err
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	tlsPort, err := freePort()
	if err != nil {
		return nil, err
	}
	s = &LDAP{
		URL:            fmt.Sprintf("ldap://127.0.0.1:%d", port),
		LDAPSURL:       fmt.Sprintf("ldaps://127.0.0.1:%d", tlsPort),
		Host:           "127.0.0.1",
		CAFile:         ca.CertFile,
		CA:             ca,
		BaseDN:         SlapdBaseDN,
		PeopleDN:       "ou=people," + SlapdBaseDN,
		GroupsDN:       "ou=groups," + SlapdBaseDN,
		PolicyDN:       "cn=default,ou=policies," + SlapdBaseDN,
		MailDomain:     SlapdMailDomain,
		AdminDN:        "cn=admin," + SlapdBaseDN,
		AdminPassword:  "Admin-Passw0rd-" + randomName(""),
		BindDN:         "cn=passbridge,ou=services," + SlapdBaseDN,
		BindPassword:   "Service-Passw0rd-" + randomName(""),
		ConfigAdminDN:  "cn=admin,cn=config",
		ConfigPassword: "Config-Passw0rd-" + randomName(""),
		provider:       provider,
		dir:            dir,
	}
	if provider != nil {
		s.AdminPassword, s.BindPassword = provider.AdminPassword, provider.BindPassword
	}
	confDir := filepath.Join(dir, "slapd.d")
	dataDir := filepath.Join(dir, "data")
	for _, d := range []string{confDir, dataDir} {
		if err := os.Mkdir(d, 0o700); err != nil {
			return nil, fmt.Errorf("slapd dir: %w", err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()

	cfg, err := s.configLDIF(cert, dataDir, opts)
	if err != nil {
		return nil, err
	}
	if err := runTool(ctx, slapadd, strings.NewReader(cfg), "-n0", "-F", confDir); err != nil {
		return nil, fmt.Errorf("load slapd config: %w", err)
	}
	if provider == nil { // a replica gets everything from its provider
		pr, pw := io.Pipe()
		go func() { pw.CloseWithError(s.writeData(pw, opts)) }()
		// -q skips consistency checks (the generator is trusted); -w records
		// the contextCSN that syncprov hands out as the first cookie.
		err = runTool(ctx, slapadd, pr, "-q", "-w", "-F", confDir, "-b", s.BaseDN)
		pr.CloseWithError(io.ErrClosedPipe) // unblocks the writer if slapadd died
		if err != nil {
			return nil, fmt.Errorf("load slapd data: %w", err)
		}
	}
	s.proc = &proc{
		name:    "slapd",
		path:    slapd,
		logPath: filepath.Join(dir, "slapd.log"),
		// -d keeps slapd in the foreground and logs operations to stderr.
		args: []string{"-d", "stats", "-F", confDir, "-h", s.URL + "/ " + s.LDAPSURL + "/"},
	}
	// The ports are only in -h: if another process took one between
	// freePort and slapd's bind, pick new ones and try again.
	for attempt := 1; ; attempt++ {
		err := s.startProc()
		if err == nil {
			break
		}
		if attempt == 3 || !strings.Contains(err.Error(), "Address already in use") {
			return nil, err
		}
		if port, err = freePort(); err != nil {
			return nil, err
		}
		if tlsPort, err = freePort(); err != nil {
			return nil, err
		}
		s.URL = fmt.Sprintf("ldap://127.0.0.1:%d", port)
		s.LDAPSURL = fmt.Sprintf("ldaps://127.0.0.1:%d", tlsPort)
		s.proc.args[len(s.proc.args)-1] = s.URL + "/ " + s.LDAPSURL + "/"
	}
	s.StartTime = time.Since(began)
	return s, nil
}

// runTool runs an offline tool such as slapadd with stdin and reports its
// output on failure.
func runTool(ctx context.Context, path string, stdin io.Reader, args ...string) error {
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.Stdin = stdin
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w: %s", filepath.Base(path), strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

func (s *LDAP) startProc() error {
	if err := s.proc.start(); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := s.waitReady(ctx); err != nil {
		_ = s.proc.kill()
		return fmt.Errorf("slapd did not start: %w\n%s", err, s.proc.logTail())
	}
	if s.provider != nil && s.provider.Running() {
		if err := s.waitReplicated(ctx); err != nil {
			_ = s.proc.kill()
			return fmt.Errorf("slapd replica: %w\n%s", err, s.proc.logTail())
		}
	}
	return nil
}

// waitReady waits until the service account can bind over ldap:// and
// ldaps:// or slapd exits.
func (s *LDAP) waitReady(ctx context.Context) error {
	exited := s.proc.exited()
	var last error
	for {
		last = s.probe()
		if last == nil {
			return nil
		}
		select {
		case <-exited:
			return fmt.Errorf("slapd exited: %v", last)
		case <-ctx.Done():
			return fmt.Errorf("%w: %v", ctx.Err(), last)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (s *LDAP) probe() error {
	for _, dial := range []func() (*ldap.Conn, error){
		func() (*ldap.Conn, error) { return dialLDAP(s.URL, nil, false, s.BindDN, s.BindPassword) },
		func() (*ldap.Conn, error) {
			return dialLDAP(s.LDAPSURL, s.TLSConfig(), false, s.BindDN, s.BindPassword)
		},
	} {
		c, err := dial()
		if err != nil {
			return err
		}
		c.Close()
	}
	return nil
}

// TLSConfig trusts only this server's CA.
func (s *LDAP) TLSConfig() *tls.Config { return s.CA.TLSConfig(s.Host) }

func (s *LDAP) configLDIF(cert *ServerCert, dataDir string, opts SlapdOptions) (string, error) {
	adminHash, err := ssha(s.AdminPassword)
	if err != nil {
		return "", err
	}
	configHash, err := ssha(s.ConfigPassword)
	if err != nil {
		return "", err
	}
	// Saving the contextCSN after every write keeps cookies valid across
	// Kill; see SlapdOptions.ProductionCheckpoint.
	checkpoint := "1 1"
	if opts.ProductionCheckpoint {
		checkpoint = "100 10"
	}
	var b strings.Builder
	w := newLDIFWriter(&b)
	w.entry("cn=config",
		attr{"objectClass", []string{"olcGlobal"}},
		attr{"cn", []string{"config"}},
		attr{"olcPidFile", []string{filepath.Join(s.dir, "slapd.pid")}},
		attr{"olcArgsFile", []string{filepath.Join(s.dir, "slapd.args")}},
		attr{"olcTLSCACertificateFile", []string{s.CAFile}},
		attr{"olcTLSCertificateFile", []string{cert.CertFile}},
		attr{"olcTLSCertificateKeyFile", []string{cert.KeyFile}},
		attr{"olcTLSVerifyClient", []string{"never"}},
		attr{"olcToolThreads", []string{"2"}},
	)
	w.entry("cn=module{0},cn=config",
		attr{"objectClass", []string{"olcModuleList"}},
		attr{"cn", []string{"module{0}"}},
		attr{"olcModulePath", []string{"/usr/lib/ldap"}},
		attr{"olcModuleLoad", []string{"back_mdb", "memberof", "refint", "ppolicy", "syncprov"}},
	)
	w.entry("cn=schema,cn=config",
		attr{"objectClass", []string{"olcSchemaConfig"}},
		attr{"cn", []string{"schema"}},
	)
	for _, sc := range []string{"core", "cosine", "nis", "inetorgperson"} {
		w.raw("include: file:///etc/ldap/schema/" + sc + ".ldif\n\n")
	}
	w.entry("olcDatabase={-1}frontend,cn=config",
		attr{"objectClass", []string{"olcDatabaseConfig", "olcFrontendConfig"}},
		attr{"olcDatabase", []string{"{-1}frontend"}},
		attr{"olcPasswordHash", []string{"{SSHA}"}},
		// Large groups stay fast to modify.
		attr{"olcSortVals", []string{"member"}},
	)
	w.entry("olcDatabase={0}config,cn=config",
		attr{"objectClass", []string{"olcDatabaseConfig"}},
		attr{"olcDatabase", []string{"{0}config"}},
		attr{"olcRootDN", []string{s.ConfigAdminDN}},
		attr{"olcRootPW", []string{configHash}},
	)
	db := []attr{
		{"objectClass", []string{"olcDatabaseConfig", "olcMdbConfig"}},
		{"olcDatabase", []string{"{1}mdb"}},
		{"olcDbDirectory", []string{dataDir}},
		{"olcSuffix", []string{s.BaseDN}},
		{"olcRootDN", []string{s.AdminDN}},
		{"olcRootPW", []string{adminHash}},
		// LMDB's map is sparse: room for benchmarks with 100,000+ users.
		{"olcDbMaxSize", []string{strconv.Itoa(8 << 30)}},
		// Throwaway data: no fsync. A killed slapd loses nothing (the
		// kernel has the pages), only a crashed machine would.
		{"olcDbNoSync", []string{"TRUE"}},
		{"olcDbIndex", []string{
			"objectClass eq", "entryUUID eq", "entryCSN eq", "uid eq,sub", "mail eq,sub",
			"cn eq,sub", "member eq", "memberOf eq", "modifyTimestamp eq",
		}},
		{"olcLimits", []string{fmt.Sprintf(`dn.exact="%s" size=unlimited time=unlimited`, s.BindDN)}},
		{"olcAccess", []string{
			"{0}to attrs=userPassword by self write by anonymous auth by * none",
			"{1}to * by users read by * none",
		}},
	}
	if p := s.provider; p != nil {
		db = append(db,
			attr{"olcSyncrepl", []string{fmt.Sprintf(`{0}rid=001 provider=%s bindmethod=simple binddn="%s" credentials="%s" `+
				`searchbase="%s" scope=sub type=refreshAndPersist retry="1 +" timeout=5 network-timeout=5 `+
				`schemachecking=off attrs="*,+"`, p.URL, p.AdminDN, p.AdminPassword, p.BaseDN)}},
			attr{"olcUpdateRef", []string{p.URL}},
		)
	}
	w.entry("olcDatabase={1}mdb,cn=config", db...)
	// memberOf is never replicated (it is a dSAOperation attribute): a
	// replica maintains its own from the replicated groups. refint runs
	// on the provider only; its changes replicate.
	memberOfRefInt := "TRUE"
	if s.provider != nil {
		memberOfRefInt = "FALSE"
	}
	overlays := [][]attr{{
		{"objectClass", []string{"olcOverlayConfig", "olcMemberOfConfig"}},
		{"olcOverlay", []string{"memberof"}},
		{"olcMemberOfDangling", []string{"ignore"}},
		{"olcMemberOfRefInt", []string{memberOfRefInt}},
		{"olcMemberOfGroupOC", []string{"groupOfNames"}},
		{"olcMemberOfMemberAD", []string{"member"}},
		{"olcMemberOfMemberOfAD", []string{"memberOf"}},
	}}
	if s.provider == nil {
		overlays = append(overlays, []attr{
			{"objectClass", []string{"olcOverlayConfig", "olcRefintConfig"}},
			{"olcOverlay", []string{"refint"}},
			{"olcRefintAttribute", []string{"member", "manager", "owner"}},
		})
	}
	overlays = append(overlays, []attr{
		{"objectClass", []string{"olcOverlayConfig", "olcPPolicyConfig"}},
		{"olcOverlay", []string{"ppolicy"}},
		{"olcPPolicyDefault", []string{s.PolicyDN}},
		{"olcPPolicyHashCleartext", []string{"TRUE"}},
	}, []attr{
		{"objectClass", []string{"olcOverlayConfig", "olcSyncProvConfig"}},
		{"olcOverlay", []string{"syncprov"}},
		{"olcSpCheckpoint", []string{checkpoint}},
		{"olcSpSessionlog", []string{"10000"}},
	})
	for i, o := range overlays {
		name := fmt.Sprintf("{%d}%s", i, o[1].values[0])
		o[1].values = []string{name}
		w.entry("olcOverlay="+name+",olcDatabase={1}mdb,cn=config", o...)
	}
	if err := w.flush(); err != nil {
		return "", err
	}
	return b.String(), nil
}

// writeData writes the base entries and the seeded users for slapadd.
func (s *LDAP) writeData(out io.Writer, opts SlapdOptions) error {
	bindHash, err := ssha(s.BindPassword)
	if err != nil {
		return err
	}
	w := newLDIFWriter(out)
	w.entry(s.BaseDN,
		attr{"objectClass", []string{"top", "dcObject", "organization"}},
		attr{"dc", []string{"corp"}},
		attr{"o", []string{"Corp Example"}},
	)
	for _, ou := range []string{"services", "policies", "people", "groups"} {
		w.entry("ou="+ou+","+s.BaseDN,
			attr{"objectClass", []string{"top", "organizationalUnit"}},
			attr{"ou", []string{ou}},
		)
	}
	servicePolicy := "cn=service,ou=policies," + s.BaseDN
	w.entry(s.PolicyDN,
		attr{"objectClass", []string{"top", "organizationalRole", "pwdPolicy"}},
		attr{"cn", []string{"default"}},
		attr{"pwdAttribute", []string{"userPassword"}},
		attr{"pwdLockout", []string{"TRUE"}},
		attr{"pwdMaxFailure", []string{"5"}},
		attr{"pwdLockoutDuration", []string{"300"}},
		attr{"pwdFailureCountInterval", []string{"300"}},
	)
	// The service account never locks: a test of a wrong bind password
	// must not break every later test.
	w.entry(servicePolicy,
		attr{"objectClass", []string{"top", "organizationalRole", "pwdPolicy"}},
		attr{"cn", []string{"service"}},
		attr{"pwdAttribute", []string{"userPassword"}},
		attr{"pwdLockout", []string{"FALSE"}},
	)
	w.entry(s.BindDN,
		attr{"objectClass", []string{"top", "applicationProcess", "simpleSecurityObject"}},
		attr{"cn", []string{"passbridge"}},
		attr{"description", []string{"passbridge directory sync (read-only)"}},
		attr{"userPassword", []string{bindHash}},
		attr{"pwdPolicySubentry", []string{servicePolicy}},
	)
	if opts.Users > 0 {
		seedHash, err := ssha(SeedUserPassword)
		if err != nil {
			return err
		}
		groupDN := func(j int) string { return "cn=" + SeedGroupCN(j) + "," + s.GroupsDN }
		for i := 1; i <= opts.Users; i++ {
			uid := SeedUID(i)
			n := uid[len("user"):]
			attrs := []attr{
				{"objectClass", []string{"top", "person", "organizationalPerson", "inetOrgPerson"}},
				{"uid", []string{uid}},
				{"cn", []string{"Seed User " + n}},
				{"sn", []string{"User" + n}},
				{"givenName", []string{"Seed"}},
				{"displayName", []string{"Seed User " + n}},
				{"mail", []string{uid + "@" + s.MailDomain}},
				{"employeeNumber", []string{strconv.Itoa(i)}},
				{"userPassword", []string{seedHash}},
			}
			if opts.Groups > 0 {
				attrs = append(attrs, attr{"memberOf", []string{groupDN(i % opts.Groups)}})
			}
			w.entry("uid="+uid+","+s.PeopleDN, attrs...)
		}
		for j := 0; j < opts.Groups; j++ {
			var members []string
			for i := j; i <= opts.Users; i += opts.Groups {
				if i >= 1 {
					members = append(members, "uid="+SeedUID(i)+","+s.PeopleDN)
				}
			}
			w.entry(groupDN(j),
				attr{"objectClass", []string{"top", "groupOfNames"}},
				attr{"cn", []string{SeedGroupCN(j)}},
				attr{"member", members},
			)
		}
	}
	return w.flush()
}

// Stop ends slapd (SIGTERM, then SIGKILL) and removes its directory. It is
// safe to call more than once; the shared server is stopped by Run.
func (s *LDAP) Stop() {
	s.stop.Do(func() {
		switch {
		case s.proc == nil:
		case s.provider != nil && s.proc.running():
			// A replica waits ~5 s for its syncrepl session at SIGTERM;
			// its data is thrown away anyway.
			_ = s.proc.kill()
		default:
			_ = s.proc.terminate(10 * time.Second)
		}
		os.RemoveAll(s.dir)
	})
}

func (s *LDAP) mustBeDedicated(tb testing.TB, what string) {
	tb.Helper()
	if s.shared {
		tb.Fatalf("%s on the shared slapd would break other tests: use StartSlapd", what)
	}
}

// Kill ends slapd abruptly (SIGKILL), as a crash would; Restart brings it
// back on the same ports with the same data.
func (s *LDAP) Kill(tb testing.TB) {
	tb.Helper()
	s.mustBeDedicated(tb, "Kill")
	if err := s.proc.kill(); err != nil {
		tb.Fatalf("kill slapd: %v", err)
	}
}

// Restart starts a killed slapd again on the same ports and data, or
// restarts a running one gracefully.
func (s *LDAP) Restart(tb testing.TB) {
	tb.Helper()
	s.mustBeDedicated(tb, "Restart")
	if err := s.proc.terminate(10 * time.Second); err != nil {
		tb.Fatalf("stop slapd: %v", err)
	}
	if err := s.startProc(); err != nil {
		tb.Fatalf("restart slapd: %v", err)
	}
}

// Freeze suspends slapd (SIGSTOP): connections are accepted by the kernel
// but never answered, like a hung server. Thaw resumes it.
func (s *LDAP) Freeze(tb testing.TB) {
	tb.Helper()
	s.mustBeDedicated(tb, "Freeze")
	if err := s.proc.signalGroup(syscall.SIGSTOP); err != nil {
		tb.Fatalf("freeze slapd: %v", err)
	}
}

// Thaw resumes a frozen slapd (SIGCONT).
func (s *LDAP) Thaw(tb testing.TB) {
	tb.Helper()
	if err := s.proc.signalGroup(syscall.SIGCONT); err != nil {
		tb.Fatalf("thaw slapd: %v", err)
	}
}

// Running reports whether the slapd process is alive.
func (s *LDAP) Running() bool { return s.proc.running() }

func (s *LDAP) dialAdmin() (*ldap.Conn, error) {
	return dialLDAP(s.URL, nil, false, s.AdminDN, s.AdminPassword)
}

// Conn is an admin (rootdn) connection over ldap://, closed when tb ends.
func (s *LDAP) Conn(tb testing.TB) *ldap.Conn {
	tb.Helper()
	return connFor(tb, s.dialAdmin)
}

// NewOU creates ou=t-<random> under BaseDN for one test and deletes it
// with everything below when the test ends.
func (s *LDAP) NewOU(tb testing.TB) string {
	tb.Helper()
	name := randomName("t-")
	dn := "ou=" + name + "," + s.BaseDN
	withConn(tb, s.dialAdmin, "create OU", func(c *ldap.Conn) error {
		return addEntry(c, dn, map[string][]string{"objectClass": {"top", "organizationalUnit"}, "ou": {name}})
	})
	tb.Cleanup(func() {
		if !s.Running() {
			return // a test that killed its own server; the data goes with it
		}
		c, err := s.dialAdmin()
		if err != nil {
			tb.Errorf("delete test OU %s: %v", dn, err)
			return
		}
		defer c.Close()
		if err := deleteSubtree(c, dn); err != nil {
			tb.Errorf("delete test OU %s: %v", dn, err)
		}
	})
	return dn
}

// AddOU adds ou=<name>,<parent> and returns its DN.
func (s *LDAP) AddOU(tb testing.TB, parent, name string) string {
	tb.Helper()
	dn := "ou=" + ldap.EscapeDN(name) + "," + parent
	withConn(tb, s.dialAdmin, "add OU", func(c *ldap.Conn) error {
		return addEntry(c, dn, map[string][]string{"objectClass": {"top", "organizationalUnit"}, "ou": {name}})
	})
	return dn
}

// AddUser adds an inetOrgPerson uid=<uid>,<parent> and returns its DN. It
// has cn, sn, givenName, displayName, mail <uid>@corp.example and the
// password DefaultUserPassword; attrs override these (an empty list drops
// one) and add others. userPassword given in attrs is hashed by ppolicy.
func (s *LDAP) AddUser(tb testing.TB, parent, uid string, attrs map[string][]string) string {
	tb.Helper()
	dn := "uid=" + ldap.EscapeDN(uid) + "," + parent
	all := map[string][]string{
		"objectClass":  {"top", "person", "organizationalPerson", "inetOrgPerson"},
		"uid":          {uid},
		"cn":           {uid},
		"sn":           {uid},
		"givenName":    {uid},
		"displayName":  {uid},
		"mail":         {uid + "@" + s.MailDomain},
		"userPassword": {DefaultUserPassword},
	}
	for k, v := range attrs {
		all[k] = v
	}
	withConn(tb, s.dialAdmin, "add user", func(c *ldap.Conn) error { return addEntry(c, dn, all) })
	return dn
}

// AddGroup adds a groupOfNames cn=<cn>,<parent> with members (users or
// groups, for nesting) and returns its DN. groupOfNames needs at least one
// member.
func (s *LDAP) AddGroup(tb testing.TB, parent, cn string, members ...string) string {
	tb.Helper()
	if len(members) == 0 {
		tb.Fatalf("add group %s: groupOfNames needs at least one member", cn)
	}
	dn := "cn=" + ldap.EscapeDN(cn) + "," + parent
	withConn(tb, s.dialAdmin, "add group", func(c *ldap.Conn) error {
		return addEntry(c, dn, map[string][]string{"objectClass": {"top", "groupOfNames"}, "cn": {cn}, "member": members})
	})
	return dn
}

// AddMember adds member to group.
func (s *LDAP) AddMember(tb testing.TB, group, member string) {
	tb.Helper()
	withConn(tb, s.dialAdmin, "add member", func(c *ldap.Conn) error { return modifyMember(c, group, member, true) })
}

// RemoveMember removes member from group.
func (s *LDAP) RemoveMember(tb testing.TB, group, member string) {
	tb.Helper()
	withConn(tb, s.dialAdmin, "remove member", func(c *ldap.Conn) error { return modifyMember(c, group, member, false) })
}

// Modify replaces attributes of dn; an empty list removes the attribute.
func (s *LDAP) Modify(tb testing.TB, dn string, attrs map[string][]string) {
	tb.Helper()
	withConn(tb, s.dialAdmin, "modify", func(c *ldap.Conn) error { return replaceAttrs(c, dn, attrs) })
}

// SetPassword sets dn's password with the Password Modify extended
// operation (RFC 3062), as an administrator would.
func (s *LDAP) SetPassword(tb testing.TB, dn, password string) {
	tb.Helper()
	withConn(tb, s.dialAdmin, "set password", func(c *ldap.Conn) error {
		if _, err := c.PasswordModify(ldap.NewPasswordModifyRequest(dn, "", password)); err != nil {
			return fmt.Errorf("password modify %s: %w", dn, err)
		}
		return nil
	})
}

// Disable locks dn for good with pwdAccountLockedTime=000001010000Z (the
// OpenLDAP way to disable an account): binds fail until Enable.
func (s *LDAP) Disable(tb testing.TB, dn string) {
	tb.Helper()
	s.Modify(tb, dn, map[string][]string{"pwdAccountLockedTime": {LockedTime}})
}

// Enable removes pwdAccountLockedTime.
func (s *LDAP) Enable(tb testing.TB, dn string) {
	tb.Helper()
	s.Modify(tb, dn, map[string][]string{"pwdAccountLockedTime": nil})
}

// Rename changes dn's RDN (e.g. "uid=newname") and returns the new DN.
func (s *LDAP) Rename(tb testing.TB, dn, newRDN string) string {
	tb.Helper()
	var out string
	withConn(tb, s.dialAdmin, "rename", func(c *ldap.Conn) (err error) { out, err = modDN(c, dn, newRDN, ""); return err })
	return out
}

// Move moves dn under newParent, keeping its RDN, and returns the new DN.
func (s *LDAP) Move(tb testing.TB, dn, newParent string) string {
	tb.Helper()
	var out string
	withConn(tb, s.dialAdmin, "move", func(c *ldap.Conn) (err error) { out, err = modDN(c, dn, "", newParent); return err })
	return out
}

// Delete deletes one entry (no subtree).
func (s *LDAP) Delete(tb testing.TB, dn string) {
	tb.Helper()
	withConn(tb, s.dialAdmin, "delete", func(c *ldap.Conn) error { return deleteEntry(c, dn) })
}

// Entry reads dn as the administrator; attrs default to all user and
// operational attributes (entryUUID, entryCSN, memberOf, ...).
func (s *LDAP) Entry(tb testing.TB, dn string, attrs ...string) *ldap.Entry {
	tb.Helper()
	var e *ldap.Entry
	withConn(tb, s.dialAdmin, "read entry", func(c *ldap.Conn) (err error) { e, err = readEntry(c, dn, attrs); return err })
	return e
}

// UUID returns dn's entryUUID, the stable identity of an OpenLDAP entry.
func (s *LDAP) UUID(tb testing.TB, dn string) string {
	tb.Helper()
	u := s.Entry(tb, dn, "entryUUID").GetAttributeValue("entryUUID")
	if u == "" {
		tb.Fatalf("%s has no entryUUID", dn)
	}
	return u
}
