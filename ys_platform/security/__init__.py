"""Kafka security of the platform: SCRAM users, principals and ACLs derived from the catalog."""
