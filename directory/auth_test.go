package directory

import (
	"context"
	"errors"
	"testing"

	"github.com/passbridge/passbridge/config"
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
				names = append(names, "ada@corp.example", `CORP\ada`)
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
		})
	}
}
