package directory

import (
	"context"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/go-ldap/ldap/v3"

	"github.com/passbridge/passbridge/config"
	"github.com/passbridge/passbridge/internal/testsrv"
)

// TestLeanReadMatchesGoLDAP reads the same OU of a real slapd, over
// StartTLS, as the sync does (a syncrepl refresh, a paged search) with the
// lean reader and with go-ldap alone, and gets the same entries and
// controls; and the lean reader did decode them itself.
func TestLeanReadMatchesGoLDAP(t *testing.T) {
	srv := testsrv.Slapd(t)
	ou := srv.NewOU(t)
	for i := range 30 {
		attrs := map[string][]string{"mail": {fmt.Sprintf("User.%02d@Corp.Example", i)}, "displayName": {fmt.Sprintf("Zoë Ørsted %02d", i)}}
		if i%3 == 0 {
			attrs["description"] = []string{"one", "two", strings.Repeat("long ", 200)}
		}
		if i%5 == 0 {
			attrs["departmentNumber"] = []string{"R&D, Łódź"}
		}
		srv.AddUser(t, ou, fmt.Sprintf("user%02d", i), attrs)
	}
	d := config.Directory{URLs: []string{srv.URL}, StartTLS: true, CAFile: srv.CAFile, BindDN: srv.BindDN,
		BindPassword: config.Secret(srv.BindPassword), Timeout: config.Duration(30 * time.Second)}
	c, err := NewClient(d, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	attrs := []string{"entryUUID", "uid", "mail", "displayName", "departmentNumber", "description", "objectClass"}
	reads := map[string]func() *ldap.SearchRequest{
		"syncrepl": func() *ldap.SearchRequest {
			return ldap.NewSearchRequest(ou, ldap.ScopeWholeSubtree, ldap.NeverDerefAliases, 0, 0, false, "(objectClass=inetOrgPerson)", attrs,
				[]ldap.Control{ldap.NewControlSyncRequest(ldap.SyncRequestModeRefreshOnly, nil, false)})
		},
		"paged": func() *ldap.SearchRequest {
			return ldap.NewSearchRequest(ou, ldap.ScopeWholeSubtree, ldap.NeverDerefAliases, 0, 0, false, "(objectClass=inetOrgPerson)", attrs, nil)
		},
	}
	for name, req := range reads {
		t.Run(name, func(t *testing.T) {
			read := func(lean bool) ([]searchedResult, int) {
				conn, err := c.Connect(ctx)
				if err != nil {
					t.Fatal(err)
				}
				defer conn.Close()
				var out []searchedResult
				fromTap := 0
				fn := func(r result) error {
					e := r.raw
					if e == nil && r.entry != nil {
						e = rawFromLDAP(r.entry, r.controls)
					}
					sr := searchedResult{Referral: r.referral}
					for _, c := range r.controls {
						if c.GetControlType() != ldap.ControlTypeSyncDone { // its cookie differs from run to run
							sr.Controls = append(sr.Controls, c)
						}
					}
					if e != nil {
						sr.Entry, sr.DN = true, string(e.dn)
						for _, a := range e.attrs {
							sr.Attrs = append(sr.Attrs, fmt.Sprintf("%s=%q", a.name, a.vals))
						}
						if !e.fromLDAP {
							fromTap++
						}
					}
					out = append(out, sr)
					return nil
				}
				if name == "paged" {
					size := 7 // several pages
					if lean {
						err = conn.pagedRaw(ctx, req(), size, func(page []*rawEntry) error {
							for _, e := range page {
								if err := fn(result{raw: e, controls: e.controls}); err != nil {
									return err
								}
							}
							return nil
						})
					} else {
						err = conn.Paged(ctx, req(), size, func(page []*ldap.Entry) error {
							for _, e := range page {
								if err := fn(result{entry: e}); err != nil {
									return err
								}
							}
							return nil
						})
					}
				} else {
					err = conn.stream(ctx, req(), time.Minute, lean, fn)
				}
				if err != nil {
					t.Fatal(err)
				}
				return out, fromTap
			}
			want, _ := read(false)
			got, fromTap := read(true)
			if len(want) < 30 {
				t.Fatalf("go-ldap read %d results, want 30 entries at least", len(want))
			}
			if !reflect.DeepEqual(got, want) {
				dns := func(rs []searchedResult) (out []string) {
					for _, r := range rs {
						out = append(out, r.DN)
					}
					return out
				}
				t.Fatalf("lean read differs:\n got %q\nwant %q\n got %+v\nwant %+v", dns(got), dns(want), got, want)
			}
			if fromTap != 30 {
				t.Errorf("%d of 30 entries came from the lean decoder", fromTap)
			}
		})
	}
}
