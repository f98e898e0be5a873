"""Contracts of every Caravan input: schemas, rules, validation and quarantine."""
