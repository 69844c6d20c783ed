"""lesionprop: semi-supervised lesion detection in CT.

FPN-3DCE detector, slice-level label propagation (Algorithm 1), missing
ground-truth mining (Algorithm 2), the data-distillation baseline and the
DeepLesion evaluation protocol, on DeepLesion-layout data.
"""

__version__ = "0.1.0"
