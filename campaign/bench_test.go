package campaign_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/passbridge/passbridge/campaign"
	"github.com/passbridge/passbridge/config"
	"github.com/passbridge/passbridge/schema"
	"github.com/passbridge/passbridge/store"
)

// BenchmarkSend10000 sends a campaign's invitations to 10,000 people on
// PostgreSQL through the real sender: the portal's links, go-mail over
// STARTTLS with AUTH (one connection per mail, as in production) to the
// in-process SMTP server, at campaign.per_minute 60000 (so the bound is
// 1,000 a second). It reports the invitations per second and the time for
// all of them. Run it with -benchtime=1x:
//
//	PASSBRIDGE_TEST_REQUIRE_SERVERS=1 go test -run '^$' -bench Send -benchtime=1x ./campaign/
func BenchmarkSend10000(b *testing.B) { benchSend(b, 10000, 60000) }

// BenchmarkSendBounded is the same with campaign.per_minute 3000 (50 a
// second) for 500 people: the rate the sender keeps to.
func BenchmarkSendBounded(b *testing.B) { benchSend(b, 500, 3000) }

func benchSend(b *testing.B, people, perMinute int) {
	e := newEnv(b, "postgres", func(c *config.Config) {
		c.Campaign.PerMinute = perMinute
		c.Log.Level = "warn"
	})
	ou := "ou=bench," + e.ou
	seedPeople(b, e, ou, people)
	eng := e.engine(engineOptions{node: "bench"})
	b.ResetTimer()
	for i := range b.N {
		c := e.create(campaign.Spec{Name: fmt.Sprintf("bench-%d", i), Target: campaign.Target{Kind: campaign.TargetOU, DN: ou}})
		start := time.Now()
		st, err := eng.Pass(context.Background())
		if err != nil {
			b.Fatal(err)
		}
		took := time.Since(start)
		if st.Sent != people {
			b.Fatalf("%+v: want %d sent", st, people)
		}
		if f := e.funnel(c); f.Delivered != people {
			b.Fatalf("funnel %+v", f)
		}
		b.ReportMetric(float64(people)/took.Seconds(), "invitations/s")
		b.ReportMetric(took.Seconds(), "s_total")
	}
}

// seedPeople writes n linked, active identities under ou with their users
// rows, as a sync of them would (the campaign reads only these tables).
func seedPeople(b *testing.B, e *env, ou string, n int) {
	b.Helper()
	ctx := context.Background()
	names := schema.NamesFor(e.cfg)
	d := e.db.Dialect()
	q := d.Quote
	now := time.Now().UTC().Truncate(time.Microsecond)
	err := e.db.InTx(ctx, func(tx *sqlx.Tx) error {
		for i := range n {
			name := fmt.Sprintf("bench%05d", i)
			key, err := d.InsertID(ctx, tx, "INSERT INTO "+d.Table("", "users")+" ("+q("username")+", "+q("email")+") VALUES (?, ?)", "id", name, name+"@corp.example")
			if err != nil {
				return err
			}
			if _, err := store.Exec(ctx, tx, "INSERT INTO "+names.Identities+" ("+q("directory_id")+", "+q("dn")+", "+q("username")+", "+q("email")+", "+q("display_name")+", "+
				q("state")+", "+q("user_key")+", "+q("link_state")+", "+q("first_seen_at")+", "+q("last_seen_at")+", "+q("updated_at")+") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
				fmt.Sprintf("bench-%05d", i), "uid="+name+","+ou, name, name+"@corp.example", "Bench "+name, schema.StateActive, key, schema.LinkLinked, now, now, now); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		b.Fatalf("seed: %v", err)
	}
}
