"""Evaluation: AP through pycocotools' COCOeval (`coco_ap.py`), the metrics (`metrics.py`) and pictures
(`pictures.py`). Imports the layers below it (config, data, inference).
"""
