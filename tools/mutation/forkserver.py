"""pytest in a fork of a process that has already imported torch and the other heavy libraries, so
that cosmic-ray's test command costs a fork per mutant instead of a fresh interpreter (importing torch
alone takes ~4 s of CPU on the 2-core machine). The server imports nothing of `shapeprop` or
`harness`: each forked child imports the project's (mutated) files afresh.

    python forkserver.py serve SOCKET                       (run.py starts it in the worktree)
    python forkserver.py run SOCKET TIMEOUT_S PYTEST_ARGS   (the test command; exits with pytest's status)

A run past TIMEOUT_S is killed with its process group and prints TIMEOUT.
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import socket
import sys
import tempfile
import threading
import time
import traceback

PRELOAD = ["torch", "torchvision", "numpy", "pandas", "scipy", "pydantic", "yaml", "mlflow", "pycocotools"]
PRELOAD += ["pytest", "pytest_timeout"]
TIMEOUT = "forkserver: TIMEOUT"
_child: int | None = None  # the test run in progress


def _stop(signum: int, frame: object) -> None:
    """SIGTERM, SIGINT: end the test run in progress (its process group) with the server."""
    if _child is not None:
        try:
            os.killpg(_child, signal.SIGKILL)
        except ProcessLookupError:
            pass
    os._exit(1)


def _receive(conn: socket.socket) -> bytes:
    chunks = []
    while chunk := conn.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def _run_forked(args: list[str], timeout_s: float) -> tuple[int | None, str]:
    with tempfile.TemporaryFile() as out:
        pid = os.fork()
        if pid == 0:  # the child: its own process group (killed whole on timeout), output to `out`
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.default_int_handler)
            os.setpgrp()
            os.dup2(out.fileno(), 1)
            os.dup2(out.fileno(), 2)
            try:
                import pytest

                code = int(pytest.main(args))
            except BaseException:
                traceback.print_exc()
                code = 99
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
        global _child
        _child = pid
        deadline = time.monotonic() + timeout_s
        code = None
        while time.monotonic() < deadline:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                code = os.waitstatus_to_exitcode(status)
                break
            time.sleep(0.05)
        try:  # on timeout the child, and in every case what it left running
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        if code is None:
            os.waitpid(pid, 0)
        _child = None
        out.seek(0)
        return code, out.read()[-8000:].decode(errors="replace")


def serve(path: str) -> None:
    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except ImportError:
            pass
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)  # Ctrl-C reaches the server too, not the run in its own group
    if threading.active_count() != 1:
        print(f"forkserver: {threading.active_count()} threads after the imports", file=sys.stderr)
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(path)
        server.listen()
        print("forkserver: ready", flush=True)
        while True:
            conn, _ = server.accept()
            with conn:
                request = json.loads(_receive(conn))
                code, output = _run_forked(request["args"], request["timeout_s"])
                conn.sendall(json.dumps({"code": code, "output": output}).encode())


def run(path: str, timeout_s: float, args: list[str]) -> int:
    with socket.socket(socket.AF_UNIX) as conn:
        conn.connect(path)
        conn.sendall(json.dumps({"args": args, "timeout_s": timeout_s}).encode())
        conn.shutdown(socket.SHUT_WR)
        reply = json.loads(_receive(conn))
    print(reply["output"])
    if reply["code"] is None:
        print(TIMEOUT)
        return 124
    return reply["code"]


if __name__ == "__main__":
    if sys.argv[1:2] == ["serve"]:
        serve(sys.argv[2])
    elif sys.argv[1:2] == ["run"]:
        sys.exit(run(sys.argv[2], float(sys.argv[3]), sys.argv[4:]))
    else:
        sys.exit(__doc__)
