#!/usr/bin/env bash
# Install podman and what the images are built with when missing (quietly: apt's output goes to
# LOG), and give podman the settings it needs on a host without systemd: runc, cgroupfs, events
# to a file, and file and process limits high enough for Kafka. Run as root; `.ci/run` calls it.
#
#   tools/container/podman-setup.sh [LOG]
set -euo pipefail
here=$(dirname "$0")
log=${1:-.run/apt.log}
# netavark and aardvark-dns: the compose network, where containers find each other by service name;
# netavark sets it up with iptables (missing, every RUN of an image build fails: "netavark: No such file").
"$here/../apt-install.sh" "$log" podman:podman runc:runc debootstrap:debootstrap \
  /usr/lib/podman/netavark:netavark /usr/lib/podman/aardvark-dns:aardvark-dns iptables:iptables \
  slirp4netns:slirp4netns fuse-overlayfs:fuse-overlayfs newuidmap:uidmap mvn:maven
conf=/etc/containers/containers.conf
if [ ! -e "$conf" ]; then
  mkdir -p "$(dirname "$conf")"
  cat >"$conf" <<'CONF'
# Written by tools/container/podman-setup.sh: podman on a host without systemd.
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
CONF
  echo "wrote $conf"
fi
