#!/usr/bin/env bash
# Build the local stand-ins for the registry images docker-compose.yml's core runs, on the
# Debian base (build-base.sh):
#   localhost/handrail-kafka:4.3.1   for apache/kafka:4.3.1  (the jars `handrail dev up` resolves, + kafka-tools)
#   localhost/handrail-redis:7       for redis:7.4-alpine    (Debian's redis-server)
#
#   tools/container/build-standins.sh ENGINE [PYTHON]     PYTHON: the venv's, which has handrail_dev
set -euo pipefail
cd "$(dirname "$0")/../.."
here=tools/container
engine=$1
python=${2:-.venv/bin/python}
base=localhost/handrail-base:bookworm
kafka_version=$(sed -n 's/^ *image: apache\/kafka:\(.*\)$/\1/p' docker-compose.yml)
log=.run/container/build.log
mkdir -p "$(dirname "$log")"

"$engine" image inspect "$base" >/dev/null 2>&1 || BUILD_LOG=$log "$here/build-base.sh" "$engine" "$base"

# Docker's image format keeps a HEALTHCHECK; podman's default (OCI) has none. Docker has no such flags.
extra=()
[ "$(basename "$engine")" = podman ] && extra=(--format docker --layers)
build() {  # IMAGE CONTEXT
  local started=$SECONDS
  if ! "$engine" build "${extra[@]}" --build-arg "BASE_IMAGE=$base" -t "$1" -f "$2/Containerfile" "$2" >>"$log" 2>&1; then
    echo "the build of $1 failed; the last lines of $log:" >&2
    tail -n 20 "$log" >&2
    exit 1
  fi
  echo "built $1 ($((SECONDS - started)) s)"
}

# Kafka: the broker's jars as the dev launcher resolves them (Maven Central, cached), and the
# kafka-tools jar for the health check's kafka-broker-api-versions.sh.
context=$(mktemp -d)
trap 'rm -rf "$context"' EXIT
cp "$here"/kafka/* tools/kafka/log4j2.yaml tools/kafka/tools-log4j2.yaml "$context/"
libs=$(HANDRAIL_KAFKA_VERSION=$kafka_version "$python" -c \
  'from handrail_dev.kafka_jars import kafka_libs; from handrail_dev.settings import DevSettings; print(kafka_libs(DevSettings()))')
cp -r "$libs" "$context/libs"
if ! mvn -q -B -Dstyle.color=never org.apache.maven.plugins:maven-dependency-plugin:3.9.0:copy \
  -Dartifact="org.apache.kafka:kafka-tools:$kafka_version" \
  -DoutputDirectory="$context/libs" >>"$log" 2>&1; then
  echo "Maven could not fetch kafka-tools $kafka_version (see $log)" >&2
  exit 1
fi
build "localhost/handrail-kafka:$kafka_version" "$context"
build localhost/handrail-redis:7 "$here/redis"
