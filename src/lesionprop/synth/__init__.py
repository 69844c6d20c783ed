"""Synthetic DeepLesion-format datasets with complete truth: body phantoms (phantom.py), one
series with its lesions (series.py), DeepLesion's annotation policy (policy.py), the dataset
writer (dataset.py: ``generate_dataset``) and its preview (preview.py)."""
