// CUDA kernel of the propagation operator: one block per (RoI, tile of channels), the tile's
// kernels and state planes held in shared memory, all steps in one launch. Half and bfloat16
// inputs are computed in float32 (at::opmath_type). The math is the one of propagate.h.
//
// Backward is two launches: (1) per (RoI, channel tile) recompute the forward maps (kept in
// shared memory when they fit, else in a global scratch of steps planes per channel), walk the
// steps back for grad_x and accumulate dK; (2) per (RoI, weight group) turn dK into grad_w.
// Narrow includes keep nvcc fast; only c10's CUDA headers, as ATen/cuda/CUDAContext.h would
// pull in cuBLAS/cuSPARSE headers, which a bare CUDA toolkit may lack.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/zeros.h>
#include <ATen/ops/zeros_like.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "propagate.h"
#include "propagate_api.h"

namespace shapeprop {
namespace {

constexpr int kThreads = 256;
constexpr size_t kDefaultSmem = 48 * 1024;  // above this a kernel must opt in

struct Shape {
  int C, Cw, H, W, HW, stride, P;
};

Shape make_shape(const at::Tensor& x, const at::Tensor& w) {
  Shape s;
  s.C = static_cast<int>(x.size(1));
  s.Cw = static_cast<int>(w.size(1) / kWin);
  s.H = static_cast<int>(x.size(2));
  s.W = static_cast<int>(x.size(3));
  s.HW = s.H * s.W;
  s.stride = s.W + 2;
  s.P = (s.H + 2) * s.stride;
  return s;
}

// Fills the scale planes and the normalised kernels of the `groups` weight groups starting at
// `first_group` of RoI n (s: groups planes, K: groups * 9 planes). Ends synchronised.
template <typename scalar_t, typename acc_t>
__device__ void build_kernels(const scalar_t* __restrict__ w, int64_t n, int first_group, int groups,
                              const Shape& sh, bool symmetric, acc_t* s, acc_t* K) {
  for (int i = threadIdx.x; i < groups * sh.HW; i += blockDim.x) {
    const int g = i / sh.HW, q = i % sh.HW;
    const scalar_t* wg = w + (n * sh.Cw + first_group + g) * kWin * sh.HW;
    s[g * sh.P + padded_index(q, sh.W)] = scale_value<acc_t>(wg, q, sh.HW, symmetric);
  }
  __syncthreads();
  for (int i = threadIdx.x; i < groups * sh.HW; i += blockDim.x) {
    const int g = i / sh.HW, q = i % sh.HW;
    const scalar_t* wg = w + (n * sh.Cw + first_group + g) * kWin * sh.HW;
    normalise_location(wg, q, sh.HW, padded_index(q, sh.W), sh.P, sh.stride, symmetric, s + g * sh.P,
                       K + g * kWin * sh.P);
  }
  __syncthreads();
}

template <typename acc_t>
__device__ void zero_shared(acc_t* smem, int count) {
  for (int i = threadIdx.x; i < count; i += blockDim.x) smem[i] = acc_t(0);
  __syncthreads();
}

template <typename scalar_t, typename acc_t>
__global__ void forward_kernel(const scalar_t* __restrict__ x, const scalar_t* __restrict__ w,
                               scalar_t* __restrict__ out, Shape sh, int steps, int tile, bool symmetric) {
  extern __shared__ __align__(16) unsigned char smem_bytes[];
  acc_t* smem = reinterpret_cast<acc_t*>(smem_bytes);
  const int tiles = (sh.C + tile - 1) / tile;
  const int64_t n = blockIdx.x / tiles;
  const int c0 = (blockIdx.x % tiles) * tile, tc = min(tile, sh.C - c0);
  const bool agnostic = sh.Cw == 1;
  const int groups = agnostic ? 1 : tc;
  acc_t* K = smem;
  acc_t* s = K + groups * kWin * sh.P;
  acc_t* cur = s + groups * sh.P;
  acc_t* next = cur + tc * sh.P;

  zero_shared(smem, (groups * (kWin + 1) + 2 * tc) * sh.P);  // the zero borders
  build_kernels(w, n, agnostic ? 0 : c0, groups, sh, symmetric, s, K);
  for (int i = threadIdx.x; i < tc * sh.HW; i += blockDim.x) {
    const int ci = i / sh.HW, q = i % sh.HW;
    cur[ci * sh.P + padded_index(q, sh.W)] = static_cast<acc_t>(x[(n * sh.C + c0 + ci) * sh.HW + q]);
  }
  __syncthreads();
  for (int t = 0; t < steps; ++t) {
    for (int i = threadIdx.x; i < tc * sh.HW; i += blockDim.x) {
      const int ci = i / sh.HW, p = padded_index(i % sh.HW, sh.W);
      const acc_t* Kc = K + (agnostic ? 0 : ci) * kWin * sh.P;
      next[ci * sh.P + p] = propagate_location(Kc, cur + ci * sh.P, p, sh.P, sh.stride);
    }
    __syncthreads();
    acc_t* tmp = cur;
    cur = next;
    next = tmp;
  }
  for (int i = threadIdx.x; i < tc * sh.HW; i += blockDim.x) {
    const int ci = i / sh.HW, q = i % sh.HW;
    out[(n * sh.C + c0 + ci) * sh.HW + q] = static_cast<scalar_t>(cur[ci * sh.P + padded_index(q, sh.W)]);
  }
}

// Launch (1) of backward. hist_global is null when the forward maps live in shared memory;
// dK_global is [N, Cw, 9, P] (padded, zero-initialised), accumulated atomically when channel-agnostic.
template <typename scalar_t, typename acc_t>
__global__ void backward_state_kernel(const scalar_t* __restrict__ grad_out, const scalar_t* __restrict__ x,
                                      const scalar_t* __restrict__ w, scalar_t* __restrict__ grad_x,
                                      acc_t* __restrict__ dK_global, acc_t* __restrict__ hist_global, Shape sh,
                                      int steps, int tile, bool symmetric) {
  extern __shared__ __align__(16) unsigned char smem_bytes[];
  acc_t* smem = reinterpret_cast<acc_t*>(smem_bytes);
  const int tiles = (sh.C + tile - 1) / tile;
  const int64_t n = blockIdx.x / tiles;
  const int c0 = (blockIdx.x % tiles) * tile, tc = min(tile, sh.C - c0);
  const bool agnostic = sh.Cw == 1;
  const int groups = agnostic ? 1 : tc;
  const int hist = steps > 1 ? steps : 1;  // the maps before each step: y_0 .. y_{steps-1}
  acc_t* K = smem;
  acc_t* s = K + groups * kWin * sh.P;
  acc_t* dK = s + groups * sh.P;
  acc_t* gcur = dK + groups * kWin * sh.P;
  acc_t* gnext = gcur + tc * sh.P;
  acc_t* hist_shared = gnext + tc * sh.P;
  // Plane of the map before step t of channel ci.
  auto history = [&](int ci, int t) -> acc_t* {
    return hist_global != nullptr ? hist_global + ((n * sh.C + c0 + ci) * hist + t) * sh.P
                                  : hist_shared + (t * tc + ci) * sh.P;
  };

  zero_shared(smem, (groups * (2 * kWin + 1) + 2 * tc + (hist_global != nullptr ? 0 : hist * tc)) * sh.P);
  build_kernels(w, n, agnostic ? 0 : c0, groups, sh, symmetric, s, K);
  for (int i = threadIdx.x; i < tc * sh.HW; i += blockDim.x) {
    const int ci = i / sh.HW, q = i % sh.HW, p = padded_index(q, sh.W);
    const int64_t src = (n * sh.C + c0 + ci) * sh.HW + q;
    history(ci, 0)[p] = static_cast<acc_t>(x[src]);
    gcur[ci * sh.P + p] = static_cast<acc_t>(grad_out[src]);
  }
  __syncthreads();
  for (int t = 1; t < steps; ++t) {
    for (int i = threadIdx.x; i < tc * sh.HW; i += blockDim.x) {
      const int ci = i / sh.HW, p = padded_index(i % sh.HW, sh.W);
      const acc_t* Kc = K + (agnostic ? 0 : ci) * kWin * sh.P;
      history(ci, t)[p] = propagate_location(Kc, history(ci, t - 1), p, sh.P, sh.stride);
    }
    __syncthreads();
  }
  for (int t = steps - 1; t >= 0; --t) {
    for (int i = threadIdx.x; i < tc * sh.HW; i += blockDim.x) {
      const int ci = i / sh.HW, p = padded_index(i % sh.HW, sh.W);
      const int g = agnostic ? 0 : ci;
      const acc_t* Kc = K + g * kWin * sh.P;
      acc_t* dKc = dK + g * kWin * sh.P;
      const acc_t* y = history(ci, t);
      const acc_t grad = gcur[ci * sh.P + p];
#pragma unroll
      for (int k = 0; k < kWin; ++k) {
        const acc_t v = grad * y[p + neighbour_shift(k, sh.stride)];
        if (agnostic) {
          atomicAdd(&dKc[k * sh.P + p], v);  // channels of the tile share one kernel
        } else {
          dKc[k * sh.P + p] += v;  // only this thread touches (ci, p)
        }
      }
      gnext[ci * sh.P + p] = transpose_location(Kc, gcur + ci * sh.P, p, sh.P, sh.stride);
    }
    __syncthreads();
    acc_t* tmp = gcur;
    gcur = gnext;
    gnext = tmp;
  }
  for (int i = threadIdx.x; i < tc * sh.HW; i += blockDim.x) {
    const int ci = i / sh.HW, q = i % sh.HW;
    grad_x[(n * sh.C + c0 + ci) * sh.HW + q] = static_cast<scalar_t>(gcur[ci * sh.P + padded_index(q, sh.W)]);
  }
  const int first_group = agnostic ? 0 : c0;
  for (int i = threadIdx.x; i < groups * kWin * sh.HW; i += blockDim.x) {
    const int plane = i / sh.HW, p = padded_index(i % sh.HW, sh.W);  // plane = g * 9 + k
    acc_t* dst = dK_global + (n * sh.Cw + first_group) * kWin * sh.P + plane * sh.P + p;
    if (agnostic) {
      atomicAdd(dst, dK[plane * sh.P + p]);  // other channel tiles of this RoI add theirs
    } else {
      *dst = dK[plane * sh.P + p];
    }
  }
}

// Launch (2) of backward: one block per (RoI, weight group), dK -> grad_w.
template <typename scalar_t, typename acc_t>
__global__ void backward_weight_kernel(const scalar_t* __restrict__ w, const acc_t* __restrict__ dK_global,
                                       scalar_t* __restrict__ grad_w, Shape sh, bool symmetric) {
  extern __shared__ __align__(16) unsigned char smem_bytes[];
  acc_t* smem = reinterpret_cast<acc_t*>(smem_bytes);
  const int64_t n = blockIdx.x / sh.Cw;
  const int g = blockIdx.x % sh.Cw;
  acc_t* K = smem;
  acc_t* s = K + kWin * sh.P;
  zero_shared(smem, (kWin + 1) * sh.P);
  build_kernels(w, n, g, 1, sh, symmetric, s, K);
  const int64_t group = n * sh.Cw + g;
  const scalar_t* wg = w + group * kWin * sh.HW;
  const acc_t* dK = dK_global + group * kWin * sh.P;
  for (int q = threadIdx.x; q < sh.HW; q += blockDim.x)
    weight_grad_location(wg, q, sh.HW, padded_index(q, sh.W), sh.P, sh.stride, symmetric, s, K, dK,
                         grad_w + group * kWin * sh.HW);
}

// The most dynamic shared memory one block of the current device may opt in to.
size_t smem_limit() {
  int device = 0, bytes = 0;
  C10_CUDA_CHECK(cudaGetDevice(&device));
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&bytes, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
  return static_cast<size_t>(bytes);
}

// Lets `kernel` use `bytes` of dynamic shared memory (needed above 48 KiB).
void allow_smem(const void* kernel, size_t bytes) {
  if (bytes > kDefaultSmem)
    C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                        static_cast<int>(bytes)));
}

