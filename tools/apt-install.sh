#!/usr/bin/env bash
# Install the Debian packages whose command is missing, quietly: apt's and dpkg's output go to a
# log file, the terminal gets one line. `make system-deps` and `make test-deps` call it.
#
#   tools/apt-install.sh LOG COMMAND:PACKAGE ...     e.g. tools/apt-install.sh .run/apt.log redis-server:redis-server
#
# Set APT_INSTALL_DRY_RUN=1 to print what would be installed and install nothing.
set -euo pipefail
log=$1
shift
missing=()
for pair in "$@"; do
  command -v "${pair%%:*}" >/dev/null || missing+=("${pair#*:}")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ -n "${APT_INSTALL_DRY_RUN:-}" ]; then
  echo "would install: ${missing[*]}"
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "missing: ${missing[*]}: install with: sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi
mkdir -p "$(dirname "$log")"
run=$(mktemp)
trap 'cat "$run" >>"$log"; rm -f "$run"' EXIT
started=$SECONDS
if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"; } >"$run" 2>&1; then
  echo "apt-get install ${missing[*]} failed; the last lines of $log:" >&2
  tail -n 15 "$run" >&2
  exit 1
fi
count=$(grep -c '^Setting up ' "$run" || true)
echo "installed ${missing[*]} ($count packages, $((SECONDS - started)) s; apt's output in $log)"
