package migrate

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/passbridge/passbridge/config"
	"github.com/passbridge/passbridge/store"
)

// engineOf maps the store's dialect to an Engine.
func engineOf(db *store.DB) (Engine, error) {
	if db == nil {
		return "", errors.New("no database")
	}
	return engineFor(string(db.Dialect().Kind()))
}

// Inspect reads the existing users table from the catalog: columns and
// types, the primary key and its type, indexes, foreign keys (both ways)
// and the approximate row count. It checks that every configured column
// exists and that a foreign key can reference the key, and says what to fix
// when not.
func Inspect(ctx context.Context, db *store.DB, ut config.UsersTable) (*UsersTable, error) {
	eng, err := engineOf(db)
	if err != nil {
		return nil, err
	}
	return inspect(ctx, db.DB.DB, eng, ut)
}

// NewPlan inspects the users table and plans the whole change, each step
// with its state in the database. When a name passbridge needs is taken by
// an object of another shape, it returns the plan and a *CollisionError.
func NewPlan(ctx context.Context, db *store.DB, cfg *config.Config) (*Plan, error) {
	m, err := newMigrator(ctx, db, cfg, Options{})
	if err != nil {
		return nil, err
	}
	p, err := m.plan(ctx, m.db)
	if err != nil {
		return nil, err
	}
	return p, p.collisions(cfg.Migrate.Prefix)
}

// Apply plans and applies every pending step (see Options.DryRun). It is
// idempotent: run again after any failure or kill, it finishes the job.
func Apply(ctx context.Context, db *store.DB, cfg *config.Config, opts Options) (*Report, error) {
	m, err := newMigrator(ctx, db, cfg, opts)
	if err != nil {
		return nil, err
	}
	p, err := m.plan(ctx, m.db)
	if err != nil {
		return nil, err
	}
	// A collision stops everything before the first change.
	if err := p.collisions(cfg.Migrate.Prefix); err != nil {
		return nil, err
	}
	return m.apply(ctx)
}

// Status returns the plan with each step's state, the history and any
// drift (a recorded step whose object is missing, or whose SQL changed).
func Status(ctx context.Context, db *store.DB, cfg *config.Config) (*Plan, error) {
	m, err := newMigrator(ctx, db, cfg, Options{})
	if err != nil {
		return nil, err
	}
	return m.plan(ctx, m.db)
}

// Verify checks that the schema is as planned (every step applied, no
// drift) and that every password hash that existed at the baseline is
// byte-for-byte what it was. VerifyReport.OK is false on any violation.
func Verify(ctx context.Context, db *store.DB, cfg *config.Config) (*VerifyReport, error) {
	m, err := newMigrator(ctx, db, cfg, Options{})
	if err != nil {
		return nil, err
	}
	return m.verify(ctx)
}

// Rollback removes what passbridge added, newest first. It refuses with a
// *PasskeysEnrolledError when passkeys are enrolled, unless opts.Force,
// which first exports them to opts.ExportPath.
func Rollback(ctx context.Context, db *store.DB, cfg *config.Config, opts Options) (*Report, error) {
	m, err := newMigrator(ctx, db, cfg, opts)
	if err != nil {
		return nil, err
	}
	return m.rollback(ctx)
}

// EnsureApplied plans and applies whatever is pending, logging each step:
// the demo and tests call it to get passbridge's tables.
func EnsureApplied(ctx context.Context, db *store.DB, cfg *config.Config, log *slog.Logger) error {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	rep, err := Apply(ctx, db, cfg, Options{Log: log})
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	applied := 0
	for _, s := range rep.Steps {
		if s.Action != ActionSkipped {
			applied++
			log.Info("migrate step", "step", s.ID, "action", s.Action, "took", time.Duration(s.DurationMS)*time.Millisecond)
		}
	}
	if applied > 0 {
		log.Info("migration applied", "steps", applied, "took", time.Duration(rep.DurationMS)*time.Millisecond)
	}
	return nil
}

// Pending returns the steps not applied yet that the rest of passbridge
// needs: `passbridge run` refuses to start while there are any (see
// PendingError). The users table's ANALYZE is not among them: an install
// from before that step runs as it did until the next apply takes the
// statistics (status and plan list it as pending).
func Pending(ctx context.Context, db *store.DB, cfg *config.Config) ([]Step, error) {
	p, err := NewPlan(ctx, db, cfg)
	if err != nil {
		return nil, err
	}
	return slices.DeleteFunc(p.Pending(), func(s Step) bool { return s.Kind() == "analyze" }), nil
}

// PendingError is what `passbridge run` reports for a database with
// pending steps.
func PendingError(steps []Step) error {
	if len(steps) == 0 {
		return nil
	}
	var ids []string
	for i, s := range steps {
		if i == 5 {
			ids = append(ids, fmt.Sprintf("and %d more", len(steps)-5))
			break
		}
		ids = append(ids, s.ID())
	}
	return fmt.Errorf("the database is not migrated: %d steps pending (%s); review them with `passbridge migrate plan`, then run `passbridge migrate apply`",
		len(steps), strings.Join(ids, ", "))
}
