// Work shared out among PyTorch's threads, each share on a thread of its own with nothing to wait
// for: a window's loop over time by streams (rows of the batch), whose recurrences never meet, so
// that each thread runs its streams' every step, products and elementwise work alone; a weight
// gradient by columns, each thread summing its own.
//
// (Sharing a step's units out instead has the threads meet once a step, where the next product
// needs every unit of what the step wrote, and pass h or dL/dz between their caches each time.)
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/native/CPUBlas.h>

#include <algorithm>
#include <type_traits>
#include <utility>

namespace charrnn {

// Share p of `parts` of n: [begin, end), as even as can be.
inline std::pair<int64_t, int64_t> share(int64_t p, int64_t parts, int64_t n) {
  return {p * n / parts, (p + 1) * n / parts};
}

// body(begin, end, first) for [begin, end) of n, shared out in `parts` shares (share above) among
// PyTorch's threads; a thread that runs several shares (fewer threads than shares) gets their span
// as one, with `first` the index of the first. Empty spans are skipped.
template <typename F>
void in_shares(int64_t parts, int64_t n, const F& body) {
  at::parallel_for(0, parts, 1, [&](int64_t first, int64_t last) {
    const int64_t begin = share(first, parts, n).first, end = share(last - 1, parts, n).second;
    if (begin < end) body(begin, end, first);
  });
}

// C (M, N) = A (M, K) B (K, N), or C += A B, row-major with leading dimensions, on the calling
// thread alone. float32: oneDNN's batch-reduce micro-kernel (ATen falls back to its BLAS where
// oneDNN cannot generate one). float64, which the gradient proofs run in: ATen's product.
template <typename T>
inline void aten_matmul(int64_t M, int64_t N, int64_t K, const T* A, int64_t lda, const T* B, int64_t ldb,
                        T* C, int64_t ldc, bool add) {
  const auto type = c10::CppTypeToScalarType<T>::value;
  auto a = at::from_blob(const_cast<T*>(A), {M, K}, {lda, 1}, type);
  auto b = at::from_blob(const_cast<T*>(B), {K, N}, {ldb, 1}, type);
  auto c = at::from_blob(C, {M, N}, {ldc, 1}, type);
  add ? c.addmm_(a, b) : c.copy_(at::mm(a, b));
}

template <typename T>
inline void matmul(int64_t M, int64_t N, int64_t K, const T* A, int64_t lda, const T* B, int64_t ldb, T* C,
                   int64_t ldc, bool add) {
#ifdef CPUBLAS_BRGEMM_F32F32F32
  if constexpr (std::is_same_v<T, float>) {
    at::native::cpublas::brgemm(M, N, K, lda, ldb, ldc, add, A, B, C);
    return;
  }
#endif
  aten_matmul(M, N, K, A, lda, B, ldb, C, ldc, add);
}

// A recurrence's product for one thread's rows, C (M, N) = A (M, K) B (K, N) (or C += A B), with B
// the recurrent weight W_hh (K = H, N = G*H) or its transpose (K = G*H, N = H): by B's blocks of at
// most BLOCK rows and columns, the blocks of K summed into C. Taken whole, once a gated cell's W_hh
// outgrew a core's cache (from H = 384), the loops ran at 0.75 to 0.94 of the blocks' speed at
// H = 384 and B = 32, and slower still at H = 512 (benchmarks/bench_kernels.py, against a checkout
// from before blocked_matmul); a BLOCK by BLOCK block, 256 KiB in float32, stays in a core's cache.
constexpr int64_t BLOCK = 256;

template <typename T>
inline void blocked_matmul(int64_t M, int64_t N, int64_t K, const T* A, int64_t lda, const T* B, int64_t ldb,
                           T* C, int64_t ldc, bool add) {
  for (int64_t n = 0; n < N; n += BLOCK) {
    for (int64_t k = 0; k < K; k += BLOCK) {
      matmul(M, std::min(BLOCK, N - n), std::min(BLOCK, K - k), A + k, lda, B + k * ldb + n, ldb, C + n, ldc,
             add || k > 0);
    }
  }
}

}  // namespace charrnn
