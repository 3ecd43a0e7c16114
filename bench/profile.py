"""Profile the gateway under load: wrk drives it while py-spy samples it.

    .venv/bin/pip install py-spy && .venv/bin/python bench/profile.py [--seconds 8] [--access-log]

Starts a tiny nginx upstream and one gateway worker with 10,000 keys (as bench/run.py does),
records the gateway with py-spy, and prints the functions with the most samples (own time,
then inclusive). GATEWAY_PROFILE_OUT=path keeps py-spy's raw (collapsed) stacks.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from common import free_port, wait_for_port
from run import Bench, ensure_tools, request_script, wrk


def top(raw: Path, count: int) -> None:
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, samples = line.rpartition(" ")
        n = int(samples)
        total += n
        frames = stack.split(";")
        own[frames[-1]] += n
        for frame in set(frames):
            inclusive[frame] += n
    print(f"{total} samples; own time:")
    for frame, n in own.most_common(count):
        print(f"  {100 * n / total:5.1f}%  {frame}")
    print("inclusive:")
    for frame, n in inclusive.most_common(count):
        print(f"  {100 * n / total:5.1f}%  {frame}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--access-log", action="store_true")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    ensure_tools()
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    work = Path(tempfile.mkdtemp(prefix="gateway-profile-"))
    bench = Bench(work)
    gateway, admin = free_port(), free_port()
    try:
        upstream, db, keys = bench.upstream_and_keys()
        bench.gateway(gateway, admin, upstream, 1, db, "" if args.access_log else "log: {access: false}\n")
        wait_for_port(upstream)
        wait_for_port(gateway)
        time.sleep(1.0)
        script = request_script(work, keys)
        raw = Path(os.environ.get("GATEWAY_PROFILE_OUT", work / "profile.txt"))
        recorder = subprocess.Popen(
            [
                spy,
                "record",
                "-p",
                str(bench.processes[-1].pid),
                "-d",
                str(args.seconds),
                "-r",
                "250",
                "-f",
                "raw",
                "-o",
                str(raw),
                "--nonblocking",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        result = wrk(gateway, args.seconds + 2, script, 32)
        recorder.wait()
        print(f"under the profiler: {result['rps']:,.0f} req/s, p99 {result['p99']:.2f} ms")
        top(raw, args.top)
    finally:
        bench.stop_all()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
