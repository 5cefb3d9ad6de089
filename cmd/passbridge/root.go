package main

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/passbridge/passbridge/config"
	"github.com/passbridge/passbridge/internal/buildinfo"
	"github.com/passbridge/passbridge/internal/logging"
)

// globals are the persistent flags every command shares.
type globals struct {
	configPath string
	logLevel   string
	logFormat  string
	output     string
}

func newRootCmd() *cobra.Command {
	g := &globals{}
	root := &cobra.Command{
		Use:   "passbridge",
		Short: "Passkeys for companies on Active Directory / LDAP and legacy users tables",
		Long: `passbridge syncs users from Active Directory or LDAP into your application's
database, serves a self-service portal where employees enroll passkeys, and
migrates your existing users table to hold them, keeping password login as a
fallback.

With no --config and no passbridge.yaml, 'passbridge run' starts an embedded demo.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	f := root.PersistentFlags()
	f.StringVar(&g.configPath, "config", os.Getenv("PASSBRIDGE_CONFIG"), "configuration file (default: ./passbridge.yaml, then /etc/passbridge/passbridge.yaml; env PASSBRIDGE_CONFIG)")
	f.StringVar(&g.logLevel, "log-level", "", "debug, info, warn or error (overrides log.level)")
	f.StringVar(&g.logFormat, "log-format", "", "auto, text or json (overrides log.format; auto is text on a terminal)")
	f.StringVarP(&g.output, "output", "o", "text", "output format for data: text or json")

	root.AddCommand(
		newVersionCmd(g),
		newConfigCmd(g),
		newRunCmd(g),
		newSyncCmd(g),
		newUsersCmd(g),
		newEnrollCmd(g),
		newCampaignCmd(g),
		newMigrateCmd(g),
		newAuditCmd(g),
	)
	return root
}

// loadConfig reads the configuration named by --config or found in the
// default paths, validating what cmd reads. It returns nil, nil when there
// is none (the demo case).
func (g *globals) loadConfig(cmd config.Command) (*config.Config, error) {
	path, err := config.Find(g.configPath)
	if err != nil || path == "" {
		return nil, err
	}
	return config.LoadFor(cmd, path, os.Environ())
}

// requireConfig is loadConfig for commands that cannot run on the demo.
func (g *globals) requireConfig(cmd config.Command) (*config.Config, error) {
	cfg, err := g.loadConfig(cmd)
	if err == nil && cfg == nil {
		err = fmt.Errorf("no configuration: pass --config FILE or create passbridge.yaml (searched %v); see configs/ for examples", config.DefaultPaths)
	}
	return cfg, err
}

// logger builds the process logger from the config and the flags (flags win).
func (g *globals) logger(cfg *config.Config, w io.Writer) (*slog.Logger, error) {
	level, format := "info", "auto"
	if cfg != nil {
		level, format = cfg.Log.Level, cfg.Log.Format
	}
	if g.logLevel != "" {
		level = g.logLevel
	}
	if g.logFormat != "" {
		format = g.logFormat
	}
	return logging.New(w, level, format)
}

// printData writes v as indented JSON with -o json, or calls text otherwise.
func (g *globals) printData(w io.Writer, v any, text func(io.Writer) error) error {
	switch g.output {
	case "json":
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	case "text", "":
		return text(w)
	}
	return fmt.Errorf("--output %q: expected text or json", g.output)
}

func newVersionCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version, commit and Go version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			info := buildinfo.Get()
			return g.printData(cmd.OutOrStdout(), info, func(w io.Writer) error {
				_, err := fmt.Fprintf(w, "passbridge %s (commit %s, %s, %s)\n", info.Version, info.Commit, info.GoVersion, info.Platform)
				return err
			})
		},
	}
}

func newConfigCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "config", Short: "Inspect the configuration"}
	var forCmd string
	check := &cobra.Command{
		Use:   "check",
		Short: "Validate the configuration and print it as passbridge sees it, secrets masked",
		Long: `Validate the configuration file (strictly: unknown keys are errors), apply the
PASSBRIDGE_... environment overrides and *_file secrets, and print the
effective configuration with every secret masked.

Every key is validated, as 'passbridge run' reads them all; --for COMMAND
validates only what that command reads (run, sync, migrate, users, audit,
enroll, campaign), so a DBA's file with the database keys alone passes --for migrate.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, ok := config.Commands[forCmd]
			if !ok {
				return fmt.Errorf("--for %q: expected one of %s", forCmd, strings.Join(slices.Sorted(maps.Keys(config.Commands)), ", "))
			}
			cfg, err := g.requireConfig(c)
			if err != nil {
				return err
			}
			out, err := cfg.Effective()
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "%s: valid for %s\n", cfg.Source, c.Name)
			_, err = cmd.OutOrStdout().Write(out)
			return err
		},
	}
	check.Flags().StringVar(&forCmd, "for", "run", "validate only what this command reads: run, sync, migrate, users, audit, enroll or campaign")
	cmd.AddCommand(check)
	return cmd
}