// Largest channel tile (8, 4, 2 or 1, at most C) whose shared memory fits in 48 KiB, else 1 if it
// fits the device's opt-in limit; 0 when nothing fits. planes(tile) counts the planes a block needs.
template <typename Planes>
int pick_tile(int C, size_t plane_bytes, Planes planes) {
  for (int tile = 8; tile >= 1; tile /= 2)
    if (tile <= C && planes(tile) * plane_bytes <= kDefaultSmem) return tile;
  return planes(1) * plane_bytes <= smem_limit() ? 1 : 0;
}

}  // namespace

at::Tensor forward_cuda(const at::Tensor& x, const at::Tensor& w, int64_t steps, bool symmetric) {
  const c10::cuda::OptionalCUDAGuard guard(x.device());
  auto out = at::empty_like(x);
  if (x.numel() == 0) return out;
  const Shape sh = make_shape(x, w);
  const bool agnostic = sh.Cw == 1;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "shapeprop_forward_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const size_t plane_bytes = sh.P * sizeof(acc_t);
    auto planes = [&](int tile) { return static_cast<size_t>((agnostic ? 1 : tile) * (kWin + 1) + 2 * tile); };
    const int tile = pick_tile(sh.C, plane_bytes, planes);
    TORCH_CHECK(tile > 0, "propagate (CUDA): a ", sh.H, "x", sh.W, " map needs ", planes(1) * plane_bytes,
                " bytes of shared memory, more than the device's ", smem_limit());
    const size_t bytes = planes(tile) * plane_bytes;
    auto kernel = forward_kernel<scalar_t, acc_t>;
    allow_smem(reinterpret_cast<const void*>(kernel), bytes);
    const int blocks = static_cast<int>(x.size(0) * ((sh.C + tile - 1) / tile));
    kernel<<<blocks, kThreads, bytes, c10::cuda::getCurrentCUDAStream()>>>(
        x.data_ptr<scalar_t>(), w.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), sh, static_cast<int>(steps),
        tile, symmetric);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

