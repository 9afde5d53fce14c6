"""KVM's tracepoints for our own runs, in a private tracefs instance that is always removed.

Events (``arch/x86/kvm/mmu/mmutrace.h``, ``arch/x86/kvm/trace.h``):

* ``kvmmmu/kvm_mmu_get_page`` -- every shadow-page lookup of ``kvm_mmu_get_shadow_page``
  (mmu.c), with ``gfn``, the raw ``role`` word, ``root_count`` and ``created`` (1: new
  page, 0: found in the hash).  Its normal print hides several role bits, so the
  instance turns on the ``fields`` option, which prints every field raw;
* ``kvm/kvm_inj_exception`` -- an exception KVM injects into the guest, with its error code;
* ``kvmmmu/kvm_mmu_walker_error`` -- the guest walk (paging_tmpl.h ``FNAME(walk_addr_generic)``)
  failed, with the PFERR bits it computed;
* ``kvm/kvm_pio`` -- the guest's OUT instructions, which the experiments use to mark
  where each step of a guest begins;
* ``kvm/kvm_emulate_insn`` -- an instruction KVM's emulator executed (on PVM: every
  kernel-mode instruction, so a MOV to CR0 seen here reached ``kvm_set_cr0``);
* ``kvm/kvm_cr`` and ``kvm/kvm_exit`` -- CR accesses and VM exits on VMX/SVM (never
  seen on PVM, where kernel-mode guest code is emulated).

Safety: tracing needs root.  :class:`TraceSession` creates ``instances/kvmhost-<pid>-<n>``
(its own buffer: the global trace and anyone else's instance are untouched), limits it to
this process with ``set_event_pid``, and on leaving -- normally, on an error, on Ctrl-C
(KeyboardInterrupt) or on SIGTERM (turned into an exception while the session is open) --
writes 0 to every enable it set, clears the buffer, removes the instance and, if it had
to mount tracefs itself, unmounts it.  An instance left by a process that was killed
(SIGKILL cannot be caught) is removed by the next session (:func:`remove_stale_instances`,
:func:`remove_stale_mounts`).
"""
from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import itertools
import os
import re
import signal
import tempfile
import threading

__all__ = ["TraceSession", "TraceEvent", "tracing_unusable_reason", "find_tracefs",
           "remove_stale_instances", "remove_stale_mounts", "leftovers", "INSTANCE_PREFIX",
           "DEFAULT_EVENTS",
           "VMX_SVM_EVENTS"]

INSTANCE_PREFIX = "kvmhost-"
DEFAULT_EVENTS = ("kvmmmu/kvm_mmu_get_page", "kvm/kvm_inj_exception",
                  "kvmmmu/kvm_mmu_walker_error", "kvm/kvm_pio", "kvm/kvm_emulate_insn")
VMX_SVM_EVENTS = ("kvm/kvm_cr", "kvm/kvm_exit")
_STANDARD_MOUNTS = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")
_counter = itertools.count()
_libc = ctypes.CDLL(None, use_errno=True)


@dataclasses.dataclass(frozen=True)
class TraceEvent:
    """One trace line: ``name`` (e.g. "kvm_mmu_get_page") and its raw fields as ints."""

    name: str
    fields: dict
    pid: int
    text: str = ""             # the line after "name: ", as printed

    def __getitem__(self, key: str) -> int:
        return self.fields[key]


_LINE = re.compile(r"^\s*(?P<comm>.+?)-(?P<pid>\d+)\s+\[\d+\]\s+\S*\s*[\d.]+:\s+"
                   r"(?P<name>\w+):\s*(?P<rest>.*)$")
_FIELD = re.compile(r"(\w+)=(\S+)")


def parse_trace(text: str) -> list[TraceEvent]:
    """Events from a ``trace`` file printed with the ``fields`` option."""
    out = []
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        m = _LINE.match(line)
        if not m:
            continue
        fields = {}
        for k, v in _FIELD.findall(m["rest"]):
            try:
                # symbolic fields print as "(14)" under the fields option
                fields[k] = int(v.strip("()"), 0)
            except ValueError:
                fields[k] = v
        out.append(TraceEvent(m["name"], fields, int(m["pid"]), m["rest"]))
    return out


def _mounted_tracefs() -> str | None:
    # Another session's private mount (kvmhost-*) is never borrowed: it goes away when
    # that session ends.
    try:
        with open("/proc/mounts") as f:
            for line in f:
                parts = line.split()
                if len(parts) > 2 and parts[2] == "tracefs" and \
                        not os.path.basename(parts[1]).startswith("kvmhost-"):
                    return parts[1]
    except OSError:
        pass
    return None


def find_tracefs() -> str | None:
    """A tracefs mounted by the system (not another session's private mount), or None
    (then a session mounts one of its own, and unmounts it)."""
    mounted = _mounted_tracefs()
    if mounted and os.path.isdir(os.path.join(mounted, "instances")):
        return mounted
    for path in _STANDARD_MOUNTS:
        if os.path.isdir(os.path.join(path, "instances")):
            return path
    return None


