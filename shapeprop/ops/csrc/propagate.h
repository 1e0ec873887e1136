// Device-agnostic math of the ShapeProp propagation operator (Eq. 4), shared by the CPU
// kernel (propagate_cpu.cpp) and the CUDA kernel (propagate_cuda.cu).
//
// Conventions (the same as shapeprop/ops/reference.py):
//  * window r = 3, k = i * 3 + j, neighbour of (h, w) at (h + i - 1, w + j - 1);
//  * raw weights of one group: w[k * HW + q], q = h * W + w (unpadded, as in the tensor);
//  * every working plane (state maps, kernels K, their gradients, 1/sqrt(degree)) is kept
//    "padded": (H + 2) x (W + 2) with a zero border, interior (h, w) at index
//    p = (h + 1) * (W + 2) + (w + 1). The zero border is how neighbours outside the map
//    contribute nothing, and it removes every bounds check from the inner loops;
//  * degree d = max(sum_k w_k, kEps) over all 9 entries, including neighbours that fall
//    outside the map; random walk K_k = w_k / d; symmetric K_k(u) = w_k(u) s(u) s(u + o_k)
//    with s = 1 / sqrt(d). Kernel entries of neighbours outside the map are stored as 0.
#pragma once

#include <cmath>

#ifdef __CUDACC__
#define SP_HD __host__ __device__ __forceinline__
#define SP_UNROLL _Pragma("unroll")
#else
#define SP_HD inline
#define SP_UNROLL _Pragma("GCC unroll 9")
#endif

namespace shapeprop {

constexpr int kWin = 9;          // r * r with r = 3
constexpr double kEps = 1e-12;  // lower bound of the per-location weight sum

SP_HD float sp_sqrt(float v) { return sqrtf(v); }
SP_HD double sp_sqrt(double v) { return sqrt(v); }

// Padded index of interior location q of an H x W map.
SP_HD int padded_index(int q, int W) { return (q / W + 1) * (W + 2) + (q % W + 1); }

// Offset, in a padded plane of row stride W + 2, from a location to its k-th neighbour.
SP_HD int neighbour_shift(int k, int stride) { return (k / 3 - 1) * stride + (k % 3 - 1); }

// Sum of the raw weights of one location (w points at the group, q is unpadded).
template <typename acc_t, typename scalar_t>
SP_HD acc_t weight_sum(const scalar_t* w, int q, int HW) {
  acc_t sum = 0;
SP_UNROLL
  for (int k = 0; k < kWin; ++k) sum += static_cast<acc_t>(w[k * HW + q]);
  return sum;
}

template <typename acc_t>
SP_HD acc_t clamped_degree(acc_t sum) {
  return sum >= acc_t(kEps) ? sum : acc_t(kEps);
}

// Interior value of the "scale" plane s: 1/sqrt(degree) for the symmetric norm, 1 for the
// random walk. The plane's zero border doubles as the in-map mask of the neighbours.
template <typename acc_t, typename scalar_t>
SP_HD acc_t scale_value(const scalar_t* w, int q, int HW, bool symmetric) {
  return symmetric ? acc_t(1) / sp_sqrt(clamped_degree(weight_sum<acc_t>(w, q, HW))) : acc_t(1);
}

// Per-location factor a of the kernel K_k(p) = w_k(p) * a(p) * s(p + o_k): 1/d (random walk) or
// s(p) (symmetric). Entries whose neighbour lies outside the map come out as 0 (s is 0 there):
// they multiply a zero state anyway, and zeros there keep the transposed step zero on the border.
template <typename acc_t, typename scalar_t>
SP_HD acc_t kernel_factor(const scalar_t* w, int q, int HW, int p, bool symmetric, const acc_t* s) {
  return symmetric ? s[p] : acc_t(1) / clamped_degree(weight_sum<acc_t>(w, q, HW));
}

// Normalised kernel of one location: writes K[k * P + p] for the 9 entries.
template <typename acc_t, typename scalar_t>
SP_HD void normalise_location(const scalar_t* w, int q, int HW, int p, int P, int stride, bool symmetric,
                              const acc_t* s, acc_t* K) {
  const acc_t a = kernel_factor(w, q, HW, p, symmetric, s);
SP_UNROLL
  for (int k = 0; k < kWin; ++k)
    K[k * P + p] = static_cast<acc_t>(w[k * HW + q]) * a * s[p + neighbour_shift(k, stride)];
}

// One propagation step at padded location p: sum_k K_k(p) * y(p + o_k).
template <typename acc_t>
SP_HD acc_t propagate_location(const acc_t* K, const acc_t* y, int p, int P, int stride) {
  acc_t acc = 0;
SP_UNROLL
  for (int k = 0; k < kWin; ++k) acc += K[k * P + p] * y[p + neighbour_shift(k, stride)];
  return acc;
}

// The transposed step at padded location p: sum_k K_k(p - o_k) * g(p - o_k), i.e. the
// gradient w.r.t. the state before a step given the gradient g after it.
template <typename acc_t>
SP_HD acc_t transpose_location(const acc_t* K, const acc_t* g, int p, int P, int stride) {
  acc_t acc = 0;
SP_UNROLL
  for (int k = 0; k < kWin; ++k) {
    const int src = p - neighbour_shift(k, stride);
    acc += K[k * P + src] * g[src];
  }
  return acc;
}

// The raw-weight gradient of one location is dw_k = dK_k * a * s(p + o_k) + offset (a from
// kernel_factor; dK padded with a zero border). This is the offset, the part through the degree.
// Random walk: offset = -sum_k dK_k K_k / d. Symmetric: with
// E(u) = sum_k dK_k(u) K_k(u) + sum_k dK_k(u - o_k) K_k(u - o_k), offset = -E(u) / (2 d(u)).
// Below kEps the degree is a constant and the offset 0.
template <typename acc_t, typename scalar_t>
SP_HD acc_t weight_grad_offset(const scalar_t* w, int q, int HW, int p, int P, int stride, bool symmetric,
                               const acc_t* K, const acc_t* dK) {
  const acc_t sum = weight_sum<acc_t>(w, q, HW);
  acc_t e = 0;
SP_UNROLL
  for (int k = 0; k < kWin; ++k) e += dK[k * P + p] * K[k * P + p];
  if (symmetric) {
SP_UNROLL
    for (int k = 0; k < kWin; ++k) {
      const int src = p - neighbour_shift(k, stride);
      e += dK[k * P + src] * K[k * P + src];
    }
  }
  const acc_t offset = -e / ((symmetric ? acc_t(2) : acc_t(1)) * clamped_degree(sum));
  return sum >= acc_t(kEps) ? offset : acc_t(0);
}

// Gradient of the 9 raw weights of one location (writes dw[k * HW + q]).
template <typename acc_t, typename scalar_t>
SP_HD void weight_grad_location(const scalar_t* w, int q, int HW, int p, int P, int stride, bool symmetric,
                                const acc_t* s, const acc_t* K, const acc_t* dK, scalar_t* dw) {
  const acc_t a = kernel_factor(w, q, HW, p, symmetric, s);
  const acc_t offset = weight_grad_offset(w, q, HW, p, P, stride, symmetric, K, dK);
SP_UNROLL
  for (int k = 0; k < kWin; ++k)
    dw[k * HW + q] = static_cast<scalar_t>(dK[k * P + p] * a * s[p + neighbour_shift(k, stride)] + offset);
}

}  // namespace shapeprop
