#!/bin/bash
set -euo pipefail
props=/opt/kafka/config/server.properties
: > "$props"
while IFS='=' read -r name value; do
  case "$name" in
    KAFKA_HEAP_OPTS|KAFKA_OPTS|KAFKA_JVM_*) ;;
    KAFKA_*)
      key=${name#KAFKA_}
      key=${key,,}
      key=${key//___/-}
      key=${key//__/@}
      key=${key//_/.}
      key=${key//@/_}
      printf '%s=%s\n' "$key" "$value" >> "$props"
      ;;
  esac
done < <(env)
java_opts=(${KAFKA_HEAP_OPTS:--Xms256m -Xmx1g} ${KAFKA_OPTS:-} -XX:+ExitOnOutOfMemoryError
           -Dlog4j2.configurationFile=/opt/kafka/config/log4j2.properties -cp '/opt/kafka/libs/*')
: "${CLUSTER_ID:?CLUSTER_ID must be set}"
java -XX:TieredStopAtLevel=1 "${java_opts[@]}" kafka.tools.StorageTool format --ignore-formatted \
  -t "$CLUSTER_ID" -c "$props"
exec java "${java_opts[@]}" kafka.Kafka "$props"
