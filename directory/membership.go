package directory

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/go-ldap/ldap/v3"

	"github.com/passbridge/passbridge/config"
)

// ErrGroupNotFound means the group asked about does not exist, is not a
// group, or the service account cannot see it: a configuration mistake
// (portal.admin_group), never an answer of "not a member".
var ErrGroupNotFound = errors.New("group not found")

// ErrUserNotFound means the user entry asked about does not exist (renamed,
// moved or deleted since the last sync, say).
var ErrUserNotFound = errors.New("user not found")

// IsMember reports whether the entry userDN is a member of the group
// groupDN, nested membership counted, as the service account sees it.
//
// On AD the server resolves nesting: one base search on the user with
// (memberOf:1.2.840.113556.1.4.1941:=<group>). On FreeIPA, memberOf (which
// 389 DS keeps for indirect members too). On OpenLDAP, the group's
// member/uniqueMember values are resolved recursively, exactly as the
// sync's directory.group is (each group read once, so cycles end), and the
// answer comes from memberOf when the server keeps it or from the resolved
// member list. A group that does not exist is an error wrapping
// ErrGroupNotFound, a user that does not exist one wrapping
// ErrUserNotFound.
func (c *Client) IsMember(ctx context.Context, userDN, groupDN string) (bool, error) {
	return c.isMember(ctx, userDN, groupDN, ScopeOptions{})
}

func (c *Client) isMember(ctx context.Context, userDN, groupDN string, opts ScopeOptions) (bool, error) {
	for _, v := range []struct{ what, dn string }{{"user", userDN}, {"group", groupDN}} {
		if strings.TrimSpace(v.dn) == "" {
			return false, fmt.Errorf("is %q a member of %q: the %s DN is empty", userDN, groupDN, v.what)
		}
		if _, err := ldap.ParseDN(v.dn); err != nil {
			return false, fmt.Errorf("is %q a member of %q: the %s is not a valid DN: %w", userDN, groupDN, v.what, err)
		}
	}
	conn, err := c.Connect(ctx)
	if err != nil {
		return false, fmt.Errorf("is %s a member of %s: %w", userDN, groupDN, err)
	}
	defer conn.Close()
	ok, err := conn.isMember(ctx, c.cfg, userDN, groupDN, opts)
	if err != nil {
		return false, fmt.Errorf("is %s a member of %s: %w", userDN, groupDN, err)
	}
	return ok, nil
}

// isMember answers on an open connection; d is the directory
// configuration (its kind and page size matter).
func (c *Conn) isMember(ctx context.Context, d config.Directory, userDN, groupDN string, opts ScopeOptions) (bool, error) {
	if d.Kind == "ad" {
		e, err := c.readEntry(ctx, userDN, "(memberOf:"+matchingRuleInChain+":="+ldap.EscapeFilter(groupDN)+")", []string{"1.1"})
		if err != nil {
			return false, err
		}
		if e != nil {
			return true, nil
		}
		// Not a member, or a group or user that is not there: say which.
		if _, err := c.readGroup(ctx, groupDN); err != nil {
			return false, err
		}
		return false, c.userExists(ctx, userDN)
	}

	g, err := c.readGroup(ctx, groupDN)
	if err != nil {
		return false, err
	}
	// The same resolution as the sync's directory.group, with the group
	// asked about in place of directory.group: the scope's filter and
	// member list decide.
	d.Group = g.DN
	s := &Scope{Filter: "(objectClass=*)"}
	if err := c.resolveGroup(ctx, d, s, opts, io.Discard); err != nil {
		return false, err
	}
	e, err := c.readEntry(ctx, userDN, s.Filter, []string{"1.1"})
	if err != nil {
		return false, err
	}
	if e != nil {
		return s.InScope(e.DN), nil
	}
	return false, c.userExists(ctx, userDN)
}

// readGroup reads a group entry, or says it is not there.
func (c *Conn) readGroup(ctx context.Context, groupDN string) (*ldap.Entry, error) {
	g, err := c.readEntry(ctx, groupDN, groupClassFilter, []string{"1.1"})
	if err != nil {
		return nil, fmt.Errorf("read group %s: %w", groupDN, err)
	}
	if g == nil {
		return nil, fmt.Errorf("group %q does not exist on %s, is not a group (groupOfNames, groupOfUniqueNames or AD group), or the service account cannot see it: %w",
			groupDN, c.URL, ErrGroupNotFound)
	}
	return g, nil
}

// userExists returns nil when the entry exists.
func (c *Conn) userExists(ctx context.Context, userDN string) error {
	e, err := c.readEntry(ctx, userDN, "", []string{"1.1"})
	if err != nil {
		return fmt.Errorf("read user %s: %w", userDN, err)
	}
	if e == nil {
		return fmt.Errorf("user %q does not exist on %s (renamed, moved or deleted since the last sync?), or the service account cannot see it: %w",
			userDN, c.URL, ErrUserNotFound)
	}
	return nil
}
