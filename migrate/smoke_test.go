package migrate

import (
	"context"
	"os"
	"testing"
)

func TestSmoke(t *testing.T) {
	for _, name := range []string{"gitea", "django", "wordpress", "erp"} {
		t.Run(name, func(t *testing.T) {
			f := fixtureNamed(t, name)
			cfg, db := load(t, f)
			ctx := context.Background()
			p, err := NewPlan(ctx, db, cfg)
			if err != nil {
				t.Fatal(err)
			}
			p.WriteText(os.Stdout, cfg.Migrate.Prefix)
			rep, err := Apply(ctx, db, cfg, Options{Out: os.Stdout, chunk: 3})
			if err != nil {
				t.Fatal(err)
			}
			_ = rep
			v, err := Verify(ctx, db, cfg)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%+v %+v", v, v.Passwords)
		})
	}
}
