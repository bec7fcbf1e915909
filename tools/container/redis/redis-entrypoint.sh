#!/bin/sh
# As the official image's entrypoint: a redis-server started without a config file listens on
# every interface with protected mode off (the container's network is the boundary).
set -eu
if [ "${1:-}" = "redis-server" ]; then
    shift
    case "${1:-}" in
        *.conf) exec redis-server "$@" ;;
        *) exec redis-server --protected-mode no "$@" ;;
    esac
fi
exec "$@"
