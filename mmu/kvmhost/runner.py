"""One guest, booted straight into a paging mode, run once, observed.

:class:`Host` owns the ``/dev/kvm`` fd and, where the user may trace, one
:class:`~mmu.kvmhost.trace.TraceSession` for the whole set of experiments.
:meth:`Host.boot` makes a fresh VM and vCPU for every case (so no case sees another's
shadow pages), loads a :class:`~mmu.kvmhost.guest.GuestImage`, sets the registers
(``KVM_SET_SREGS``), checks that the host kept them, runs the guest within the host's
bounds, and returns a :class:`Boot`: what the run did, the trace events, and the change
in the VM's and the vCPU's binary statistics.
"""
from __future__ import annotations

import contextlib
import dataclasses

from mmu.kvmhost import guest as g
from mmu.kvmhost.host import HostRefused, HostVm, Kvm, RunOutcome
from mmu.kvmhost.stats import delta
from mmu.kvmhost.trace import DEFAULT_EVENTS, TraceEvent, TraceSession, tracing_unusable_reason
from mmu.x86.regs import CR0, CR4, EFER, RFLAGS, Regs

__all__ = ["Host", "Boot", "PORT_MARK"]

PORT_MARK = 0x11           # OUT here = "the guest starts step <value>"


@dataclasses.dataclass(frozen=True)
class Boot:
    """One case's run.  ``refusal`` is "" when the host accepted the state and the guest
    ran; otherwise why not (an errno, a register the host changed, a shutdown)."""

    refusal: str
    outcome: RunOutcome | None = None
    events: tuple[TraceEvent, ...] | None = None
    vm_stats: dict = dataclasses.field(default_factory=dict)
    vcpu_stats: dict = dataclasses.field(default_factory=dict)

    @property
    def accepted(self) -> bool:
        return not self.refusal

    def out(self, port: int) -> int | None:
        """The last value the guest wrote to ``port``, or None."""
        vals = [v for p, v in (self.outcome.outs if self.outcome else ()) if p == port]
        return vals[-1] if vals else None

    def named(self, name: str) -> list[TraceEvent]:
        return [e for e in self.events or () if e.name == name]

    def steps(self) -> list[list[TraceEvent]]:
        """The events split by the guest's step marks (its OUT to PORT_MARK, seen as a
        ``kvm_pio`` event): element i holds the events from the mark of step i up to the
        next mark (the events before the first mark belong to the boot)."""
        out: list[list[TraceEvent]] = []
        for e in self.events or ():
            if e.name == "kvm_pio" and e["port"] == PORT_MARK:
                out.append([])
            elif out:
                out[-1].append(e)
        return out


def _bits_differ(want: Regs, got) -> str:
    """What the host changed, bit by bit: "cleared CR0.PG (CR0 0x80010031 -> 0x10031)"."""
    diffs = []
    for reg, flags in (("cr0", CR0), ("cr4", CR4), ("efer", EFER)):
        a, b = getattr(want, reg), int(getattr(got, reg))
        if a != b:
            def names(bits: int) -> str:
                return "|".join(f"{reg.upper()}.{f.name}" for f in flags if bits & f) \
                    or f"{reg.upper()} bits {bits:#x}"
            what = []
            if a & ~b:
                what.append(f"cleared {names(a & ~b)}")
            if b & ~a:
                what.append(f"set {names(b & ~a)}")
            diffs.append(f"{' and '.join(what)} ({reg.upper()} {a:#x} -> {b:#x})")
    return "; ".join(diffs)


