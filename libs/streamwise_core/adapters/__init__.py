"""Kafka, Redis, SQL, HTTP, telemetry and settings: the outside world, behind the contracts."""
