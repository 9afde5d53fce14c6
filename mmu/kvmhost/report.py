"""A run of every experiment as one record: labelled, saved as JSON, compared with another.

:func:`run` makes the record on this host; :func:`load` reads one back (the reference run
shipped with the project is :func:`reference`); :func:`diff` lists what two records --
two hosts, or one host before and after a kernel patch -- answer differently.  A record
says where it came from (kernel, backend line, date, command) and what the run left
behind in tracefs (``cleanup``: must be empty).
"""
from __future__ import annotations

import dataclasses
import datetime
import json
import os
import sys

from mmu.kvmhost.backend import Backend, detect
from mmu.kvmhost.experiments import EXPERIMENTS, STATUSES, Case, run_experiments
from mmu.kvmhost.model_side import Model

__all__ = ["Report", "run", "live_run", "load", "reference", "diff", "REFERENCE_PATH", "FORMAT",
           "REGENERATE"]

FORMAT = 1
REFERENCE_PATH = os.path.join(os.path.dirname(__file__), "reference_run.json")
#: The one command that regenerates the shipped reference run (as root, on a KVM host).
REGENERATE = "python -m mmu.kvmhost run --json mmu/kvmhost/reference_run.json"


@dataclasses.dataclass(frozen=True)
class Report:
    label: dict                 # kernel, backend line, date, command, python
    backend: Backend
    tracing: bool
    trace_note: str
    cases: tuple[Case, ...]
    cleanup: dict               # trace.leftovers() after the run

    @property
    def summary(self) -> dict[str, int]:
        out = {s: 0 for s in STATUSES}
        for c in self.cases:
            out[c.status] += 1
        return out

    @property
    def disagreements(self) -> list[Case]:
        return [c for c in self.cases if c.status == "disagree"]

    def experiments(self) -> list[str]:
        seen = []
        for c in self.cases:
            if c.experiment not in seen:
                seen.append(c.experiment)
        return seen

    def cases_of(self, experiment: str) -> list[Case]:
        return [c for c in self.cases if c.experiment == experiment]

    def as_dict(self) -> dict:
        return {"format": FORMAT, "label": self.label, "backend": self.backend.as_dict(),
                "tracing": self.tracing, "trace_note": self.trace_note,
                "summary": self.summary, "cleanup": self.cleanup,
                "cases": [c.as_dict() for c in self.cases]}

    def save(self, path: str) -> None:
        with open(path, "w") as f:
            json.dump(self.as_dict(), f, indent=1)
            f.write("\n")

    @classmethod
    def from_dict(cls, d: dict) -> "Report":
        if d.get("format") != FORMAT:
            raise ValueError(f"report format {d.get('format')!r}: this version reads {FORMAT}")
        backend = Backend.from_dict(d["backend"])
        cases = tuple(Case(**c) for c in d["cases"])
        for c in cases:
            if c.status not in STATUSES:
                raise ValueError(f"case {c.name!r}: status {c.status!r} not in {STATUSES}")
        return cls(d["label"], backend, d["tracing"], d["trace_note"], cases, d["cleanup"])


def run(names=None, *, trace: bool | None = None, model: Model | None = None,
        command: str = "") -> Report:
    """Run the experiments ``names`` (default all) on this host and label the record."""
    from mmu.kvmhost.runner import Host
    from mmu.kvmhost.trace import VMX_SVM_EVENTS, leftovers
    backend = detect()
    model = model or Model(backend.era, backend.mmu_kind, backend.model_vendor)
    # kvm_exit / kvm_cr fire only where guest code runs on VMX/SVM hardware (never on PVM)
    extra = VMX_SVM_EVENTS if backend.vendor in ("intel", "amd") else ()
    with Host(trace=trace, events=extra) as host:
        cases = run_experiments(host, model, backend, names)
        tracing, note = host.tracing, host.trace_note
    label = {"kernel": backend.kernel, "backend": backend.line(),
             "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
             "command": command or "python -m mmu.kvmhost run",
             "python": sys.version.split()[0],
             "model": f"era {model.era}, mmu={model.kind}, vendor={model.vendor}"}
    return Report(label, backend, tracing, note, tuple(cases), leftovers())


def live_run(names=None) -> tuple["Report | None", str]:
    """Run on this machine if it can; (record or None, one sentence saying which and why).
    Chapter 10 shows this beside the reference run; it never invents a result."""
    from mmu.kvmhost.host import kvm_unusable_reason
    why = kvm_unusable_reason()
    if why:
        return None, f"Not run live: {why}. Showing the recorded reference run only."
    r = run(names, command="mmu.kvmhost.report.live_run() (chapter 10)")
    how = "with tracing" if r.tracing else f"without tracing ({r.trace_note})"
    return r, f"Run live on this machine just now, {how}."


def load(path: str) -> Report:
    with open(path) as f:
        return Report.from_dict(json.load(f))


def reference() -> Report:
    """The recorded reference run shipped with the project (see :data:`REGENERATE`)."""
    return load(REFERENCE_PATH)


@dataclasses.dataclass(frozen=True)
class Difference:
    experiment: str
    name: str
    a: object            # the host's answer in the first record (None: refused/absent)
    b: object
    a_status: str
    b_status: str


def diff(a: Report, b: Report, *, include_measured: bool = False) -> list[Difference]:
    """Cases whose host answer or status differs between two records (``measured``
    timings differ on every run, so they are left out unless asked for)."""
    ka = {(c.experiment, c.name): c for c in a.cases}
    kb = {(c.experiment, c.name): c for c in b.cases}
    out = []
    for key in list(ka) + [k for k in kb if k not in ka]:
        ca, cb = ka.get(key), kb.get(key)
        if not include_measured and "measured" in (getattr(ca, "status", ""),
                                                   getattr(cb, "status", "")):
            continue
        ra, rb = (ca.real if ca else None), (cb.real if cb else None)
        sa, sb = (ca.status if ca else "absent"), (cb.status if cb else "absent")
        if ra != rb or sa != sb:
            out.append(Difference(key[0], key[1], ra, rb, sa, sb))
    return out


__all__ += ["Difference", "EXPERIMENTS"]