std::vector<at::Tensor> backward_cuda(const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& w,
                                      int64_t steps, bool symmetric) {
  const c10::cuda::OptionalCUDAGuard guard(x.device());
  auto grad_x = at::empty_like(x);
  auto grad_w = at::empty_like(w);  // every entry is written
  if (x.numel() == 0) return {grad_x, grad_w.zero_()};
  const Shape sh = make_shape(x, w);
  const bool agnostic = sh.Cw == 1;
  const int64_t N = x.size(0);
  const int hist = steps > 1 ? static_cast<int>(steps) : 1;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "shapeprop_backward_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const auto acc_type = c10::CppTypeToScalarType<acc_t>::value;
    const size_t plane_bytes = sh.P * sizeof(acc_t);
    auto state_planes = [&](int tile, bool shared_history) {
      return static_cast<size_t>((agnostic ? 1 : tile) * (2 * kWin + 1) + 2 * tile +
                                 (shared_history ? hist * tile : 0));
    };
    // Keep the forward maps in shared memory when they fit; otherwise in a global scratch.
    bool shared_history = true;
    int tile = pick_tile(sh.C, plane_bytes, [&](int t) { return state_planes(t, true); });
    if (tile == 0) {
      shared_history = false;
      tile = pick_tile(sh.C, plane_bytes, [&](int t) { return state_planes(t, false); });
    }
    TORCH_CHECK(tile > 0, "propagate (CUDA): the backward of a ", sh.H, "x", sh.W, " map needs ",
                state_planes(1, false) * plane_bytes, " bytes of shared memory, more than the device's ",
                smem_limit());
    at::Tensor history;
    if (!shared_history) history = at::zeros({N * sh.C * hist * sh.P}, x.options().dtype(acc_type));
    auto dK = at::zeros({N, sh.Cw, kWin, sh.P}, x.options().dtype(acc_type));
    auto stream = c10::cuda::getCurrentCUDAStream();

    const size_t state_bytes = state_planes(tile, shared_history) * plane_bytes;
    auto state_kernel = backward_state_kernel<scalar_t, acc_t>;
    allow_smem(reinterpret_cast<const void*>(state_kernel), state_bytes);
    const int blocks = static_cast<int>(N * ((sh.C + tile - 1) / tile));
    state_kernel<<<blocks, kThreads, state_bytes, stream>>>(
        grad_out.data_ptr<scalar_t>(), x.data_ptr<scalar_t>(), w.data_ptr<scalar_t>(),
        grad_x.data_ptr<scalar_t>(), dK.data_ptr<acc_t>(),
        shared_history ? nullptr : history.data_ptr<acc_t>(), sh, static_cast<int>(steps), tile, symmetric);
    C10_CUDA_KERNEL_LAUNCH_CHECK();

    const size_t weight_bytes = (kWin + 1) * plane_bytes;
    TORCH_CHECK(weight_bytes <= smem_limit(), "propagate (CUDA): map too large for shared memory");
    auto weight_kernel = backward_weight_kernel<scalar_t, acc_t>;
    allow_smem(reinterpret_cast<const void*>(weight_kernel), weight_bytes);
    weight_kernel<<<static_cast<int>(N * sh.Cw), kThreads, weight_bytes, stream>>>(
        w.data_ptr<scalar_t>(), dK.data_ptr<acc_t>(), grad_w.data_ptr<scalar_t>(), sh, symmetric);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {grad_x, grad_w};
}

}  // namespace shapeprop
