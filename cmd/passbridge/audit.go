package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/passbridge/passbridge/audit"
	"github.com/passbridge/passbridge/config"
)

// auditExportOptions are the flags of `passbridge audit export`.
type auditExportOptions struct {
	since, until string
	event, user  string
	failed       bool
	format       string
	out          string
	force        bool
	limit        int
}

func newAuditCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "audit",
		Short: "Read the audit trail: sign-ins, passkeys, links, sync runs",
	}
	var o auditExportOptions
	export := &cobra.Command{
		Use:   "export",
		Short: "Export audit events as CSV or JSON, newest first",
		Long: `Export the audit trail (the table <prefix>audit in the application's database),
newest first, as CSV with a header row or as one JSON array.

--since and --until take a duration back from now (24h, 90m, 7d), a date
(2026-01-02, UTC; --until includes that day) or an RFC 3339 time.
--event takes an event name (signin.failed) or a prefix (signin.* or signin.).
--user matches the actor or the target, case-insensitively.

CSV cells that a spreadsheet would run as a formula (starting with =, +, -,
@, tab or CR) get a leading single quote.

--out writes to a new file, readable by its owner only (0600); an existing
file is replaced only with --force.

Examples:
  passbridge audit export --since 24h --event 'signin.*' --failed
  passbridge audit export --since 2026-01-01 --until 2026-03-31 --format json --out q1.json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !cmd.Flags().Changed("format") && g.output == "json" {
				o.format = audit.FormatJSON
			}
			return runAuditExport(cmd.Context(), g, cmd.OutOrStdout(), cmd.ErrOrStderr(), o, time.Now())
		},
	}
	f := export.Flags()
	f.StringVar(&o.since, "since", "", "only events at or after this time: 24h, 7d, 2026-01-02 or RFC 3339")
	f.StringVar(&o.until, "until", "", "only events before this time (a date includes that day)")
	f.StringVar(&o.event, "event", "", "only this event, or a prefix: signin.* (see README, the audit trail)")
	f.StringVar(&o.user, "user", "", "only events whose actor or target is this user (case-insensitive)")
	f.BoolVar(&o.failed, "failed", false, "only failed or refused events")
	f.StringVar(&o.format, "format", audit.FormatCSV, "csv or json")
	f.StringVar(&o.out, "out", "", "write to this file (created 0600) instead of standard output")
	f.BoolVar(&o.force, "force", false, "replace the --out file when it exists")
	f.IntVar(&o.limit, "limit", 0, "at most this many events, the newest (0: all)")
	cmd.AddCommand(export)
	return cmd
}

func runAuditExport(ctx context.Context, g *globals, stdout, stderr io.Writer, o auditExportOptions, now time.Time) error {
	if o.format != audit.FormatCSV && o.format != audit.FormatJSON {
		return fmt.Errorf("--format %q: expected csv or json", o.format)
	}
	f := audit.Filter{Event: o.event, User: o.user, Limit: o.limit}
	var err error
	if o.since != "" {
		if f.Since, err = audit.ParseSince(o.since, now); err != nil {
			return fmt.Errorf("--since: %w", err)
		}
	}
	if o.until != "" {
		if f.Until, err = audit.ParseUntil(o.until, now); err != nil {
			return fmt.Errorf("--until: %w", err)
		}
	}
	if o.failed {
		no := false
		f.Success = &no
	}
	if o.limit < 0 {
		return fmt.Errorf("--limit %d: expected 0 (all) or more", o.limit)
	}
	if _, _, err := audit.ParseEventPattern(o.event); err != nil {
		return fmt.Errorf("--event: %w", err)
	}
	if o.force && o.out == "" {
		return errors.New("--force needs --out FILE")
	}
	cfg, _, db, err := g.openApp(ctx, stderr, config.ForAudit)
	if err != nil {
		return err
	}
	defer db.Close()

	if o.out == "" {
		w := bufio.NewWriterSize(stdout, 64<<10)
		if _, err := audit.Export(ctx, db, cfg, f, o.format, w); err != nil {
			w.Flush()
			return err
		}
		return w.Flush()
	}

	// A new file, owner-only: an audit export names people and addresses.
	flags := os.O_WRONLY | os.O_CREATE | os.O_EXCL
	if o.force {
		flags = os.O_WRONLY | os.O_CREATE | os.O_TRUNC
	}
	file, err := os.OpenFile(o.out, flags, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("%s exists: choose another --out or pass --force to replace it", o.out)
	}
	if err != nil {
		return err
	}
	// An existing file replaced with --force keeps its mode: make it 0600.
	if err := file.Chmod(0o600); err != nil {
		file.Close()
		return err
	}
	w := bufio.NewWriterSize(file, 64<<10)
	n, err := audit.Export(ctx, db, cfg, f, o.format, w)
	if err == nil {
		err = w.Flush()
	}
	if err == nil {
		err = file.Sync()
	}
	if cerr := file.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		// Never leave a truncated export that looks complete.
		os.Remove(o.out)
		return fmt.Errorf("export to %s: %w (the file was removed)", o.out, err)
	}
	fmt.Fprintf(stderr, "%d audit events written to %s (%s)\n", n, o.out, o.format)
	return nil
}
