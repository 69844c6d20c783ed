"""Data layer: DeepLesion annotation files, slice access, 3DCE samples, CT import, synthetic data."""
