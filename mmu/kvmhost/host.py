"""A VM and a vCPU on the host's ``/dev/kvm``, with bounded runs.

What a VMM such as QEMU does first, and nothing more: ``KVM_CREATE_VM``, one memory
slot of anonymous memory at guest-physical 0 (``KVM_SET_USER_MEMORY_REGION``),
``KVM_CREATE_VCPU``, the supported CPUID handed to the vCPU (``KVM_SET_CPUID2``: without
it KVM treats NX, long mode and SMEP as absent and refuses EFER.NX/LME, kvm_valid_efer in
x86.c), registers set with ``KVM_SET_REGS``/``KVM_SET_SREGS``, then ``KVM_RUN`` until the
guest halts (api.rst 4.1-4.10, 4.25, 4.46).

Bounds, always on: a run ends after ``max_exits`` returns to userspace and after
``time_limit`` seconds.  The time limit is enforced by a watchdog thread that sets
``kvm_run.immediate_exit`` and signals the running thread, so ``KVM_RUN`` returns EINTR
even if the guest never exits (api.rst: "immediate_exit"; the signal interrupts the
vCPU, ``kvm_vcpu_exit_request`` in x86.c).  ``KVM_RUN`` is called through libc (ctypes)
so that EINTR comes back to us rather than being retried.

Errors from ``/dev/kvm`` are :class:`HostRefused` (an OSError carrying the errno and the
ioctl's name): a state the host refuses is a result for the experiments, not a crash.
"""
from __future__ import annotations

import ctypes
import dataclasses
import errno as errno_mod
import fcntl
import mmap
import os
import signal
import threading
import time

from mmu.kvmhost import abi
from mmu.kvmhost.stats import read_stats
from mmu.x86.bits import PAGE_SIZE, check_int
from mmu.x86.memory import GuestMemory

__all__ = ["Kvm", "HostVm", "HostVcpu", "RunOutcome", "HostRefused", "KVM_PATH",
           "MAX_RAM", "MAX_EXITS", "MAX_SECONDS", "kvm_unusable_reason"]

KVM_PATH = "/dev/kvm"
#: Guest RAM is a few MiB at most: the experiments need tables, code and a few data pages.
MAX_RAM = 64 << 20
#: Upper bounds on one run, whatever the caller asks for.
MAX_EXITS = 100_000
MAX_SECONDS = 30.0

_libc = ctypes.CDLL(None, use_errno=True)
_libc.ioctl.argtypes = (ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong)
_libc.ioctl.restype = ctypes.c_int
_WAKE_SIGNAL = signal.SIGUSR2


class HostRefused(OSError):
    """An ioctl on /dev/kvm failed: ``errno`` and ``call`` say which and why."""

    def __init__(self, call: str, err: int, detail: str = "") -> None:
        super().__init__(err, f"{call}: {errno_mod.errorcode.get(err, err)} "
                              f"({os.strerror(err)}){': ' + detail if detail else ''}")
        self.call = call

    @property
    def errname(self) -> str:
        return errno_mod.errorcode.get(self.errno, str(self.errno))


def _ioctl(fd: int, call: str, req: int, arg=0):
    try:
        return fcntl.ioctl(fd, req, arg)
    except OSError as e:
        raise HostRefused(call, e.errno) from None


def kvm_unusable_reason(path: str = KVM_PATH) -> str | None:
    """None when ``path`` opens read-write and speaks KVM API 12, else why not (one sentence)."""
    if not os.path.exists(path):
        return f"{path} does not exist (no KVM module loaded, or not a Linux host)"
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except OSError as e:
        return (f"{path} cannot be opened read-write ({os.strerror(e.errno)}): "
                f"run as root or join the group that owns it")
    try:
        version = fcntl.ioctl(fd, abi.KVM_GET_API_VERSION)
        if version != abi.KVM_API_VERSION:
            return f"{path} speaks KVM API {version}, not {abi.KVM_API_VERSION}"
        if not fcntl.ioctl(fd, abi.KVM_CHECK_EXTENSION, abi.KVM_CAP_BINARY_STATS_FD):
            return f"{path} has no binary statistics (KVM_CAP_BINARY_STATS_FD; Linux 5.14+)"
    except OSError as e:
        return f"{path} refused KVM_GET_API_VERSION ({os.strerror(e.errno)})"
    finally:
        os.close(fd)
    return None


