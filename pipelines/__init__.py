"""Caravan layer: pipelines."""
