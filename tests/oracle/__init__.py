"""Test-only oracle: QEMU's x86 MMU (through Unicorn) as an independent page-walk reference.

``unicorn_oracle.run_access`` runs one access on the emulated CPU; ``cases`` generates
seeded random page-table setups for the differential test (tests/test_differential.py).
"""
from .unicorn_oracle import QUIRKS, HarnessError, OracleResult, ORACLE_MAXPHYADDR, run_access

__all__ = ["run_access", "OracleResult", "HarnessError", "QUIRKS", "ORACLE_MAXPHYADDR"]
