"""Builds the compiled propagation operator `shapeprop._C`.

The CPU kernel is always built; the CUDA kernel is added whenever a CUDA toolkit is
found (set CUDA_HOME, e.g. /usr/local/cuda). SHAPEPROP_NO_CUDA=1 skips the CUDA build,
SHAPEPROP_NO_EXT=1 skips the extension entirely (the pure-PyTorch reference is used).
"""

import glob
import os

from setuptools import setup

ext_modules, cmdclass = [], {}
sources = sorted(glob.glob("shapeprop/ops/csrc/*.cpp"))
if sources and os.environ.get("SHAPEPROP_NO_EXT") != "1":
    from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension

    cuda_sources = sorted(glob.glob("shapeprop/ops/csrc/*.cu"))
    use_cuda = bool(cuda_sources) and CUDA_HOME is not None and os.environ.get("SHAPEPROP_NO_CUDA") != "1"
    # Python's own CFLAGS carry -fwrapv, which stops GCC vectorising the kernel loops (10x slower);
    # errno-setting sqrt and trapping float compares do too.
    cxx_flags = ["-O3", "-fopenmp", "-fno-wrapv", "-fno-math-errno", "-fno-trapping-math"]
    if use_cuda:
        # No GPU is visible at build time on most build hosts: pick common archs explicitly.
        os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "7.5;8.0;9.0+PTX")
        ext = CUDAExtension(
            "shapeprop._C",
            sources + cuda_sources,
            define_macros=[("WITH_CUDA", None)],
            extra_compile_args={"cxx": cxx_flags, "nvcc": ["-O3", "--use_fast_math"]},
            extra_link_args=["-fopenmp"],
        )
    else:
        ext = CppExtension(
            "shapeprop._C", sources, extra_compile_args=cxx_flags, extra_link_args=["-fopenmp"]
        )
    ext_modules = [ext]
    cmdclass = {"build_ext": BuildExtension}

setup(ext_modules=ext_modules, cmdclass=cmdclass)
