package dirsync

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/passbridge/passbridge/schema"
)

// TestMatchIgnoresCase: users rows whose email or username differ from the
// directory's only in case link, on every engine; on MariaDB also when the
// column's collation is binary (case-sensitive), where only LOWER() finds
// them. On a case-insensitive collation (utf8mb4_general_ci, what most
// legacy MySQL applications have) the match asks for col IN (...), which
// the index migrate made serves: EXPLAIN says so.
func TestMatchIgnoresCase(t *testing.T) {
	f := fixtures(t)["openldap"](t)
	for _, c := range []struct{ driver, collation string }{{"sqlite", ""}, {"postgres", ""}, {"mysql", "utf8mb4_general_ci"}, {"mysql", "utf8mb4_bin"}} {
		t.Run(strings.TrimSuffix(c.driver+"/"+c.collation, "/"), func(t *testing.T) {
			dc, db := database(t, c.driver)
			ctx := context.Background()
			if c.collation != "" {
				if _, err := db.ExecContext(ctx, "ALTER TABLE users MODIFY email VARCHAR(320) COLLATE "+c.collation+", MODIFY username VARCHAR(255) COLLATE "+c.collation+" NOT NULL"); err != nil {
					t.Fatal(err)
				}
			}
			cfg := baseConfig(t, dc, f.Kind())
			ou := f.NewOU(t)
			f.Configure(cfg, ou)
			uniq := strings.TrimPrefix(strings.SplitN(ou, ",", 2)[0], "ou=")
			byMail := f.AddUser(t, ou, "casemail", map[string][]string{"mail": {"casemail." + uniq + "@corp.example"}})
			byName := f.AddUser(t, ou, "casename", map[string][]string{"mail": {"other." + uniq + "@corp.example"}})
			rowMail := addAppUser(t, db, "someone-else", "CaseMail."+strings.ToUpper(uniq)+"@Corp.Example")
			rowName := addAppUser(t, db, "CaseName", "")
			s, _ := newSyncer(t, cfg, db)
			run(t, s, RunOptions{})
			got := identities(t, s)
			if r := got[f.ID(t, byMail)]; r.LinkState != schema.LinkLinked || r.UserKey != itoa(rowMail) {
				t.Errorf("email in another case: %+v, want linked to row %d", r, rowMail)
			}
			if r := got[f.ID(t, byName)]; r.LinkState != schema.LinkLinked || r.UserKey != itoa(rowName) {
				t.Errorf("username in another case: %+v, want linked to row %d", r, rowName)
			}
			if c.driver != "mysql" {
				return
			}
			ci, err := s.caseInsensitive(ctx, s.n.UserEmail)
			if err != nil || ci != strings.HasSuffix(c.collation, "_ci") {
				t.Fatalf("caseInsensitive(email) = %v, %v with collation %q", ci, err, c.collation)
			}
			if ci {
				var plan []map[string]any
				rows, err := db.QueryxContext(ctx, "EXPLAIN SELECT id, email FROM users WHERE email IN (?, ?)", "a@x", "b@x")
				if err != nil {
					t.Fatal(err)
				}
				for rows.Next() {
					m := map[string]any{}
					if err := rows.MapScan(m); err != nil {
						t.Fatal(err)
					}
					plan = append(plan, m)
				}
				rows.Close()
				if k := fmt.Sprintf("%s", plan[0]["key"]); len(plan) != 1 || k == "" || k == "%!s(<nil>)" {
					t.Errorf("the match query is not served by an index: %v", plan)
				}
			}
		})
	}
}
