#!/bin/sh
# The path and arguments of apache/kafka's script: end offsets of a topic's partitions.
exec java -XX:TieredStopAtLevel=1 -Xmx128m -Dlog4j2.configurationFile=/opt/kafka/config/log4j2.properties \
  -cp '/opt/kafka/libs/*' org.apache.kafka.tools.GetOffsetShell "$@"
