"""DeepLesion's annotation policy for synthetic lesions: which lesions get a label.

Each annotated lesion is labeled on its key slice only.  In every split a share of
the lesions (default 30%) stays unannotated.  Of those, a share (default half) is
chosen among lesions that are visible on the key slice of another lesion that
*stays* labeled (the missing annotations Algorithm 2 mines), the rest anywhere.
Every series keeps at least one labeled lesion (DeepLesion lists no series
without one), so the share reached can fall short of the target on tiny sets;
the summary reports the share reached.

Pure function over lesion descriptors; no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lesionprop.errors import InputError


@dataclass(frozen=True)
class PolicyLesion:
    """What the policy needs to know about a lesion (``gid`` = global id)."""

    gid: int
    series: str
    split: int
    key_slice: int
    slices: frozenset[int]


def choose_unlabeled(lesions: list[PolicyLesion], share: float, on_key_share: float,
                     rng: np.random.Generator) -> tuple[set[int], set[int]]:
    """Ids of unannotated lesions, and the subset that lies on another labeled lesion's key slice."""
    if not 0 <= share < 1:
        raise InputError(f"unlabeled share must be in [0, 1), got {share}")
    if not 0 <= on_key_share <= 1:
        raise InputError(f"on-key share must be in [0, 1], got {on_key_share}")
    by_series: dict[str, list[PolicyLesion]] = {}
    for les in lesions:
        by_series.setdefault(les.series, []).append(les)
    unlabeled: set[int] = set()
    on_key: set[int] = set()
    locked: set[int] = set()           # must stay labeled: their key slice explains an on-key miss
    for split in sorted({les.split for les in lesions}):
        pool = [les for les in lesions if les.split == split]
        target = int(round(share * len(pool)))
        n_on = int(round(on_key_share * target))
        labeled_left = {s: len([x for x in by_series[s] if x.split == split]) for s in by_series}

        def can_drop(les: PolicyLesion) -> bool:
            return les.gid not in unlabeled and les.gid not in locked and labeled_left[les.series] > 1

        done = 0
        for i in rng.permutation(len(pool)):            # lesions on another lesion's key slice
            if done >= n_on:
                break
            les = pool[int(i)]
            if not can_drop(les):
                continue
            hosts = [o for o in by_series[les.series]
                     if o.gid != les.gid and o.gid not in unlabeled and o.key_slice in les.slices]
            if not hosts:
                continue
            unlabeled.add(les.gid)
            on_key.add(les.gid)
            locked.add(hosts[0].gid)
            labeled_left[les.series] -= 1
            done += 1
        for i in rng.permutation(len(pool)):            # the rest anywhere
            if done >= target:
                break
            les = pool[int(i)]
            if not can_drop(les):
                continue
            unlabeled.add(les.gid)
            labeled_left[les.series] -= 1
            done += 1
    return unlabeled, on_key
