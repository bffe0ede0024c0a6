// A window's loop over time run by a team of threads that share out the hidden units: each thread
// multiplies by its own columns of W_hh and does the elementwise work of its own units, and the
// team meets once a step, where the next product needs every unit of what the step wrote.
//
// The usual way (one multithreaded product a step, then a pass over the units) has the threads
// meet twice a step, inside the product and around the pass, and pays the product's set-up each
// time; this way each thread's product is a single-threaded micro-kernel on a slice of W_hh that
// stays in its core's cache for the whole window.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/native/CPUBlas.h>

#include <atomic>
#include <thread>
#include <type_traits>
#include <utility>

namespace charrnn {

// Where `parts` shares of work meet. A thread that runs several shares (the runtime gave the team
// fewer threads than shares) arrives once for all of them. A thread that failed breaks the
// barrier, so that the others stop waiting and the failure reaches the caller.
class Barrier {
 public:
  struct Broken {};

  explicit Barrier(int64_t parts) : parts_(parts) {}

  void arrive(int64_t shares) {
    if (shares == parts_) return;  // one thread runs them all
    const int64_t generation = generation_.load(std::memory_order_acquire);
    if (arrived_.fetch_add(shares, std::memory_order_acq_rel) + shares == parts_) {
      arrived_.store(0, std::memory_order_relaxed);
      generation_.fetch_add(1, std::memory_order_release);
      return;
    }
    for (int64_t spins = 0; generation_.load(std::memory_order_acquire) == generation; ++spins) {
      if (broken_.load(std::memory_order_relaxed)) throw Broken{};
      if (spins > 2048) std::this_thread::yield();  // a core shared with other work
    }
  }

  void breakdown() { broken_.store(true, std::memory_order_relaxed); }

 private:
  const int64_t parts_;
  std::atomic<int64_t> arrived_{0};
  std::atomic<int64_t> generation_{0};
  std::atomic<bool> broken_{false};
};

// body(first, last, meet) runs shares [first, last) of `parts`; meet() waits for every share.
// Under OpenMP (PyTorch's CPU builds) the shares run on one parallel region's threads, all alive at
// once, as a barrier needs; under another threading runtime, whose tasks may run one after the
// other on one thread, a single thread runs them all.
template <typename F>
void in_team(int64_t parts, const F& body) {
  Barrier barrier(parts);
#if AT_PARALLEL_OPENMP
  at::parallel_for(0, parts, 1, [&](int64_t first, int64_t last) {
    try {
      body(first, last, [&] { barrier.arrive(last - first); });
    } catch (const Barrier::Broken&) {
      // another share failed; its exception is the one parallel_for passes on
    } catch (...) {
      barrier.breakdown();
      throw;
    }
  });
#else
  body(int64_t(0), parts, [&] { barrier.arrive(parts); });
#endif
}

// Share p of `parts` of n units: [begin, end), as even as can be.
inline std::pair<int64_t, int64_t> share(int64_t p, int64_t parts, int64_t n) {
  return {p * n / parts, (p + 1) * n / parts};
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

}  // namespace charrnn
