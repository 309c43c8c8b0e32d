"""Helpers shared by every layer: file fingerprints and filter-bank features."""
