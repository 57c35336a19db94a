#!/usr/bin/env bash
# Build the product image from the repository's Dockerfile without a Docker engine (Debian's buildah) and
# print the path of an OCI archive of it.
#
#   archive=$(hack/image.sh | tail -n1)   # -> ~/.cache/registry-cache/images/registry-cache-<hash>.tar
#
# The LAST line of stdout is the archive's path; all progress goes to stderr.
#
# The archive is named after a sha256 of its sources: exactly the build context that .dockerignore lets
# through (pyproject.toml, README.md, constraints.txt, api/, extension/ without extension/local/, __pycache__,
# *.pyc, *.egg-info), the Dockerfile and .dockerignore themselves, the identity of the base and this script's
# recipe. A second call with unchanged sources prints the cached archive at once and runs no buildah.
# buildah receives the very files that were hashed: the context is a deterministic tar of them, unpacked
# into a temporary directory. Only this subset of the .dockerignore syntax is understood (anything else is
# an error): `*` first, then `!PATH` lines, then `PATH/` lines (a folder of those left out again), then
# `**/GLOB` lines.
#
# The base: the Dockerfile's default (ARG BASE, python:slim pinned by digest) is pulled where a registry
# can be reached (one try, with a short timeout). Where it cannot, a base is built here from Debian
# packages, `mmdebstrap --variant=minbase --include=python3,python3-venv bookworm` (documentation, man
# pages and translations left out, Debian's copyright files kept), cached as a tar by the hash of that
# recipe, imported with `buildah from scratch`, `buildah add` and `buildah commit`, and passed as
# --build-arg BASE. The Debian base is not refreshed by itself: delete base-*.tar to get newer packages.
#
# buildah runs as root with its own storage (--root/--runroot, driver vfs, in a temporary directory under
# the cache that is removed afterwards) and `--isolation chroot`; the build stage fetches the build
# requirements and wheels from PyPI. The archive is written under a temporary name and renamed into place;
# the newest three archives are kept. Concurrent runs are serialised with flock(1).
# Where buildah or mmdebstrap is missing, running as root with apt-get, they are installed (said on
# stderr); otherwise the script says what is missing and exits with status 3, as it does when not root or
# not in a checkout (status 1: anything else failed).
#
# An installed package (`pip install .`) carries this script but neither the Dockerfile nor the sources it
# builds from: the image is built from a checkout (the script's parent directory, or REGISTRY_CACHE_SOURCE).
#
# Environment:
#   REGISTRY_CACHE_IMAGE_CACHE  where archives and the base go (default: $HOME/.cache/registry-cache/images)
#   REGISTRY_CACHE_SOURCE       the checkout to build (default: the directory above this script's)
#   REGISTRY_CACHE_IMAGE_BASE   auto (default: pull the default base, else Debian), pull, or debian
#   REGISTRY_CACHE_PULL_TIMEOUT seconds the pull of the default base may take (default: 20)
set -euo pipefail

log() { printf 'image: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
unavailable() { log "ERROR: $*"; exit 3; }  # something it needs cannot be had here

case "${1:-}" in
  "") ;;
  -h|--help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//' >&2; exit 0 ;;
  *) die "unexpected argument: $1 (see --help)" ;;
esac

# Bump when the build below changes in a way that should force a rebuild.
recipe="v1 buildah-bud isolation=chroot storage=vfs layers=false format=oci oci-archive"
# The Debian base: mmdebstrap's arguments and what is done to its output (its cache key).
base_recipe="v1 dev-emptied"
debian_suite=bookworm
debian_args=(--variant=minbase '--include=python3,python3-venv'
             --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright'
             --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*'
             --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-include=/usr/share/locale/locale.alias')
# mmdebstrap copies the host's /etc/resolv.conf and /etc/hostname into the root file system: they are
# emptied (the container runtime mounts its own over them), and /etc/hosts says what Debian's says about
# localhost (without it, buildah would leave an empty /etc/hosts, its mount point, in the image's layer).
# shellcheck disable=SC2016  # $1 is the root file system, expanded by mmdebstrap when it runs the hook
debian_args+=(--customize-hook=': >"$1/etc/resolv.conf"; : >"$1/etc/hostname"'
              --customize-hook='printf "127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n" >"$1/etc/hosts"')
# What `buildah from scratch` leaves empty and python:slim sets.
debian_env=(PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8)

src="${REGISTRY_CACHE_SOURCE:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}"
cache="${REGISTRY_CACHE_IMAGE_CACHE:-${HOME}/.cache/registry-cache/images}"
base_mode="${REGISTRY_CACHE_IMAGE_BASE:-auto}"
pull_timeout="${REGISTRY_CACHE_PULL_TIMEOUT:-20}"
case "${base_mode}" in auto|pull|debian) ;; *) die "REGISTRY_CACHE_IMAGE_BASE must be auto, pull or debian, not ${base_mode}" ;; esac

