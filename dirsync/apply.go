package dirsync

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/passbridge/passbridge/directory"
	"github.com/passbridge/passbridge/schema"
	"github.com/passbridge/passbridge/store"
)

// applier runs a plan's changes in a transaction.
type applier struct {
	s *Syncer
	// keys are the users keys created by provision changes, by directory
	// ID; failed are the identities whose row could not be created.
	keys   map[string]any
	failed map[string]bool
}

// apply runs the plan in batches of BatchSize changes, one transaction
// each. The cursor is saved in the transaction of the last batch (alone
// when the plan is empty): a run that fails midway leaves it where it was,
// so the next run reads the same changes again and the diff, computed
// against what was committed, resumes where this one stopped.
func (s *Syncer) apply(ctx context.Context, p *plan, cursor, prev *directory.Cursor, runID int64) (applied, provisionFailed int, err error) {
	return s.applyFrom(ctx, cursor, prev, runID, p.each)
}

// applyFrom applies the changes feed hands to its function, in order, as
// they come (applyStream). A feed that fails, or that the database's error
// stopped, applies no last batch: the cursor is not saved.
func (s *Syncer) applyFrom(ctx context.Context, cursor, prev *directory.Cursor, runID int64, feed func(add func(Change) error) error) (applied, provisionFailed int, err error) {
	st := s.startApply(ctx, cursor, prev, runID)
	if err := feed(st.add); err != nil {
		st.abort()
		if st.err != nil {
			err = st.err // the database's error, which stopped the feed
		}
		return st.applied, len(st.a.failed), err
	}
	return st.finish()
}

// applyStream applies changes as they are handed to it, in the batches
// apply makes (BatchSize changes, one transaction each, the cursor with
// the last), in goroutines of their own: the changes still being read back
// from the plan, or still being planned (claims.resolve, see Run), are
// made on one core while the database writes the previous batch on the
// other. At most applyDepth batches wait; a failed batch stops the
// stream, and handing over the next batch returns its error.
//
// On a database server, up to Syncer.Writers batches of nothing but
// creates are written at once, each on a connection of its own: one
// backend writing a first sync's rows (their indexes, the foreign key's
// check of each users row) is the run's critical path, and a second one
// uses the core the planning leaves idle. Creates are new identities,
// which nothing else in the run refers to, so their batches commute. Any
// other batch (updates, provisions and the links that use their keys,
// deletions) waits until every batch before it has committed and is
// written alone, and so is the last batch, with the cursor: the cursor is
// saved only once every change before it is. A failed batch lets those
// already being written finish (they are committed, as the batches before
// a failed one always were: the next run resumes from what is committed).
type applyStream struct {
	s            *Syncer
	a            *applier
	ctx          context.Context
	cursor, prev *directory.Cursor
	runID        int64
	size         int
	writers      int

	// batch is the batch being filled (the producer's goroutine). A full
	// batch is sent when the next change comes: only finish knows which
	// batch is the last, the one that saves the cursor.
	batch []Change
	work  chan applyBatch
	done  chan struct{}
	// spare holds the arrays of written batches for the next ones (a
	// first sync's thousand batches of 1,000 changes were as many
	// allocations of a few hundred kilobytes).
	spare chan []Change

	// mu guards what the writers share; err is the first batch's error
	// and applied the count, read after done.
	mu      sync.Mutex
	err     error
	applied int
	// busy is how many batches are being written, since busySince: the
	// run's database time counts the time any batch was being written,
	// not the sum of concurrent ones.
	busy      int
	busySince time.Time
}

type applyBatch struct {
	changes []Change
	last    bool
}

// applyDepth is how many batches may wait for the database.
const applyDepth = 2

// defaultWriters is how many create batches a run writes at once on a
// database server (Syncer.Writers). SQLite has one writer.
const defaultWriters = 2

func (s *Syncer) startApply(ctx context.Context, cursor, prev *directory.Cursor, runID int64) *applyStream {
	size := s.batchSize() // as the plan grouped its creates
	st := &applyStream{s: s, a: &applier{s: s, keys: map[string]any{}, failed: map[string]bool{}}, ctx: ctx,
		cursor: cursor, prev: prev, runID: runID, size: size, writers: s.writers(),
		batch: make([]Change, 0, size), work: make(chan applyBatch, applyDepth), done: make(chan struct{}),
		spare: make(chan []Change, applyDepth+s.writers()+1)}
	go st.loop()
	return st
}

