"""CT scans -> 3D lesion reports (``lesionprop detect``): :func:`lesionprop.scan.run.detect` for one
series, :func:`lesionprop.scan.study.run_study` for a folder of several.

Modules: ``lesions`` (pure maths: lesion table, label volume, HU per lesion), ``outputs`` (CSV /
JSON, NIfTI, DICOM SEG), ``report_sr`` (the DICOM SR measurement report, TID 1500), ``record``
(lesions.json's header, the printed notes), ``figures`` and ``page`` (static HTML), ``run`` (one
series), ``study`` (a study or cohort: one result folder per series, series.csv, shards).
"""
