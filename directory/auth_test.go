package directory

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/passbridge/passbridge/config"
	"github.com/passbridge/passbridge/internal/testdir"
	"github.com/passbridge/passbridge/internal/testsrv"
)

// TestAuthenticate checks a password against the directory: by the login
// name (and on AD the UPN and DOMAIN\name), refusing wrong passwords,
// disabled accounts, users out of scope, and filter injection.
func TestAuthenticate(t *testing.T) {
	for name, mk := range fixtures(t) {
		t.Run(name, func(t *testing.T) {
			f := mk(t)
			ctx := context.Background()
			cfg := baseConfig(t, config.Database{}, f.Kind())
			ou := f.NewOU(t)
			in := f.AddOU(t, ou, "in")
			out := f.AddOU(t, ou, "out")
			f.Configure(cfg, in)
			ada := f.AddUser(t, in, "ada", nil)
			f.AddUser(t, in, "ada2", nil)
			f.AddUser(t, out, "eve", nil)
			dis := f.AddUser(t, in, "dis", nil)
			f.Disable(t, dis)
			c, err := NewClient(cfg.Directory, nil)
			if err != nil {
				t.Fatal(err)
			}
			names := []string{"ada"}
			if f.Kind() == "ad" {
				// The UPN, and DOMAIN\name with the domain's NetBIOS or
				// DNS name, in any case.
				names = append(names, "ada@corp.example", "ADA@CORP.EXAMPLE", `CORP\ada`, `corp\ada`, `corp.example\ada`)
			}
			for _, n := range names {
				it, err := c.Authenticate(ctx, n, testsrv.DefaultUserPassword)
				if err != nil {
					t.Fatalf("authenticate %q: %v", n, err)
				}
				if it.DirectoryID != f.ID(t, ada) || it.DN != ada {
					t.Fatalf("authenticate %q: got %+v", n, it)
				}
			}
			refuse := func(user, pw string, want error) {
				t.Helper()
				_, err := c.Authenticate(ctx, user, pw)
				if !errors.Is(err, want) {
					t.Fatalf("authenticate %q/%q: %v, want %v", user, pw, err, want)
				}
			}
			refuse("ada", "wrong-Passw0rd", ErrInvalidCredentials)
			refuse("ada", "", ErrInvalidCredentials)
			refuse("eve", testsrv.DefaultUserPassword, ErrInvalidCredentials) // out of scope
			refuse("dis", testsrv.DefaultUserPassword, ErrDisabled)
			// Filter injection: these must match nobody, not everybody.
			refuse("*", testsrv.DefaultUserPassword, ErrInvalidCredentials)
			refuse("ada*", testsrv.DefaultUserPassword, ErrInvalidCredentials)
			refuse("*)(objectClass=*", testsrv.DefaultUserPassword, ErrInvalidCredentials)
			refuse(`ada\2a`, testsrv.DefaultUserPassword, ErrInvalidCredentials)
			// A DOMAIN\ prefix names this domain or nobody: another
			// domain's ada is not this one.
			refuse(`OTHER\ada`, testsrv.DefaultUserPassword, ErrInvalidCredentials)
			refuse(`CORP.EXAMPLE.EVIL\ada`, testsrv.DefaultUserPassword, ErrInvalidCredentials)
			refuse(`\ada`, testsrv.DefaultUserPassword, ErrInvalidCredentials)
		})
	}
}

// TestADDomainNames: the names a DOMAIN\ prefix may use come from the
// domain's crossRef (nETBIOSName, dnsRoot), read by the service account
// without falling back to a guess.
func TestADDomainNames(t *testing.T) {
	s := testsrv.SambaDC(t)
	cfg := baseConfig(t, config.Database{}, "ad")
	testdir.SambaConfig(s, cfg, s.BaseDN)
	log, out := testdir.NewTestLog(t)
	c, err := NewClient(cfg.Directory, log)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	conn, err := c.Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	d, err := c.domainNames(ctx, conn)
	if err != nil {
		t.Fatal(err)
	}
	if d.netbios != s.Domain || !strings.EqualFold(d.dns, s.DNSDomain) {
		t.Fatalf("domain names %+v, want %s and %s", d, s.Domain, s.DNSDomain)
	}
	if strings.Contains(out.String(), "cannot read the domain's NetBIOS name") {
		t.Errorf("fell back to the naming context:\n%s", out)
	}
}