// writers is Writers (defaultWriters when not set), 1 on SQLite.
func (s *Syncer) writers() int {
	switch {
	case s.n.Dialect.Kind() == store.SQLite:
		return 1
	case s.Writers > 0:
		return s.Writers
	}
	return defaultWriters
}

// loop hands the batches to the writers, in order: creates to the next
// free writer, anything else once every batch before it has committed.
func (st *applyStream) loop() {
	defer close(st.done)
	var wg sync.WaitGroup
	defer wg.Wait()
	free := make(chan struct{}, st.writers)
	for range st.writers {
		free <- struct{}{}
	}
	batches := 0
	for b := range st.work {
		batches++
		if st.writers > 1 && !b.last && onlyCreates(b.changes) {
			<-free
			if st.failed() {
				return
			}
			wg.Add(1)
			go func(n int, b applyBatch) {
				defer func() { wg.Done(); free <- struct{}{} }()
				st.write(n, b)
			}(batches, b)
			continue
		}
		wg.Wait()
		if st.failed() {
			return
		}
		if st.write(batches, b); st.failed() {
			return // done closes: the next send returns st.err
		}
	}
}

// onlyCreates tells whether a batch is nothing but creates.
func onlyCreates(batch []Change) bool {
	for _, c := range batch {
		if c.Kind != KindCreate {
			return false
		}
	}
	return true
}

func (st *applyStream) failed() bool {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.err != nil
}