_PROBED: list[str | None] = []


def tracing_unusable_reason() -> str | None:
    """None when this process can trace KVM here, else why not (one sentence): root,
    the kvm module, a tracefs it can find or mount (a container may forbid mounting), and
    the ``kvmmmu/kvm_mmu_get_page`` event in it.  The mount probe runs once per process
    and is undone at once."""
    if not hasattr(os, "geteuid"):      # e.g. Python in the browser (Pyodide): no host
        return "this Python has no host kernel to trace (no os.geteuid: not a Linux process)"
    if os.geteuid() != 0:
        return ("tracing KVM's role words needs root (tracefs is root-only); "
                "the stats-only experiments still run")
    if not os.path.isdir("/sys/module/kvm"):
        return "the kvm module is not loaded"
    if not _PROBED:
        _PROBED.append(_probe())
    return _PROBED[0]


def _probe() -> str | None:
    root, tmp = find_tracefs(), None
    if root is None:
        tmp = tempfile.mkdtemp(prefix=f"kvmhost-tracefs-{os.getpid()}-")
        try:
            _mount(tmp)
        except OSError as e:
            os.rmdir(tmp)
            return f"tracefs is not mounted and cannot be mounted here ({e.strerror})"
        root = tmp
    try:
        if not os.path.isdir(os.path.join(root, "events", "kvmmmu", "kvm_mmu_get_page")):
            return "this kernel's tracefs has no kvmmmu/kvm_mmu_get_page event"
        if not os.path.isdir(os.path.join(root, "instances")):
            return "this kernel's tracefs has no instances (needed for a private buffer)"
        return None
    finally:
        if tmp:
            _umount(tmp)
            os.rmdir(tmp)


def _write(path: str, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


def _mount(target: str) -> None:
    if _libc.mount(b"nodev", target.encode(), b"tracefs", 0, None) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount -t tracefs nodev {target}: {os.strerror(err)}")


_MNT_DETACH = 2


def _umount(target: str) -> None:
    # A busy mount (someone's cwd or open file inside it) is detached lazily: it disappears
    # from the namespace now and is freed when the last user lets go.
    if _libc.umount2(target.encode(), 0) != 0 and \
            _libc.umount2(target.encode(), _MNT_DETACH) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"umount {target}: {os.strerror(err)}")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _teardown_instance(inst: str, events: tuple[str, ...] = ()) -> None:
    for ev in events:
        with contextlib.suppress(OSError):
            _write(os.path.join(inst, "events", ev, "enable"), "0")
    with contextlib.suppress(OSError):
        _write(os.path.join(inst, "events", "enable"), "0")
    with contextlib.suppress(OSError):
        _write(os.path.join(inst, "trace"), "")
    os.rmdir(inst)


def remove_stale_instances(root: str) -> list[str]:
    """Remove ``kvmhost-<pid>-*`` instances whose process is gone; returns their names.
    Instances of live processes (another run going on now) are left alone."""
    removed = []
    inst_dir = os.path.join(root, "instances")
    for name in sorted(os.listdir(inst_dir)):
        m = re.fullmatch(re.escape(INSTANCE_PREFIX) + r"(\d+)-\d+", name)
        if m and not _pid_alive(int(m.group(1))):
            _teardown_instance(os.path.join(inst_dir, name))
            removed.append(name)
    return removed


def remove_stale_mounts() -> list[str]:
    """Unmount our ``kvmhost-tracefs-<pid>-*`` mounts whose process is gone (killed with
    SIGKILL mid-run); returns them.  Mounts of live processes are left alone."""
    removed, mounts = [], []
    with contextlib.suppress(OSError), open("/proc/mounts") as f:
        mounts = [ln.split()[1] for ln in f if ln.split()[2:3] == ["tracefs"]]
    for m in mounts:
        hit = re.fullmatch(r"kvmhost-tracefs-(\d+)-\w+", os.path.basename(m))
        if hit and not _pid_alive(int(hit.group(1))):
            _umount(m)
            with contextlib.suppress(OSError):
                os.rmdir(m)
            removed.append(m)
    return removed


def _owner(name: str) -> int | None:
    m = re.fullmatch(r"kvmhost-(?:tracefs-)?(\d+)-\w+", name)
    return int(m.group(1)) if m else None


