package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/spf13/cobra"

	"github.com/passbridge/passbridge/config"
	"github.com/passbridge/passbridge/migrate"
	"github.com/passbridge/passbridge/store"
)

// Exit codes of `passbridge migrate verify` and `status --exit-code`.
const (
	exitVerifyFailed = 2 // a violation: schema not as planned, or a password hash changed
	exitNotCurrent   = 1 // status --exit-code: a step pending, or drift
)

func newMigrateCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "migrate",
		Short: "Inspect, plan, apply, verify and roll back the users-table migration",
		Long: `Migrate the application's existing users table so that it can hold passkeys,
keeping password login as a fallback. passbridge adds its own tables (named with
migrate.prefix) and two nullable columns to the users table; it never alters,
renames or drops the password column.

  plan      print the exact SQL, step by step, with what each step locks and how to undo it
  apply     run the pending steps online, under lock_timeout, with retries; idempotent
  status    applied and pending steps, and drift
  verify    the schema is as planned and every password hash is byte-for-byte unchanged
  rollback  remove what passbridge added (refuses while passkeys are enrolled, unless --force)

A killed apply (even kill -9) is finished by running apply again.`,
	}
	cmd.AddCommand(newMigratePlanCmd(g), newMigrateApplyCmd(g), newMigrateStatusCmd(g),
		newMigrateVerifyCmd(g), newMigrateRollbackCmd(g))
	return cmd
}

// migrateEnv loads the configuration (a file is required: migrating the
// demo's database makes no sense) and opens the database.
func (g *globals) migrateEnv(ctx context.Context) (*config.Config, *store.DB, *slog.Logger, error) {
	cfg, err := g.requireConfig(config.ForMigrate)
	if err != nil {
		return nil, nil, nil, err
	}
	log, err := g.logger(cfg, os.Stderr)
	if err != nil {
		return nil, nil, nil, err
	}
	db, err := store.Open(ctx, cfg.Database, log)
	if err != nil {
		return nil, nil, nil, err
	}
	return cfg, db, log, nil
}

func newMigratePlanCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "plan",
		Short: "Print the exact SQL of every step, its lock and its undo",
		Long: `Inspect the users table and print the migration as SQL that can be pasted into
psql, mysql or sqlite3: each step with its state (pending, applied, invalid,
collision), a one-line risk note (what it locks, whether it rewrites a table)
and its undo. Nothing is changed. A name that an object of another shape already
uses stops the plan with the remedy (migrate.prefix). -o json prints the plan
as data.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			cfg, db, _, err := g.migrateEnv(ctx)
			if err != nil {
				return err
			}
			defer db.Close()
			p, err := migrate.NewPlan(ctx, db, cfg)
			var ce *migrate.CollisionError
			if err != nil && !errors.As(err, &ce) {
				return err
			}
			if perr := g.printData(cmd.OutOrStdout(), p, func(w io.Writer) error { return p.WriteText(w, cfg.Migrate.Prefix) }); perr != nil {
				return perr
			}
			return err
		},
	}
}

func newMigrateApplyCmd(g *globals) *cobra.Command {
	var dryRun bool
	cmd := &cobra.Command{
		Use:   "apply",
		Short: "Apply the pending steps online (idempotent; run again to finish a killed run)",
		Long: `Apply the plan: first a baseline of the password column (row count, a checksum
per key range, a fingerprint per row), then each pending step, in order. Each
step checks the catalog before it acts, waits at most migrate.lock_timeout
(default 200ms: the longest the application stalls behind it) for its lock and
is retried with a jittered, doubling backoff up to migrate.retries (default 20)
times when it cannot get it; plan prints the deadline that makes. Each step is
recorded with the checksum of its SQL in <prefix>schema_history. PostgreSQL
indexes are built CONCURRENTLY, MySQL columns are added with ALGORITHM=INSTANT
(one online rebuild where the table rules INSTANT out) and indexes with
ALGORITHM=INPLACE, LOCK=NONE.

With --dry-run, print the SQL that would run and change nothing.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			cfg, db, log, err := g.migrateEnv(ctx)
			if err != nil {
				return err
			}
			defer db.Close()
			out := progressWriter(g, cmd)
			rep, err := migrate.Apply(ctx, db, cfg, migrate.Options{DryRun: dryRun, Out: out, Log: log})
			if rep == nil {
				return err
			}
			if perr := g.printData(cmd.OutOrStdout(), rep, func(w io.Writer) error { return rep.WriteText(w, "apply") }); perr != nil {
				return perr
			}
			if err != nil {
				return fmt.Errorf("%w\nNothing is left half-done: fix the cause and run `passbridge migrate apply` again; it continues where it stopped", err)
			}
			if !dryRun {
				fmt.Fprintln(cmd.ErrOrStderr(), "check the result with `passbridge migrate verify`")
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "print the SQL that would run; change nothing")
	return cmd
}

