"""Caravan layer: models."""