def leftovers(pids=None) -> dict:
    """What the sessions of ``pids`` (default: this process) left behind, for the cleanup
    check: ``instances`` (their ``kvmhost-*`` instances), ``enabled`` (our events still
    enabled in the top-level instance, which no session touches), ``mounts`` (their
    private tracefs mounts).  All empty = clean.  Other processes' sessions are theirs
    (in use, or removed by the next session if their process is gone).  Instances
    outlive an unmount (one tracefs superblock), so when nothing is mounted this mounts
    tracefs briefly to look, as root."""
    pids = {os.getpid()} if pids is None else set(pids)

    def left(name: str) -> bool:
        return _owner(name) in pids

    out = {"instances": [], "enabled": [], "mounts": []}
    mounts = []
    with contextlib.suppress(OSError), open("/proc/mounts") as f:
        mounts = [ln.split()[1] for ln in f if ln.split()[2:3] == ["tracefs"]]
    out["mounts"] = [m for m in mounts if left(os.path.basename(m))]
    root, tmp = find_tracefs(), None
    if root is None:
        if not hasattr(os, "geteuid") or os.geteuid() != 0:
            return out
        tmp = tempfile.mkdtemp(prefix="kvmhost-check-")
        try:
            _mount(tmp)
        except OSError:
            os.rmdir(tmp)
            return out
        root = tmp
    try:
        inst_dir = os.path.join(root, "instances")
        out["instances"] = sorted(n for n in os.listdir(inst_dir)
                                  if n.startswith(INSTANCE_PREFIX) and left(n))
        for ev in DEFAULT_EVENTS + VMX_SVM_EVENTS:
            path = os.path.join(root, "events", ev, "enable")
            with contextlib.suppress(OSError), open(path) as f:
                if f.read().strip() != "0":
                    out["enabled"].append(ev)
    finally:
        if tmp:
            _umount(tmp)
            os.rmdir(tmp)
    return out


class TraceSession:
    """``with TraceSession(events) as t: ...; t.events()`` -- see the module docstring."""

    def __init__(self, events: tuple[str, ...] = DEFAULT_EVENTS, *, buffer_kb: int = 4096) -> None:
        reason = tracing_unusable_reason()
        if reason:
            raise PermissionError(reason)
        for ev in events:
            if not re.fullmatch(r"\w+/\w+", ev):
                raise ValueError(f"event {ev!r} is not 'system/name'")
        if not 64 <= buffer_kb <= 65536:
            raise ValueError(f"buffer_kb={buffer_kb}: allowed 64..65536")
        self.requested = tuple(events)
        self.buffer_kb = buffer_kb
        self.enabled: list[str] = []
        self.missing: list[str] = []
        self.root: str | None = None
        self.instance: str | None = None
        self._mounted: str | None = None
        self._old_term = None

    # -- set-up and teardown --------------------------------------------------------------
    def __enter__(self) -> "TraceSession":
        if threading.current_thread() is threading.main_thread():
            # SIGTERM would end the process without running our teardown: make it an exception.
            self._old_term = signal.getsignal(signal.SIGTERM)

            def _term(signum, frame):
                raise KeyboardInterrupt("SIGTERM during a KVM trace session")
            signal.signal(signal.SIGTERM, _term)
        try:
            self._setup()
        except BaseException:
            self.close()
            raise
        return self

    def _setup(self) -> None:
        remove_stale_mounts()
        root = find_tracefs()
        if root is None:
            self._mounted = tempfile.mkdtemp(prefix=f"kvmhost-tracefs-{os.getpid()}-")
            _mount(self._mounted)
            root = self._mounted
        self.root = root
        remove_stale_instances(root)
        inst = os.path.join(root, "instances", f"{INSTANCE_PREFIX}{os.getpid()}-{next(_counter)}")
        os.mkdir(inst)
        self.instance = inst
        _write(os.path.join(inst, "buffer_size_kb"), str(self.buffer_kb))
        _write(os.path.join(inst, "options", "fields"), "1")
        _write(os.path.join(inst, "set_event_pid"), str(os.getpid()))
        for ev in self.requested:
            path = os.path.join(inst, "events", ev, "enable")
            if not os.path.exists(path):
                self.missing.append(ev)
                continue
            _write(path, "1")
            self.enabled.append(ev)
        _write(os.path.join(inst, "tracing_on"), "1")

    def close(self) -> None:
        try:
            if self.instance and os.path.isdir(self.instance):
                with contextlib.suppress(OSError):
                    _write(os.path.join(self.instance, "tracing_on"), "0")
                _teardown_instance(self.instance, tuple(self.enabled))
            self.instance = None
        finally:
            try:
                if self._mounted:
                    _umount(self._mounted)
                    os.rmdir(self._mounted)
                    self._mounted = None
            finally:
                if self._old_term is not None:
                    signal.signal(signal.SIGTERM, self._old_term)
                    self._old_term = None

    def __exit__(self, *exc) -> None:
        self.close()

    # -- reading --------------------------------------------------------------------------
    def clear(self) -> None:
        """Empty the instance's buffer (between the phases of one experiment)."""
        _write(os.path.join(self.instance, "trace"), "")

    def set_on(self, on: bool) -> None:
        """Start or stop recording (``tracing_on``); the enabled events stay as they are."""
        _write(os.path.join(self.instance, "tracing_on"), "1" if on else "0")

    def events(self, name: str | None = None) -> list[TraceEvent]:
        """Every event recorded so far (oldest first), optionally only ``name``s."""
        with open(os.path.join(self.instance, "trace")) as f:
            evs = parse_trace(f.read())
        return [e for e in evs if name is None or e.name == name]
