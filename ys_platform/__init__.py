"""YieldSensei's real-time DeFi data platform: Kafka backbone, Dagster control plane."""

__version__ = "0.1.0"
