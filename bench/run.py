"""Side-by-side CPU and throughput: the upstream alone, nginx, HAProxy, and the gateway.

Targets: `direct` (wrk straight at the upstream: no hop; the limit of this setup), `nginx`
(plain proxy), `haproxy` (key map), `gateway` (1 worker, access log on: the default),
`gateway-nolog`, `gateway-2w` (2 workers), `gateway-rl-local` / `gateway-rl-redis` (every key
limited, counters in the process / in Redis; the limit is never reached, so the rows show the
cost of counting).

    make bench            # or: .venv/bin/python bench/run.py [--rounds 5] [--seconds 5]

Every target sits in front of the same tiny nginx upstream answering a small JSON body. One wrk
thread (the machine has two cores: one for wrk, one for the target) drives each target in turn,
rounds interleaved, 32 connections, every request with another of 1,000 distinct keys. The
requests are formatted once, when wrk starts (`init`); per request wrk's Lua only picks the next
prebuilt string, so the load generator stays cheap.

Each row shows the CPU time its target's process tree spent per request (utime + stime from
/proc) and the load generator's own CPU per request. When `direct` is under 1.8x nginx's
throughput the load generator is the limit: the run is flagged and is not a result. The machine
is shared and noisy: read the CPU ratios and medians, not single numbers.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import SECRET, free_port, spawn_gateway, wait_for_port

ROOT = Path(__file__).resolve().parent.parent
PATH = "/api/v5/app/entry/data/list"
TARGETS = (
    "direct",  # must stay first: the upstream itself, with no hop
    "nginx",
    "haproxy",
    "gateway",
    "gateway-nolog",
    "gateway-2w",
    "gateway-rl-local",
    "gateway-rl-redis",
)
BODY = '{"app_id":"app7","entry_id":"e1"}'


def ensure_tools() -> None:
    missing = [
        tool
        for tool in ("nginx", "haproxy", "wrk")
        if not shutil.which(tool) and not Path(f"/usr/sbin/{tool}").exists()
    ]
    if missing:
        print(f"installing {', '.join(missing)} from Debian's packages ...", flush=True)
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
        subprocess.run(["apt-get", "install", "-y", "-qq", "nginx-light", "haproxy", "wrk"], check=True, env=env)


def tool(name: str) -> str:
    return shutil.which(name) or f"/usr/sbin/{name}"


class Bench:
    def __init__(self, work: Path) -> None:
        self.work = work
        self.processes: list[subprocess.Popen] = []
        self.pids: dict[Any, int] = {}  # target (port or name) -> the pid of its process tree

    def spawn(self, args: list[str], **kwargs) -> subprocess.Popen:
        process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kwargs)
        self.processes.append(process)
        return process

    def redis(self) -> str:
        """A Redis for the shared-budget target: the machine's, or one of our own."""
        try:
            with socket.create_connection(("127.0.0.1", 6379), timeout=0.5):
                return "redis://127.0.0.1:6379/14"
        except OSError:
            port = free_port()
            self.spawn([shutil.which("redis-server") or "redis-server", "--port", str(port), "--save", ""])
            wait_for_port(port)
            return f"redis://127.0.0.1:{port}/0"

    def stop_all(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()

    def nginx(self, name: str, server_block: str) -> None:
        conf = self.work / f"{name}.conf"
        conf.write_text(
            f"worker_processes 1;\ndaemon off;\npid {self.work}/{name}.pid;\nerror_log {self.work}/{name}.err;\n"
            "events { worker_connections 4096; }\n"
            f"http {{\naccess_log off;\nclient_body_temp_path {self.work}/{name}-body;\n"
            f"proxy_temp_path {self.work}/{name}-proxy;\n{server_block}\n}}\n"
        )
        self.pids[name] = self.spawn([tool("nginx"), "-c", str(conf), "-p", str(self.work)]).pid

    def haproxy(self, port: int, upstream: int, keys: list[str]) -> None:
        key_map = self.work / "keys.map"
        key_map.write_text("".join(f"{key} 1\n" for key in keys))
        conf = self.work / "haproxy.cfg"
        conf.write_text(
            "global\n  nbthread 1\n  maxconn 4096\n"
            "defaults\n  mode http\n  timeout connect 5s\n  timeout client 30s\n  timeout server 30s\n"
            "  http-reuse always\n"
            f"frontend fe\n  bind 127.0.0.1:{port}\n"
            "  http-request set-var(txn.key) req.hdr(authorization),field(2,' ')\n"
            f"  http-request deny deny_status 401 unless {{ var(txn.key),map_str({key_map}) -m found }}\n"
            "  default_backend be\n"
            f"backend be\n  server s1 127.0.0.1:{upstream}\n"
        )
        self.pids["haproxy"] = self.spawn([tool("haproxy"), "-f", str(conf)]).pid

    def upstream_and_keys(self, keys: int = 10_000) -> tuple[int, str, Path]:
        """A tiny nginx upstream and a gateway database holding `keys` keys: (its port, the
        database URL, the file of secrets the load generator sends)."""
        port = free_port()
        self.nginx(
            "upstream",
            f"server {{ listen 127.0.0.1:{port}; keepalive_requests 1000000;\n"
            "  location / { default_type application/json; return 200 '{\"code\":0}'; } }",
        )
        db = f"sqlite:///{self.work}/g.db"
        key_file = self.work / "keys.txt"
        setup = [sys.executable, str(ROOT / "bench" / "setup_keys.py"), db, SECRET, str(keys), str(key_file)]
        subprocess.run(setup, check=True)
        return port, db, key_file

    def gateway(self, port: int, admin: int, upstream: int, workers: int, db: str, extra: str = "") -> None:
        extra = f"upstream: {{url: 'http://127.0.0.1:{upstream}'}}\nworkers: {workers}\n{extra}"
        process = spawn_gateway(self.work, f"gateway-{port}", port, admin, db, extra)
        self.processes.append(process)
        self.pids[port] = process.pid


def cpu_seconds(root: int) -> float:
    """utime + stime of a process and all its descendants (seconds)."""
    ticks = os.sysconf("SC_CLK_TCK")
    children: dict[int, list[int]] = {}
    times: dict[int, float] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry))
        times[int(entry)] = (int(fields[11]) + int(fields[12])) / ticks
    total, stack = 0.0, [root]
    while stack:
        pid = stack.pop()
        total += times.get(pid, 0.0)
        stack.extend(children.get(pid, []))
    return total


