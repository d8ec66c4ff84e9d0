"""The modelrollout controller: a kopf operator that reconciles ModelRollout resources."""
