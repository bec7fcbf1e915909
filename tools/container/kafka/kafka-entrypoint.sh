#!/bin/sh
# Configure the broker from KAFKA_* variables the way apache/kafka's image does, then run it:
# KAFKA_FOO_BAR=v becomes foo.bar=v ("__" stands for "_", "___" for "-"); the JVM's variables
# (KAFKA_HEAP_OPTS, KAFKA_OPTS, ...) are not properties. The storage is formatted on first start
# with CLUSTER_ID, KRaft with the static quorum KAFKA_CONTROLLER_QUORUM_VOTERS names.
set -eu
config=/opt/kafka/config/server.properties
: "${KAFKA_LOG_DIRS:=/var/lib/kafka/data}"
export KAFKA_LOG_DIRS
# The default of apache/kafka's image, so a volume formatted by either starts with the other.
: "${CLUSTER_ID:=5L6g3nShT-eMCtK--X86sw}"

echo "# Written by kafka-entrypoint.sh from the KAFKA_* environment at $(date -u +%FT%TZ)" >"$config"
env | sort | while IFS='=' read -r name value; do
    case "$name" in
        KAFKA_HEAP_OPTS | KAFKA_OPTS | KAFKA_JVM_PERFORMANCE_OPTS | KAFKA_LOG4J_OPTS | KAFKA_GC_LOG_OPTS \
            | KAFKA_JMX_OPTS | KAFKA_DEBUG | KAFKA_VERSION) continue ;;
        KAFKA_*) ;;
        *) continue ;;
    esac
    key=$(printf '%s' "${name#KAFKA_}" | tr 'A-Z' 'a-z' | sed -e 's/___/-/g' -e 's/__/@/g' -e 's/_/./g' -e 's/@/_/g')
    printf '%s=%s\n' "$key" "$value" >>"$config"
done

first_dir=${KAFKA_LOG_DIRS%%,*}
if [ ! -f "$first_dir/meta.properties" ]; then
    /opt/kafka/bin/kafka-run-class.sh kafka.tools.StorageTool format --ignore-formatted \
        -t "$CLUSTER_ID" -c "$config"
fi
exec /opt/kafka/bin/kafka-run-class.sh -broker kafka.Kafka "$config"
