"""The suggestion service: features, rules, two-model serving, routing and metrics."""
