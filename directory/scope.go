package directory

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"sort"
	"strings"

	"github.com/go-ldap/ldap/v3"

	"github.com/passbridge/passbridge/config"
)

// matchingRuleInChain is AD's LDAP_MATCHING_RULE_IN_CHAIN: memberOf with it
// matches members of a group at any depth of nesting.
const matchingRuleInChain = "1.2.840.113556.1.4.1941"

// groupClasses are the object classes of groups whose member values are DNs.
const groupClassFilter = "(|(objectClass=groupOfNames)(objectClass=groupOfUniqueNames)(objectClass=group))"

// Scope is what a sync reads: the users under BaseDN that match Filter
// and, when a group is configured, are members of it at any depth.
type Scope struct {
	BaseDN string
	// Filter is the whole filter sent to the server. Every value in it
	// that did not come from user_filter is escaped.
	Filter string
	// Groups is the configured group and the groups nested in it.
	Groups []string
	// Fingerprint changes whenever what is in scope may have changed in a
	// way a delta read cannot see (the configuration, the groups and their
	// membership): a delta sync whose cursor has another fingerprint runs
	// as a full one.
	Fingerprint string
	// members, when not nil, are the normalized DNs of the users in the
	// group: used when the server cannot filter on memberOf (OpenLDAP
	// without the memberof overlay).
	members map[string]bool
}

// InScope reports whether an entry that matched Filter is in scope.
func (s *Scope) InScope(dn string) bool {
	if s.members == nil {
		return true
	}
	return s.members[NormDN(dn)]
}

// ValidateFilter checks a user_filter and returns it in parentheses.
func ValidateFilter(f string) (string, error) {
	f = strings.TrimSpace(f)
	if f == "" {
		return "(objectClass=*)", nil
	}
	if !strings.HasPrefix(f, "(") {
		f = "(" + f + ")"
	}
	if _, err := ldap.CompileFilter(f); err != nil {
		return "", fmt.Errorf("directory.user_filter %q is not a valid LDAP filter: %w", f, err)
	}
	return f, nil
}

// ResolveScope builds the scope of a sync from the configuration, reading
// the group (and its nested groups) when one is configured.
func (c *Conn) ResolveScope(ctx context.Context, d config.Directory, m *Mapper, opts ScopeOptions) (*Scope, error) {
	uf, err := ValidateFilter(d.UserFilter)
	if err != nil {
		return nil, err
	}
	if _, err := ldap.ParseDN(d.BaseDN); err != nil {
		return nil, fmt.Errorf("directory.base_dn %q is not a valid DN: %w", d.BaseDN, err)
	}
	base, err := c.readEntry(ctx, d.BaseDN, "", []string{"1.1"})
	if err != nil {
		return nil, fmt.Errorf("directory.base_dn: %w", err)
	}
	if base == nil {
		return nil, fmt.Errorf("directory.base_dn %q does not exist on %s (or the service account cannot see it)", d.BaseDN, c.URL)
	}
	s := &Scope{BaseDN: d.BaseDN, Filter: uf}
	fp := sha256.New()
	fmt.Fprintf(fp, "base=%s\nfilter=%s\nattrs=%s\ngroup=%s\n", strings.ToLower(d.BaseDN), uf, strings.Join(m.Attributes(), ","), strings.ToLower(d.Group))
	if d.Group != "" {
		if _, err := ldap.ParseDN(d.Group); err != nil {
			return nil, fmt.Errorf("directory.group %q is not a valid DN: %w", d.Group, err)
		}
		if err := c.resolveGroup(ctx, d, s, opts, fp); err != nil {
			return nil, err
		}
	}
	s.Fingerprint = hex.EncodeToString(fp.Sum(nil))[:32]
	return s, nil
}

// ScopeOptions tune how a scope is resolved (tests).
type ScopeOptions struct {
	// ForceMemberWalk resolves group membership by reading member values
	// even when the server has memberOf (tests of the fallback).
	ForceMemberWalk bool
}

// groupVersionAttrs change whenever a group entry (its membership) changes.
var groupVersionAttrs = []string{"uSNChanged", "entryCSN", "modifyTimestamp"}

func groupVersion(e *ldap.Entry) string {
	for _, a := range groupVersionAttrs {
		if v := e.GetEqualFoldAttributeValue(a); v != "" {
			return a + "=" + v
		}
	}
	return ""
}

