# shellcheck shell=bash
# Shared by the scripts that build tools with Go into a cache outside the repository
# (control-plane-bins.sh, registry-bins.sh). Source it after setting:
#   out        the cache directory of this set of binaries
#   binaries   an array of binary names
#   stamp_of   a function: binary name -> what it is built from (a changed stamp forces a rebuild)
#   log, die   functions for progress and fatal errors (stderr)
# Then call `bincache_print_if_cached`, `bincache_setup_go` and `bincache_lock`, define `build_one NAME`
# (it builds into a temp dir under ${out}, registered in tmp_dirs, and calls `bincache_publish`), and finish
# with `bincache_build_missing`.

bincache_up_to_date() { # binary name
  local bin="${out}/$1" stamp="${out}/.$1.stamp"
  [[ -f "${bin}" && -x "${bin}" && -f "${stamp}" && "$(<"${stamp}")" == "$(stamp_of "$1")" ]]
}

bincache_all_up_to_date() {
  local b
  for b in "${binaries[@]}"; do bincache_up_to_date "${b}" || return 1; done
}

bincache_print_if_cached() { # prints the directory and exits when every binary is there and current
  if bincache_all_up_to_date; then
    printf '%s\n' "${out}"
    exit 0
  fi
}

bincache_setup_go() { # sets GO; a self-contained Go environment
  GO="${GO:-$(command -v go || true)}"
  [[ -n "${GO}" ]] || GO=/usr/local/go/bin/go
  [[ -x "${GO}" ]] || die "no Go toolchain found (put go on PATH or set GO=/path/to/go)"
  # Never download another toolchain, ignore any go.work and user GOFLAGS (e.g. -mod=vendor), build static
  # host binaries.
  export GOTOOLCHAIN=local GOWORK=off GO111MODULE=on CGO_ENABLED=0 GOFLAGS=-buildvcs=false
  unset GOOS GOARCH GOARM GOAMD64 GOEXPERIMENT
}

bincache_cleanup() {
  local d
  for d in "${tmp_dirs[@]+"${tmp_dirs[@]}"}"; do rm -rf -- "${d}"; done
}

bincache_lock() { # serialise concurrent builds of ${out}; a waiter finds the binaries built
  mkdir -p "${out}"
  tmp_dirs=()
  trap bincache_cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  if command -v flock >/dev/null 2>&1; then
    exec 9>"${out}/.lock"
    if ! flock -n 9; then
      log "another build is running for ${out}; waiting for it ..."
      flock 9
    fi
    rm -rf -- "${out}"/.build-* 2>/dev/null || true  # we hold the lock: leftovers of killed builds go
    bincache_print_if_cached
  fi
}

bincache_publish() { # built file, binary name, build start (SECONDS): atomically into place with its stamp
  local built="$1" name="$2" t0="$3" tmp
  tmp="$(dirname "${built}")"
  mv -f -- "${built}" "${out}/${name}"
  stamp_of "${name}" >"${tmp}/.stamp"
  mv -f -- "${tmp}/.stamp" "${out}/.${name}.stamp"
  log "built ${out}/${name} in $((SECONDS - t0))s ($(du -h "${out}/${name}" | cut -f1))"
}

bincache_build_missing() { # builds what is missing or stale, then prints the directory
  local b
  for b in "${binaries[@]}"; do
    # (not `bincache_up_to_date || build_one`: errexit must stay active inside build_one)
    if ! bincache_up_to_date "${b}"; then
      build_one "${b}"
    fi
  done
  bincache_all_up_to_date || die "binaries missing in ${out} after build"
  printf '%s\n' "${out}"
}
