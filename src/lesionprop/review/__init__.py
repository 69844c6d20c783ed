"""``lesionprop review``: a person accepts, rejects or redraws pseudo-labels in a browser.

:mod:`.items` what is reviewed and the checks of a decision; :mod:`.decisions` the
``decisions.csv`` record; :mod:`.reviewed` the reviewed label set and the summary (pure);
:mod:`.images` HU -> PNG through window presets; :mod:`.store` the state of a review and its
files; :mod:`.app` the Flask app (page + JSON API).  Boxes are xyxy in the file frame of the
label file (see :mod:`lesionprop.boxes`).
"""

from __future__ import annotations

from lesionprop.review.items import PSEUDO_SOURCES, Decision, ReviewInputError, parse_sources
from lesionprop.review.reviewed import reviewed_table, summarize, summary_text
from lesionprop.review.store import DECISIONS_FILE, REVIEWED_FILE, SUMMARY_FILE, ReviewStore, UnknownItemError

__all__ = ["DECISIONS_FILE", "PSEUDO_SOURCES", "REVIEWED_FILE", "SUMMARY_FILE", "Decision", "ReviewInputError",
           "ReviewStore", "UnknownItemError", "parse_sources", "reviewed_table", "summarize", "summary_text"]
