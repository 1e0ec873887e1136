// CPU kernel of the propagation operator: parallel over (RoI, weight group) with
// at::parallel_for, all steps fused, working planes in one zero-padded buffer per thread chunk.
// Backward recomputes the forward maps of one (n, c) slice (steps planes) and walks back.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/zeros_like.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#ifdef __linux__
#include <sys/mman.h>
#endif

#include "propagate.h"
#include "propagate_api.h"

// The step loops are kept out of line (inlined into the parallel lambda, GCC drops their
// __restrict__ and falls back to scalar code) and, with GCC on x86-64, cloned for AVX2/FMA with
// a run-time pick, so the extension stays portable while using the wide units where present.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define SP_CPU_LOOP __attribute__((noinline, target_clones("arch=x86-64-v3", "default")))
#else
#define SP_CPU_LOOP __attribute__((noinline))
#endif

namespace shapeprop {
namespace {

struct Geometry {
  int H, W, HW, stride, P;
  Geometry(int64_t h, int64_t w)
      : H(static_cast<int>(h)), W(static_cast<int>(w)), HW(H * W), stride(W + 2), P((H + 2) * (W + 2)) {}
};

// The kernels and weight gradients are built plane by plane (one store stream per loop) from the
// per-location terms of propagate.h, so that the loops vectorise; the norm is a template argument
// to keep them branch-free.

// The scale plane s, the factor plane a and the normalised kernels K of one weight group.
template <bool symmetric, typename acc_t, typename scalar_t>
SP_CPU_LOOP void build_kernels(const scalar_t* __restrict__ wg, const Geometry& g, acc_t* __restrict__ s,
                               acc_t* __restrict__ a, acc_t* __restrict__ K) {
  const int W = g.W, HW = g.HW, stride = g.stride;
  for (int h = 0; h < g.H; ++h)
    for (int w = 0; w < W; ++w) s[(h + 1) * stride + w + 1] = scale_value<acc_t>(wg, h * W + w, HW, symmetric);
  for (int h = 0; h < g.H; ++h)
    for (int w = 0; w < W; ++w) {
      const int p = (h + 1) * stride + w + 1;
      a[p] = kernel_factor(wg, h * W + w, HW, p, symmetric, s);
    }
  for (int k = 0; k < kWin; ++k) {
    const int shift = neighbour_shift(k, stride);
    const scalar_t* __restrict__ wk = wg + k * HW;
    acc_t* __restrict__ Kk = K + k * g.P;
    for (int h = 0; h < g.H; ++h)
      for (int w = 0; w < W; ++w) {
        const int p = (h + 1) * stride + w + 1;
        Kk[p] = static_cast<acc_t>(wk[h * W + w]) * a[p] * s[p + shift];
      }
  }
}

// Gradient of the raw weights of one group from its kernel gradient dK (offset: a scratch plane).
template <bool symmetric, typename acc_t, typename scalar_t>
SP_CPU_LOOP void weight_grads(const scalar_t* __restrict__ wg, const Geometry& g, const acc_t* __restrict__ s,
                              const acc_t* __restrict__ a, const acc_t* __restrict__ K,
                              const acc_t* __restrict__ dK, acc_t* __restrict__ offset,
                              scalar_t* __restrict__ dw) {
  const int W = g.W, HW = g.HW, P = g.P, stride = g.stride;
  for (int h = 0; h < g.H; ++h)
    for (int w = 0; w < W; ++w) {
      const int p = (h + 1) * stride + w + 1;
      offset[p] = weight_grad_offset(wg, h * W + w, HW, p, P, stride, symmetric, K, dK);
    }
  for (int k = 0; k < kWin; ++k) {
    const int shift = neighbour_shift(k, stride);
    const acc_t* __restrict__ dKk = dK + k * P;
    scalar_t* __restrict__ dwk = dw + k * HW;
    for (int h = 0; h < g.H; ++h)
      for (int w = 0; w < W; ++w) {
        const int p = (h + 1) * stride + w + 1;
        dwk[h * W + w] = static_cast<scalar_t>(dKk[p] * a[p] * s[p + shift] + offset[p]);
      }
  }
}

template <typename acc_t, typename scalar_t>
void load_plane(const scalar_t* src, const Geometry& g, acc_t* dst) {
  for (int h = 0; h < g.H; ++h)
    for (int w = 0; w < g.W; ++w) dst[(h + 1) * g.stride + w + 1] = static_cast<acc_t>(src[h * g.W + w]);
}

template <typename acc_t, typename scalar_t>
void store_plane(const acc_t* src, const Geometry& g, scalar_t* dst) {
  for (int h = 0; h < g.H; ++h)
    for (int w = 0; w < g.W; ++w) dst[h * g.W + w] = static_cast<scalar_t>(src[(h + 1) * g.stride + w + 1]);
}

// The loops below run over one contiguous range, from the first to the last interior location,
// border columns included: K is zero there, so those outputs come out as the zero border again.
// That keeps each loop long and unit-stride, which is what lets the compiler vectorise it.

// One step: out = K y.
template <typename acc_t>
SP_CPU_LOOP void step_forward(const acc_t* __restrict__ K, const acc_t* __restrict__ y, acc_t* __restrict__ out,
                  const Geometry& g) {
  const int first = g.stride + 1, last = g.H * g.stride + g.W;
  for (int p = first; p <= last; ++p) out[p] = propagate_location(K, y, p, g.P, g.stride);
}

// One backward step: dK += grad (x) shifted y, and grad_prev = K^T grad.
template <typename acc_t>
SP_CPU_LOOP void step_backward(const acc_t* __restrict__ K, const acc_t* __restrict__ y, const acc_t* __restrict__ grad,
                   acc_t* __restrict__ grad_prev, acc_t* __restrict__ dK, const Geometry& g) {
  const int first = g.stride + 1, last = g.H * g.stride + g.W;
  for (int k = 0; k < kWin; ++k) {
    const int shift = neighbour_shift(k, g.stride);
    acc_t* __restrict__ dk = dK + k * g.P;
    for (int p = first; p <= last; ++p) dk[p] += grad[p] * y[p + shift];
  }
  for (int p = first; p <= last; ++p) grad_prev[p] = transpose_location(K, grad, p, g.P, g.stride);
}

// grad_w is as large as w (N * Cw * 9 * H * W) and freshly mapped: ask for transparent huge
// pages before the kernel first touches it, which cuts the page-fault cost several-fold.
void advise_huge_pages(const at::Tensor& t) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  constexpr uintptr_t kPage = 4096, kMin = uintptr_t(8) << 20;  // only worth it for big buffers
  const auto begin = reinterpret_cast<uintptr_t>(t.data_ptr());
  const uintptr_t first = (begin + kPage - 1) & ~(kPage - 1);
  const uintptr_t last = (begin + t.nbytes()) & ~(kPage - 1);
  if (last > first && last - first >= kMin) madvise(reinterpret_cast<void*>(first), last - first, MADV_HUGEPAGE);
#else
  (void)t;
#endif
}

template <typename scalar_t>
void forward_impl(const at::Tensor& x, const at::Tensor& w, at::Tensor& out, int64_t steps, bool symmetric) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t N = x.size(0), C = x.size(1), Cw = w.size(1) / kWin;
  const Geometry g(x.size(2), x.size(3));
  const int64_t per_group = Cw == 1 ? C : 1;  // channels that share one kernel
  const scalar_t* xp = x.data_ptr<scalar_t>();
  const scalar_t* wp = w.data_ptr<scalar_t>();
  scalar_t* op = out.data_ptr<scalar_t>();
  at::parallel_for(0, N * Cw, 1, [&](int64_t begin, int64_t end) {
    // K (9 planes), s, a, two state planes; borders are never written, so they stay zero.
    std::vector<acc_t> buf(static_cast<size_t>(kWin + 4) * g.P, acc_t(0));
    acc_t *K = buf.data(), *s = K + kWin * g.P, *a = s + g.P, *y0 = a + g.P, *y1 = y0 + g.P;
    for (int64_t task = begin; task < end; ++task) {
      const int64_t n = task / Cw, group = task % Cw;
      const scalar_t* wg = wp + task * kWin * g.HW;
      symmetric ? build_kernels<true>(wg, g, s, a, K) : build_kernels<false>(wg, g, s, a, K);
      for (int64_t i = 0; i < per_group; ++i) {
        const int64_t plane = (n * C + (Cw == 1 ? i : group)) * g.HW;
        load_plane(xp + plane, g, y0);
        acc_t *cur = y0, *next = y1;
        for (int64_t t = 0; t < steps; ++t) {
          step_forward(K, cur, next, g);
          std::swap(cur, next);
        }
        store_plane(cur, g, op + plane);
      }
    }
  });
}

