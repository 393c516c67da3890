"""Real infrastructure for local runs and tests, started by the project itself: Apache Kafka
(KRaft, jars from Maven Central) and Postgres (pgserver's embedded build)."""
