"""Caravan layer: serving."""
