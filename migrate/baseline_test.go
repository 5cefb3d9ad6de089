package migrate

import (
	"context"
	"fmt"
	"strconv"
	"testing"

	"github.com/passbridge/passbridge/schema"
)

// TestBaselineChunksFollowKeyOrder: chunk boundaries follow the key's own
// order (numeric for integer keys, not text order, where "9" > "10"), every
// row is in exactly one chunk, and chunks tile the key space.
func TestBaselineChunksFollowKeyOrder(t *testing.T) {
	for _, name := range []string{"django", "wordpress", "gitea"} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			f := fixtureNamed(t, name)
			cfg, db := load(t, f)
			for i := 0; i < 25; i++ {
				addUser(t, f, cfg, db, fmt.Sprintf("bulk%02d", i))
			}
			total := len(readPasswords(t, db, cfg))
			if _, err := Apply(ctx, db, cfg, Options{chunk: 4}); err != nil {
				t.Fatal(err)
			}
			n := schema.NamesFor(cfg)
			rows, err := db.QueryContext(ctx, "SELECT chunk, first_key, last_key, row_count FROM "+n.Baseline+" ORDER BY chunk")
			if err != nil {
				t.Fatal(err)
			}
			defer rows.Close()
			prevLast, sum, chunks := int64(0), 0, 0
			for rows.Next() {
				var c, count int
				var first, last string
				if err := rows.Scan(&c, &first, &last, &count); err != nil {
					t.Fatal(err)
				}
				fi, _ := strconv.ParseInt(first, 10, 64)
				la, _ := strconv.ParseInt(last, 10, 64)
				if c != chunks || fi <= prevLast || la < fi || (count != 4 && sum+count != total) {
					t.Fatalf("chunk %d: keys %s..%s, %d rows (previous last %d)", c, first, last, count, prevLast)
				}
				prevLast, sum, chunks = la, sum+count, chunks+1
			}
			if sum != total || chunks != (total+3)/4 {
				t.Fatalf("%d rows in %d chunks, want %d rows", sum, chunks, total)
			}
			if v, err := Verify(ctx, db, cfg); err != nil || !v.OK {
				t.Fatalf("verify: %+v %v", v, err)
			}
		})
	}
}
