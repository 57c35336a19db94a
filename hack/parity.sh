#!/usr/bin/env bash
# Build one of the Gardener harnesses once and print the path of the binary:
#
#   bash hack/parity.sh          -> hack/go/parity: the real validation code of
#                                   github.com/gardener/gardener-extension-registry-cache at the tag pinned in its
#                                   go.mod; tests/integration/test_gardener_parity*.py run it beside api/
#   bash hack/parity.sh render   -> hack/go/render: the real rendering (the components' Deploy into a fake client,
#                                   the OperatingSystemConfig ensurers); tests/integration/test_gardener_rendering.py
#                                   runs it beside the controller
#
# The LAST line of stdout is the binary path. The binary lands in
# ${REGISTRY_CACHE_BIN_CACHE:-$HOME/.cache/registry-cache/bin}/<harness>-<tag>/gardener-<harness> and is reused as
# long as the harness sources are unchanged (a stamp of their sha256 sits beside it).
# No go.sum is kept in the repository: the module is copied to a temporary directory and `go mod tidy`
# resolves it there through the Go module proxy. Progress goes to stderr.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
harness="${1:-parity}"
case "$harness" in
  parity | render) ;;
  *) printf 'usage: %s [parity|render]\n' "$0" >&2; exit 2 ;;
esac
src="$here/go/$harness"
export GOTOOLCHAIN=local

log() { printf '%s: %s\n' "$harness" "$*" >&2; }

go_bin="$(command -v go || true)"
if [[ -z "$go_bin" && -x /usr/local/go/bin/go ]]; then
  go_bin=/usr/local/go/bin/go
fi
if [[ -z "$go_bin" ]]; then
  log "go is not installed (need Go >= the version in $src/go.mod)"
  exit 2
fi

tag="$(awk '$1 == "github.com/gardener/gardener-extension-registry-cache" { print $2; exit }' "$src/go.mod")"
if [[ -z "$tag" ]]; then
  log "cannot find the gardener-extension-registry-cache requirement in $src/go.mod"
  exit 2
fi

cache_root="${REGISTRY_CACHE_BIN_CACHE:-$HOME/.cache/registry-cache/bin}"
dest_dir="$cache_root/$harness-$tag"
dest="$dest_dir/gardener-$harness"
stamp_file="$dest_dir/sources.sha256"
stamp="$(cd "$src" && cat go.mod main.go | sha256sum | cut -d' ' -f1) $("$go_bin" env GOVERSION)"

if [[ -x "$dest" && -f "$stamp_file" && "$(cat "$stamp_file")" == "$stamp" ]]; then
  log "reusing $dest"
  echo "$dest"
  exit 0
fi

mkdir -p "$dest_dir"
work="$(mktemp -d "${TMPDIR:-/tmp}/gardener-$harness.XXXXXX")"
trap 'rm -rf "$work"; rm -f "$dest.tmp.$$"' EXIT
cp "$src/go.mod" "$src/main.go" "$work/"

start=$SECONDS
log "building against gardener-extension-registry-cache $tag with $("$go_bin" env GOVERSION) (first build downloads modules and takes a few minutes)"
(
  cd "$work"
  log "go mod tidy"
  "$go_bin" mod tidy >&2
  log "go build"
  "$go_bin" build -trimpath -o "$dest.tmp.$$" . >&2
)
mv -f "$dest.tmp.$$" "$dest"
printf '%s' "$stamp" >"$stamp_file"
log "built $dest in $((SECONDS - start))s"
echo "$dest"
