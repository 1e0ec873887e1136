"""Install detectron2's Python code into this environment, for the `detectron2`-marked tests.

detectron2 is not installable from the package index as a normal dependency: its own releases are
not published there, and its sources build C++/CUDA ops. The ShapeProp plugin needs none of those
ops (RoIAlign and NMS come from torchvision), only detectron2's Python code, and the package index
holds that code in re-uploads of detectron2. This script takes `sal-detectron2` 0.7.2, a wheel of
detectron2's code as of 2024 (version string 0.7.2), pinned by SHA-256. Its compiled module is
built for CPython 3.10 only, so the wheel does not install here as it is: the script copies its
`detectron2` package (Python files and model-zoo configs, not the compiled module) into
site-packages with a dist-info, so pip lists and uninstalls it as `sal-detectron2`, writes a
stand-in for the compiled module that raises on use, installs detectron2's pure-Python runtime
dependencies at pinned versions, and checks that the plugin imports. Nothing of detectron2 is
committed to this repository.

This is for tests only. For real work, build detectron2 from its source repository:
`pip install --no-build-isolation 'git+https://github.com/facebookresearch/detectron2.git'`.

    python tools/install_detectron2.py            # what `make test` runs (once per .venv)
"""

from __future__ import annotations

import hashlib
import io
import subprocess
import sys
import sysconfig
import urllib.request
import zipfile
from pathlib import Path

WHEEL = "sal_detectron2-0.7.2-cp310-none-any.whl"
URL = (
    "https://files.pythonhosted.org/packages/68/b4/805c6fcf02a2bc032255955745954305f8dfdb56c8b7cbb5470b7e30e2f0/"
    + WHEEL
)
SHA256 = "491af0c7f79bdb2d178e46f6cb16a97c4ac968d45c41ea3f6b6435d59bbee561"
DIST_NAME, DIST_VERSION = "sal_detectron2", "0.7.2"
# The imports of detectron2's code that the project does not already bring, pinned: its
# install_requires (omegaconf < 2.4, tensorboard) and what it imports without declaring (fvcore, iopath).
RUNTIME_DEPENDENCIES = [
    "fvcore==0.1.5.post20221221",
    "iopath==0.1.9",
    "portalocker==4.4.2",
    "yacs==0.1.8",
    "termcolor==3.3.0",
    "tabulate==0.10.0",
    "omegaconf==2.3.1",
    "antlr4-python3-runtime==4.9.3",
    "cloudpickle==3.1.3",
    "tensorboard==2.21.0",  # DefaultTrainer's event writer (train_net)
    "tensorboard-data-server==0.7.2",
    "grpcio==1.85.3",
    "absl-py==2.5.1",
    "Markdown==3.11.3",
]

STUB = '''"""Stand-in for detectron2's compiled ops, written by shapeprop-bench's
tools/install_detectron2.py: this test install holds detectron2's Python code only."""


def get_compiler_version():  # asked by detectron2.utils.collect_env (default_setup logs it)
    return "none: detectron2's C++ ops are not built (Python-only test install)"


def get_cuda_version():
    return "none"


def __getattr__(name):
    raise NotImplementedError(
        f"detectron2._C.{name}: detectron2's C++ ops are not built in this test install; "
        "build detectron2 from https://github.com/facebookresearch/detectron2 to use them"
    )
'''


def fail(message: str) -> None:
    sys.exit(f"install_detectron2: {message}")


def download() -> bytes:
    try:
        with urllib.request.urlopen(URL, timeout=120) as response:
            data = response.read()
    except OSError as err:
        fail(f"cannot download {URL}: {err}")
    digest = hashlib.sha256(data).hexdigest()
    if digest != SHA256:
        fail(f"{WHEEL} has SHA-256 {digest}, expected {SHA256}: refusing to install it")
    return data


def install_package(data: bytes, site: Path) -> list[str]:
    """Copy `detectron2/` from the wheel into `site`, without its compiled module; returns the
    installed paths (for RECORD)."""
    installed = []
    with zipfile.ZipFile(io.BytesIO(data)) as wheel:
        for name in wheel.namelist():
            if not name.startswith("detectron2/") or name.endswith((".so", "/")):
                continue
            target = site / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(wheel.read(name))
            installed.append(name)
    if "detectron2/__init__.py" not in installed:
        fail(f"{WHEEL} holds no detectron2 package")
    # detectron2 binds its compiled module at import time in a few places (`from detectron2
    # import _C`) but calls it only inside the ops that need it (deformable and rotated boxes, the
    # fast COCO evaluation): a stand-in that raises on use lets the Python code import.
    (site / "detectron2" / "_C.py").write_text(STUB)
    installed.append("detectron2/_C.py")
    dist_info = f"{DIST_NAME}-{DIST_VERSION}.dist-info"
    (site / dist_info).mkdir(exist_ok=True)
    (site / dist_info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: sal-detectron2\nVersion: {DIST_VERSION}\n"
        "Summary: detectron2's Python code, installed by tools/install_detectron2.py for tests\n"
    )
    (site / dist_info / "INSTALLER").write_text("shapeprop-bench tools/install_detectron2.py\n")
    records = installed + [f"{dist_info}/{name}" for name in ("METADATA", "INSTALLER", "RECORD")]
    (site / dist_info / "RECORD").write_text("".join(f"{path},,\n" for path in records))
    return installed


def main() -> None:
    site = Path(sysconfig.get_paths()["purelib"])
    print(f"install_detectron2: {WHEEL} (SHA-256 {SHA256[:12]}...) -> {site}", flush=True)
    installed = install_package(download(), site)
    pip = [sys.executable, "-m", "pip", "install", "--quiet", *RUNTIME_DEPENDENCIES]
    if subprocess.run(pip).returncode != 0:
        fail(f"could not install detectron2's dependencies: {' '.join(RUNTIME_DEPENDENCIES)}")
    check = (
        "import detectron2.modeling, detectron2.engine, shapeprop.models.d2; print(detectron2.__version__)"
    )
    out = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True)
    if out.returncode != 0:
        fail(f"detectron2 was copied but does not import:\n{out.stderr[-3000:]}")
    print(f"install_detectron2: detectron2 {out.stdout.strip()} ({len(installed)} files), plugin imports")


if __name__ == "__main__":
    main()
