package dirsync

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/passbridge/passbridge/schema"
	"github.com/passbridge/passbridge/store"
)

// TestLinking: the match rules in order, case-insensitive, never guessing
// (two rows with one email; one row wanted by two identities), manual
// links kept, and a deleted users row unlinked then relinked.
func TestLinking(t *testing.T) {
	f := fixtures(t)["openldap"](t)
	dc, db := database(t, "sqlite")
	cfg := baseConfig(t, dc, f.Kind())
	ou := f.NewOU(t)
	f.Configure(cfg, ou)
	ctx := context.Background()
	mail := func(v string) map[string][]string { return map[string][]string{"mail": {v}} }

	ann := f.AddUser(t, ou, "ann", mail("Ann.Smith@corp.example"))
	carl := f.AddUser(t, ou, "carl", mail("carl@elsewhere.example"))
	dup := f.AddUser(t, ou, "dup", mail("dup@corp.example"))
	dora := f.AddUser(t, ou, "dora", mail("dora@corp.example"))
	sh1 := f.AddUser(t, ou, "shared1", mail("shared@corp.example"))
	sh2 := f.AddUser(t, ou, "shared2", mail("shared@corp.example"))
	nobody := f.AddUser(t, ou, "nobody", mail("nobody@corp.example"))

	annRow := addAppUser(t, db, "asmith", "ANN.SMITH@CORP.EXAMPLE")
	carlRow := addAppUser(t, db, "CARL", "carl@corp.example")
	addAppUser(t, db, "dup1", "dup@corp.example")
	addAppUser(t, db, "dup2", "DUP@corp.example")
	doraByEmail := addAppUser(t, db, "dora-mail", "dora@corp.example")
	doraManual := addAppUser(t, db, "dora-chosen", "")
	sharedRow := addAppUser(t, db, "shared", "shared@corp.example")

	s, _ := newSyncer(t, cfg, db)
	// Dora was linked by hand before the sync ever ran.
	run(t, s, RunOptions{DryRun: true})
	sum, _ := run(t, s, RunOptions{})
	setManual := func() {
		t.Helper()
		_, err := store.Exec(ctx, db, "UPDATE passbridge_identities SET user_key = ?, link_state = ?, link_detail = ? WHERE directory_id = ?",
			doraManual, schema.LinkManual, "linked by an administrator", f.ID(t, dora))
		if err != nil {
			t.Fatal(err)
		}
	}
	setManual()
	got := identities(t, s)
	check := func(dn string, state string, key int64) {
		t.Helper()
		r := got[f.ID(t, dn)]
		if r.LinkState != state || (key != 0 && r.UserKey != itoa(key)) || (key == 0 && r.UserKey != "") {
			t.Fatalf("%s: link %s %s (%s), want %s %d", dn, r.LinkState, r.UserKey, r.LinkDetail, state, key)
		}
	}
	check(ann, schema.LinkLinked, annRow)   // email, any case
	check(carl, schema.LinkLinked, carlRow) // email misses, username matches
	check(dup, schema.LinkAmbiguous, 0)     // two rows with one email: never guessed
	check(nobody, schema.LinkUnmatched, 0)
	if d := got[f.ID(t, dup)].LinkDetail; !strings.Contains(d, "2 users rows") {
		t.Fatalf("ambiguous detail %q", d)
	}
	// One row, two identities with its email: neither gets it (the
	// directory's order must not pick the winner), each names the other.
	for _, pair := range [][2]string{{sh1, sh2}, {sh2, sh1}} {
		r, other := got[f.ID(t, pair[0])], got[f.ID(t, pair[1])]
		if r.LinkState != schema.LinkAmbiguous || r.UserKey != "" || !strings.Contains(r.LinkDetail, "users row "+itoa(sharedRow)) ||
			!strings.Contains(r.LinkDetail, other.DirectoryID) {
			t.Fatalf("shared: %+v", r)
		}
	}
	if sum.Ambiguous < 2 || sum.Unmatched < 1 || len(sum.LinkIssues) == 0 {
		t.Fatalf("summary %+v", sum)
	}

	// The manual link survives every kind of sync, although dora's email
	// matches another row.
	for _, full := range []bool{false, true} {
		run(t, s, RunOptions{Full: full})
		got = identities(t, s)
		check(dora, schema.LinkManual, doraManual)
	}
	_ = doraByEmail

	// The application deletes Ann's row: the foreign key empties the link,
	// the sync says so; a new row with her email links again.
	if _, err := store.Exec(ctx, db, "DELETE FROM users WHERE id = ?", annRow); err != nil {
		t.Fatal(err)
	}
	_, changes := run(t, s, RunOptions{})
	if k := kindsOf(changes, f.ID(t, ann)); len(k) != 1 || k[0] != KindUnlink {
		t.Fatalf("after the row was deleted: %v", changes)
	}
	got = identities(t, s)
	check(ann, schema.LinkUnmatched, 0)
	annRow2 := addAppUser(t, db, "ann.smith", "ann.smith@corp.example")
	_, changes = run(t, s, RunOptions{})
	if k := kindsOf(changes, f.ID(t, ann)); len(k) != 1 || k[0] != KindLink {
		t.Fatalf("after a new row: %v", changes)
	}
	got = identities(t, s)
	check(ann, schema.LinkLinked, annRow2)
	// One dup row goes away: the other is now the only match.
	if _, err := store.Exec(ctx, db, "DELETE FROM users WHERE username = ?", "dup2"); err != nil {
		t.Fatal(err)
	}
	run(t, s, RunOptions{})
	got = identities(t, s)
	if got[f.ID(t, dup)].LinkState != schema.LinkLinked {
		t.Fatalf("dup after its twin row went away: %+v", got[f.ID(t, dup)])
	}
}

