package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"time"

	"github.com/spf13/cobra"

	"github.com/passbridge/passbridge/config"
	"github.com/passbridge/passbridge/dirsync"
	"github.com/passbridge/passbridge/migrate"
	"github.com/passbridge/passbridge/store"
)

// exitRefused is the exit status of a sync refused by the deletion guard,
// so that scripts can tell it from a failure (1).
const exitRefused = 3

func newSyncCmd(g *globals) *cobra.Command {
	var full, dryRun bool
	cmd := &cobra.Command{
		Use:   "sync",
		Short: "Sync the directory into the database now and print a summary",
		Long: `Read the directory (only what changed since the last sync, or everything with
--full), compare it with the identities in the database, and apply the
difference: create, update, rename, move, disable, enable, delete (mark
deleted; nothing is ever removed), restore, and link identities to rows of
the users table by the match rules.

--dry-run plans the same changes and prints them, one per line, without
writing anything (the run is recorded in the run history as a dry run).

A run that would mark more than directory.max_deletions identities deleted
or disabled stops before writing anything, says why, and exits with
status 3. Other failures exit with status 1.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runSync(cmd.Context(), g, cmd.OutOrStdout(), cmd.ErrOrStderr(), full, dryRun)
		},
	}
	cmd.Flags().BoolVar(&full, "full", false, "read everything in scope instead of what changed")
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "print the planned changes without writing them")
	return cmd
}

// syncOutput is what `sync -o json` prints.
type syncOutput struct {
	Summary *dirsync.Summary `json:"summary"`
	Changes []dirsync.Change `json:"changes,omitempty"`
	Error   string           `json:"error,omitempty"`
}

func runSync(ctx context.Context, g *globals, stdout, stderr io.Writer, full, dryRun bool) error {
	if g.output != "text" && g.output != "json" && g.output != "" {
		return fmt.Errorf("--output %q: expected text or json", g.output)
	}
	cfg, log, db, err := g.openApp(ctx, stderr, config.ForSync)
	if err != nil {
		return err
	}
	defer db.Close()
	s, err := dirsync.NewSyncer(cfg, db, log)
	if err != nil {
		return err
	}
	out := syncOutput{}
	opts := dirsync.RunOptions{Full: full, DryRun: dryRun, Trigger: "cli"}
	if dryRun {
		// Printed sorted (the plan's own order is the directory's), so
		// that two dry runs of one state print the same text.
		opts.OnChange = func(c dirsync.Change) { out.Changes = append(out.Changes, c) }
	}
	sum, runErr := s.Run(ctx, opts)
	slices.SortStableFunc(out.Changes, dirsync.CompareChanges)
	if g.output != "json" {
		for _, c := range out.Changes {
			fmt.Fprintln(stdout, c.String())
		}
	}
	out.Summary = sum
	if runErr != nil {
		out.Error = runErr.Error()
	}
	if err := g.printData(stdout, out, func(w io.Writer) error { return printSummary(w, stderr, sum) }); err != nil {
		return err
	}
	if errors.Is(runErr, dirsync.ErrRefused) {
		fmt.Fprintln(stderr, "passbridge:", runErr)
		return exitError{code: exitRefused}
	}
	return runErr
}

// openApp is how a command that works on the application's database
// starts: the configuration (required), the logger, and the database with
// passbridge's tables checked current. The caller closes db.
func (g *globals) openApp(ctx context.Context, stderr io.Writer, cmd config.Command) (*config.Config, *slog.Logger, *store.DB, error) {
	cfg, err := g.requireConfig(cmd)
	if err != nil {
		return nil, nil, nil, err
	}
	log, db, err := g.openDB(ctx, cfg, stderr)
	return cfg, log, db, err
}

// openDB is openApp for a configuration the command already has.
func (g *globals) openDB(ctx context.Context, cfg *config.Config, stderr io.Writer) (*slog.Logger, *store.DB, error) {
	log, err := g.logger(cfg, stderr)
	if err != nil {
		return nil, nil, err
	}
	db, err := openMigrated(ctx, cfg, log)
	return log, db, err
}

// openMigrated opens the database and checks that passbridge's tables are
// there and current.
func openMigrated(ctx context.Context, cfg *config.Config, log *slog.Logger) (*store.DB, error) {
	db, err := store.Open(ctx, cfg.Database, log)
	if err != nil {
		return nil, err
	}
	steps, err := migrate.Pending(ctx, db, cfg)
	if err == nil {
		err = migrate.PendingError(steps)
	}
	if err != nil {
		db.Close()
		return nil, err
	}
	return db, nil
}

// printSummary prints a run's summary. A dry run's is the same text for the
// same state: its run number and timings go to stderr.
func printSummary(w, stderr io.Writer, s *dirsync.Summary) error {
	if s == nil {
		return nil
	}
	mode := s.Mode
	if s.FullReason != "" {
		mode += " (" + s.FullReason + ")"
	}
	dry := ""
	if s.DryRun {
		dry = ", dry run: nothing written"
	}
	ms := func(n int64) string { return (time.Duration(n) * time.Millisecond).String() }
	timing := w
	if s.DryRun {
		fmt.Fprintf(w, "sync: %s%s\n", s.Status, dry)
		fmt.Fprintf(stderr, "dry run recorded as sync run %d\n", s.RunID)
		timing = stderr
	} else {
		fmt.Fprintf(w, "sync run %d: %s%s\n", s.RunID, s.Status, dry)
	}
	fmt.Fprintf(w, "  mode       %s\n", mode)
	if s.Server != "" {
		fmt.Fprintf(w, "  directory  %s (delta mechanism: %s)\n", s.Server, s.Mechanism)
	}
	fmt.Fprintf(w, "  entries    %d read, %d skipped as invalid\n", s.Entries, s.Invalid)
	fmt.Fprintf(w, "  changes    %s (%d applied)\n", s.Changes, s.Applied)
	fmt.Fprintf(w, "  links      %d linked, %d unmatched, %d ambiguous", s.Linked, s.Unmatched, s.Ambiguous)
	if s.ProvisionFailed > 0 {
		fmt.Fprintf(w, ", %d users rows could not be created", s.ProvisionFailed)
	}
	fmt.Fprintln(w)
	fmt.Fprintf(timing, "  time       %s (LDAP %s, database %s), %.1f entries/s\n", ms(s.TotalMillis), ms(s.LDAPMillis), ms(s.DBMillis), s.EntriesPerSecond)
	if s.Error != "" {
		fmt.Fprintf(w, "  error      %s\n", s.Error)
	}
	if len(s.LinkIssues) > 0 {
		fmt.Fprintf(w, "not linked (the first %d by username; all with: passbridge users list --link unmatched|ambiguous):\n", len(s.LinkIssues))
		for _, i := range s.LinkIssues {
			fmt.Fprintf(w, "  %-9s %s: %s\n", i.State, i.Username, i.Detail)
		}
	}
	return nil
}
