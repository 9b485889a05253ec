"""Guardrails on every request: local detectors and nemoguardrails, per route."""