// progressWriter is where step-by-step progress goes: stdout, or stderr
// when stdout carries JSON.
func progressWriter(g *globals, cmd *cobra.Command) io.Writer {
	if g.output == "json" {
		return cmd.ErrOrStderr()
	}
	return cmd.OutOrStdout()
}

func newMigrateStatusCmd(g *globals) *cobra.Command {
	var exitCode bool
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show applied and pending steps and any drift",
		Long: `Show every step of the plan with its state and when it was applied, and the
drift between the history and the database: a step recorded as applied whose
object is missing or INVALID, a step applied with SQL that differs from this
version's plan, history rows no step knows. -o json prints it as data.

With --exit-code (for scripts and CI), exit 1 when any step is pending or
there is drift, 0 when everything is applied as planned; the output is the
same. An error (no database, a bad configuration) exits 1 too, with a
message on stderr.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			cfg, db, _, err := g.migrateEnv(ctx)
			if err != nil {
				return err
			}
			defer db.Close()
			p, err := migrate.Status(ctx, db, cfg)
			if err != nil {
				return err
			}
			if err := g.printData(cmd.OutOrStdout(), p, p.WriteStatus); err != nil {
				return err
			}
			if exitCode && !p.Current() {
				return exitError{code: exitNotCurrent}
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&exitCode, "exit-code", false, "exit 1 when a step is pending or there is drift")
	return cmd
}

func newMigrateVerifyCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "verify",
		Short: "Check the schema is as planned and password hashes are unchanged (exit 2 if not)",
		Long: `Check that every step is applied with no drift, and that every password hash
that existed when apply took its baseline is byte-for-byte what it was: each key
range's checksum is recomputed over the live table, and the ranges that differ
are searched row by row. Rows added since the baseline are counted, not
reported as violations.

Exit status: 0 when everything matches, 2 on a violation (the report says which
steps, which key ranges and which rows), 1 when verify could not run.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			cfg, db, _, err := g.migrateEnv(ctx)
			if err != nil {
				return err
			}
			defer db.Close()
			rep, err := migrate.Verify(ctx, db, cfg)
			if err != nil {
				return err
			}
			if err := g.printData(cmd.OutOrStdout(), rep, rep.WriteText); err != nil {
				return err
			}
			if !rep.OK {
				return exitError{code: exitVerifyFailed}
			}
			return nil
		},
	}
}

func newMigrateRollbackCmd(g *globals) *cobra.Command {
	var dryRun, force bool
	var export string
	cmd := &cobra.Command{
		Use:   "rollback",
		Short: "Remove what passbridge added (refuses while passkeys are enrolled, unless --force)",
		Long: `Remove passbridge's tables, indexes, foreign keys and the two columns it added to
the users table, newest first, each under lock_timeout with retries. Objects of
the same name that are not passbridge's are left alone. The password column is
not touched; before the baseline is dropped, the hashes are checked against it
one last time.

When passkeys are enrolled, rollback refuses. --force exports them first to a
JSON file (--export FILE, default passbridge-passkeys-<time>.json in the current
directory; never overwritten, mode 0600) with every column needed to re-import
them, then removes everything. --dry-run prints the SQL and changes nothing.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			cfg, db, log, err := g.migrateEnv(ctx)
			if err != nil {
				return err
			}
			defer db.Close()
			out := progressWriter(g, cmd)
			rep, err := migrate.Rollback(ctx, db, cfg, migrate.Options{DryRun: dryRun, Force: force, ExportPath: export, Out: out, Log: log})
			if rep == nil || errors.As(err, new(*migrate.PasskeysEnrolledError)) {
				return err
			}
			if perr := g.printData(cmd.OutOrStdout(), rep, func(w io.Writer) error { return rep.WriteText(w, "rollback") }); perr != nil {
				return perr
			}
			return err
		},
	}
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "print the SQL that would run; change nothing")
	cmd.Flags().BoolVar(&force, "force", false, "remove enrolled passkeys too, after exporting them to a file")
	cmd.Flags().StringVar(&export, "export", "", "with --force: the file to export passkeys to (default passbridge-passkeys-<time>.json)")
	return cmd
}
