#!/bin/sh
# Builds the brokertoken daemon as the Dockerfile does, into $1: a static binary
# (CGO_ENABLED=0, no libc), with file paths trimmed and the debug symbols stripped.
#
# Version and commit come from the git checkout (the Go toolchain records the revision,
# and from Go 1.24 on a version derived from the tag). Without a checkout (a source
# tarball, a build context without .git) set them instead:
#   VERSION=v1.2.3 COMMIT=0123abcd sh deploy/build.sh out/brokertoken
# which passes -ldflags "-X main.buildVersion=... -X main.buildCommit=...".
set -eu
out=${1:?usage: deploy/build.sh OUTPUT}
if [ -z "${COMMIT:-}" ] && [ -f .git ] && command -v git >/dev/null 2>&1 && git rev-parse HEAD >/dev/null 2>&1; then
	# A git worktree: its .git is a file, and the Go toolchain records VCS information
	# only under a .git directory. Take from git what the toolchain would record.
	COMMIT=$(git rev-parse HEAD)
	if [ -n "$(git status --porcelain)" ]; then
		COMMIT="$COMMIT+dirty"
	fi
	VERSION=${VERSION:-$(git describe --tags --exact-match 2>/dev/null ||
		TZ=UTC git log -1 --abbrev=12 --date=format-local:%Y%m%d%H%M%S --format='v0.0.0-%cd-%h')}
fi
buildvcs=true
if [ -n "${COMMIT:-}" ]; then
	buildvcs=false
fi
export CGO_ENABLED=0
exec go build -trimpath -buildvcs="$buildvcs" \
	-ldflags "-s -w -X main.buildVersion=${VERSION:-} -X main.buildCommit=${COMMIT:-}" \
	-o "$out" ./cmd/brokertoken
