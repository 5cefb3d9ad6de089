// Package demo holds the data of passbridge's embedded demo: the Northwind
// Fabrication directory (configs/demo.ldif, served by directory/demoserver)
// and the ERP's legacy users table that the demo seeds into SQLite. The
// demo runs the production code paths on this data; this package only
// provides it.
package demo

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"strings"

	"github.com/passbridge/passbridge/configs"
	"github.com/passbridge/passbridge/directory/demoserver"
)

// The directory of the demo. The passwords are documented at the top of
// configs/demo.ldif, which stores them as {SSHA} hashes.
const (
	BaseDN = "dc=northwind,dc=example"
	// PeopleDN holds the employees, in one OU per department.
	PeopleDN = "ou=People," + BaseDN
	// UserFilter selects the employees (the openldap preset's filter).
	UserFilter = "(objectClass=inetOrgPerson)"
	// PilotGroupDN is the group whose members (nested groups count) may
	// enroll passkeys.
	PilotGroupDN = "cn=passkey-pilot,ou=Groups," + BaseDN
	// AdminGroupDN is the group of the portal's administrators.
	AdminGroupDN = "cn=it-admins,ou=Groups," + BaseDN
	// ServiceDN and ServicePassword are the sync's read-only service account.
	ServiceDN       = "cn=passbridge-sync,ou=Services," + BaseDN
	ServicePassword = "northwind-sync"
	// EmployeePassword is the directory password of every employee.
	EmployeePassword = "northwind"
)

// Directory loads the demo directory from the LDIF compiled into the binary.
func Directory() (*demoserver.Directory, error) {
	d, err := demoserver.Load("configs/demo.ldif", bytes.NewReader(configs.DemoLDIF))
	if err != nil {
		return nil, fmt.Errorf("demo directory: %w", err)
	}
	return d, nil
}

// StartDirectory serves the demo directory on 127.0.0.1 on a free port; its
// URL() is what the sync connects to (kind openldap, bind as ServiceDN).
// Stop it with Stop(ctx).
func StartDirectory(ctx context.Context, log *slog.Logger) (*demoserver.Server, error) {
	d, err := Directory()
	if err != nil {
		return nil, err
	}
	return demoserver.Start(ctx, d, demoserver.Config{Logger: log})
}

// Banner is what the demo prints at start: where the directory is and how
// to log in as whom.
func Banner(ldapURL string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Demo directory (Northwind Fabrication): %s, base %s\n", ldapURL, BaseDN)
	fmt.Fprintf(&b, "  service account  %s / %s\n", ServiceDN, ServicePassword)
	fmt.Fprintf(&b, "  every employee   password %q, for example:\n", EmployeePassword)
	for _, p := range [][2]string{
		{"samuel.okafor", "IT admin (member of " + AdminGroupDN + ")"},
		{"zoe.orsted", "in the passkey pilot"},
		{"ingrid.bakke", "in the pilot through the nested group plant-floor-leads"},
		{"grace.liu", "not in the pilot"},
		{"oliver.grant", "locked account: cannot log in"},
	} {
		fmt.Fprintf(&b, "    %-15s %s\n", p[0], p[1])
	}
	fmt.Fprintf(&b, "Legacy ERP users table: password %q for every row\n", LegacyPassword)
	return b.String()
}
