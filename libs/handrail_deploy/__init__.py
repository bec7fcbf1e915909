"""Deployment, rendered from the contracts: Kafka principals and ACLs, Kubernetes manifests, the AI inventory."""
