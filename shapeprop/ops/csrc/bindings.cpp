// Python bindings of `shapeprop._C`: device dispatch and input checks.
#include <torch/extension.h>

#include "propagate_api.h"

namespace shapeprop {

int64_t check_inputs(const at::Tensor& x, const at::Tensor& w, int64_t steps) {
  TORCH_CHECK(x.dim() == 4, "propagate: x must be [N, C, H, W], got ", x.sizes());
  TORCH_CHECK(w.dim() == 4, "propagate: w must be [N, Cw*9, H, W], got ", w.sizes());
  TORCH_CHECK(x.size(0) == w.size(0) && x.size(2) == w.size(2) && x.size(3) == w.size(3),
              "propagate: x ", x.sizes(), " and w ", w.sizes(), " differ in N, H or W");
  TORCH_CHECK(w.size(1) == 9 * x.size(1) || w.size(1) == 9,
              "propagate: w must have C*9 or 9 channels for C=", x.size(1), ", got ", w.size(1));
  TORCH_CHECK(x.device() == w.device(), "propagate: x on ", x.device(), " but w on ", w.device());
  TORCH_CHECK(x.scalar_type() == w.scalar_type(), "propagate: x is ", x.scalar_type(), " but w is ",
              w.scalar_type());
  TORCH_CHECK(x.is_contiguous() && w.is_contiguous(), "propagate: x and w must be contiguous");
  TORCH_CHECK(steps >= 0, "propagate: steps must be >= 0, got ", steps);
  return w.size(1) / 9;
}

static at::Tensor forward(const at::Tensor& x, const at::Tensor& w, int64_t steps, bool symmetric) {
  check_inputs(x, w, steps);
  if (x.is_cuda()) {
#ifdef WITH_CUDA
    return forward_cuda(x, w, steps, symmetric);
#else
    TORCH_CHECK(false, "propagate: shapeprop._C was built without CUDA");
#endif
  }
  return forward_cpu(x, w, steps, symmetric);
}

static std::vector<at::Tensor> backward(const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& w,
                                        int64_t steps, bool symmetric) {
  check_inputs(x, w, steps);
  TORCH_CHECK(grad_out.sizes() == x.sizes() && grad_out.scalar_type() == x.scalar_type() &&
                  grad_out.device() == x.device() && grad_out.is_contiguous(),
              "propagate: grad_out must be a contiguous tensor like x");
  if (x.is_cuda()) {
#ifdef WITH_CUDA
    return backward_cuda(grad_out, x, w, steps, symmetric);
#else
    TORCH_CHECK(false, "propagate: shapeprop._C was built without CUDA");
#endif
  }
  return backward_cpu(grad_out, x, w, steps, symmetric);
}

static bool has_cuda() {
#ifdef WITH_CUDA
  return true;
#else
  return false;
#endif
}

}  // namespace shapeprop

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "Fused ShapeProp saliency propagation (Eq. 4): CPU and, when built with it, CUDA kernels";
  m.def("forward", &shapeprop::forward, "propagate forward", py::arg("x"), py::arg("w"), py::arg("steps"),
        py::arg("symmetric"));
  m.def("backward", &shapeprop::backward, "propagate backward: (grad_x, grad_w)", py::arg("grad_out"),
        py::arg("x"), py::arg("w"), py::arg("steps"), py::arg("symmetric"));
  m.def("has_cuda", &shapeprop::has_cuda, "whether the CUDA kernel was compiled in");
}
