"""`shapeprop-bench ui` (issue 44): it listens on this machine only unless told otherwise and says
so, and whatever signal stops it, the MLflow server and its workers stop with it (the port is free)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.helpers.cli import cli_exe
from tests.helpers.mlflow_store import free_port, fresh_store, wait_until_answering


def _port_taken(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _group_members(pgid: int) -> list[str]:
    """The processes of process group `pgid` (from /proc), as command lines."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid:  # pgrp, after the state and the parent's pid
                members.append((stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode())
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile
    return members


@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="reads process groups from /proc (Linux)")
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_ui_stopped_by_a_signal_stops_its_server_and_workers(tmp_path, migrated_db, signum):
    uri = fresh_store(migrated_db, tmp_path)
    port = free_port()
    server_groups: set[int] = set()
    ui = subprocess.Popen(
        [cli_exe(), "ui", "--tracking-uri", uri, "--port", str(port), "--workers", "2"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True,
        # as a shell starts a background job: SIGINT ignored, so Python would raise no KeyboardInterrupt
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )  # fmt: skip
    try:
        assert f"http://127.0.0.1:{port}" in ui.stdout.readline()
        assert "Listening on 127.0.0.1 only" in ui.stdout.readline()
        wait_until_answering(f"http://127.0.0.1:{port}/health", ui)
        server_groups = _children_groups(ui.pid)
        assert server_groups and ui.pid not in server_groups  # the server runs in a group of its own
        ui.send_signal(signum)  # to `ui` alone, as a process manager or `kill` would
        ui.wait(60)
        deadline = time.monotonic() + 30
        while _port_taken(port) or any(_group_members(g) for g in server_groups):
            assert time.monotonic() < deadline, f"left running: {[_group_members(g) for g in server_groups]}"
            time.sleep(0.2)
    finally:  # a failed test leaves nothing running either
        for group in _children_groups(ui.pid) if ui.poll() is None else server_groups:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group, signal.SIGKILL)
        if ui.poll() is None:
            ui.kill()


def _children_groups(pid: int) -> set[int]:
    """The process groups of `pid`'s children (from /proc)."""
    groups = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:  # ppid, after the state
                groups.add(int(fields[2]))
        except (OSError, IndexError, ValueError):
            continue
    return groups


def test_ui_on_every_interface_says_who_can_reach_it(tmp_path, migrated_db):
    uri = fresh_store(migrated_db, tmp_path)
    port = free_port()
    ui = subprocess.Popen(
        [cli_exe(), "ui", "--tracking-uri", uri, "--port", str(port), "--host", "0.0.0.0"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True,
        # as a shell starts a background job: SIGINT ignored, so Python would raise no KeyboardInterrupt
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )  # fmt: skip
    try:
        ui.stdout.readline()
        line = ui.stdout.readline()
        assert f"anyone who reaches port {port} can read and change this store" in line
    finally:
        ui.send_signal(signal.SIGTERM)
        ui.wait(60)