class Kvm:
    """The system fd (``/dev/kvm``): API version, supported CPUID, VM creation."""

    def __init__(self, path: str = KVM_PATH) -> None:
        reason = kvm_unusable_reason(path)
        if reason:
            raise HostRefused("open", errno_mod.ENODEV, reason)
        self.fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        self.vcpu_mmap_size = _ioctl(self.fd, "KVM_GET_VCPU_MMAP_SIZE", abi.KVM_GET_VCPU_MMAP_SIZE)
        self._cpuid: bytes | None = None

    def supported_cpuid(self) -> bytes:
        """``KVM_GET_SUPPORTED_CPUID`` as the raw ``struct kvm_cpuid2`` (what to hand a vCPU)."""
        if self._cpuid is None:
            for nent in (128, 256, 1024):
                t = abi.cpuid2_type(nent)
                c = t()
                c.nent = nent
                buf = bytearray(c)
                try:
                    fcntl.ioctl(self.fd, abi.KVM_GET_SUPPORTED_CPUID, buf)
                except OSError as e:
                    if e.errno == errno_mod.E2BIG:
                        continue
                    raise HostRefused("KVM_GET_SUPPORTED_CPUID", e.errno) from None
                self._cpuid = bytes(buf)
                break
            else:
                raise HostRefused("KVM_GET_SUPPORTED_CPUID", errno_mod.E2BIG, "over 1024 entries")
        return self._cpuid

    def cpuid_entry(self, function: int, index: int = 0) -> abi.KvmCpuidEntry2 | None:
        raw = self.supported_cpuid()
        nent = int.from_bytes(raw[:4], "little")
        c = abi.cpuid2_type(nent).from_buffer_copy(raw[:8 + 40 * nent])
        for e in c.entries:
            if e.function == function and e.index == index:
                return e
        return None

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> "Kvm":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class HostVm:
    """A VM with ``ram_size`` bytes of RAM at guest-physical 0 (one memory slot)."""

    def __init__(self, kvm: Kvm, ram_size: int = 4 << 20) -> None:
        ram_size = check_int("ram_size", ram_size, PAGE_SIZE, MAX_RAM + 1)
        if ram_size % PAGE_SIZE:
            raise ValueError(f"ram_size={ram_size:#x} is not a multiple of 4 KiB")
        self.kvm = kvm
        self.fd = _ioctl(kvm.fd, "KVM_CREATE_VM", abi.KVM_CREATE_VM, 0)
        self.vcpus: list[HostVcpu] = []
        self._stats_fd = -1
        try:
            self.ram = mmap.mmap(-1, ram_size, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS,
                                 mmap.PROT_READ | mmap.PROT_WRITE)
            self.ram_size = ram_size
            addr = ctypes.addressof(ctypes.c_char.from_buffer(self.ram))
            region = abi.KvmUserspaceMemoryRegion(0, 0, 0, ram_size, addr)
            _ioctl(self.fd, "KVM_SET_USER_MEMORY_REGION", abi.KVM_SET_USER_MEMORY_REGION,
                   bytes(region))
        except BaseException:
            self.close()
            raise

    # -- memory ---------------------------------------------------------------------------
    def write(self, gpa: int, data: bytes) -> None:
        gpa = check_int("gpa", gpa, 0, self.ram_size)
        if gpa + len(data) > self.ram_size:
            raise ValueError(f"gpa={gpa:#x}+{len(data):#x} runs past guest RAM "
                             f"({self.ram_size:#x} bytes)")
        self.ram[gpa:gpa + len(data)] = bytes(data)

    def read(self, gpa: int, size: int) -> bytes:
        gpa = check_int("gpa", gpa, 0, self.ram_size)
        size = check_int("size", size, 0, self.ram_size - gpa + 1)
        return bytes(self.ram[gpa:gpa + size])

    def load(self, mem: GuestMemory) -> int:
        """Copy every frame of the model's ``mem`` into guest RAM (same addresses);
        returns the number of frames.  A frame beyond RAM is refused before any copy."""
        frames = sorted(mem.frame_numbers())
        for fn in frames:
            if (fn + 1) * PAGE_SIZE > self.ram_size:
                raise ValueError(f"frame {fn:#x} (gpa {fn * PAGE_SIZE:#x}) is beyond guest RAM "
                                 f"({self.ram_size:#x} bytes)")
        for fn in frames:
            self.write(fn * PAGE_SIZE, bytes(mem.frame(fn)))
        return len(frames)

    # -- vCPUs and stats ------------------------------------------------------------------
    def create_vcpu(self) -> "HostVcpu":
        vcpu = HostVcpu(self, len(self.vcpus))
        self.vcpus.append(vcpu)
        return vcpu

    def stats(self) -> dict[str, int]:
        """The VM's binary statistics (``KVM_GET_STATS_FD``), name -> value (first element)."""
        if self._stats_fd < 0:
            self._stats_fd = _ioctl(self.fd, "KVM_GET_STATS_FD", abi.KVM_GET_STATS_FD)
        return read_stats(self._stats_fd)

    def close(self) -> None:
        for v in self.vcpus:
            v.close()
        self.vcpus = []
        if self._stats_fd >= 0:
            os.close(self._stats_fd)
            self._stats_fd = -1
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        ram = getattr(self, "ram", None)
        if ram is not None and not ram.closed:
            ram.close()

    def __enter__(self) -> "HostVm":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@dataclasses.dataclass(frozen=True)
