"""Datasets: the registry, the verified cache, and per-assignment student and hidden files."""

from .prepare import Prepared, prepare
from .registry import Entry, Registry, load_registry, raw_inputs

__all__ = ["Entry", "Prepared", "Registry", "load_registry", "prepare", "raw_inputs"]
