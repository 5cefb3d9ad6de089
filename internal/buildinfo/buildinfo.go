// Package buildinfo holds the version stamped into the binary at build time.
package buildinfo

import (
	"runtime"
	"runtime/debug"
)

// Set by the Makefile: -ldflags "-X .../buildinfo.Version=... -X .../buildinfo.Commit=...".
var (
	Version = "dev"
	Commit  = ""
)

// Info is what `passbridge version` prints.
type Info struct {
	Version   string `json:"version"`
	Commit    string `json:"commit"`
	GoVersion string `json:"go_version"`
	Platform  string `json:"platform"`
}

// Get returns the build information, falling back to the VCS stamp Go
// records when the Makefile did not set the commit.
func Get() Info {
	commit := Commit
	if commit == "" {
		if bi, ok := debug.ReadBuildInfo(); ok {
			for _, s := range bi.Settings {
				if s.Key == "vcs.revision" {
					commit = s.Value
				}
			}
		}
	}
	if commit == "" {
		commit = "unknown"
	}
	return Info{Version: Version, Commit: commit, GoVersion: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
}
