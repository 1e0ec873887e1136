"""Runs that train the same model share one training.

Two runs whose configs differ only in what they evaluate (Table 1's oracle, one model scored on
either class group; a Table 4 row that is also a Table 2 or Table 3 row) have one
`shapeprop.config.training_key`. When a run that trained finishes, `record_training` notes its
suite and run key in `<runs root>/trained/<training key>.json`; a later run of the same key that
has no checkpoint of its own starts from that training (`adopt_training`: its files hard-linked
into the run's work dir, so the training only loads its last checkpoint and the run goes straight
to evaluating), and says so in its tag `trained_by`. Within one `run` call the first run of each
key goes first and the others after all of them (`first_and_twins`), so that they find its
training finished. Two runs of one key that run at the same time (two `run` calls at once) each
train, as without sharing.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path

from harness.suite import RunSpec
from harness.workdir import LAST_CHECKPOINT, run_workdir, workdir_of
from shapeprop.config import training_key
from shapeprop.files import write_atomic

log = logging.getLogger(__name__)

RECORDS_DIR = "trained"


def _record_path(spec: RunSpec, runs_root: Path) -> Path:
    return Path(runs_root) / RECORDS_DIR / f"{training_key(spec.config)}.json"


def first_and_twins(specs: Sequence[RunSpec]) -> tuple[list[RunSpec], list[RunSpec]]:
    """The specs split in two, each in its order: the first of each training key, and the others."""
    seen: set[str] = set()
    first, twins = [], []
    for spec in specs:
        key = training_key(spec.config)
        (twins if key in seen else first).append(spec)
        seen.add(key)
    return first, twins


def record_training(spec: RunSpec, runs_root: Path) -> None:
    """Note that `spec`'s run finished with its training in its work dir, unless another run's
    training of the key is recorded and still there (the run started from it, or trained beside it)."""
    if _recorded(spec, runs_root) is None:
        record = {
            "suite": spec.suite,
            "run_key": spec.key,
        }  # its work dir in this runs folder, wherever it moves
        write_atomic(_record_path(spec, runs_root), json.dumps(record))


def forget_trainings(specs: Iterable[RunSpec], runs_root: Path) -> None:
    """Drop the records of the specs' training keys (`--force`: they train again)."""
    for spec in specs:
        _record_path(spec, runs_root).unlink(missing_ok=True)


def trained_by(spec: RunSpec, runs_root: Path) -> str | None:
    """ "<suite>/<run key>" of the run whose training `spec`'s run would start from (`adopt_training`),
    or None: it trains, or resumes its own training."""
    found = _adoptable(spec, runs_root)
    return None if found is None else found[0]


def adopt_training(spec: RunSpec, runs_root: Path) -> str | None:
    """Start `spec`'s run from the finished training of another run of its training key, if one is
    recorded, its files are still there and the run has no checkpoint of its own: link them into
    its work dir and return that run's "<suite>/<run key>"; else None (the run trains)."""
    from shapeprop.experiment import TRAINED_STATE  # torch: here, where a run starts, not in `plan`

    found = _adoptable(spec, runs_root)
    if found is None:
        return None
    trainer, source = found
    files = [name for name in TRAINED_STATE if (source / name).is_file()]
    for name in reversed(files):  # the checkpoint last: a DDP rank that sees it sees the rest
        _link(source / name, workdir_of(spec, runs_root) / name)
    return trainer


def has_own_training(spec: RunSpec, runs_root: Path) -> bool:
    """Whether `spec`'s work dir holds checkpoints: a training of its own, finished or to resume."""
    checkpoints = (workdir_of(spec, runs_root) / LAST_CHECKPOINT).parent
    return checkpoints.is_dir() and any(checkpoints.iterdir())


def _adoptable(spec: RunSpec, runs_root: Path) -> tuple[str, Path] | None:
    """`_recorded`, unless the run has a training of its own."""
    return None if has_own_training(spec, runs_root) else _recorded(spec, runs_root)


def _recorded(spec: RunSpec, runs_root: Path) -> tuple[str, Path] | None:
    """The recorded training of `spec`'s key by another run whose last checkpoint is still there:
    ("<suite>/<run key>", its work dir); None when there is none."""
    path = _record_path(spec, runs_root)
    try:
        record = json.loads(path.read_text())
        source = run_workdir(runs_root, record["suite"], record["run_key"])
    except (FileNotFoundError, NotADirectoryError):
        return None  # none recorded (or no runs folder, which the preflight reports)
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as err:
        log.warning("%s: not a training record (%s); run %s trains", path, err, spec.key)
        return None
    if source == workdir_of(spec, runs_root) or not (source / LAST_CHECKPOINT).is_file():
        return None  # its own record (a --force run), or the training's files are gone
    return f"{record['suite']}/{record['run_key']}", source


def _link(source: Path, target: Path) -> None:
    """A hard link (checkpoints are written by rename, so neither run can change the other's);
    a copy across file systems. Another process of the run (a DDP rank) may have linked it first."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except FileExistsError:
        pass
    except OSError:  # another file system, or links not allowed there
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        shutil.copy2(source, tmp)
        os.replace(tmp, target)
