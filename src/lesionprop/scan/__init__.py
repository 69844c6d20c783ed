"""One CT scan -> 3D lesion report (``lesionprop detect``): :func:`lesionprop.scan.run.detect`.

Modules: ``lesions`` (pure maths: lesion table, label volume), ``outputs`` (CSV / JSON,
NIfTI, DICOM SEG), ``page`` (static HTML + figures), ``run`` (the workflow).
"""
