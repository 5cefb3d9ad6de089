package main

import (
	"fmt"
	"io"
	"os"
	"os/user"
	"path/filepath"
	"time"

	"github.com/skip2/go-qrcode"
	"github.com/spf13/cobra"

	"github.com/passbridge/passbridge/config"
	"github.com/passbridge/passbridge/enroll"
)

func newEnrollCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "enroll",
		Short: "Enrollment tasks for IT: one-time links into the portal",
	}
	var (
		expires  time.Duration
		qr       bool
		recovery bool
	)
	link := &cobra.Command{
		Use:   "link [--recovery] USER",
		Short: "Make a one-time enrollment link for a user (username, email or directory ID)",
		Long: `Make a one-time link that signs USER into the portal without a password, to
add a passkey: for someone who cannot use their directory password, or to
hand out enrollment on a new device.

The link works once, until it expires (--expires, default portal.link_lifetime,
72h). Making a new link for the same user ends their earlier unused ones.
Only a hash of the link is stored, and its issue is in the audit trail. Hand
it to the person only (it is as good as their password for the portal), for
example with --qr on a screen they scan with their phone.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := g.loadConfig(config.ForEnroll)
			if err != nil {
				return err
			}
			if cfg == nil {
				if cfg, err = demoIfPresent(cmd.ErrOrStderr()); err != nil {
					return err
				}
			}
			_, db, err := g.openDB(cmd.Context(), cfg, cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			defer db.Close()
			kind := enroll.LinkEnroll
			if recovery {
				kind = enroll.LinkRecovery
			}
			l, err := enroll.IssueLink(cmd.Context(), db, cfg, args[0], enroll.LinkOptions{Kind: kind, TTL: expires, CreatedBy: "cli:" + operator()})
			if err != nil {
				return err
			}
			return g.printData(cmd.OutOrStdout(), l, func(w io.Writer) error {
				who := l.Name
				if l.Email != "" {
					who += " <" + l.Email + ">"
				}
				what := "Enrollment link"
				if l.Kind == enroll.LinkRecovery {
					what = "Recovery link"
				}
				fmt.Fprintf(w, what+" for %s (%s), valid once until %s:\n\n  %s\n\n", who, l.Username, l.ExpiresAt.Local().Format("Mon 2 Jan 2006 15:04 MST"), l.URL)
				if qr {
					code, err := qrcode.New(l.URL, qrcode.Medium)
					if err != nil {
						return fmt.Errorf("QR code: %w", err)
					}
					fmt.Fprint(w, code.ToSmallString(false))
				}
				return nil
			})
		},
	}
	link.Flags().DurationVar(&expires, "expires", 0, "how long the link is valid (default portal.link_lifetime)")
	link.Flags().BoolVar(&qr, "qr", false, "also print the link as a QR code in the terminal")
	link.Flags().BoolVar(&recovery, "recovery", false, "a recovery link: the passkey added with it is mailed about and, with portal.recovery.revoke_old, replaces the old ones")
	cmd.AddCommand(link)
	return cmd
}

// operator names who runs the command, for the audit trail: the user
// behind sudo when there is one.
func operator() string {
	if s := os.Getenv("SUDO_USER"); s != "" {
		return s
	}
	if u, err := user.Current(); err == nil {
		return u.Username
	}
	return "unknown"
}

// demoIfPresent is the demo's configuration when there is no configuration
// file but the demo's database is in the current directory (IT trying the
// demo), else the usual "no configuration" error.
func demoIfPresent(stderr io.Writer) (*config.Config, error) {
	const file = "passbridge-demo.db"
	if _, err := os.Stat(file); err != nil {
		return nil, fmt.Errorf("no configuration: pass --config FILE or create passbridge.yaml (searched %v); see configs/ for examples", config.DefaultPaths)
	}
	abs, _ := filepath.Abs(file)
	fmt.Fprintf(stderr, "no configuration: using the demo database %s\n", abs)
	// The link needs no directory: any URL satisfies the configuration.
	return demoConfig(".", "ldap://127.0.0.1:389", "")
}
