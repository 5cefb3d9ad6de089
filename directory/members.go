package directory

import (
	"context"
	"fmt"
	"sort"
	"strings"

	"github.com/go-ldap/ldap/v3"
)

// Members lists the stable IDs (as the sync stores them in
// identities.directory_id) of the users under directory.base_dn that match
// directory.user_filter and are members of groupDN, nested membership
// counted: the group is resolved exactly as the sync resolves
// directory.group (AD's in-chain rule, FreeIPA's memberOf, OpenLDAP's
// member values read recursively). Enrollment campaigns for a group ask it
// once per pass. The IDs are sorted; a group that does not exist is an
// error wrapping ErrGroupNotFound.
func (c *Client) Members(ctx context.Context, groupDN string) ([]string, error) {
	if strings.TrimSpace(groupDN) == "" {
		return nil, fmt.Errorf("members of a group: the group DN is empty")
	}
	if _, err := ldap.ParseDN(groupDN); err != nil {
		return nil, fmt.Errorf("members of %q: not a valid DN: %w", groupDN, err)
	}
	m := NewMapper(c.cfg)
	conn, err := c.Connect(ctx)
	if err != nil {
		return nil, fmt.Errorf("members of %s: %w", groupDN, err)
	}
	defer conn.Close()
	d := c.cfg
	d.Group = groupDN
	scope, err := conn.ResolveScope(ctx, d, m, ScopeOptions{})
	if err != nil {
		return nil, fmt.Errorf("members of %s: %w", groupDN, err)
	}
	req := ldap.NewSearchRequest(scope.BaseDN, ldap.ScopeWholeSubtree, ldap.NeverDerefAliases, 0, 0, false, scope.Filter, []string{m.IDAttribute()}, nil)
	var ids []string
	err = conn.Paged(ctx, req, d.PageSize, func(page []*ldap.Entry) error {
		for _, e := range page {
			if !scope.InScope(e.DN) {
				continue
			}
			// An entry without a readable ID is no identity of the sync
			// either: nobody to invite.
			if id, err := m.ID(e); err == nil {
				ids = append(ids, id)
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("members of %s: %w", groupDN, err)
	}
	sort.Strings(ids)
	return ids, nil
}
