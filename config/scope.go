package config

import "strings"

// Parts are the sections of the configuration, as a command reads them.
type Parts uint8

const (
	// PartDatabase is database, users_table and migrate: every command that
	// touches the application's database reads them.
	PartDatabase Parts = 1 << iota
	// PartDirectory is directory: the LDAP server and the match rules.
	PartDirectory
	// PartPortal is portal, mail, admin and audit: what the daemon serves.
	PartPortal
	// PartSchedule is schedule: when the daemon syncs.
	PartSchedule
)

// A Command is one passbridge command and the parts of the configuration it
// reads. Load validates exactly those, so that a DBA's file with the database
// keys alone runs `passbridge migrate`, and the error for a missing key names
// the command that needs it.
type Command struct {
	Name  string // as the operator types it: "passbridge sync"
	Reads Parts
}

// The commands, by what they read.
var (
	ForRun     = Command{"passbridge run", PartDatabase | PartDirectory | PartPortal | PartSchedule}
	ForSync    = Command{"passbridge sync", PartDatabase | PartDirectory}
	ForMigrate = Command{"passbridge migrate", PartDatabase}
	ForUsers   = Command{"passbridge users", PartDatabase}
	ForAudit   = Command{"passbridge audit export", PartDatabase}
	ForEnroll  = Command{"passbridge enroll link", PartDatabase | PartPortal}
	// ForCampaign reads the portal (the links' address, the company's
	// name) besides the database; the daemon sends.
	ForCampaign = Command{"passbridge campaign", PartDatabase | PartPortal}
)

// Commands are the commands by the short name `config check --for` takes.
var Commands = map[string]Command{
	"run": ForRun, "sync": ForSync, "migrate": ForMigrate,
	"users": ForUsers, "audit": ForAudit, "enroll": ForEnroll, "campaign": ForCampaign,
}

// reads reports whether the command reads part p.
func (c Command) reads(p Parts) bool { return c.Reads&p != 0 }

// what says in words what the command reads, for the error's heading.
func (c Command) what() string {
	var parts []string
	for _, p := range []struct {
		part Parts
		name string
	}{
		{PartDatabase, "the database"},
		{PartDirectory, "the directory"},
		{PartPortal, "the portal"},
		{PartSchedule, "the schedule"},
	} {
		if c.reads(p.part) {
			parts = append(parts, p.name)
		}
	}
	switch len(parts) {
	case 0:
		return "nothing"
	case 1:
		return parts[0]
	}
	return strings.Join(parts[:len(parts)-1], ", ") + " and " + parts[len(parts)-1]
}
