"""Where the book's citations point: anchors of ``docs/sources.md`` and upstream pages.

The chapters' markdown links its citations itself; the views' printed and HTML texts
cite through :func:`cite`, so a reader of a text form sees where to look:

* ``cite("facts §4")`` -> ``facts §4 (docs/sources.md#facts-4)``: a section of the
  project's fact sheet, summarised with its sources in docs/sources.md §4;
* ``cite("[ROOTS-v2-18]")`` -> ``[ROOTS-v2-18] (docs/sources.md#roots-v2-18)``: a
  mailing-list message (Message-Id and lore.kernel.org link there);
* ``cite("01b31714bd90")`` -> ``01b31714bd90 (https://git.kernel.org/torvalds/c/01b31714bd90)``;
* ``message_url("<id@host>")`` -> ``https://lore.kernel.org/r/id@host``.

Several references in one call are joined with ", ".  tests/test_sources.py checks that
every anchor these produce exists in docs/sources.md.
"""
from __future__ import annotations

import re

__all__ = ["SOURCES_PAGE", "anchor", "cite", "commit_url", "message_url"]

SOURCES_PAGE = "docs/sources.md"

_FACTS = re.compile(r"^facts §(\d+(?:\.\d+)?)$")
_SDM = re.compile(r"^SDM §(\d+(?:\.\d+)?)$")
_TAG = re.compile(r"^\[([A-Z][A-Za-z0-9]*(?:-[A-Za-z0-9]+)+|[A-Z][A-Z0-9]+)\]$")
_HASH = re.compile(r"^[0-9a-f]{12}$")


def anchor(ref: str) -> str:
    """The docs/sources.md anchor of ``"facts §3.2"``, ``"SDM §4.7"``, ``"[RR-v1-0]"``
    or a 12-digit commit hash."""
    if not isinstance(ref, str):
        raise TypeError(f"ref must be a str, not {type(ref).__name__}")
    for pattern, prefix in ((_FACTS, "facts-"), (_SDM, "sdm-")):
        m = pattern.match(ref)
        if m:
            return prefix + m.group(1).replace(".", "-")
    m = _TAG.match(ref)
    if m:
        return m.group(1).lower()
    if _HASH.match(ref):
        return ref
    raise ValueError(f"ref={ref!r}: allowed 'facts §N[.M]', 'SDM §N[.M]', a tag like "
                     f"'[RR-v1-0]' or a 12-digit lower-case commit hash")


def commit_url(commit: str) -> str:
    if not _HASH.match(str(commit)):
        raise ValueError(f"commit={commit!r}: allowed 12 lower-case hex digits")
    return f"https://git.kernel.org/torvalds/c/{commit}"


def message_url(message_id: str) -> str:
    """lore.kernel.org's page for a Message-Id (with or without the angle brackets)."""
    mid = str(message_id).strip().removeprefix("<").removesuffix(">")
    if "@" not in mid or any(c.isspace() for c in mid):
        raise ValueError(f"message_id={message_id!r}: allowed '<local@host>'")
    return f"https://lore.kernel.org/r/{mid}"


def cite(*refs: str) -> str:
    """Each reference followed by where to read it (see the module docstring)."""
    if not refs:
        raise ValueError("cite() needs at least one reference")
    out = []
    for ref in refs:
        a = anchor(ref)
        where = commit_url(ref) if a == ref else f"{SOURCES_PAGE}#{a}"
        out.append(f"{ref} ({where})")
    return ", ".join(out)
