"""Probes trained on frozen (cached) features."""
from .linear_probe import LinearProbe

__all__ = ['LinearProbe']
