"""Inference: the engine that asks a checkpoint the trained question (`engine.py`), the prediction record
(`predictions.py`) and per-object scores (`scoring.py`). Imports the config and data layers only.
"""
