package demo

import (
	"context"
	"database/sql"
	"fmt"
)

// LegacyPassword is the password of every row of the demo's legacy users
// table: the ERP's own password, which stays the fallback login after
// passbridge adds passkeys. It is deliberately not the directory password.
const LegacyPassword = "erp-password"

// LegacyUser is one row of the demo application's users table.
type LegacyUser struct {
	ID       int64
	Username string
	// Email is "" for a row whose email column is NULL.
	Email string
	// PasswordHash is bcrypt (cost 10) of LegacyPassword.
	PasswordHash string
	// TOTPSecret is the base32 secret of the row's authenticator app, ""
	// (NULL) for users who never set up two-factor login.
	TOTPSecret string
	Active     bool
}

// legacyUsers are the rows of the ERP's users table. The bcrypt hashes are
// computed once and kept here: 26 hashes at cost 10 would add more than a
// second to the demo's start.
var legacyUsers = []LegacyUser{
	// E-mail in another case.
	{ID: 3, Username: "ava.chen", Email: "Ava.Chen@Northwind.example", PasswordHash: "$2a$10$5kvgzuxUQ340Z4lv6Hpiq.G8X8lo1/6wqg9gsiYqKjhD3My3myhCe", TOTPSecret: "AGFIPAZA477ISATG4OMSKAT3TQHTT3R6", Active: true},
	{ID: 5, Username: "marco.rossi", Email: "marco.rossi@northwind.example", PasswordHash: "$2a$10$A0oZWIK/X3a/xD1G0pWWdOOZlqhABDhkEsqK5L4H3C0l1JY/feAES", TOTPSecret: "OTY3VBMGJMXMIKOKXSV64BTWY55FJPPP", Active: true},
	// The directory names him cn=Smith\, John.
	{ID: 8, Username: "jsmith", Email: "john.smith@northwind.example", PasswordHash: "$2a$10$3AbtMu/H/g3YChhQ6m/AhOenQoiolApbzIeXVeilHuZzJJiUbdW5i", TOTPSecret: "6WMOGZ353NLKUJ2H53G4CS3HS52FO4IF", Active: true},
	{ID: 9, Username: "samuel.okafor", Email: "samuel.okafor@northwind.example", PasswordHash: "$2a$10$qqowVJQQVKFxVGOKHq9n8.gzVyRQ5lYuBjMldn/sKzmFgLcUtUaLu", TOTPSecret: "TFECNT4WDYMK3P3EZT2GR4NTR7USOQ4K", Active: true},
	{ID: 12, Username: "hannah.schmidt", Email: "hannah.schmidt@northwind.example", PasswordHash: "$2a$10$sMP8nF1QCa0XFVe9fc3A8.LhsvlMSmOpGfAR0rn5vW1R5SD2VsTcS", TOTPSecret: "EJWZ5CZEDDRAV64AFBLIMGWWB7UFBVF7", Active: true},
	{ID: 14, Username: "grace.liu", Email: "grace.liu@northwind.example", PasswordHash: "$2a$10$jJE/4LOXXuC3v6H8HW/YH.9WoWzW97YHOD6BnrsX0rfdfGyNUO/om", TOTPSecret: "U4HVWPVOMEWLDMLIHVFK5ELDMA4H34PA", Active: true},
	{ID: 17, Username: "jose.mueller", Email: "jose.mueller@northwind.example", PasswordHash: "$2a$10$UHJcBEbsoacQ6sk.suvKGu3Zr1QNc0RtDvQ44p/2bli7OJFHUfJ4q", TOTPSecret: "", Active: true},
	// In the pilot only through a nested group.
	{ID: 18, Username: "ingrid.bakke", Email: "ingrid.bakke@northwind.example", PasswordHash: "$2a$10$GCJlrRa55hAFKbCnEzvyO.wEj4.lr4J4VkmRxCFaiQNOfxD7j2ZiC", TOTPSecret: "", Active: true},
	// E-mail in another case.
	{ID: 21, Username: "lena.fischer", Email: "LENA.FISCHER@NORTHWIND.EXAMPLE", PasswordHash: "$2a$10$N/RJOG.mzvu.vhLqN7p0OOOb98LS/LjgefdFLFN.PKECTssU/yC06", TOTPSecret: "MN5INJFS6YD24MVB6UCSRZSHH4ZTAY2H", Active: true},
	{ID: 22, Username: "rajesh.patel", Email: "rajesh.patel@northwind.example", PasswordHash: "$2a$10$r9MO2.e9HWFI1trNlwnD8OqCdzPl0pcwqB3oeHYZgn0PAHUoQNEA.", TOTPSecret: "", Active: true},
	// Former contractor: no directory user.
	{ID: 24, Username: "rbaxter", Email: "rob.baxter@baxter-consulting.example", PasswordHash: "$2a$10$/0MKW0C7IYus9V9CLCfmEuP.0HQh6h19pyYBdqJguwYpwfAxwxKV2", TOTPSecret: "37RE4REYPS2W2UNIHO4NCWDBF722VOOD", Active: false},
	// Locked in the directory, still active here.
	{ID: 26, Username: "oliver.grant", Email: "oliver.grant@northwind.example", PasswordHash: "$2a$10$ssoZgDIxS7CrLfCwzGmDWuvCNQhVOg0jhH2QQrz4g53jcjHHZhJca", TOTPSecret: "6JIRYK74KOZU55BSHYE66QPPW3ZD32S2", Active: true},
	{ID: 27, Username: "fatima.haddad", Email: "fatima.haddad@northwind.example", PasswordHash: "$2a$10$lvp8KLfhxwgJyZZuLzbtuecsk7uQ3oB0Z4XpFzdbhASr0AaV5FZuu", TOTPSecret: "", Active: true},
	{ID: 30, Username: "bjorn.akesson", Email: "bjorn.akesson@northwind.example", PasswordHash: "$2a$10$bUkZEIqb4NILSUJ/QoumVe1lCUmu0iJkaGmNihSsIGvA8kcfLIUgy", TOTPSecret: "256QPTNMQTEB3T4H7HICGX7CA75IH7OM", Active: true},
	// ERP username differs: matches by e-mail only.
	{ID: 31, Username: "tnowak", Email: "tomasz.nowak@northwind.example", PasswordHash: "$2a$10$CrMXi.a5e4O4E3XuY8dPyevZ8hE94zfhUOJy0Xk9z.UfdorMU2J.u", TOTPSecret: "", Active: true},
	{ID: 33, Username: "emily.carter", Email: "emily.carter@northwind.example", PasswordHash: "$2a$10$CDyEoI6PuyDoz4kBxErDQ.3laLMZRBD3yIgCZ4Q94h8OJBcNRm8iq", TOTPSecret: "HHJAKQKIKEZZ4PVN37JAHXAERVZXAPCR", Active: true},
	{ID: 35, Username: "wei.li", Email: "wei.li@northwind.example", PasswordHash: "$2a$10$tlYLetFOklaTpha1ya8E3uwaSu2JKQegqhOFCl6KGzMySfzEFfPSa", TOTPSecret: "EYFWRDBAMBCKXVWEFVF5WUHLGYP3YAI7", Active: true},
	{ID: 38, Username: "martin.dubois", Email: "martin.dubois@northwind.example", PasswordHash: "$2a$10$XGX8vUIbdX9PnMdJ3olse.XXXkkY42lAB/lOkO3rFzvk/0kTxHnku", TOTPSecret: "", Active: true},
	{ID: 41, Username: "zoe.orsted", Email: "zoe.orsted@northwind.example", PasswordHash: "$2a$10$Y.1LimC5lZ9929t9J8w/ieWxH8/AMpE6NxmUIBkPtoHWY7rLjkinO", TOTPSecret: "MNJGB6OJDA2YY5EHIRYP5O4RSJQKCVC7", Active: true},
	// E-mail of the old domain: matches by username only.
	{ID: 44, Username: "kenji.watanabe", Email: "k.watanabe@northwind-fab.example", PasswordHash: "$2a$10$qhIuRibN.pVjCnOC4qhbuuZHP6Cbo0tZ4LHDdDNHb6QicSrbRqLzK", TOTPSecret: "", Active: true},
	// No e-mail on the shop floor: matches by username only.
	{ID: 46, Username: "dmitri.volkov", Email: "", PasswordHash: "$2a$10$1gdKX4rhV1M/cd7lDg8n5u1KaORQFRlXZ46CbQJBo4RqW6.lD0.Te", TOTPSecret: "", Active: true},
	{ID: 49, Username: "lucas.moreau", Email: "lucas.moreau@northwind.example", PasswordHash: "$2a$10$kaKn8Gx97I0nBBcw3/MOJea6d2bejRTwIqpWEk9Nhj.7IFnl8eL/a", TOTPSecret: "24HL62EWXXTLRJCX4J5TCIKTALBQDBI3", Active: true},
	{ID: 52, Username: "sebnem.yilmaz", Email: "sebnem.yilmaz@northwind.example", PasswordHash: "$2a$10$3NzxikV3AINR1.AsovJpwO19/HeWSgooJdtRL1YTblso53NvNgMU.", TOTPSecret: "", Active: true},
	{ID: 53, Username: "aoife.obrien", Email: "aoife.obrien@northwind.example", PasswordHash: "$2a$10$UCQO7tmq2J9GlNBPd48CXe0GTI3UPnx8fqHKkA7nB7dU7dopJ2g7S", TOTPSecret: "", Active: true},
	{ID: 55, Username: "nina.kowalski", Email: "nina.kowalski@northwind.example", PasswordHash: "$2a$10$TBooBvg2MUMNJXS1xo7IIuyeDbfTJhtdGgOI7s2Wfpmlr1f3zW8gG", TOTPSecret: "", Active: true},
	{ID: 57, Username: "pedro.alvarez", Email: "pedro.alvarez@northwind.example", PasswordHash: "$2a$10$JCivqel5bIFriRrG.BkYFuJdPGxZoaY1su7rtqHw769rL6hPpd/G6", TOTPSecret: "", Active: true},
}

