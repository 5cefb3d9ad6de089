package migrate

import (
	"context"
	"strings"
	"testing"

	"github.com/passbridge/passbridge/schema"
)

// TestAddedColumnOnAnExistingInstall: a column added to a passbridge table
// after its release (schema.AddedColumns) is a step of its own at the end
// of the plan; the table's CREATE TABLE does not change, so an install
// made before (every step applied but that one) sees no drift, one
// pending step, and gets the column from apply; then rollback and apply
// again, as every step (forward, back, forward).
func TestAddedColumnOnAnExistingInstall(t *testing.T) {
	for _, name := range []string{"django", "wordpress", "gitea"} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			f := fixtureNamed(t, name)
			cfg, db := load(t, f)
			n := schema.NamesFor(cfg)
			p, err := NewPlan(ctx, db, cfg)
			if err != nil {
				t.Fatal(err)
			}
			var added []StepStatus
			for i, s := range p.Steps {
				if s.Kind == "create-table" {
					for _, c := range schema.AddedColumns {
						if s.Object == cfg.Migrate.Prefix+c.Table && strings.Contains(strings.Join(s.SQL, "\n"), c.Column.Name) {
							t.Fatalf("%s creates %s: existing installs would see its checksum drift", s.ID, c.Column.Name)
						}
					}
				}
				if s.Kind == "add-table-column" && i >= len(p.Steps)-len(schema.AddedColumns) {
					added = append(added, s)
				}
			}
			if len(added) != len(schema.AddedColumns) || len(added) == 0 {
				t.Fatalf("the plan ends with %d add-column steps of passbridge's tables, want %d", len(added), len(schema.AddedColumns))
			}
			if _, err := Apply(ctx, db, cfg, Options{chunk: testChunk}); err != nil {
				t.Fatal(err)
			}

			// The install as it was before: the added columns not there,
			// their steps not recorded.
			for _, c := range schema.AddedColumns {
				mustExec(t, db, "ALTER TABLE "+n.Table(c.Table)+" DROP COLUMN "+n.Column(c.Column.Name))
				mustExec(t, db, "DELETE FROM "+n.History+" WHERE step_id = ?", "add-column "+cfg.Migrate.Prefix+c.Table+"."+c.Column.Name)
			}
			st, err := Status(ctx, db, cfg)
			if err != nil {
				t.Fatal(err)
			}
			if len(st.Drift()) != 0 || len(st.Unknown) != 0 {
				t.Fatalf("an install without the added columns: drift %v, unknown %v", st.Drift(), st.Unknown)
			}
			pending := st.Pending()
			if len(pending) != len(added) || pending[0].ID() != added[0].ID {
				var ids []string
				for _, s := range pending {
					ids = append(ids, s.ID())
				}
				t.Fatalf("pending on an install without the added columns: %v, want %s", ids, added[0].ID)
			}
			rep, err := Apply(ctx, db, cfg, Options{chunk: testChunk})
			if err != nil {
				t.Fatal(err)
			}
			if a := actions(rep); a[ActionApplied] != len(added) {
				t.Fatalf("apply on the old install: %v", a)
			}
			probe := func() error {
				_, err := db.ExecContext(ctx, "UPDATE "+n.Identities+" SET "+n.Column(schema.AddedColumns[0].Column.Name)+" = NULL WHERE 1 = 0")
				return err
			}
			if err := probe(); err != nil {
				t.Fatalf("the added column after apply: %v", err)
			}
			if st, err := Status(ctx, db, cfg); err != nil || len(st.Pending()) != 0 || len(st.Drift()) != 0 {
				t.Fatalf("status after apply: %v pending, %v drift, %v", len(st.Pending()), st.Drift(), err)
			}

			// Back and forward again.
			if _, err := Rollback(ctx, db, cfg, Options{Force: true}); err != nil {
				t.Fatal(err)
			}
			if probe() == nil {
				t.Fatal("the added column is still there after rollback")
			}
			rep, err = Apply(ctx, db, cfg, Options{chunk: testChunk})
			if err != nil {
				t.Fatal(err)
			}
			if a := actions(rep); a[ActionApplied] != len(p.Steps) {
				t.Fatalf("apply after rollback: %v", a)
			}
			if err := probe(); err != nil {
				t.Fatalf("the added column after rollback and apply: %v", err)
			}
		})
	}
}
