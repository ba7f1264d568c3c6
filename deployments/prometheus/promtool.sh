#!/usr/bin/env bash
# promtool, built from the Go module github.com/prometheus/prometheus with the machine's Go and
# cached outside the repository, in ~/.cache/ys-platform beside the stack's jars, so that it is
# built once per machine and reused.
#
#   promtool.sh --build    build it unless it is there, then print its path (`make test` runs this)
#   promtool.sh --path     print its path, or say how to build it and exit 1 (the tests use this)
#   promtool.sh ARGS...    build it unless it is there, then run `promtool ARGS...`
#
# Measured here: the first build takes ~5 min on 2 cores and fills ~3.6 GB of module and build
# caches; those are removed once the binary is installed (it is all that is reused), so a version
# bump downloads and builds again.
set -euo pipefail

PROMETHEUS_MODULE_VERSION=v0.316.0
cache_root="${XDG_CACHE_HOME:-$HOME/.cache}/ys-platform"
build_root="$cache_root/promtool-build"
bin_dir="$cache_root/promtool/$PROMETHEUS_MODULE_VERSION"
promtool="$bin_dir/promtool"

build() {
  [ -x "$promtool" ] && return 0
  if ! command -v go >/dev/null 2>&1; then
    echo "promtool.sh: building promtool $PROMETHEUS_MODULE_VERSION needs Go 1.26.7 or newer, and go is not on PATH: install it (https://go.dev/doc/install) and run this again." >&2
    exit 1
  fi
  echo "promtool.sh: building promtool $PROMETHEUS_MODULE_VERSION with $(go version | cut -d' ' -f3) (once; ~5 min on 2 cores)" >&2
  mkdir -p "$bin_dir" "$build_root"
  # Every Go cache lives under the build root, so nothing lands in ~/go or the default caches,
  # and -modcacherw lets the module cache be removed afterwards.
  GOBIN="$bin_dir" GOPATH="$build_root/gopath" GOMODCACHE="$build_root/gopath/pkg/mod" \
    GOCACHE="$build_root/go-build" GOFLAGS="-modcacherw -buildvcs=false" \
    go install "github.com/prometheus/prometheus/cmd/promtool@$PROMETHEUS_MODULE_VERSION"
  "$promtool" --version >/dev/null
  rm -rf "$build_root"
}

case "${1:-}" in
  --build)
    build
    echo "$promtool"
    ;;
  --path)
    if [ ! -x "$promtool" ]; then
      echo "promtool.sh: promtool $PROMETHEUS_MODULE_VERSION is not built yet ($promtool); run 'bash deployments/prometheus/promtool.sh --build' (or 'make test', which builds it)." >&2
      exit 1
    fi
    echo "$promtool"
    ;;
  *)
    build
    exec "$promtool" "$@"
    ;;
esac
