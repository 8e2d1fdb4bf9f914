"""nebula-id tests, by tier: unit, api, integration, k8s (and e2e/ at the root)."""
