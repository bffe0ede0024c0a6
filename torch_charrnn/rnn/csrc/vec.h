// Elementwise loops over a cell's units, one pass per step, vectorized with ATen's Vectorized<T>
// (AVX2/AVX-512 where the kernels were built for it, plain C++ elsewhere: native.py picks the flags).
#pragma once

#include <ATen/cpu/vec/vec.h>

#include <algorithm>

namespace charrnn {

template <typename T>
using Vec = at::vec::Vectorized<T>;

template <typename T>
inline Vec<T> sigmoid(const Vec<T>& x) {
  return Vec<T>(T(1)) / (Vec<T>(T(1)) + x.neg().exp());
}

// tanh(x) = -e / (e + 2) with e = expm1(-2|x|), the sign restored: accurate near 0, where
// 2 sigmoid(2x) - 1 cancels, and free of overflow; a NaN stays a NaN.
template <typename T>
inline Vec<T> tanh(const Vec<T>& x) {
  const Vec<T> e = (x.abs() * Vec<T>(T(-2))).expm1();
  const Vec<T> t = e.neg() / (e + Vec<T>(T(2)));
  return Vec<T>::blendv(t, t.neg(), x < Vec<T>(T(0)));
}

// float32: ATen's exp_u20 (within 20 ULP, far below float32's training noise, and cheaper than
// the accurate exp and expm1 above). tanh(x) = 1 - 2 / (e^{2|x|} + 1), the sign restored: near 0
// its error is absolute, about 1e-7, not relative. exp_u20 clamps its input, NaN included, so a
// NaN is put back (a diverging run must stay visibly diverged). float64, which the gradient
// proofs run in, keeps the accurate forms.
inline Vec<float> keep_nan(const Vec<float>& y, const Vec<float>& x) {
  return Vec<float>::blendv(y, x, x.isnan());
}

inline Vec<float> sigmoid(const Vec<float>& x) {
  return keep_nan(Vec<float>(1.f) / (Vec<float>(1.f) + x.neg().exp_u20()), x);
}

inline Vec<float> tanh(const Vec<float>& x) {
  const Vec<float> e = (x.abs() * Vec<float>(2.f)).exp_u20();
  const Vec<float> t = Vec<float>(1.f) - Vec<float>(2.f) / (e + Vec<float>(1.f));
  return keep_nan(Vec<float>::blendv(t, t.neg(), x < Vec<float>(0.f)), x);
}

// body(row, j, n) for every row of [row0, row1) and every run of n <= Vec<T>::size() of its H units
// from j, on the calling thread (a thread's share of the streams: shares.h).
template <typename T, typename F>
inline void for_units(int64_t row0, int64_t row1, int64_t H, const F& body) {
  for (int64_t b = row0; b < row1; ++b) {
    for (int64_t j = 0; j < H; j += Vec<T>::size()) {
      body(b, j, std::min<int64_t>(Vec<T>::size(), H - j));
    }
  }
}

// bias[begin:end] += src[begin:end] and, unless row is null, row[begin:end] too: one gradient row
// added into a bias's gradient and into the row of a gathered weight it was read from.
template <typename T>
inline void add_into(const T* src, T* bias, T* row, int64_t begin, int64_t end) {
  for (int64_t j = begin; j < end; j += Vec<T>::size()) {
    const int64_t n = std::min<int64_t>(Vec<T>::size(), end - j);
    const Vec<T> d = Vec<T>::loadu(src + j, n);
    (Vec<T>::loadu(bias + j, n) + d).store(bias + j, n);
    if (row) (Vec<T>::loadu(row + j, n) + d).store(row + j, n);
  }
}

}  // namespace charrnn
