#!/bin/sh
# The release's script of that name, which docker-compose.yml's health check runs.
exec /opt/kafka/bin/kafka-run-class.sh org.apache.kafka.tools.BrokerApiVersionsCommand "$@"