// write applies one batch and records its count or, the first, its error.
func (st *applyStream) write(n int, b applyBatch) {
	st.mu.Lock()
	if st.busy++; st.busy == 1 {
		st.busySince = time.Now()
	}
	st.mu.Unlock()
	applied, err := st.run(n, b)
	clear(b.changes)
	select {
	case st.spare <- b.changes[:0]:
	default:
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.busy--; st.busy == 0 {
		st.s.addDBTime(time.Since(st.busySince))
	}
	st.applied += applied
	if err != nil && st.err == nil {
		st.err = err
	}
}

// run applies one batch in its transaction.
func (st *applyStream) run(n int, b applyBatch) (applied int, err error) {
	s := st.s
	defer func() {
		if r := recover(); r != nil {
			applied, err = 0, fmt.Errorf("apply batch %d: %v", n, r)
		}
	}()
	if s.hookBatch != nil {
		if err := s.hookBatch(n); err != nil {
			return 0, err
		}
	}
	err = s.db.InBulkTx(st.ctx, func(tx *sqlx.Tx) error {
		var err error
		if applied, err = st.a.run(st.ctx, tx, b.changes); err != nil {
			return err
		}
		if b.last {
			return s.saveCursor(st.ctx, tx, st.cursor, st.runID)
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	return applied, nil
}

// add takes the next change.
func (st *applyStream) add(c Change) error {
	if h := st.s.hookApply; h != nil {
		h(c)
	}
	if len(st.batch) == st.size {
		if err := st.send(applyBatch{changes: st.batch}); err != nil {
			return err
		}
		select {
		case st.batch = <-st.spare:
		default:
			st.batch = make([]Change, 0, st.size)
		}
	}
	st.batch = append(st.batch, c)
	return nil
}

func (st *applyStream) send(b applyBatch) error {
	select {
	case st.work <- b:
		return nil
	case <-st.done:
		return st.err
	case <-st.ctx.Done():
		return st.ctx.Err()
	}
}

// finish applies the last batch, with the cursor (alone when there is no
// change and the cursor moved), and waits for the database.
func (st *applyStream) finish() (applied, provisionFailed int, err error) {
	if len(st.batch) > 0 || cursorChanged(st.prev, st.cursor) {
		err = st.send(applyBatch{changes: st.batch, last: true})
	}
	close(st.work)
	<-st.done
	if st.err != nil {
		err = st.err
	}
	return st.applied, len(st.a.failed), err
}

// abort stops the stream without its last batch (the cursor is not
// saved) and waits for the batch the database is writing.
func (st *applyStream) abort() {
	close(st.work)
	<-st.done
}

func cursorChanged(prev, cur *directory.Cursor) bool {
	if prev == nil || cur == nil {
		return cur != nil
	}
	a, _ := json.Marshal(prev)
	b, _ := json.Marshal(cur)
	return string(a) != string(b)
}

// run executes one batch: each change's SQL, and for a group of creates
// the one multi-row INSERT the plan made for it (plan.addRow), with the
// group's arguments in order.
func (a *applier) run(ctx context.Context, tx *sqlx.Tx, batch []Change) (int, error) {
	applied := 0
	stmts := map[string]*sqlx.Stmt{}
	defer func() {
		for _, st := range stmts {
			st.Close()
		}
	}()
	for i := 0; i < len(batch); {
		c := batch[i]
		if c.Kind == KindCreate {
			if c.stmtRows < 1 || i+c.stmtRows > len(batch) {
				// The plan groups creates within a batch; anything else
				// is a bug, never a reason to write something unplanned.
				return applied, fmt.Errorf("create %s: the plan's statement for it is missing or spans two transactions", c.Username)
			}
			end := i + c.stmtRows
			if a.s.n.Dialect.Kind() == store.Postgres {
				// The groups that follow in this batch too: one COPY.
				for end < len(batch) && batch[end].Kind == KindCreate && batch[end].stmtRows > 0 && end+batch[end].stmtRows <= len(batch) {
					end += batch[end].stmtRows
				}
			}
			rows := batch[i:end]
			if err := a.insertRows(ctx, tx, rows); err != nil {
				return applied, err
			}
			applied += len(rows)
			i += len(rows)
			continue
		}
		i++
		if c.Kind == KindProvision {
			ok, err := a.provision(ctx, tx, c)
			if err != nil {
				return applied, err
			}
			if ok {
				applied++
			}
			continue
		}
		args := make([]any, len(c.Args))
		skip := false
		for k, v := range c.Args {
			if pk, ok := v.(ProvisionedKey); ok {
				key, found := a.keys[pk.DirectoryID]
				if !found {
					skip = true // its provision failed
					break
				}
				v = key
			}
			args[k] = v
		}
		if skip {
			continue
		}
		st, ok := stmts[c.SQL]
		if !ok {
			var err error
			st, err = tx.PreparexContext(ctx, tx.Rebind(c.SQL))
			if err != nil {
				return applied, fmt.Errorf("%s %s: prepare: %w", c.Kind, c.Username, err)
			}
			stmts[c.SQL] = st
		}
		res, err := st.ExecContext(ctx, args...)
		if err != nil {
			return applied, fmt.Errorf("%s %s: %w", c.Kind, c.Username, err)
		}
		if n, err := res.RowsAffected(); err == nil && n == 0 {
			// Its guard did not hold any more: an administrator linked it
			// by hand meanwhile, say.
			a.s.log.Info("change skipped: the row changed since it was planned", "kind", c.Kind, "user", c.Username)
			continue
		}
		applied++
	}
	return applied, nil
}

// insertRows writes creates, whole groups of them (see plan.addRow): on PostgreSQL with COPY (the rows of one or
// more consecutive groups: the same columns and values as their INSERTs,
// streamed), elsewhere as the group's planned multi-row INSERT, prepared
// once per run on SQLite (store's statement cache: a statement of 16,000
// parameters took longer to parse than to run).
func (a *applier) insertRows(ctx context.Context, tx *sqlx.Tx, rows []Change) error {
	var err error
	if a.s.n.Dialect.Kind() == store.Postgres {
		values := make([][]any, len(rows))
		for i, r := range rows {
			values[i] = r.Args
		}
		var copied bool
		if copied, err = store.CopyFrom(ctx, tx, a.s.n.Schema, a.s.n.Prefix+"identities", createColumns, values); copied || err != nil {
			return createError(rows, err)
		}
	}
	for len(rows) > 0 {
		group := rows[:rows[0].stmtRows]
		args := make([]any, 0, len(group)*len(group[0].Args))
		for _, r := range group {
			args = append(args, r.Args...)
		}
		if _, err := store.Exec(ctx, tx, group[0].groupSQL(), args...); err != nil {
			return createError(group, err)
		}
		rows = rows[len(group):]
	}
	return nil
}

// createError names the creates a failed write held.
func createError(rows []Change, err error) error {
	switch {
	case err == nil:
		return nil
	case len(rows) == 1:
		return fmt.Errorf("create %s: %w", rows[0].Username, err)
	}
	return fmt.Errorf("create %d identities (%s ... %s): %w", len(rows), rows[0].Username, rows[len(rows)-1].Username, err)
}

// provision inserts a users row inside a savepoint: a row the table
// refuses (a NOT NULL column passbridge does not fill, a duplicate
// username) is rolled back to the savepoint and the change's planned
// OnFail runs instead (the identity stays unmatched, with the reason), and
// the rest of the run goes on.
func (a *applier) provision(ctx context.Context, tx *sqlx.Tx, c Change) (bool, error) {
	d := a.s.n.Dialect
	if _, err := tx.ExecContext(ctx, "SAVEPOINT pb_provision"); err != nil {
		return false, fmt.Errorf("provision %s: savepoint: %w", c.Username, err)
	}
	var key any
	var err error
	if d.Kind() == store.MySQL {
		var id int64
		res, e := tx.ExecContext(ctx, c.SQL, c.Args...)
		if err = e; err == nil {
			id, err = res.LastInsertId()
			if err == nil && id == 0 {
				err = fmt.Errorf("the users table gave no AUTO_INCREMENT key for the new row: provisioning needs an auto-increment key on MySQL")
			}
			key = id
		}
	} else {
		err = tx.QueryRowxContext(ctx, tx.Rebind(c.SQL), c.Args...).Scan(&key)
	}
	if err != nil {
		if _, rbErr := tx.ExecContext(ctx, "ROLLBACK TO SAVEPOINT pb_provision"); rbErr != nil {
			return false, fmt.Errorf("provision %s: %w (and roll back to savepoint: %v)", c.Username, err, rbErr)
		}
		a.failed[c.DirectoryID] = true
		a.s.log.Warn("provision: could not create a users row; the identity stays unmatched", "user", c.Username, "err", err)
		if c.OnFail == nil {
			return false, fmt.Errorf("provision %s: %w (and the plan says nothing to do when it fails)", c.Username, err)
		}
		detail := directory.Clip("provision: create failed: "+err.Error(), 2000)
		args := make([]any, len(c.OnFail.Args))
		for k, v := range c.OnFail.Args {
			if _, ok := v.(ProvisionFailure); ok {
				v = detail
			}
			args[k] = v
		}
		if _, err := tx.ExecContext(ctx, tx.Rebind(c.OnFail.SQL), args...); err != nil {
			return false, fmt.Errorf("provision %s: record the failure: %w", c.Username, err)
		}
		return false, nil
	}
	if _, err := tx.ExecContext(ctx, "RELEASE SAVEPOINT pb_provision"); err != nil {
		return false, fmt.Errorf("provision %s: release savepoint: %w", c.Username, err)
	}
	a.keys[c.DirectoryID] = schema.NormKey(key)
	return true, nil
}

// saveCursor stores the delta cursor (inside the last batch's transaction).
func (s *Syncer) saveCursor(ctx context.Context, tx *sqlx.Tx, c *directory.Cursor, runID int64) error {
	if c == nil {
		return nil
	}
	body, err := json.Marshal(c)
	if err != nil {
		return fmt.Errorf("encode the delta cursor: %w", err)
	}
	q, err := s.n.Dialect.Upsert(s.n.SyncState, []string{"name", "cursor", "run_id", "updated_at"}, []string{"name"}, []string{"cursor", "run_id", "updated_at"})
	if err != nil {
		return err
	}
	if _, err := store.Exec(ctx, tx, q, cursorName, string(body), runID, s.now().UTC()); err != nil {
		return fmt.Errorf("save the delta cursor: %w", err)
	}
	return nil
}
