#!/usr/bin/env bash
# Print a pip.conf with this host's index settings (pip config list, PIP_* variables included),
# for pip inside an image build: the same index, proxy and CA bundle the host's pip uses.
# Only settings that mean the same inside a container are kept (not find-links, a host folder).
set -euo pipefail
declare -A settings=()
while IFS= read -r line; do
  key=${line%%=*}
  key=${key#*.}
  value=${line#*=}
  value=${value#\'}
  value=${value%\'}
  case "$key" in
    default-timeout) settings[timeout]=$value ;;  # the same setting under its environment name
    index-url | extra-index-url | trusted-host | cert | proxy | timeout | retries) settings[$key]=$value ;;
  esac
done < <("${PYTHON:-python3}" -m pip config list 2>/dev/null || true)
echo "[global]"
for key in "${!settings[@]}"; do
  echo "$key = ${settings[$key]}"
done
