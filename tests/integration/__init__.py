"""Integration tests against a real Apache Kafka broker (see deploy/kafka/)."""
