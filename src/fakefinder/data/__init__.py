"""Datasets from raw files to face crops: layouts, video decoding, face detection, splits."""
