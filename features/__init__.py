"""Caravan layer: features."""
