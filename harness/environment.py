"""What this machine runs: package versions, CUDA, the compiled operator, git state.

Used by `shapeprop-bench env` and, as tags, by every tracked run.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import platform
import subprocess
from pathlib import Path


def package_version(dist: str) -> str:
    """The installed version of distribution `dist`, or "not installed"."""
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def module_version(module: str) -> str:
    """The version of whichever installed distribution provides import package `module`, or "not
    installed". detectron2 built from its repository is the distribution `detectron2`; the
    pure-Python copy the tests install is `sal-detectron2`, and its version says so."""
    for dist in importlib.metadata.packages_distributions().get(module, [module]):
        version = package_version(dist)
        if version != "not installed":
            return version if dist == module else f"{version} ({dist})"
    return "not installed"


def extension_status() -> str:
    """Whether `shapeprop._C` (the compiled propagation operator) is built, and for which devices."""
    import torch  # noqa: F401  (the extension links against torch's libraries: load them first)

    if importlib.util.find_spec("shapeprop._C") is None:
        return "not built (the pure-PyTorch reference is used)"
    try:
        ext = importlib.import_module("shapeprop._C")
    except ImportError as err:  # built but unloadable, e.g. against another torch
        return f"built but fails to load: {err}"
    devices = ["cpu"] + (["cuda"] if getattr(ext, "has_cuda", lambda: False)() else [])
    return "built (" + ", ".join(devices) + ")"


def collect() -> dict[str, str]:
    import torch

    cuda_visible = torch.cuda.is_available()
    gpu = torch.cuda.get_device_name(0) if cuda_visible else "none visible"
    return {
        "shapeprop-bench": package_version("shapeprop-bench"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "torchvision": package_version("torchvision"),
        "cuda runtime": torch.version.cuda or "none (CPU build)",
        "gpu": gpu,
        "lightning": package_version("lightning"),
        "mlflow": package_version("mlflow"),
        "detectron2": module_version("detectron2"),
        "propagation operator": extension_status(),
    }


def git_state(path: str | Path = ".") -> dict[str, str]:
    """Commit and dirty flag of the repository holding `path`, or 'unknown' outside git."""

    def git(*args: str) -> str:
        out = subprocess.run(["git", *args], cwd=path, capture_output=True, text=True, check=True)
        return out.stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.CalledProcessError):
        return {"git_commit": "unknown", "git_dirty": "unknown"}
    return {"git_commit": commit, "git_dirty": str(dirty).lower()}
