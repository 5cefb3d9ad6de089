package dirsync

import (
	"strings"
	"testing"
)

// TestPlanGroupsCreates: the plan, not the apply, decides which creates run
// as one multi-row INSERT: consecutive creates of one statement, never
// across another change, never across the end of a transaction (every
// batch changes), never over maxParams placeholders; the group's first
// create carries the exact statement, one row per create.
func TestPlanGroupsCreates(t *testing.T) {
	p, err := newPlan(4)
	if err != nil {
		t.Fatal(err)
	}
	defer p.close()
	const head, row = "INSERT INTO t (a, b) VALUES ", "(?, ?)"
	create := func(u string) {
		t.Helper()
		if err := p.addRow(Change{Kind: KindCreate, Username: u, SQL: head + row, Args: []any{u, int64(1)}}, head, row, 2); err != nil {
			t.Fatal(err)
		}
	}
	// 0..2 creates, 3 a link, 4..9 creates (a batch ends after 7), then
	// creates of another statement.
	for _, u := range []string{"a", "b", "c"} {
		create(u)
	}
	if err := p.add(Change{Kind: KindLink, Username: "c", SQL: "UPDATE t SET k = ?", Args: []any{int64(7)}}); err != nil {
		t.Fatal(err)
	}
	for _, u := range []string{"d", "e", "f", "g", "h", "i"} {
		create(u)
	}
	const head2 = "INSERT INTO u (a, b) VALUES "
	if err := p.addRow(Change{Kind: KindCreate, Username: "j", SQL: head2 + row, Args: []any{"j", int64(1)}}, head2, row, 2); err != nil {
		t.Fatal(err)
	}
	var got []string
	err = p.each(func(c Change) error {
		got = append(got, c.Username+":"+strings.Repeat("+", c.stmtRows))
		if c.stmtRows > 0 {
			h := head
			if c.Username == "j" {
				h = head2
			}
			if want := h + strings.TrimSuffix(strings.Repeat(row+", ", c.stmtRows), ", "); c.groupSQL() != want {
				t.Errorf("%s: statement %q, want %q", c.Username, c.groupSQL(), want)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	want := "a:+++ b: c: c: d:++++ e: f: g: h:++ i: j:+"
	if strings.Join(got, " ") != want {
		t.Fatalf("groups %q, want %q", strings.Join(got, " "), want)
	}
	if p.counts[KindCreate] != 10 || p.counts[KindLink] != 1 || p.n() != 11 {
		t.Fatalf("counts %v, n %d", p.counts, p.n())
	}
}