class RunOutcome:
    """How a bounded run ended.

    ``reason``: "hlt", "shutdown", "io" (an OUT to ``stop_port``), "exit-limit",
    "time-limit", "internal-error", "fail-entry", "mmio" or "exit-<n>".  ``outs`` are
    every (port, value) the guest wrote with OUT, in order; ``exits`` counts the returns
    from KVM_RUN; ``seconds`` the time spent inside KVM_RUN.
    """

    reason: str
    exit_reason: int
    exits: int
    seconds: float
    outs: tuple[tuple[int, int], ...]
    detail: str = ""

    @property
    def halted(self) -> bool:
        return self.reason in ("hlt", "io")


class HostVcpu:
    """One vCPU: registers, CPUID, stats, and :meth:`run`."""

    def __init__(self, vm: HostVm, index: int) -> None:
        self.vm = vm
        self.fd = _ioctl(vm.fd, "KVM_CREATE_VCPU", abi.KVM_CREATE_VCPU, index)
        self._stats_fd = -1
        self.run_page = mmap.mmap(self.fd, vm.kvm.vcpu_mmap_size, mmap.MAP_SHARED,
                                  mmap.PROT_READ | mmap.PROT_WRITE)
        self.kvm_run = abi.KvmRun.from_buffer(self.run_page)
        # a mutable buffer: fcntl.ioctl copies immutable arguments only up to 1024 bytes
        _ioctl(self.fd, "KVM_SET_CPUID2", abi.KVM_SET_CPUID2, bytearray(vm.kvm.supported_cpuid()))

    # -- registers ------------------------------------------------------------------------
    def get_sregs(self) -> abi.KvmSregs:
        buf = bytearray(ctypes.sizeof(abi.KvmSregs))
        _ioctl(self.fd, "KVM_GET_SREGS", abi.KVM_GET_SREGS, buf)
        return abi.KvmSregs.from_buffer_copy(buf)

    def set_sregs(self, sregs: abi.KvmSregs) -> None:
        _ioctl(self.fd, "KVM_SET_SREGS", abi.KVM_SET_SREGS, bytes(sregs))

    def get_regs(self) -> abi.KvmRegs:
        buf = bytearray(ctypes.sizeof(abi.KvmRegs))
        _ioctl(self.fd, "KVM_GET_REGS", abi.KVM_GET_REGS, buf)
        return abi.KvmRegs.from_buffer_copy(buf)

    def set_regs(self, regs: abi.KvmRegs) -> None:
        _ioctl(self.fd, "KVM_SET_REGS", abi.KVM_SET_REGS, bytes(regs))

    def stats(self) -> dict[str, int]:
        if self._stats_fd < 0:
            self._stats_fd = _ioctl(self.fd, "KVM_GET_STATS_FD", abi.KVM_GET_STATS_FD)
        return read_stats(self._stats_fd)

    # -- running --------------------------------------------------------------------------
    def run(self, *, max_exits: int = 1000, time_limit: float = 5.0,
            stop_port: int | None = None) -> RunOutcome:
        """``KVM_RUN`` until HLT, shutdown, an OUT to ``stop_port``, an error, ``max_exits``
        returns or ``time_limit`` seconds, whichever comes first.  An OUT to another port
        is recorded and the guest resumed; an IN or an MMIO access ends the run (our
        guests never do either)."""
        max_exits = check_int("max_exits", max_exits, 1, MAX_EXITS + 1)
        if isinstance(time_limit, bool) or not isinstance(time_limit, (int, float)) \
                or not 0 < time_limit <= MAX_SECONDS:
            raise ValueError(f"time_limit={time_limit!r}: allowed 0 < time_limit <= {MAX_SECONDS}")
        if threading.current_thread() is not threading.main_thread():
            raise RuntimeError("a bounded run must start on the main thread (its time limit "
                               "installs a signal handler)")
        run = self.kvm_run
        run.immediate_exit = 0
        outs: list[tuple[int, int]] = []
        timed_out = threading.Event()
        done = threading.Event()
        me = threading.get_ident()

        def watchdog() -> None:
            if not done.wait(time_limit):
                timed_out.set()
                run.immediate_exit = 1
                while not done.is_set():      # until KVM_RUN has seen it
                    signal.pthread_kill(me, _WAKE_SIGNAL)
                    done.wait(0.01)

        old = signal.signal(_WAKE_SIGNAL, lambda *_: None)
        dog = threading.Thread(target=watchdog, name="kvmhost-watchdog", daemon=True)
        exits = 0
        spent = 0.0
        reason, detail = "exit-limit", ""
        dog.start()
        try:
            while exits < max_exits:
                t0 = time.perf_counter()
                rc = _libc.ioctl(self.fd, abi.KVM_RUN, 0)
                spent += time.perf_counter() - t0
                if rc < 0:
                    err = ctypes.get_errno()
                    if err == errno_mod.EINTR:
                        if timed_out.is_set():
                            reason = "time-limit"
                            break
                        continue
                    raise HostRefused("KVM_RUN", err)
                exits += 1
                er = run.exit_reason
                if er == abi.EXIT_HLT:
                    reason = "hlt"
                    break
                if er == abi.EXIT_IO:
                    io = run.exit.io
                    if io.direction != 1:            # KVM_EXIT_IO_OUT
                        reason, detail = "in", f"IN from port {io.port:#x}"
                        break
                    data = self.run_page[io.data_offset:io.data_offset + io.size * io.count]
                    value = int.from_bytes(data[:io.size], "little")
                    outs.append((io.port, value))
                    if stop_port is not None and io.port == stop_port:
                        reason = "io"
                        break
                    continue
                if er == abi.EXIT_INTR:
                    if timed_out.is_set():
                        reason = "time-limit"
                        break
                    continue
                reason = {abi.EXIT_SHUTDOWN: "shutdown", abi.EXIT_MMIO: "mmio",
                          abi.EXIT_FAIL_ENTRY: "fail-entry",
                          abi.EXIT_INTERNAL_ERROR: "internal-error"}.get(er, f"exit-{er}")
                if er == abi.EXIT_INTERNAL_ERROR:
                    detail = f"suberror {run.exit.internal.suberror}"
                elif er == abi.EXIT_FAIL_ENTRY:
                    detail = f"hardware reason {run.exit.hardware_entry_failure_reason:#x}"
                break
        finally:
            done.set()
            dog.join()
            signal.signal(_WAKE_SIGNAL, old)
            run.immediate_exit = 0
        return RunOutcome(reason, int(run.exit_reason), exits, spent, tuple(outs), detail)

    def close(self) -> None:
        if self._stats_fd >= 0:
            os.close(self._stats_fd)
            self._stats_fd = -1
        if getattr(self, "kvm_run", None) is not None:
            del self.kvm_run
            self.kvm_run = None
        if getattr(self, "run_page", None) is not None and not self.run_page.closed:
            self.run_page.close()
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
