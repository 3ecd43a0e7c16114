"""This checkout's gateway against another revision's, side by side in one run.

    .venv/bin/python bench/ab.py REV [--rounds 8] [--seconds 4] [--restarts N] [--config YAML]
        [--this-config YAML]

Both gateways run at once, each on its copy of one database, behind one nginx upstream; wrk
(bench/run.py's load: 1,000 distinct keys per run, the JSON body inspected) alternates between
them, round after round, in alternating order. Prints each one's median CPU per request (its
process tree, from /proc) and the ratio of the medians, with the spread of the per-round ratios.
A change of a few percent is lost in bench/run.py's noise from one run to the next; here both
sides share the machine's state of the moment, so they are compared, not the moments. With
`--this-config`, one revision against itself measures what a setting costs (REV = HEAD and
`--this-config 'rate_limits: {default_per_key: [{requests: 1000000, per: second}]}'`: the
price of counting rate limits).

Two processes of the same code differ too: an unchanged checkout against HEAD measured 1.013
to 1.050 with this checkout's gateway started first, and 0.988 with HEAD's started first (the
one started first runs a few percent dearer; why is not known). `--restarts N` starts both
afresh every N rounds, taking turns at starting first, so that bias and any other of one pair
of processes average out; give it a number of rounds that makes the starts even, and read a
difference smaller than an A/A run's as none.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import free_port, spawn_gateway, wait_for_port
from run import ROOT, Bench, cpu_seconds, ensure_tools, request_script, wrk


def export(revision: str, into: Path) -> Path:
    """The revision's files (only `gateway/` is needed), without touching this checkout."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", revision, "gateway"], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("revision", help="the git revision to compare this checkout with")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=4)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--config", default="", help="extra YAML for both gateways")
    parser.add_argument("--this-config", default="", help="extra YAML for this checkout's gateway only")
    parser.add_argument(
        "--restarts",
        type=int,
        default=0,
        help="start both afresh every N rounds, taking turns at starting first (0: never)",
    )
    args = parser.parse_args()
    ensure_tools()
    work = Path(tempfile.mkdtemp(prefix="gateway-ab-"))
    bench = Bench(work)
    try:
        old = export(args.revision, Path(tempfile.mkdtemp(dir=work)))
        upstream, db, key_file = bench.upstream_and_keys()
        for suffix in ("", "-wal", "-shm"):  # one database each, with the same keys
            if (work / f"g.db{suffix}").exists():
                for side in ("this", "old"):  # both copies, made alike
                    shutil.copy(work / f"g.db{suffix}", work / f"{side}.db{suffix}")
        extra = f"upstream: {{url: 'http://127.0.0.1:{upstream}'}}\n{args.config}\n"
        script = request_script(work, key_file)

        def launcher(source: Path) -> tuple[str, ...]:  # the same for both sides: only the code differs
            path = f"import sys, runpy; sys.path.insert(0, {str(source)!r}); "
            return ("-c", path + "runpy.run_module('gateway', run_name='__main__')")

        def start(this_first: bool) -> tuple[dict[str, subprocess.Popen], dict[str, int]]:
            """Both gateways, fresh processes, warmed up. The one started first has measured a few
            percent dearer (A/A), so restarts take turns."""
            ports = {"this": free_port(), args.revision: free_port()}
            configs = {
                "this": ("this", db.replace("g.db", "this.db"), extra + args.this_config + "\n", launcher(ROOT)),
                args.revision: ("old", db.replace("g.db", "old.db"), extra, launcher(old)),
            }
            sides: dict[str, subprocess.Popen] = {}
            for name in [*configs] if this_first else [*reversed(configs)]:
                label, database, config, how = configs[name]
                sides[name] = spawn_gateway(work, label, ports[name], free_port(), database, config, how)
                time.sleep(0.5)
            sides = {name: sides[name] for name in configs}
            bench.processes.extend(sides.values())
            for port in ports.values():
                wait_for_port(port)
            time.sleep(1.0)
            for name in sides:
                wrk(ports[name], 1, script, args.connections)
            return sides, ports

        wait_for_port(upstream)
        sides, ports = start(this_first=True)
        cpu: dict[str, list[float]] = {name: [] for name in sides}
        for round_number in range(args.rounds):
            if args.restarts and round_number and round_number % args.restarts == 0:
                for process in sides.values():
                    process.terminate()
                    process.wait(10)
                starts = round_number // args.restarts
                sides, ports = start(this_first=starts % 2 == 0)
                print(
                    f"both gateways started afresh ({'this' if starts % 2 == 0 else args.revision} first)", flush=True
                )
            order = list(sides) if round_number % 2 == 0 else list(reversed(sides))
            for name in order:
                before = cpu_seconds(sides[name].pid)
                result = wrk(ports[name], args.seconds, script, args.connections)
                served = result["rps"] * args.seconds
                cpu[name].append((cpu_seconds(sides[name].pid) - before) / served * 1e6)
            print(f"round {round_number + 1}: " + "  ".join(f"{n} {cpu[n][-1]:.1f} us" for n in sides), flush=True)
        ratios = [new / old for new, old in zip(cpu["this"], cpu[args.revision], strict=True)]
        mine, theirs = statistics.median(cpu["this"]), statistics.median(cpu[args.revision])
        print(f"CPU per request, medians of {args.rounds} rounds: this {mine:.2f} us, {args.revision} {theirs:.2f} us")
        print(
            f"this / {args.revision}: {mine / theirs:.3f} "
            f"(per-round ratios {min(ratios):.3f} to {max(ratios):.3f}, median {statistics.median(ratios):.3f})"
        )
    finally:
        bench.stop_all()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
