"""`workers: N`: N processes share the proxy port (SO_REUSEPORT); worker 0 also serves admin.

The supervisor only starts, restarts and stops workers. Admin writes reach the other workers
through the store's change log: the store wakes them when a key changes (store/doorbell.py on
SQLite, NOTIFY on PostgreSQL).
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import os
import signal
import time
from multiprocessing.process import BaseProcess

from gateway.config import Config
from gateway.runtime.gateway import admin_token, secret_key

log = logging.getLogger("gateway.workers")
PR_SET_PDEATHSIG = 1
RESTART_DELAY = 1.0
STARTUP_GRACE = 5.0  # a worker that dies sooner than this after starting will not start: give up


def _die_with_parent(parent: int) -> None:
    """Ask Linux to send SIGTERM when the supervisor dies, even by SIGKILL: no orphan workers."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        log.warning("cannot tie workers to the supervisor's life on this system")
    if os.getppid() != parent:  # it died before we asked
        os.kill(os.getpid(), signal.SIGTERM)


def _worker_main(config: Config, index: int, parent: int) -> None:
    import uvloop

    from gateway.runtime.gateway import serve

    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s %(levelname)s w{index} %(name)s: %(message)s")
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the supervisor decides; SIGTERM stops us
    _die_with_parent(parent)
    uvloop.run(serve(config, index))


def supervise(config: Config) -> int:
    secret_key(config)  # generate shared files once, before any worker reads them
    admin_token(config)
    context = multiprocessing.get_context("spawn")
    count = config.worker_count
    processes: dict[int, BaseProcess] = {}
    started: dict[int, float] = {}
    stopping = False
    code = 0

    def start(index: int) -> None:
        process = context.Process(
            target=_worker_main, args=(config, index, os.getpid()), name=f"gateway-worker-{index}"
        )
        process.start()
        processes[index] = process
        started[index] = time.monotonic()

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for index in range(count):
        start(index)
    while not stopping:
        time.sleep(0.2)
        for index, process in list(processes.items()):
            if process.is_alive() or stopping:
                continue
            if time.monotonic() - started[index] < STARTUP_GRACE:
                log.error("worker %d failed to start (exit %s); stopping", index, process.exitcode)
                stopping, code = True, 1
                break
            log.warning("worker %d exited with %s; restarting", index, process.exitcode)
            time.sleep(RESTART_DELAY)
            start(index)
    for process in processes.values():
        if process.is_alive() and process.pid is not None:
            process.terminate()
    deadline = time.monotonic() + config.shutdown_timeout + 5
    for process in processes.values():
        process.join(max(0.0, deadline - time.monotonic()))
        if process.is_alive():
            process.kill()
    return code
