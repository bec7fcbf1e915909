#!/usr/bin/env bash
# `make image`: build the Handrail image with podman or docker (tools/container/engine.sh).
#
#   tools/container/build-image.sh [TAG]          default handrail:local, the tag docker-compose.yml runs
#
# BASE_IMAGE picks the Dockerfile's base (default python:3.11.7-slim-bookworm). When it is the
# default and cannot be pulled (no registry reachable), or BUILD_BASE=1, the base is built from
# Debian packages (build-base.sh) as localhost/handrail-base:bookworm, once, and used instead.
# With podman, pip in the build uses this host's index settings and CA certificates.
set -euo pipefail
cd "$(dirname "$0")/../.."
here=tools/container
tag=${1:-handrail:local}
engine=$("$here/engine.sh")
default_base=$(sed -n 's/^ARG BASE_IMAGE=//p' Dockerfile)
debian_base=localhost/handrail-base:bookworm
base=${BASE_IMAGE:-$default_base}
log=.run/container/build.log
mkdir -p "$(dirname "$log")"

available() {  # the image is here, or can be pulled
  "$engine" image inspect "$1" >/dev/null 2>&1 || timeout 120 "$engine" pull -q "$1" >>"$log" 2>&1
}

if [ "${BUILD_BASE:-}" = 1 ] || { [ -z "${BASE_IMAGE:-}" ] && ! available "$base"; }; then
  [ "${BUILD_BASE:-}" = 1 ] || echo "$base cannot be pulled: using $debian_base, built from Debian packages"
  if [ "${BUILD_BASE:-}" = 1 ] || ! "$engine" image inspect "$debian_base" >/dev/null 2>&1; then
    BUILD_LOG=$log "$here/build-base.sh" "$engine" "$debian_base"
  fi
  base=$debian_base
fi

args=(build --build-arg "BASE_IMAGE=$base" -t "$tag" -f Dockerfile)
if [ "$(basename "$engine")" = podman ]; then
  # Docker's image format keeps the HEALTHCHECK (the OCI format has none).
  args+=(--format docker --layers)
  # pip inside the build: this host's index settings (pip config) and its CA certificates.
  pip_conf=$(mktemp)
  trap 'rm -f "$pip_conf"' EXIT
  "$here/pip-conf.sh" >"$pip_conf"
  chmod 0644 "$pip_conf"
  args+=(-v "$pip_conf:/etc/pip.conf:ro")
  [ -d /etc/ssl/certs ] && args+=(-v /etc/ssl/certs:/etc/ssl/certs:ro)
fi
started=$SECONDS
echo "building $tag from $base with $engine (output in $log)"
if ! "$engine" "${args[@]}" . >>"$log" 2>&1; then
  echo "the build of $tag failed; the last lines of $log:" >&2
  tail -n 20 "$log" >&2
  exit 1
fi
echo "built $tag ($((SECONDS - started)) s)"
