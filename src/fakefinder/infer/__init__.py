"""Scoring new media with trained detectors."""
