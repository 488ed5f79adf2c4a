"""The data layer: the JSONL contract and its validation, geometry, the image loader, records -> ms-swift
rows (prompt schemes' builders and preprocessors), augmentation, and the data tools of
``python -m src.datasets`` (validate, synth, convert, render, stats, cache).

Import the submodules directly (``from src.datasets import geometry``); this package imports
nothing heavy so that ``python -m src.datasets`` starts fast.
"""
