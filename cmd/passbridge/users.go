package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/passbridge/passbridge/config"
	"github.com/passbridge/passbridge/identity"
)

func newUsersCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "users",
		Short: "Show the identities synced from the directory, their links and passkeys",
	}
	var f identity.ListFilter
	list := &cobra.Command{
		Use:   "list",
		Short: "List identities (username, state, link, users row, DN)",
		Long: `List the identities synced from the directory, by username.

--state active|disabled|deleted and --link linked|created|manual|unmatched|ambiguous
narrow the list: "passbridge users list --link ambiguous" shows the identities
that the match rules could not link without guessing.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, _, db, err := g.openApp(cmd.Context(), cmd.ErrOrStderr(), config.ForUsers)
			if err != nil {
				return err
			}
			defer db.Close()
			w := cmd.OutOrStdout()
			switch g.output {
			case "json":
				// A JSON array written as it is read: no limit on size.
				first := true
				io.WriteString(w, "[")
				err = identity.ListIdentities(cmd.Context(), db, cfg, f, func(i identity.IdentityInfo) error {
					if !first {
						io.WriteString(w, ",")
					}
					first = false
					return writeJSONLine(w, i)
				})
				if err != nil {
					return err
				}
				_, err = io.WriteString(w, "]\n")
				return err
			case "text", "":
				tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "USERNAME\tSTATE\tLINK\tUSERS ROW\tEMAIL\tDN")
				n := 0
				err = identity.ListIdentities(cmd.Context(), db, cfg, f, func(i identity.IdentityInfo) error {
					n++
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", i.Username, i.State, i.LinkState, dash(i.UserKey), dash(i.Email), i.DN)
					return nil
				})
				if err != nil {
					return err
				}
				if err := tw.Flush(); err != nil {
					return err
				}
				_, err = fmt.Fprintf(w, "%d identities\n", n)
				return err
			}
			return fmt.Errorf("--output %q: expected text or json", g.output)
		},
	}
	list.Flags().StringVar(&f.State, "state", "", "only identities in this state: "+strings.Join(identity.States, ", "))
	list.Flags().StringVar(&f.Link, "link", "", "only identities with this link state: "+strings.Join(identity.LinkStates, ", "))

	show := &cobra.Command{
		Use:   "show USER",
		Short: "Show one identity: directory state, link, users row and passkeys",
		Long: `Show the identity that USER names (a username or an email, case-insensitively,
or a directory ID): its directory state, its link to the users table, the
linked row and its passkeys.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, _, db, err := g.openApp(cmd.Context(), cmd.ErrOrStderr(), config.ForUsers)
			if err != nil {
				return err
			}
			defer db.Close()
			found, err := identity.FindIdentities(cmd.Context(), db, cfg, args[0])
			if err != nil {
				return err
			}
			if len(found) == 0 {
				return fmt.Errorf("no identity named %q (try: passbridge users list)", args[0])
			}
			return g.printData(cmd.OutOrStdout(), found, func(w io.Writer) error {
				for i, d := range found {
					if i > 0 {
						fmt.Fprintln(w)
					}
					printIdentity(w, d)
				}
				return nil
			})
		},
	}
	cmd.AddCommand(list, show)
	return cmd
}

func printIdentity(w io.Writer, d identity.IdentityDetail) {
	ts := func(t time.Time) string { return t.UTC().Format(time.RFC3339) }
	fmt.Fprintf(w, "%s (%s)\n", d.Username, dash(d.DisplayName))
	fmt.Fprintf(w, "  directory id  %s\n", d.DirectoryID)
	fmt.Fprintf(w, "  dn            %s\n", d.DN)
	fmt.Fprintf(w, "  email         %s\n", dash(d.Email))
	if d.Department != "" {
		fmt.Fprintf(w, "  department    %s\n", d.Department)
	}
	state := d.State
	if d.StateReason != "" {
		state += ": " + d.StateReason
	}
	if d.StateChangedAt != nil {
		state += " (since " + ts(*d.StateChangedAt) + ")"
	}
	fmt.Fprintf(w, "  state         %s\n", state)
	link := d.LinkState
	if d.LinkDetail != "" {
		link += ": " + d.LinkDetail
	}
	fmt.Fprintf(w, "  link          %s\n", link)
	if d.Row != nil {
		if d.Row.Missing {
			fmt.Fprintf(w, "  users row     %s (missing: the row was deleted)\n", d.Row.Key)
		} else {
			fmt.Fprintf(w, "  users row     %s (username %s, email %s)\n", d.Row.Key, dash(d.Row.Username), dash(d.Row.Email))
		}
	}
	fmt.Fprintf(w, "  seen          first %s, last %s\n", ts(d.FirstSeenAt), ts(d.LastSeenAt))
	if len(d.Passkeys) == 0 {
		fmt.Fprintf(w, "  passkeys      none\n")
		return
	}
	fmt.Fprintf(w, "  passkeys      %d\n", len(d.Passkeys))
	for _, p := range d.Passkeys {
		status := "active"
		if p.RevokedAt != nil {
			status = "revoked " + ts(*p.RevokedAt)
			if p.RevokedReason != "" {
				status += " (" + p.RevokedReason + ")"
			}
		}
		used := "never used"
		if p.LastUsedAt != nil {
			used = "last used " + ts(*p.LastUsedAt)
		}
		synced := ""
		if p.BackupEligible {
			synced = ", synced passkey"
		}
		fmt.Fprintf(w, "    #%d %q: %s, created %s, %s%s\n", p.ID, p.Name, status, ts(p.CreatedAt), used, synced)
	}
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func writeJSONLine(w io.Writer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, err = w.Write(b)
	return err
}
