"""Synthetic DeepLesion-format datasets with complete truth: body phantoms (phantom.py), one
series with its lesions (series.py), DeepLesion's annotation policy (policy.py), the dataset
writer (dataset.py: ``generate_dataset``), its preview (preview.py) and the complete-label
annotations for pre-training a detector on a synthetic set (pretrain_labels.py)."""
