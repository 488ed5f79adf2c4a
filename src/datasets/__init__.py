"""Grounding data: geometry, the JSONL contract, image loading and synthetic data.

Import the submodules directly (``from src.datasets import geometry``); this package imports
nothing heavy so that ``python -m src.datasets`` starts fast.
"""
