"""Datasets: the registry, the verified cache, and per-assignment student and hidden files."""

from grader.data.prepare import Prepared, prepare
from grader.data.registry import Entry, Registry, load_registry, raw_inputs

__all__ = ["Entry", "Prepared", "Registry", "load_registry", "prepare", "raw_inputs"]
