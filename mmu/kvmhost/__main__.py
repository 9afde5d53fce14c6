"""``python -m mmu.kvmhost run|diff|show``: the host experiments from a shell.

* ``run [--json OUT] [--only EXP ...] [--no-trace] [--failures-only]`` -- run on this host,
  print host / model / verdict per case; exit 1 if any case disagrees, 2 if /dev/kvm is
  unusable (the reason is printed).
* ``diff A.json B.json`` -- cases whose host answer differs; exit 1 if any does.
* ``show [FILE.json]`` -- render a record (default: the shipped reference run).
"""
from __future__ import annotations

import argparse
import sys

from mmu.book.views.kvmhost_view import render_diff, render_report
from mmu.kvmhost import report as rep
from mmu.kvmhost.experiments import EXPERIMENTS


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m mmu.kvmhost", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="run the experiments on this host's /dev/kvm")
    r.add_argument("--json", metavar="OUT", help="save the record as JSON")
    r.add_argument("--only", nargs="+", choices=tuple(EXPERIMENTS), metavar="EXP",
                   help=f"run only these experiments: {', '.join(EXPERIMENTS)}")
    r.add_argument("--no-trace", action="store_true", help="do not trace even as root")
    r.add_argument("--failures-only", action="store_true",
                   help="print only cases that disagree or were refused")
    d = sub.add_parser("diff", help="compare two records")
    d.add_argument("a")
    d.add_argument("b")
    s = sub.add_parser("show", help="render a record (default: the reference run)")
    s.add_argument("file", nargs="?", default=rep.REFERENCE_PATH)
    args = p.parse_args(argv)

    if args.cmd == "run":
        from mmu.kvmhost import kvm_unusable_reason
        why = kvm_unusable_reason()
        if why:
            print(f"cannot run on this host: {why}", file=sys.stderr)
            return 2
        command = "python -m mmu.kvmhost " + " ".join(argv if argv is not None else sys.argv[1:])
        record = rep.run(args.only, trace=False if args.no_trace else None, command=command)
        if args.json:
            record.save(args.json)
        statuses = ("disagree", "refused") if args.failures_only else None
        print(render_report(record, statuses=statuses).text)
        if args.json:
            print(f"\nsaved {args.json}")
        return 1 if record.disagreements else 0
    if args.cmd == "diff":
        a, b = rep.load(args.a), rep.load(args.b)
        diffs = rep.diff(a, b)
        print(render_diff(a, b, diffs).text)
        return 1 if diffs else 0
    print(render_report(rep.load(args.file)).text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
