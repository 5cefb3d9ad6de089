package dirsync

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/passbridge/passbridge/directory"
)

// pipe runs the diff in a goroutine of its own: the directory's reader
// hands it what it reads, in order, and goes on reading (and decoding)
// the next page while the diff looks the previous one up in the database,
// so that a full read takes about the longer of the two, not their sum.
// At most pipeDepth pages wait between them: when the diff is slower, the
// reader waits (and the directory with it), memory stays a few pages.
type pipe struct {
	p    *planner
	ops  chan pipeOp
	done chan struct{}
	// err is the diff's first error; after it, what comes is dropped and
	// the reader is told (its next hand-over fails with it).
	err atomic.Pointer[error]
	// waited is how long the reader waited for the diff, pages how many
	// pages it handed over (the reader's goroutine only).
	waited time.Duration
	pages  int
	// spare holds the arrays of pages the diff is done with, for the
	// next copies (the diff keeps nothing of a page's array).
	spare chan []directory.Identity
}

type pipeOp struct {
	ctx    context.Context
	kind   uint8
	page   []directory.Identity
	ids    []string
	reason string
	dn     string
	err    error
}

const (
	opUpsert uint8 = iota
	opPresent
	opGone
	opInvalid
)

// pipeDepth is how many hand-overs (pages) may wait for the diff.
const pipeDepth = 2

func newPipe(p *planner) *pipe {
	q := &pipe{p: p, ops: make(chan pipeOp, pipeDepth), done: make(chan struct{}), spare: make(chan []directory.Identity, pipeDepth+2)}
	go q.run()
	return q
}

func (q *pipe) run() {
	defer close(q.done)
	for op := range q.ops {
		if q.err.Load() != nil {
			continue // failed: drain what is still sent
		}
		if err := q.apply(op); err != nil {
			q.err.Store(&err)
		}
	}
}

func (q *pipe) apply(op pipeOp) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("the diff failed: %v", r)
		}
	}()
	switch op.kind {
	case opUpsert:
		err := q.p.Upsert(op.ctx, op.page)
		clear(op.page)
		select {
		case q.spare <- op.page[:0]:
		default:
		}
		return err
	case opPresent:
		return q.p.Present(op.ctx, op.ids)
	case opGone:
		return q.p.Gone(op.ctx, op.ids, op.reason)
	default:
		q.p.Invalid(op.dn, op.err)
		return nil
	}
}

func (q *pipe) send(op pipeOp) error {
	if err := q.err.Load(); err != nil {
		return *err
	}
	t0 := time.Now()
	select {
	case q.ops <- op:
	case <-op.ctx.Done():
		return op.ctx.Err()
	}
	q.waited += time.Since(t0)
	return nil
}

// close waits until the diff has taken everything sent and returns its
// error.
func (q *pipe) close() error {
	close(q.ops)
	<-q.done
	if err := q.err.Load(); err != nil {
		return *err
	}
	return nil
}

// The reader's sink (directory.Sink). The reader reuses its slices: the
// pipe hands over copies.

func (q *pipe) Upsert(ctx context.Context, page []directory.Identity) error {
	var cp []directory.Identity
	select {
	case cp = <-q.spare:
	default:
	}
	if err := q.send(pipeOp{ctx: ctx, kind: opUpsert, page: append(cp, page...)}); err != nil {
		return err
	}
	q.pages++
	if hook := q.p.s.hookPage; hook != nil {
		// In the reader's goroutine, before it reads on: a test that
		// kills the directory here kills it mid-read.
		hook(q.pages)
	}
	return nil
}

func (q *pipe) Present(ctx context.Context, ids []string) error {
	return q.send(pipeOp{ctx: ctx, kind: opPresent, ids: append([]string(nil), ids...)})
}

func (q *pipe) Gone(ctx context.Context, ids []string, reason string) error {
	return q.send(pipeOp{ctx: context.WithoutCancel(ctx), kind: opGone, ids: append([]string(nil), ids...), reason: reason})
}

func (q *pipe) Invalid(dn string, err error) {
	_ = q.send(pipeOp{ctx: context.Background(), kind: opInvalid, dn: dn, err: err})
}
