// Package demoserver is a small read-only LDAP directory served in-process
// on a loopback address, for passbridge's embedded demo and for tests. It
// loads entries from LDIF (Load) and serves them over real LDAP on TCP
// (Start), so that passbridge's LDAP client runs exactly as it does against
// OpenLDAP:
//
//   - Simple bind against the entries' userPassword ({SSHA}, {SSHA256},
//     {SSHA512}, {SHA}, bcrypt in {CRYPT}/{BCRYPT}, cleartext) and against a
//     service account from the Config. Accounts locked by
//     pwdAccountLockedTime, nsAccountLock: TRUE or userAccountControl bit
//     0x2 cannot bind; neither can a DN with an empty password. A failed
//     bind leaves the connection anonymous.
//   - Anonymous connections may read the root DSE only; any bound principal
//     may search everything. userPassword is never returned and never
//     matches a filter.
//   - Search with scopes base, one and sub; RFC 4515 filters with
//     three-valued logic (and, or, not, equality, substrings, >=, <=,
//     presence, approximate as equality, extensible matches including :dn,
//     caseExactMatch, LDAP_MATCHING_RULE_IN_CHAIN and the AD bit rules);
//     matching by attribute syntax: case-insensitive strings with
//     insignificant spaces, DNs, GeneralizedTime (with time zones), UUIDs,
//     integers, telephone numbers.
//   - Attribute lists with "*", "+" (operational: entryUUID, entryDN,
//     createTimestamp, modifyTimestamp, memberOf, hasSubordinates,
//     pwdAccountLockedTime, ...) and "1.1"; typesOnly.
//   - Simple Paged Results (RFC 2696) with per-connection cookies over a
//     result fixed at the first page, abandon by page size 0, a cap on the
//     page size; size limits (the client's, and the server's for searches
//     that are not paged).
//   - Critical controls it does not support are refused with
//     unavailableCriticalExtension (RFC 4511 4.1.11).
//   - Writes, compare and modify DN get unwillingToPerform; StartTLS and
//     unknown extended operations get protocolError.
//
// memberOf is computed from the groups' member and uniqueMember values
// (direct groups only, as OpenLDAP's memberof overlay). Server.Replace swaps
// in another Directory at run time, for tests of renames, moves and
// disabled accounts.
//
// The LDAP engine is github.com/jimlambrt/gldap v0.1.14, behind a relay that
// owns the listener; see Server for why.
package demoserver
