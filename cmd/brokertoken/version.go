package main

import (
	"runtime"
	"runtime/debug"
	"strings"
)

// Set these with -ldflags "-X main.buildVersion=v1.2.3 -X main.buildCommit=0123abcd"
// when building without the git checkout (a source tarball, a build system that
// strips .git); they win over what the Go toolchain recorded. A commit ending in
// "+dirty" means uncommitted changes.
var (
	buildVersion string
	buildCommit  string
)

// build is what the binary knows of how it was built.
type build struct {
	Version  string // module version: a tag, a pseudo-version, or "devel"
	Commit   string // VCS revision, "" when unknown
	Time     string // commit time (RFC 3339), "" when unknown
	Modified bool   // built from a checkout with uncommitted changes
	Go       string // toolchain version
}

// readBuild reads the version and commit from the ldflags variables, else from the build
// information the Go toolchain embeds (go build stamps the VCS revision, and since Go
// 1.24 derives the module version from the tag, when it builds in a git checkout).
func readBuild() build {
	b := build{Version: "devel", Go: runtime.Version()}
	if bi, ok := debug.ReadBuildInfo(); ok {
		b.Go = bi.GoVersion
		if v := bi.Main.Version; v != "" && v != "(devel)" {
			b.Version = v
		}
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				b.Commit = s.Value
			case "vcs.time":
				b.Time = s.Value
			case "vcs.modified":
				b.Modified = s.Value == "true"
			}
		}
	}
	if buildVersion != "" {
		b.Version = buildVersion
	}
	if buildCommit != "" {
		c, dirty := strings.CutSuffix(buildCommit, "+dirty")
		b.Commit, b.Time, b.Modified = c, "", dirty
	}
	return b
}

// shortCommit is the first 12 characters of the commit, "+dirty" when modified.
func (b build) shortCommit() string {
	c := b.Commit
	if len(c) > 12 {
		c = c[:12]
	}
	if c != "" && b.Modified {
		c += "+dirty"
	}
	return c
}

// String is what `brokertoken version` prints after the name:
// "v1.2.3 (commit 0123456789ab, 2026-11-29T12:00:00Z, go1.26.0)".
func (b build) String() string {
	var extra []string
	if c := b.shortCommit(); c != "" {
		extra = append(extra, "commit "+c)
	}
	if b.Time != "" {
		extra = append(extra, b.Time)
	}
	extra = append(extra, b.Go)
	return b.Version + " (" + strings.Join(extra, ", ") + ")"
}

// version returns the version line of this binary.
func version() string { return readBuild().String() }