for f in Dockerfile .dockerignore; do
  [[ -f "${src}/${f}" ]] || unavailable "no ${f} in ${src}: the image is built from a checkout of registry-cache (an installed package ships neither the Dockerfile nor its build context); run hack/image.sh of a checkout or set REGISTRY_CACHE_SOURCE=/path/to/checkout"
done

# --- the build context, as .dockerignore has it -----------------------------------------------------------
includes=()
excluded_paths=()
excludes=()
parse_dockerignore() {
  local line state=start
  while IFS= read -r line || [[ -n "${line}" ]]; do
    line="${line#"${line%%[![:space:]]*}"}"; line="${line%"${line##*[![:space:]]}"}"
    [[ -z "${line}" || "${line}" == \#* ]] && continue
    case "${state}:${line}" in
      start:\*) state=include ;;
      include:\!*) includes+=("${line#!}") ;;
      include:*/|paths:*/) state=paths; excluded_paths+=("${line%/}") ;;
      include:\*\*/*|paths:\*\*/*|exclude:\*\*/*) state=exclude; excludes+=("${line#\*\*/}") ;;
      *) die ".dockerignore line '${line}' is not in the form this script understands ('*' first, then '!PATH' lines, then 'PATH/' lines, then '**/GLOB' lines); extend parse_dockerignore in ${BASH_SOURCE[0]}" ;;
    esac
  done <"${src}/.dockerignore"
  [[ "${state}" != start ]] || die ".dockerignore must start with '*' (exclude everything, then list what the image needs)"
}
parse_dockerignore

context_files() { # NUL-separated, sorted, relative to ${src}
  local inc prune=(-false) g
  for g in "${excludes[@]+"${excludes[@]}"}"; do prune+=(-o -name "${g}"); done
  for g in "${excluded_paths[@]+"${excluded_paths[@]}"}"; do prune+=(-o -path "${g}"); done
  (
    cd "${src}"
    printf '%s\0' Dockerfile .dockerignore
    for inc in "${includes[@]}"; do
      inc="${inc%/}"
      [[ -e "${inc}" ]] || continue
      find "${inc}" \( "${prune[@]}" \) -prune -o \( -type f -o -type l \) -print0
    done
  ) | LC_ALL=C sort -z -u
}

context_tar() { # the context as a deterministic tar on stdout
  context_files | tar -C "${src}" --null --no-recursion --format=gnu --mtime=@0 --owner=0 --group=0 \
    --numeric-owner --mode='u+rwX,go+rX,go-w' -cf - -T -
}

default_base="$(sed -n 's/^ARG BASE=//p' "${src}/Dockerfile")"
[[ -n "${default_base}" ]] || die "no 'ARG BASE=' line in ${src}/Dockerfile"
# containers/image refuses a reference with both a tag and a digest: pull by the digest alone, and by the
# fully qualified name (no short-name resolution through registries.conf).
pull_ref="${default_base}"
if [[ "${pull_ref}" == *@* ]]; then
  name="${pull_ref%%@*}"
  if [[ "${name##*/}" == *:* ]]; then name="${name%:*}"; fi
  pull_ref="${name}@${pull_ref#*@}"
