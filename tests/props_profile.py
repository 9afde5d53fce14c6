"""Hypothesis profiles for the refusal and entry-point properties (issue 14).

``make test`` runs the ``mmu-fast`` profile: derandomized (the same examples every run,
so a failure in CI is one anyone can replay), no example database, a budget per property
small enough that all of them together take a few seconds.  A longer campaign:

    MMU_PROPS=campaign .venv/bin/python -m pytest tests/test_refusal_props.py \\
        tests/test_entry_points_props.py --hypothesis-show-statistics

runs every property with ``MMU_PROPS_SCALE`` (default 100) times its budget and random
seeds (a new search each run; failures are saved in .hypothesis/ and replayed first).
"""
from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

_PROFILES = ("fast", "campaign")
PROFILE = os.environ.get("MMU_PROPS", "fast")
if PROFILE not in _PROFILES:
    raise ValueError(f"MMU_PROPS={PROFILE!r}: allowed {_PROFILES}")
_SCALE = os.environ.get("MMU_PROPS_SCALE", "100")
if not _SCALE.isdigit() or int(_SCALE) < 1:
    raise ValueError(f"MMU_PROPS_SCALE={_SCALE!r}: allowed a whole number >= 1")

_COMMON = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                     HealthCheck.data_too_large])
settings.register_profile("mmu-fast", derandomize=True, database=None, **_COMMON)
settings.register_profile("mmu-campaign", derandomize=False, **_COMMON)


def prop_settings(fast_examples: int) -> settings:
    """Settings of the chosen profile with ``fast_examples`` examples (times the scale in a
    campaign)."""
    n = fast_examples if PROFILE == "fast" else fast_examples * int(_SCALE)
    return settings(settings.get_profile(f"mmu-{PROFILE}"), max_examples=n)
