package audit

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/passbridge/passbridge/config"
	"github.com/passbridge/passbridge/schema"
	"github.com/passbridge/passbridge/store"
)

// PruneBatch is the widest id range one DELETE of Prune covers: it removes
// at most this many rows, so that no statement holds the table for long.
const PruneBatch = 5000

// pruneBatch is PruneBatch (tests make it smaller).
var pruneBatch int64 = PruneBatch

// Prune deletes the events older than audit.retention before now and
// returns how many it deleted; it does nothing when the retention is 0
// (keep forever). It deletes in short statements, each over an id range of
// at most PruneBatch ids and each its own transaction, so that it never
// holds a long lock on the table the portal appends to. It stops between
// statements when ctx ends, returning what it deleted so far.
func Prune(ctx context.Context, db *store.DB, cfg *config.Config, now time.Time) (deleted int64, err error) {
	retention := cfg.Audit.Retention.D()
	if retention <= 0 {
		return 0, nil
	}
	n := schema.NamesFor(cfg)
	c := n.Column
	cutoff := now.UTC().Add(-retention)
	from := int64(0) // no older event has an id below from
	for {
		if err := ctx.Err(); err != nil {
			return deleted, err
		}
		var lo sql.NullInt64
		err := store.Get(ctx, db, &lo, "SELECT MIN("+c("id")+") FROM "+n.Audit+" WHERE "+c("at")+" < ? AND "+c("id")+" >= ?", cutoff, from)
		if err != nil {
			return deleted, fmt.Errorf("prune the audit trail (%s): %w", n.Audit, err)
		}
		if !lo.Valid {
			return deleted, nil
		}
		hi := lo.Int64 + pruneBatch
		res, err := store.Exec(ctx, db, "DELETE FROM "+n.Audit+" WHERE "+c("id")+" >= ? AND "+c("id")+" < ? AND "+c("at")+" < ?", lo.Int64, hi, cutoff)
		if err != nil {
			return deleted, fmt.Errorf("prune the audit trail (%s): %w", n.Audit, err)
		}
		k, err := res.RowsAffected()
		if err != nil {
			return deleted, fmt.Errorf("prune the audit trail (%s): %w", n.Audit, err)
		}
		deleted += k
		from = hi
	}
}