def request_script(work: Path, key_file: Path) -> Path:
    """A wrk script whose requests are built once per thread; each request takes the next one."""
    script = work / "request.lua"
    script.write_text(
        "local requests = {}\nlocal i = 0\n"
        "init = function(args)\n"
        f'  for line in io.lines("{key_file}") do\n'
        f'    requests[#requests + 1] = wrk.format("POST", "{PATH}", {{["Authorization"] = "Bearer " .. line,'
        f' ["Content-Type"] = "application/json"}}, \'{BODY}\')\n'
        "  end\n  i = math.random(#requests)\nend\n"
        "request = function()\n  i = i % #requests + 1\n  return requests[i]\nend\n"
    )
    return script


def wrk(port: int, seconds: float, script: Path, connections: int, threads: int = 1) -> dict[str, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = subprocess.run(
        [
            tool("wrk"),
            f"-t{threads}",
            f"-c{connections}",
            f"-d{int(seconds)}s",
            "--latency",
            "-s",
            str(script),
            f"http://127.0.0.1:{port}{PATH}",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    wrk_cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    out = result.stdout

    def latency(pct: str) -> float:
        match = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        if not match:
            return float("nan")
        value, unit = float(match.group(1)), match.group(2)
        return value * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors:.*", out)
    return {
        "rps": rps,
        "wrk_us": wrk_cpu / (rps * seconds) * 1e6 if rps else float("nan"),
        "p50": latency("50"),
        "p99": latency("99"),
        "non2xx": float(non2xx.group(1)) if non2xx else 0.0,
        "errors": 1.0 if errors else 0.0,
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1, help="wrk threads")
    parser.add_argument("--keys", type=int, default=10_000)
    parser.add_argument("--only", default="", help="comma-separated target names")
    args = parser.parse_args()
    ensure_tools()
    work = Path(tempfile.mkdtemp(prefix="gateway-bench-"))
    bench = Bench(work)
    names = ("upstream", *TARGETS[1:], *(f"admin{i}" for i in range(1, 6)))
    ports = {name: free_port() for name in names}
    try:
        bench.nginx(
            "upstream",
            f"server {{ listen 127.0.0.1:{ports['upstream']}; keepalive_requests 1000000;\n"
            "  location / { default_type application/json;\n"
            '    return 200 \'{"code":0,"msg":"ok","data":{"id":"abc"}}\'; } }',
        )
        bench.nginx(
            "proxy",
            f"upstream backend {{ server 127.0.0.1:{ports['upstream']}; keepalive 64; }}\n"
            f"server {{ listen 127.0.0.1:{ports['nginx']}; keepalive_requests 1000000;\n"
            '  location / { proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection ""; } }',
        )
        db1, db2 = f"sqlite:///{work}/g1.db", f"sqlite:///{work}/g2.db"
        key_file = work / "keys.txt"
        setup = [sys.executable, str(ROOT / "bench" / "setup_keys.py"), db1, SECRET, str(args.keys), str(key_file)]
        subprocess.run(setup, check=True)
        db3, db4, db5 = (f"sqlite:///{work}/g{i}.db" for i in (3, 4, 5))
        for suffix in ("", "-wal", "-shm"):  # the same keys for every gateway
            if (work / f"g1.db{suffix}").exists():
                for copy in (2, 3, 4, 5):
                    shutil.copy(work / f"g1.db{suffix}", work / f"g{copy}.db{suffix}")
        keys = key_file.read_text().split()
        bench.haproxy(ports["haproxy"], ports["upstream"], keys)
        bench.gateway(ports["gateway"], ports["admin1"], ports["upstream"], 1, db1)
        bench.gateway(ports["gateway-2w"], ports["admin2"], ports["upstream"], 2, db2)
        bench.gateway(ports["gateway-nolog"], ports["admin3"], ports["upstream"], 1, db3, "log: {access: false}\n")
        unreached = "default_per_key: [{requests: 1000000, per: second}]"
        bench.gateway(
            ports["gateway-rl-local"], ports["admin4"], ports["upstream"], 1, db4, f"rate_limits: {{{unreached}}}\n"
        )
        redis = bench.redis()
        bench.gateway(
            ports["gateway-rl-redis"],
            ports["admin5"],
            ports["upstream"],
            1,
            db5,
            f"rate_limits: {{backend: '{redis}', {unreached}}}\n",
        )
        script = request_script(work, key_file)
        targets = list(TARGETS)
        if args.only:
            targets = [t for t in targets if t in args.only.split(",") or t in ("direct", "nginx")]
        ports["direct"] = ports["upstream"]
        for name in ("upstream", *targets):
            wait_for_port(ports[name])
        bench.pids.update({name: bench.pids[ports[name]] for name in targets if ports[name] in bench.pids})
        bench.pids["nginx"] = bench.pids["proxy"]
        bench.pids["direct"] = bench.pids["upstream"]
        time.sleep(2.0)
        for name in targets:  # warm-up: connections, caches
            wrk(ports[name], 1, script, args.connections, args.threads)
        results: dict[str, list[dict[str, float]]] = {name: [] for name in targets}
        for round_number in range(args.rounds):
            for name in targets:
                before = cpu_seconds(bench.pids[name])
                result = wrk(ports[name], args.seconds, script, args.connections, args.threads)
                served = result["rps"] * args.seconds
                result["cpu_us"] = (cpu_seconds(bench.pids[name]) - before) / served * 1e6 if served else float("nan")
                results[name].append(result)
            line = "  ".join(f"{n} {results[n][-1]['rps']:,.0f}" for n in targets)
            print(f"round {round_number + 1}/{args.rounds}: {line}", flush=True)
        print_table(results, args)
    finally:
        bench.stop_all()
        shutil.rmtree(work, ignore_errors=True)
    return 0


def print_table(results: dict[str, list[dict[str, float]]], args: argparse.Namespace) -> None:
    def median(name: str, field: str) -> float:
        return statistics.median(r[field] for r in results[name])

    base = median("nginx", "rps")
    base_p99 = median("nginx", "p99")
    print(
        f"\n{args.rounds} rounds x {args.seconds:g}s, wrk -t{args.threads} -c{args.connections},"
        f" {args.keys:,} keys in the store, distinct keys per request; medians"
    )
    base_cpu = median("nginx", "cpu_us")
    header = f"{'target':<18}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'x nginx':>9}{'p99 x':>8}"
    print(header + f"{'CPU us/req':>12}{'CPU x':>8}{'wrk us/req':>12}{'non-2xx':>9}")
    for name in results:
        rps = median(name, "rps")
        p99 = median(name, "p99")
        cpu = median(name, "cpu_us")
        non2xx = int(sum(r["non2xx"] for r in results[name]))
        print(
            f"{name:<18}{rps:>10,.0f}{median(name, 'p50'):>9.2f}{p99:>9.2f}{rps / base:>9.2f}"
            f"{p99 / base_p99:>8.2f}{cpu:>12.1f}{cpu / base_cpu:>8.2f}{median(name, 'wrk_us'):>12.1f}{non2xx:>9}"
        )
    headroom = median("direct", "rps") / base
    if headroom < 1.8:
        print(
            f"NOT A RESULT: direct is only {headroom:.2f}x nginx (under 1.8x): the load generator is the limit,"
            " so the ratios measure wrk, not the targets"
        )
    else:
        print(f"load generator headroom: direct {headroom:.2f}x nginx (at least 1.8x: the targets are the limit)")
    for name in ("gateway-rl-local", "gateway-rl-redis"):
        if name in results and "gateway" in results:
            ratio = median(name, "cpu_us") / median("gateway", "cpu_us")
            # one round runs both within seconds: its ratio is freer of the machine's drift than the medians'
            rounds = sorted(r["cpu_us"] / g["cpu_us"] for r, g in zip(results[name], results["gateway"], strict=True))
            print(
                f"{name} CPU per request / gateway's: {ratio:.2f}x (per round {rounds[0]:.2f} to {rounds[-1]:.2f},"
                f" median {statistics.median(rounds):.2f}; Redis's own CPU not included)"
            )
    if "gateway" in results and "gateway-nolog" in results:
        ratio = median("gateway", "rps") / median("gateway-nolog", "rps")
        print(f"gateway access log on / off: {ratio:.2f}x")
    if "gateway" in results and "gateway-2w" in results:
        print(f"gateway workers 2 / workers 1: {median('gateway-2w', 'rps') / median('gateway', 'rps'):.2f}x")


if __name__ == "__main__":
    sys.exit(main())
