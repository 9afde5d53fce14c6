"""Click-to-updated-view latency of the role explorer in a real browser (goal: p95 <= 100 ms).

Starts ``make app`` (the Voilà page of app/role_explorer.ipynb) on a free port, opens it
in headless Chromium (Debian's ``chromium`` through Playwright, the launch of
tests/browser_support.py) at 1280x720, and clicks the explorer's controls ``clicks`` times
in a seeded order: checkboxes CR0.WP, CR4.SMEP, CR4.SMAP, EFER.NX, CR4.PKE, TDP, SMM and
the kernel and vendor dropdowns.  Each click is timed *in the page*: ``performance.now()``
just before the input's click (or a dropdown's change event) and again when a
MutationObserver sees the view's HTML (``.role-explorer-output``) replaced -- i.e. the
round trip browser -> kernel -> browser plus rendering, what a reader waits for.

Also counted per click, from the page's websocket: frames sent and received, their bytes,
and how many of the received ones are widget-state updates (comm_msg ``update``) and
kernel status messages; and the size of the view's HTML.  Prints p50/p95/max, those
counts, the number of cores and the load average before and after (the machine may be
shared: read the figures with the load).  No assertion.

    .venv/bin/python benchmarks/explorer_latency.py [clicks] [--seed N]

Skips (exit 0, saying why) when there is no ``chromium`` or Playwright.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import random
import shutil
import statistics
import struct
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

CHECKBOXES = ["CR0.WP", "CR4.SMEP", "CR4.SMAP", "EFER.NX", "CR4.PKE", "TDP (EPT/NPT)", "SMM"]
DROPDOWNS = {"kernel": ["5.18", "5.19", "6.4"], "vendor": ["intel", "amd"]}

#: Runs in the page: act on one control, resolve with the milliseconds until the
#: explorer's HTML view was replaced (or -1 after 10 s).
_CLICK = """async ([kind, name, value]) => {
  const view = document.querySelector('.role-explorer-output');
  const done = new Promise(resolve => {
    const t = setTimeout(() => { obs.disconnect(); resolve(-1); }, 10000);
    const obs = new MutationObserver(() => {
      obs.disconnect(); clearTimeout(t); resolve(performance.now() - t0);
    });
    obs.observe(view, {childList: true, subtree: true, characterData: true});
  });
  let t0;
  if (kind === 'checkbox') {
    const label = [...document.querySelectorAll('.role-explorer .widget-checkbox .widget-label-basic')]
      .find(e => e.textContent.trim() === name);
    const input = label.querySelector('input');
    t0 = performance.now();
    input.click();
  } else {
    const select = [...document.querySelectorAll('.role-explorer .widget-dropdown')]
      .find(e => e.textContent.includes(name)).querySelector('select');
    const index = [...select.options].findIndex(
      o => o.textContent.toLowerCase().includes(value.toLowerCase()));
    if (index < 0) throw new Error(`no option ${value} in the ${name} dropdown`);
    t0 = performance.now();
    select.selectedIndex = index;
    select.dispatchEvent(new Event('change', {bubbles: true}));
  }
  return await done;
}"""


def _plan(clicks: int, seed: int) -> list[tuple[str, str, str]]:
    """A seeded sequence of (kind, control, value); dropdowns always pick a new value."""
    rng = random.Random(seed)
    current = {"kernel": "6.4", "vendor": "intel"}
    plan = []
    for _ in range(clicks):
        if rng.random() < 0.75:
            plan.append(("checkbox", rng.choice(CHECKBOXES), ""))
        else:
            name = rng.choice(sorted(DROPDOWNS))
            value = rng.choice([v for v in DROPDOWNS[name] if v != current[name]])
            current[name] = value
            plan.append(("dropdown", name, value))
    return plan


def _message(payload: str | bytes) -> dict:
    """One websocket frame as {header, content}: JSON text, or the binary framing of
    jupyter-server's ``v1.kernel.websocket.jupyter.org`` protocol (a count n of 64-bit
    little-endian offsets, the offsets, then channel, header, parent header, metadata,
    content and buffers at those offsets)."""
    if isinstance(payload, str):
        return json.loads(payload)
    n = struct.unpack_from("<Q", payload, 0)[0]
    offsets = list(struct.unpack_from(f"<{n}Q", payload, 8)) + [len(payload)]
    parts = [payload[offsets[i]:offsets[i + 1]] for i in range(n)]
    return {"header": json.loads(parts[1]), "content": json.loads(parts[4])}


def _kind_of(payload: str | bytes) -> str:
    """Classify one received websocket frame: msg_type, with the comm method or the
    kernel's execution state."""
    try:
        msg = _message(payload)
    except (ValueError, struct.error, IndexError):
        return "unparsed"
    mtype = msg.get("header", {}).get("msg_type", "?")
    content = msg.get("content", {})
    if mtype == "comm_msg":
        data = content.get("data", {})
        keys = ",".join(sorted(data.get("state", {})))
        return f"comm_msg:{data.get('method', '?')}({keys})"
    if mtype == "status":
        return "status:" + str(content.get("execution_state", "?"))
    return mtype


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("clicks", nargs="?", type=int, default=240)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args(argv)
    if args.clicks < 1:
        ap.error(f"clicks must be at least 1, not {args.clicks}")
    if shutil.which("chromium") is None:
        print("explorer_latency: skipped, no `chromium` on PATH (apt-get install chromium)")
        return 0
    try:
        from playwright.sync_api import sync_playwright  # noqa: F401
    except ImportError:
        print("explorer_latency: skipped, playwright is not installed")
        return 0
    from browser_support import browser_page
    from conftest import free_port, jupyter_env, make_cmd, serve

    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="explorer-latency-") as tmp_name:
        tmp = Path(tmp_name)
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        cmd = make_cmd("app", "APP_ARGS", [f"--port={port}"])
        with serve(cmd, env=jupyter_env(tmp), base=base, ready_path="/voila/static/voila.js",
                   log=tmp / "voila.log", cwd=REPO) as server, \
                browser_page(tmp, viewport=(1280, 720)) as (page, errors):
            frames = {"sent": 0, "received": 0, "bytes_in": 0, "bytes_out": 0}
            kinds: collections.Counter[str] = collections.Counter()

            def on_ws(ws):
                def got(payload):
                    frames["received"] += 1
                    frames["bytes_in"] += len(payload)
                    kinds[_kind_of(payload)] += 1

                def sent(payload):
                    frames["sent"] += 1
                    frames["bytes_out"] += len(payload)
                ws.on("framereceived", got)
                ws.on("framesent", sent)

            page.on("websocket", on_ws)
            page.goto(base + "/")
            page.locator(".root-outcome").wait_for()
            page.wait_for_timeout(1000)        # let the page settle before counting
            frames.update({k: 0 for k in frames})
            kinds.clear()
            times, lost = [], []
            started = time.monotonic()
            for step in _plan(args.clicks, args.seed):
                ms = page.evaluate(_CLICK, list(step))
                if ms < 0:
                    lost.append(step)
                else:
                    times.append(ms)
                page.wait_for_timeout(30)      # a reader never clicks faster
            wall = time.monotonic() - started
            html_bytes = page.evaluate(
                "() => document.querySelector('.role-explorer-output').innerHTML.length")
            if errors:
                print("console errors:", *errors[:5], sep="\n  ")
            log = server.log_text()
    load_after = os.getloadavg()
    n = args.clicks
    print(f"role explorer in the Voila app, {n} clicks (seed {args.seed}), {wall:.1f} s: "
          f"click-to-view p50 {pct(times, .5):.1f} ms, p95 {pct(times, .95):.1f} ms, "
          f"max {max(times):.1f} ms, mean {statistics.fmean(times):.1f} ms"
          + (f"; {len(lost)} clicks never updated the view: {lost[:5]}" if lost else ""))
    print(f"per click: {frames['sent'] / n:.2f} frames sent ({frames['bytes_out'] / n:.0f} B), "
          f"{frames['received'] / n:.2f} received ({frames['bytes_in'] / n:.0f} B); "
          f"view HTML {html_bytes} chars")
    print("received per click by kind: " + ", ".join(
        f"{k} {v / n:.2f}" for k, v in kinds.most_common()))
    print(f"machine: {os.cpu_count()} cores, load average (1/5/15 min) before "
          f"{load_before[0]:.2f}/{load_before[1]:.2f}/{load_before[2]:.2f}, after "
          f"{load_after[0]:.2f}/{load_after[1]:.2f}/{load_after[2]:.2f}")
    if "Traceback" in log:
        print("the server logged a traceback:\n" + log[-2000:])
    return 0


if __name__ == "__main__":
    sys.exit(main())
