"""Synthetic Central Asian trade world: lawful trade, arms-trafficking networks
(see `typologies`), travellers, a historical inspection policy with imperfect
inspections, and deliberately broken rows. Entry point: `generate_world`."""

from pipelines.synthetic.typologies import DEFAULT_TYPOLOGY_RATES, TYPOLOGIES
from pipelines.synthetic.world import World, WorldConfig, generate_world

__all__ = ["DEFAULT_TYPOLOGY_RATES", "TYPOLOGIES", "World", "WorldConfig", "generate_world"]