// LegacyUsers returns the rows SeedLegacyUsers writes, in id order.
func LegacyUsers() []LegacyUser {
	return append([]LegacyUser(nil), legacyUsers...)
}

// LegacyUsersDDL creates the demo application's users table, as the ERP
// created it long before passbridge.
const LegacyUsersDDL = `CREATE TABLE main.users (
	id            INTEGER PRIMARY KEY,
	username      TEXT UNIQUE,
	email         TEXT,
	password_hash TEXT, -- bcrypt
	totp_secret   TEXT, -- base32, NULL without two-factor login
	is_active     INTEGER
)`

// SeedLegacyUsers creates the demo application's users table in an SQLite
// database (modernc.org/sqlite, driver "sqlite") and fills it, unless a
// table named users exists already: then it changes nothing, so that a demo
// database that passbridge has synced and migrated keeps its state across
// restarts. The table and its rows are written in one transaction, so a
// failure leaves no half-seeded table; concurrent seeders serialise on
// SQLite's write lock (BEGIN IMMEDIATE).
//
// The rows match the people of configs/demo.ldif the way real data does:
//   - most by both username (uid) and email (mail);
//   - ava.chen and lena.fischer by email only up to letter case
//     ("Ava.Chen@Northwind.example", "LENA.FISCHER@NORTHWIND.EXAMPLE");
//   - tnowak (Tomasz Nowak) by email only: the ERP username differs;
//   - kenji.watanabe (an e-mail of the old northwind-fab.example domain) and
//     dmitri.volkov (email NULL) by username only;
//   - oliver.grant is active here although his directory account is locked.
//
// Three people of the directory have no row: priya.nair, sofia.lindqvist
// (both joined in 2025) and carlos.mendes (service desk, never used the
// ERP). One row matches nobody in the directory: rbaxter, a former
// contractor (is_active 0).
func SeedLegacyUsers(ctx context.Context, db *sql.DB) error {
	conn, err := db.Conn(ctx)
	if err != nil {
		return fmt.Errorf("seed legacy users: %w", err)
	}
	defer conn.Close()
	// BEGIN IMMEDIATE takes the write lock now: a second seeder waits here
	// (busy_timeout) instead of failing later on the CREATE TABLE.
	if _, err := conn.ExecContext(ctx, "BEGIN IMMEDIATE"); err != nil {
		return fmt.Errorf("seed legacy users: begin: %w", err)
	}
	done := false
	defer func() {
		if !done {
			// The context may be what failed; the rollback must still run.
			_, _ = conn.ExecContext(context.WithoutCancel(ctx), "ROLLBACK")
		}
	}()

	var exists int
	if err := conn.QueryRowContext(ctx,
		"SELECT count(*) FROM main.sqlite_master WHERE type = 'table' AND name = 'users'").Scan(&exists); err != nil {
		return fmt.Errorf("seed legacy users: look for the users table: %w", err)
	}
	if exists > 0 {
		return nil // the deferred ROLLBACK ends the empty transaction
	}
	if _, err := conn.ExecContext(ctx, LegacyUsersDDL); err != nil {
		return fmt.Errorf("seed legacy users: create table: %w", err)
	}
	stmt, err := conn.PrepareContext(ctx,
		"INSERT INTO main.users (id, username, email, password_hash, totp_secret, is_active) VALUES (?, ?, ?, ?, ?, ?)")
	if err != nil {
		return fmt.Errorf("seed legacy users: %w", err)
	}
	defer stmt.Close()
	for _, u := range legacyUsers {
		active := 0
		if u.Active {
			active = 1
		}
		if _, err := stmt.ExecContext(ctx, u.ID, u.Username, nullIfEmpty(u.Email), u.PasswordHash,
			nullIfEmpty(u.TOTPSecret), active); err != nil {
			return fmt.Errorf("seed legacy users: insert %s: %w", u.Username, err)
		}
	}
	if _, err := conn.ExecContext(ctx, "COMMIT"); err != nil {
		return fmt.Errorf("seed legacy users: commit: %w", err)
	}
	done = true
	return nil
}

func nullIfEmpty(s string) any {
	if s == "" {
		return nil
	}
	return s
}
