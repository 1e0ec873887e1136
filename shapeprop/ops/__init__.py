"""The ShapeProp propagation operator (Eq. 4): fused C++/CUDA kernels with a pure-PyTorch reference."""

from shapeprop.ops.propagation import NORMS, extension_available, propagate
from shapeprop.ops.reference import normalised_kernels, propagate_reference

__all__ = ["NORMS", "extension_available", "normalised_kernels", "propagate", "propagate_reference"]