fi
[[ "${pull_ref}" == */* ]] || pull_ref="library/${pull_ref}"
[[ "${pull_ref%%/*}" == *.* || "${pull_ref%%/*}" == *:* || "${pull_ref%%/*}" == localhost ]] || pull_ref="docker.io/${pull_ref}"

debian_key="$(printf '%s\n' "${base_recipe}" "mmdebstrap ${debian_suite}" "${debian_args[@]}" "${debian_env[@]}" | sha256sum | cut -c1-16)"
debian_tar="${cache}/base-debian-${debian_suite}-${debian_key}.tar"

sources_hash="$(context_tar | sha256sum | cut -d' ' -f1)" || die "cannot read the build context in ${src} (see above)"
image_key() { printf '%s\n' "${recipe}" "${sources_hash}" "$1" | sha256sum | cut -d' ' -f1; }
archive_of() { printf '%s/registry-cache-%s.tar' "${cache}" "$(image_key "$1")"; }
pull_id="pull ${pull_ref}"
debian_id() { printf 'debian %s' "$(<"${debian_tar}.sha256")"; }

print_if_cached() {
  local a
  if [[ "${base_mode}" != debian ]]; then
    a="$(archive_of "${pull_id}")"
    if [[ -f "${a}" ]]; then printf '%s\n' "${a}"; exit 0; fi
  fi
  if [[ "${base_mode}" != pull && -f "${debian_tar}" && -f "${debian_tar}.sha256" ]]; then
    a="$(archive_of "$(debian_id)")"
    if [[ -f "${a}" ]]; then printf '%s\n' "${a}"; exit 0; fi
  fi
}
print_if_cached

# --- not cached: build -----------------------------------------------------------------------------------
ensure_tool() { # command, Debian package
  command -v "$1" >/dev/null 2>&1 && return 0
  [[ "$(id -u)" -eq 0 ]] || unavailable "$1 not found and not running as root: install the Debian package $2 (apt-get install $2) and run this script as root"
  command -v apt-get >/dev/null 2>&1 || unavailable "$1 not found and no apt-get on this machine: install $2 by other means"
  log "$1 not found: installing the Debian package $2 (apt-get install $2)"
  local apt_log
  apt_log="$(mktemp)"
  if ! { apt-get install -y -qq "$2" >"${apt_log}" 2>&1 \
         || { apt-get update -qq >>"${apt_log}" 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >>"${apt_log}" 2>&1; }; }; then
    cat "${apt_log}" >&2; rm -f -- "${apt_log}"
    die "apt-get install $2 failed (see above)"
  fi
  rm -f -- "${apt_log}"
  command -v "$1" >/dev/null 2>&1 || die "$1 still not found after installing $2"
}
export DEBIAN_FRONTEND=noninteractive
[[ "$(id -u)" -eq 0 ]] || unavailable "buildah builds the image as root here (storage driver vfs, --isolation chroot); run this script as root"
ensure_tool buildah buildah
command -v flock >/dev/null 2>&1 || die "flock not found (Debian package util-linux)"

mkdir -p "${cache}"
exec 9>"${cache}/.lock"
if ! flock -n 9; then
  log "another build is running in ${cache}; waiting for it ..."
  flock 9
fi

# Removes a directory of this script's, unmounting first whatever a killed buildah left mounted below it.
remove_tree() {
  local dir="$1" m
  [[ -e "${dir}" ]] || return 0
  dir="$(realpath -- "${dir}")"
  while read -r m; do
    umount -l -- "${m}" 2>/dev/null || true
  done < <(awk -v d="${dir}/" 'index($5, d) == 1 { print $5 }' /proc/self/mountinfo | sort -r)
  rm -rf --one-file-system -- "${dir}"
}
for stale in "${cache}"/.build-*; do  # we hold the lock: leftovers of killed builds go
  [[ -e "${stale}" ]] && remove_tree "${stale}"
done
print_if_cached  # another run may have built it meanwhile

t_start=${SECONDS}
work="$(mktemp -d "${cache}/.build-XXXXXX")"
cleanup() { remove_tree "${work}"; }
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
export TMPDIR="${work}/tmp"
mkdir -p "${TMPDIR}"
bah=(buildah --root "${work}/storage" --runroot "${work}/run" --storage-driver vfs)

base_ref=""
base_id=""
if [[ "${base_mode}" != debian ]]; then
  log "pulling the default base ${pull_ref} (at most ${pull_timeout}s) ..."
  if pull_out="$(timeout --kill-after=5 "${pull_timeout}" "${bah[@]}" pull --quiet --retry 0 "${pull_ref}" 2>&1)"; then
    base_ref="${pull_ref}"
    base_id="${pull_id}"
    log "pulled ${pull_ref}"
  else
    reason="$(printf '%s\n' "${pull_out}" | grep -v '^Trying to pull' | tail -n1)"
    if [[ "${base_mode}" == pull ]]; then die "cannot pull ${pull_ref}: ${reason:-timed out after ${pull_timeout}s}"; fi
    log "cannot pull ${pull_ref}: ${reason:-timed out after ${pull_timeout}s}; building a base from Debian packages instead"
  fi
fi

if [[ -z "${base_ref}" ]]; then
  if [[ ! -f "${debian_tar}" || ! -f "${debian_tar}.sha256" ]]; then
    ensure_tool mmdebstrap mmdebstrap
    log "building the base: mmdebstrap ${debian_args[*]} ${debian_suite} ..."
    t0=${SECONDS}
    if ! mmdebstrap --quiet "${debian_args[@]}" "${debian_suite}" "${work}/base.tar" </dev/null >&2; then
      die "mmdebstrap failed (see above)"
    fi
    # mmdebstrap populates /dev with device nodes; an image's /dev is the container runtime's (kept empty)
    tar --delete --wildcards -f "${work}/base.tar" './dev/?*'
    sha256sum "${work}/base.tar" | cut -d' ' -f1 >"${work}/base.tar.sha256"
    mv -f -- "${work}/base.tar" "${debian_tar}"
    mv -f -- "${work}/base.tar.sha256" "${debian_tar}.sha256"
    log "built ${debian_tar} in $((SECONDS - t0))s ($(du -h "${debian_tar}" | cut -f1))"
    # bases of other recipes go
    for old in "${cache}"/base-debian-*.tar; do
      [[ "${old}" == "${debian_tar}" ]] || rm -f -- "${old}" "${old}.sha256"
    done
  fi
  base_id="$(debian_id)"
  a="$(archive_of "${base_id}")"
  if [[ -f "${a}" ]]; then printf '%s\n' "${a}"; exit 0; fi
  t0=${SECONDS}
  base_ref="localhost/registry-cache-base:debian-${debian_key}"
  ctr="$("${bah[@]}" from --quiet scratch)"
  "${bah[@]}" add --quiet "${ctr}" "${debian_tar}" / >/dev/null
  env_args=()
  for e in "${debian_env[@]}"; do env_args+=(--env "${e}"); done
  "${bah[@]}" config "${env_args[@]}" --cmd python3 "${ctr}"
  "${bah[@]}" commit --quiet --rm "${ctr}" "${base_ref}" >/dev/null
  log "imported the base as ${base_ref} in $((SECONDS - t0))s"
fi

key="$(image_key "${base_id}")"
archive="${cache}/registry-cache-${key}.tar"
tag="${key:0:16}"

mkdir -p "${work}/context"
context_tar | tar -C "${work}/context" -xf -
# What this host trusts, the build trusts: the build stage's pip reads a pip.conf given as a build secret
# (mounted only while its RUN step runs, in no layer) that names a copy of the host's CA bundle, also a
# secret, so that PyPI is reached through whatever TLS-inspecting proxy the host trusts; and the host's
# PIP_INDEX_URL if set. The HTTP(S)_PROXY variables pass through by buildah's default (--http-proxy).
secrets=()
{
  printf '[global]\n'
  host_ca="${PIP_CERT:-${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}}"
  if [[ -f "${host_ca}" ]]; then
    printf 'cert = /etc/pip-ca.crt\n'
    secrets+=(--secret "id=pip-ca,src=${host_ca}")
  fi
  if [[ -n "${PIP_INDEX_URL:-}" ]]; then printf 'index-url = %s\n' "${PIP_INDEX_URL}"; fi
} >"${work}/pip.conf"
secrets+=(--secret "id=pip-conf,src=${work}/pip.conf")
log "building the image from ${src}/Dockerfile (sources ${sources_hash:0:16}, base ${base_ref}) ..."
t0=${SECONDS}
if ! "${bah[@]}" bud --isolation chroot --pull=never --layers=false --format oci "${secrets[@]}" \
      --build-arg "BASE=${base_ref}" -f "${work}/context/Dockerfile" -t "localhost/registry-cache:${tag}" \
      "${work}/context" >&2; then
  die "buildah bud failed (see above)"
fi
log "built in $((SECONDS - t0))s"
"${bah[@]}" push --quiet "localhost/registry-cache:${tag}" "oci-archive:${work}/image.tar:registry-cache:${tag}" >&2
mv -f -- "${work}/image.tar" "${archive}"
# the newest three archives stay
mapfile -t old < <(find "${cache}" -maxdepth 1 -name 'registry-cache-*.tar' -printf '%T@ %p\n' | sort -rn | tail -n +4 | cut -d' ' -f2-)
for o in "${old[@]+"${old[@]}"}"; do rm -f -- "${o}"; done
log "wrote ${archive} ($(du -h "${archive}" | cut -f1)) in $((SECONDS - t_start))s"
printf '%s\n' "${archive}"
