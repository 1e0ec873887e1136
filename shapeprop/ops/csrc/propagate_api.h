// Entry points of the compiled propagation operator, per device (see propagate.h for the math).
#pragma once

#include <ATen/core/Tensor.h>

#include <vector>

namespace shapeprop {

// Shape checks shared by every device; returns the number of weight groups Cw (C or 1).
int64_t check_inputs(const at::Tensor& x, const at::Tensor& w, int64_t steps);

at::Tensor forward_cpu(const at::Tensor& x, const at::Tensor& w, int64_t steps, bool symmetric);
std::vector<at::Tensor> backward_cpu(const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& w,
                                     int64_t steps, bool symmetric);

#ifdef WITH_CUDA
at::Tensor forward_cuda(const at::Tensor& x, const at::Tensor& w, int64_t steps, bool symmetric);
std::vector<at::Tensor> backward_cuda(const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& w,
                                      int64_t steps, bool symmetric);
#endif

}  // namespace shapeprop