template <typename scalar_t>
void backward_impl(const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& w, at::Tensor& grad_x,
                   at::Tensor& grad_w, int64_t steps, bool symmetric) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t N = x.size(0), C = x.size(1), Cw = w.size(1) / kWin;
  const Geometry g(x.size(2), x.size(3));
  const int64_t per_group = Cw == 1 ? C : 1;
  const int64_t hist = std::max<int64_t>(steps, 1);  // the maps before each step: y_0 .. y_{steps-1}
  const scalar_t* gop = grad_out.data_ptr<scalar_t>();
  const scalar_t* xp = x.data_ptr<scalar_t>();
  const scalar_t* wp = w.data_ptr<scalar_t>();
  scalar_t* gxp = grad_x.data_ptr<scalar_t>();
  scalar_t* gwp = grad_w.data_ptr<scalar_t>();
  at::parallel_for(0, N * Cw, 1, [&](int64_t begin, int64_t end) {
    // K (9), dK (9), s, a, offset, two gradient planes, then the per-step maps.
    std::vector<acc_t> buf(static_cast<size_t>(2 * kWin + 5 + hist) * g.P, acc_t(0));
    acc_t *K = buf.data(), *dK = K + kWin * g.P, *s = dK + kWin * g.P, *a = s + g.P, *offset = a + g.P;
    acc_t *ga = offset + g.P, *gb = ga + g.P, *ys = gb + g.P;
    for (int64_t task = begin; task < end; ++task) {
      const int64_t n = task / Cw, group = task % Cw;
      const scalar_t* wg = wp + task * kWin * g.HW;
      symmetric ? build_kernels<true>(wg, g, s, a, K) : build_kernels<false>(wg, g, s, a, K);
      std::fill(dK, dK + kWin * g.P, acc_t(0));
      for (int64_t i = 0; i < per_group; ++i) {
        const int64_t plane = (n * C + (Cw == 1 ? i : group)) * g.HW;
        load_plane(xp + plane, g, ys);
        for (int64_t t = 1; t < steps; ++t) step_forward(K, ys + (t - 1) * g.P, ys + t * g.P, g);
        load_plane(gop + plane, g, ga);
        acc_t *cur = ga, *prev = gb;
        for (int64_t t = steps - 1; t >= 0; --t) {
          step_backward(K, ys + t * g.P, cur, prev, dK, g);
          std::swap(cur, prev);
        }
        store_plane(cur, g, gxp + plane);
      }
      scalar_t* dw = gwp + task * kWin * g.HW;
      symmetric ? weight_grads<true>(wg, g, s, a, K, dK, offset, dw)
                : weight_grads<false>(wg, g, s, a, K, dK, offset, dw);
    }
  });
}

}  // namespace

at::Tensor forward_cpu(const at::Tensor& x, const at::Tensor& w, int64_t steps, bool symmetric) {
  auto out = at::empty_like(x);
  if (x.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "shapeprop_propagate_forward_cpu",
                             [&] { forward_impl<scalar_t>(x, w, out, steps, symmetric); });
  return out;
}

std::vector<at::Tensor> backward_cpu(const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& w,
                                     int64_t steps, bool symmetric) {
  auto grad_x = at::empty_like(x);
  auto grad_w = at::empty_like(w);  // every entry is written
  if (x.numel() == 0) return {grad_x, grad_w.zero_()};
  advise_huge_pages(grad_w);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "shapeprop_propagate_backward_cpu", [&] {
    backward_impl<scalar_t>(grad_out, x, w, grad_x, grad_w, steps, symmetric);
  });
  return {grad_x, grad_w};
}

}  // namespace shapeprop