func (c *Conn) resolveGroup(ctx context.Context, d config.Directory, s *Scope, opts ScopeOptions, fp interface{ Write([]byte) (int, error) }) error {
	g, err := c.readEntry(ctx, d.Group, groupClassFilter, append([]string{"objectClass"}, groupVersionAttrs...))
	if err != nil {
		return fmt.Errorf("directory.group: %w", err)
	}
	if g == nil {
		return fmt.Errorf("directory.group %q does not exist on %s, is not a group (groupOfNames, groupOfUniqueNames or AD group), or the service account cannot see it", d.Group, c.URL)
	}
	escaped := ldap.EscapeFilter(g.DN)
	if d.Kind == "ad" {
		// The server resolves nesting; the fingerprint covers the group
		// and every group nested in it.
		s.Filter = "(&" + s.Filter + "(memberOf:" + matchingRuleInChain + ":=" + escaped + "))"
		nc, err := c.namingContext(ctx, g.DN)
		if err != nil {
			return err
		}
		req := ldap.NewSearchRequest(nc, ldap.ScopeWholeSubtree, ldap.NeverDerefAliases, 0, 0, false,
			"(&(objectClass=group)(memberOf:"+matchingRuleInChain+":="+escaped+"))", groupVersionAttrs, nil)
		versions := []string{g.DN + " " + groupVersion(g)}
		s.Groups = []string{g.DN}
		err = c.Paged(ctx, req, d.PageSize, func(page []*ldap.Entry) error {
			for _, e := range page {
				s.Groups = append(s.Groups, e.DN)
				versions = append(versions, e.DN+" "+groupVersion(e))
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("read the groups nested in %s: %w", g.DN, err)
		}
		sort.Strings(versions)
		fmt.Fprintf(fp, "groups=%s\n", strings.ToLower(strings.Join(versions, "\n")))
		return nil
	}
	if d.Kind == "freeipa" && !opts.ForceMemberWalk {
		// 389 DS's memberOf plugin on FreeIPA records indirect membership.
		s.Groups = []string{g.DN}
		s.Filter = "(&" + s.Filter + "(memberOf=" + escaped + "))"
		fmt.Fprintf(fp, "groups=%s\n", strings.ToLower(g.DN+" "+groupVersion(g)))
		return nil
	}
	return c.walkGroups(ctx, d, s, g, opts, fp)
}

// walkGroups resolves nested groups on OpenLDAP, whose memberof overlay
// records direct membership only: it reads the member values of the group
// and of every group among them, recursively (cycles are fine).
func (c *Conn) walkGroups(ctx context.Context, d config.Directory, s *Scope, top *ldap.Entry, opts ScopeOptions, fp interface{ Write([]byte) (int, error) }) error {
	nc, err := c.namingContext(ctx, top.DN)
	if err != nil {
		return err
	}
	// All groups of the naming context, by normalized DN: groups are few
	// compared with users, and knowing them tells a nested group from a
	// user among member values without one read per member.
	groups := map[string]bool{}
	req := ldap.NewSearchRequest(nc, ldap.ScopeWholeSubtree, ldap.NeverDerefAliases, 0, 0, false, groupClassFilter, []string{"1.1"}, nil)
	if err := c.Paged(ctx, req, d.PageSize, func(page []*ldap.Entry) error {
		for _, e := range page {
			groups[NormDN(e.DN)] = true
		}
		return nil
	}); err != nil {
		return fmt.Errorf("list the groups under %s: %w", nc, err)
	}
	visited := map[string]bool{}
	members := map[string]bool{}
	var versions []string
	queue := []string{top.DN}
	for len(queue) > 0 {
		dn := queue[0]
		queue = queue[1:]
		if visited[NormDN(dn)] {
			continue
		}
		visited[NormDN(dn)] = true
		e, err := c.readEntry(ctx, dn, groupClassFilter, append([]string{"member", "uniqueMember"}, groupVersionAttrs...))
		if err != nil {
			return fmt.Errorf("read group %s: %w", dn, err)
		}
		if e == nil {
			continue // a dangling nested group
		}
		s.Groups = append(s.Groups, e.DN)
		versions = append(versions, e.DN+" "+groupVersion(e))
		vals := e.GetEqualFoldAttributeValues("member")
		for _, u := range e.GetEqualFoldAttributeValues("uniqueMember") {
			// nameAndOptionalUID: drop the optional #'0101'B suffix.
			if i := strings.LastIndex(u, "#'"); i > 0 && strings.HasSuffix(u, "'B") {
				u = u[:i]
			}
			vals = append(vals, u)
		}
		for _, m := range vals {
			n := NormDN(m)
			if groups[n] {
				queue = append(queue, m)
			} else {
				members[n] = true
			}
		}
	}
	sort.Strings(versions)
	fmt.Fprintf(fp, "groups=%s\n", strings.ToLower(strings.Join(versions, "\n")))

	hasMemberOf := false
	if !opts.ForceMemberWalk {
		hasMemberOf, err = c.hasMemberOf(ctx, top.DN, members)
		if err != nil {
			return err
		}
	}
	if hasMemberOf {
		var or strings.Builder
		for _, g := range s.Groups {
			or.WriteString("(memberOf=" + ldap.EscapeFilter(g) + ")")
		}
		if len(s.Groups) == 1 {
			s.Filter = "(&" + s.Filter + or.String() + ")"
		} else {
			s.Filter = "(&" + s.Filter + "(|" + or.String() + "))"
		}
		fmt.Fprintf(fp, "memberof=server\n")
		return nil
	}
	s.members = members
	fmt.Fprintf(fp, "memberof=client\n")
	return nil
}

// hasMemberOf reports whether the server maintains memberOf: a direct
// member of the group must carry it.
func (c *Conn) hasMemberOf(ctx context.Context, group string, members map[string]bool) (bool, error) {
	if len(members) == 0 {
		return true, nil // nothing to tell apart; the filter matches nobody either way
	}
	escaped := ldap.EscapeFilter(group)
	// One entry with memberOf=<group> tells the overlay is there; with the
	// memberOf index the search is cheap.
	nc, err := c.namingContext(ctx, group)
	if err != nil {
		return false, err
	}
	found := false
	sreq := ldap.NewSearchRequest(nc, ldap.ScopeWholeSubtree, ldap.NeverDerefAliases, 1, 0, false, "(memberOf="+escaped+")", []string{"1.1"}, nil)
	err = c.stream(ctx, sreq, 0, false, func(r result) error {
		if r.entry != nil {
			found = true
		}
		return nil
	})
	if err != nil && !ldap.IsErrorWithCode(err, ldap.LDAPResultSizeLimitExceeded) {
		return false, fmt.Errorf("check memberOf support: %w", err)
	}
	return found, nil
}

// namingContext returns the server naming context that holds dn.
func (c *Conn) namingContext(ctx context.Context, dn string) (string, error) {
	root, err := c.rootDSE(ctx, "namingContexts", "defaultNamingContext")
	if err != nil {
		return "", err
	}
	target, err := ldap.ParseDN(dn)
	if err != nil {
		return "", fmt.Errorf("%q is not a valid DN: %w", dn, err)
	}
	best := ""
	bestLen := -1
	for _, nc := range root.GetEqualFoldAttributeValues("namingContexts") {
		p, err := ldap.ParseDN(nc)
		if err != nil || nc == "" {
			continue
		}
		if (p.AncestorOfFold(target) || p.EqualFold(target)) && len(p.RDNs) > bestLen {
			best, bestLen = nc, len(p.RDNs)
		}
	}
	if best == "" {
		best = root.GetEqualFoldAttributeValue("defaultNamingContext")
	}
	if best == "" {
		return "", fmt.Errorf("no naming context of %s holds %q", c.URL, dn)
	}
	return best, nil
}

// NormDN is a canonical form of a DN for set lookups: attribute types and
// values folded to lower case, spaces around separators dropped, values
// re-escaped. An unparsable DN is only lower-cased.
func NormDN(dn string) string {
	p, err := ldap.ParseDN(dn)
	if err != nil {
		return strings.ToLower(strings.TrimSpace(dn))
	}
	var b strings.Builder
	for i, rdn := range p.RDNs {
		if i > 0 {
			b.WriteByte(',')
		}
		parts := make([]string, len(rdn.Attributes))
		for j, a := range rdn.Attributes {
			parts[j] = strings.ToLower(a.Type) + "=" + ldap.EscapeDN(strings.ToLower(a.Value))
		}
		sort.Strings(parts)
		b.WriteString(strings.Join(parts, "+"))
	}
	return b.String()
}

// ParentDN is the normalized parent of a DN (its container: an OU).
func ParentDN(dn string) string {
	p, err := ldap.ParseDN(dn)
	if err != nil || len(p.RDNs) == 0 {
		return ""
	}
	return NormDN((&ldap.DN{RDNs: p.RDNs[1:]}).String())
}
