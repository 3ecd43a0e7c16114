"""Python function calls per proxied request, and where the time goes, under cProfile.

    .venv/bin/python bench/calls.py [--requests 20000] [--top 30]

Runs one gateway process (10,000 keys, access log on) with cProfile switched on only while
wrk sends a fixed number of requests, then prints calls per request and the functions with the
most own time. cProfile slows everything down several times: read the counts, not the times.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from common import free_port, spawn_gateway, wait_for_port
from run import Bench, ensure_tools, request_script, tool

# Runs inside the gateway process: SIGUSR1 starts the profiler, SIGUSR2 stops it and writes the stats.
HARNESS = """
import cProfile, pstats, signal, sys
from gateway.cli import main
profiler = cProfile.Profile()
signal.signal(signal.SIGUSR1, lambda *_: profiler.enable())
def done(*_):
    profiler.disable()
    profiler.dump_stats(sys.argv[-1])
signal.signal(signal.SIGUSR2, done)
sys.exit(main(sys.argv[1:-1]))
"""


def rate_limits(backend: str, bench: Bench) -> str:
    where = bench.redis() if backend == "redis" else "local"
    return f"rate_limits: {{backend: '{where}', default_per_key: [{{requests: 1000000, per: second}}]}}\n"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument(
        "--rate-limits", choices=["local", "redis"], help="every key limited (never reached), counted here or in Redis"
    )
    args = parser.parse_args()
    ensure_tools()
    work = Path(tempfile.mkdtemp(prefix="gateway-calls-"))
    bench = Bench(work)
    gateway, admin = free_port(), free_port()
    stats = work / "calls.prof"
    try:
        upstream, db, keys = bench.upstream_and_keys()
        extra = f"upstream: {{url: 'http://127.0.0.1:{upstream}'}}\n"
        if args.rate_limits:
            extra += rate_limits(args.rate_limits, bench)
        process = spawn_gateway(work, "calls", gateway, admin, db, extra, ("-c", HARNESS), (str(stats),))
        bench.processes.append(process)
        wait_for_port(upstream)
        wait_for_port(gateway)
        script = request_script(work, keys)
        script.write_text(
            script.read_text() + 'local done, limit = 0, tonumber(os.getenv("WRK_LIMIT") or "0")\n'
            "response = function()\n  done = done + 1\n"
            "  if limit > 0 and done >= limit then wrk.thread:stop() end\nend\n"
        )
        url = f"http://127.0.0.1:{gateway}/"
        subprocess.run([tool("wrk"), "-t1", "-c32", "-d2s", "-s", str(script), url], capture_output=True, check=True)
        process.send_signal(signal.SIGUSR1)
        time.sleep(0.2)
        result = subprocess.run(
            [tool("wrk"), "-t1", "-c32", "-d60s", "-s", str(script), url],
            capture_output=True,
            text=True,
            env={**os.environ, "WRK_LIMIT": str(args.requests)},
            check=True,
        )
        time.sleep(0.5)
        process.send_signal(signal.SIGUSR2)
        time.sleep(1.0)
        served = int(result.stdout.split(" requests in ")[0].split()[-1])
        import pstats

        report = pstats.Stats(str(stats))
        total_calls = report.total_calls  # type: ignore[attr-defined]
        print(f"{served:,} requests profiled: {total_calls / served:.0f} Python function calls per request")
        report.sort_stats("tottime").print_stats(args.top)
        if os.environ.get("GATEWAY_CALLS_KEEP"):
            shutil.copy(stats, os.environ["GATEWAY_CALLS_KEEP"])
    finally:
        bench.stop_all()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
