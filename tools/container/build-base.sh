#!/usr/bin/env bash
# Build a Python base image from Debian packages alone, for hosts that reach Debian's package
# mirror but no container registry (python:3.11-slim cannot be pulled). debootstrap makes a
# minimal bookworm root filesystem with Debian's python3 (3.11), the engine imports it.
#
#   tools/container/build-base.sh ENGINE IMAGE       e.g. tools/container/build-base.sh podman handrail-base:bookworm
#
# The mirror is the one apt on this host already uses (DEBIAN_MIRROR overrides it). Like
# python:*-slim, `python` runs python3; python3-venv lets the Dockerfile's build stage make its venv.
set -euo pipefail
engine=$1
image=$2
suite=${DEBIAN_SUITE:-bookworm}
packages=python3,python3-venv,ca-certificates

mirror=${DEBIAN_MIRROR:-}
if [ -z "$mirror" ]; then
  # deb822 ("URIs: http://…/debian") or one-line ("deb http://…/debian bookworm main") sources.
  mirror=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null \
    | grep -oE '(https?://[^ ]*/debian)/?( |$)' | head -n 1 | tr -d ' ' || true)
fi
if [ -z "$mirror" ]; then
  echo "build-base: no Debian mirror found in /etc/apt/sources.list*: set DEBIAN_MIRROR" >&2
  exit 1
fi
command -v debootstrap >/dev/null || { echo "build-base: debootstrap not found (apt-get install -y debootstrap)" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "build-base: debootstrap needs root" >&2; exit 1; }

rootfs=$(mktemp -d /var/tmp/handrail-rootfs.XXXXXX)
trap 'rm -rf "$rootfs"' EXIT
log=${BUILD_LOG:-/dev/null}
started=$SECONDS
if ! debootstrap --variant=minbase --include="$packages" "$suite" "$rootfs" "$mirror" >>"$log" 2>&1; then
  echo "build-base: debootstrap $suite from $mirror failed (see $log)" >&2
  exit 1
fi
echo "deb $mirror $suite main" >"$rootfs/etc/apt/sources.list"
ln -sf /usr/bin/python3 "$rootfs/usr/local/bin/python"
# What an image does not need: package lists, caches, docs, the host's resolver. The man and doc
# folders stay (empty): some packages' scripts link into them (a JRE's update-alternatives).
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb \
  "$rootfs"/usr/share/locale/* "$rootfs"/etc/resolv.conf
find "$rootfs"/usr/share/doc "$rootfs"/usr/share/man ! -type d -delete
quiet=()
[ "$(basename "$engine")" = podman ] && quiet=(--quiet)  # no progress bars (docker import prints none)
tar -C "$rootfs" --numeric-owner -c . | "$engine" import "${quiet[@]}" \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' \
  --message "Debian $suite minbase with python3 (tools/container/build-base.sh)" - "$image" >/dev/null
echo "built $image from Debian $suite packages ($mirror, $((SECONDS - started)) s)"
