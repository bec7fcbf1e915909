#!/usr/bin/env bash
# Print the container engine to use: $CONTAINER_ENGINE when set, else podman, else docker,
# whichever answers (a docker CLI without a daemon does not count). Exit 1 when none does.
set -euo pipefail
if [ -n "${CONTAINER_ENGINE:-}" ]; then
  echo "$CONTAINER_ENGINE"
  exit 0
fi
for engine in podman docker; do
  if command -v "$engine" >/dev/null && "$engine" info >/dev/null 2>&1; then
    echo "$engine"
    exit 0
  fi
done
echo "no container engine answers: install podman (apt-get install -y podman) or start Docker" >&2
exit 1