// TestProvision: provision: create inserts a users row for an unmatched
// active identity, filling only the configured columns, and links it; a
// row the table refuses leaves that identity unmatched and the run goes on.
func TestProvision(t *testing.T) {
	f := fixtures(t)["openldap"](t)
	for _, driver := range []string{"sqlite", "postgres", "mysql"} {
		t.Run(driver, func(t *testing.T) {
			dc, db := database(t, driver)
			cfg := baseConfig(t, dc, f.Kind())
			ou := f.NewOU(t)
			f.Configure(cfg, ou)
			cfg.Directory.Provision = "create"
			ctx := context.Background()
			lea := f.AddUser(t, ou, "lea", map[string][]string{"displayName": {"Léa Müller"}})
			off := f.AddUser(t, ou, "off", nil)
			f.Disable(t, off)
			existing := addAppUser(t, db, "max", "")
			mx := f.AddUser(t, ou, "max", nil)
			s, _ := newSyncer(t, cfg, db)
			sum, changes := run(t, s, RunOptions{})
			if c := countKinds(changes); c[KindProvision] != 1 || c[KindCreate] != 3 || sum.Applied != len(changes) {
				t.Fatalf("changes %v summary %+v", changes, sum)
			}
			got := identities(t, s)
			l := got[f.ID(t, lea)]
			if l.LinkState != schema.LinkCreated || l.UserKey == "" {
				t.Fatalf("lea: %+v", l)
			}
			var u struct {
				Username    string  `db:"username"`
				Email       *string `db:"email"`
				DisplayName *string `db:"display_name"`
				Password    *string `db:"password_hash"`
				Active      bool    `db:"is_active"`
			}
			if err := store.Get(ctx, db, &u, "SELECT username, email, display_name, password_hash, is_active FROM users WHERE id = ?", l.UserKey); err != nil {
				t.Fatal(err)
			}
			if u.Username != "lea" || u.Email == nil || *u.Email != "lea@corp.example" || u.DisplayName == nil || *u.DisplayName != "Léa Müller" || u.Password != nil || !u.Active {
				t.Fatalf("provisioned row %+v", u)
			}
			if o := got[f.ID(t, off)]; o.LinkState != schema.LinkUnmatched {
				t.Fatalf("a disabled identity gets no row: %+v", o)
			}
			if m := got[f.ID(t, mx)]; m.LinkState != schema.LinkLinked || m.UserKey != itoa(existing) {
				t.Fatalf("max matches an existing row: %+v", m)
			}
			// Enabled later: provisioned then.
			f.Enable(t, off)
			_, changes = run(t, s, RunOptions{})
			if c := countKinds(changes); c[KindProvision] != 1 || c[KindEnable] != 1 {
				t.Fatalf("after enable: %v", changes)
			}
			if identities(t, s)[f.ID(t, off)].LinkState != schema.LinkCreated {
				t.Fatal("off was not provisioned once enabled")
			}
		})
	}
}

func TestProvisionRefusedRow(t *testing.T) {
	f := fixtures(t)["openldap"](t)
	dc, db := database(t, "postgres")
	ctx := context.Background()
	// The application's table has a NOT NULL column passbridge knows
	// nothing about.
	if _, err := db.ExecContext(ctx, `CREATE TABLE accounts (id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, login TEXT NOT NULL UNIQUE, mail TEXT, pw TEXT, tenant TEXT NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	if _, err := db.ExecContext(ctx, `INSERT INTO accounts (login, mail, tenant) VALUES ('taken', NULL, 't1')`); err != nil {
		t.Fatal(err)
	}
	cfg := baseConfig(t, dc, f.Kind())
	cfg.UsersTable.Name, cfg.UsersTable.Username, cfg.UsersTable.Email = "accounts", "login", "mail"
	cfg.UsersTable.DisplayName, cfg.UsersTable.Password, cfg.UsersTable.Active = "", "pw", ""
	cfg.Directory.Match = []string{"email"}
	cfg.Directory.Provision = "create"
	ou := f.NewOU(t)
	f.Configure(cfg, ou)
	for i := range 3 {
		f.AddUser(t, ou, fmt.Sprintf("p%d", i), nil)
	}
	s, log := newSyncer(t, cfg, db)
	sum, _ := run(t, s, RunOptions{})
	if sum.Status != StatusSucceeded || sum.ProvisionFailed != 3 || sum.Changes[KindCreate] != 3 {
		t.Fatalf("summary %+v", sum)
	}
	for _, r := range identities(t, s) {
		if r.LinkState != schema.LinkUnmatched || !strings.Contains(r.LinkDetail, "tenant") {
			t.Fatalf("identity %+v: want unmatched with the reason", r)
		}
	}
	if !strings.Contains(log.String(), "could not create a users row") {
		t.Fatal("the failure was not logged")
	}
}