class Host:
    """``with Host() as h: h.boot(image, regs, code)``.

    ``trace=None`` traces when this process may (root); ``False`` never; ``True``
    requires it.  ``events`` adds tracepoints to :data:`DEFAULT_EVENTS`.
    """

    def __init__(self, *, trace: bool | None = None, events: tuple[str, ...] = (),
                 time_limit: float = 5.0, max_exits: int = 20_000) -> None:
        self.trace_wanted = trace
        self.events = DEFAULT_EVENTS + tuple(events)
        self.time_limit = time_limit
        self.max_exits = max_exits
        self.kvm: Kvm | None = None
        self.session: TraceSession | None = None
        self.trace_note = ""

    def __enter__(self) -> "Host":
        self.kvm = Kvm()
        try:
            why = tracing_unusable_reason()
            if self.trace_wanted is False:
                self.trace_note = "tracing turned off"
            elif why:
                if self.trace_wanted:
                    raise PermissionError(why)
                self.trace_note = why
            else:
                try:
                    self.session = TraceSession(self.events).__enter__()
                except OSError as e:       # tracefs refused us after all: run untraced
                    if self.trace_wanted:
                        raise
                    self.trace_note = f"tracing failed to start: {e}"
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        try:
            if self.session is not None:
                self.session.close()
                self.session = None
        finally:
            if self.kvm is not None:
                self.kvm.close()
                self.kvm = None

    def __exit__(self, *exc) -> None:
        self.close()

    @contextlib.contextmanager
    def paused(self):
        """Tracing off for a timed section (``tracing_on`` = 0), back on afterwards."""
        if self.session is None:
            yield
            return
        self.session.set_on(False)
        try:
            yield
        finally:
            self.session.set_on(True)

    @property
    def tracing(self) -> bool:
        return self.session is not None

    def boot(self, image: g.GuestImage, regs: Regs, code: g.Asm | bytes, *, cpl: int = 0,
             ac: bool = False, stop_port: int | None = g.PORT_DONE,
             shutdown_ok: bool = False, rip: int | None = None, rsp: int | None = None
             ) -> Boot:
        """Run ``code`` once in a fresh VM with ``image``'s memory and ``regs``.
        ``shutdown_ok``: a triple fault is how this guest is expected to end (a CPL3 #PF
        on PVM, delivered through an event entry our guests do not have)."""
        entry = image.set_code(code)
        rip = entry if rip is None else rip
        with HostVm(self.kvm, g.RAM_SIZE) as vm:
            vcpu = vm.create_vcpu()
            vm.load(image.mem)
            sregs = g.sregs_for(vcpu.get_sregs(), regs, cpl=cpl)
            try:
                vcpu.set_sregs(sregs)
            except HostRefused as e:
                return Boot(f"{e.call}: {e.errname}")
            changed = _bits_differ(regs, vcpu.get_sregs())
            if changed:
                return Boot(f"KVM_SET_SREGS succeeded, but the host {changed}")
            r = vcpu.get_regs()
            r.rip, r.rsp = rip, g.STACK_TOP if rsp is None else rsp
            # IOPL=3 lets a CPL3 guest report with OUT; AC only matters with SMAP.
            r.rflags = int(RFLAGS.FIXED1) | (0x3000 if cpl == 3 else 0) | \
                (int(RFLAGS.AC) if ac else 0)
            vcpu.set_regs(r)
            vm0, vc0 = vm.stats(), vcpu.stats()
            if self.session:
                self.session.clear()
            out = vcpu.run(max_exits=self.max_exits, time_limit=self.time_limit,
                           stop_port=stop_port)
            events = tuple(self.session.events()) if self.session else None
            boot = Boot("", out, events, delta(vm0, vm.stats()), delta(vc0, vcpu.stats()))
        if out.reason == "shutdown" and not out.outs and not shutdown_ok:
            return dataclasses.replace(boot, refusal="the first KVM_RUN ended in "
                                                     "KVM_EXIT_SHUTDOWN (triple fault)")
        if out.reason in ("time-limit", "exit-limit"):
            raise RuntimeError(f"guest did not finish: {out.reason} after {out.exits} exits "
                               f"({out.seconds:.3f} s); the experiment's guest is wrong")
        return boot
