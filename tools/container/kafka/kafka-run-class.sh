#!/bin/sh
# Run a Kafka main class on the image's jars, as the release's kafka-run-class.sh does.
#   kafka-run-class.sh [-broker] CLASS [ARGS...]
set -eu
log4j=/opt/kafka/config/tools-log4j2.yaml
opts="-Xmx256m"
if [ "${1:-}" = "-broker" ]; then
    shift
    log4j=/opt/kafka/config/log4j2.yaml
    # What kafka-run-class.sh sets for the broker (KAFKA_JVM_PERFORMANCE_OPTS), minus JMX.
    opts="${KAFKA_HEAP_OPTS:--Xms512m -Xmx512m} ${KAFKA_JVM_PERFORMANCE_OPTS:--server -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35 -XX:+ExplicitGCInvokesConcurrent -XX:MaxInlineLevel=15}"
fi
# shellcheck disable=SC2086 # the options are word lists, as in the release's scripts
exec java $opts ${KAFKA_OPTS:-} -Dlog4j2.configurationFile="$log4j" -Djava.awt.headless=true \
    -cp '/opt/kafka/libs/*' "$@"
