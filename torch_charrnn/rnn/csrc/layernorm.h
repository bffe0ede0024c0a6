// What the layer-normalised cells' loops share (lnlstm.cpp, lngru.cpp): a row's moments for
// LN(v) = g * (v - mean) / sqrt(var + eps) + b, and where a step reads its input share.
#pragma once

#include <cmath>
#include <utility>

#include "vec.h"

namespace charrnn {

constexpr double LN_EPS = 1e-5;  // cells/common.py's EPS, nn.LayerNorm's default

template <typename T>
inline T lanes_sum(const Vec<T>& v) {
  __at_align__ T lanes[Vec<T>::size()];
  v.store(lanes);
  T s = 0;
  for (int64_t i = 0; i < Vec<T>::size(); ++i) s += lanes[i];
  return s;
}

// The mean of v[0, N) and 1 / sqrt(var + eps), the biased variance, in two passes as PyTorch's
// layer_norm takes them (a partial load fills the lanes past N with zeros, kept out of the second
// sum).
template <typename T>
inline std::pair<T, T> moments(const T* v, int64_t N) {
  Vec<T> sum(T(0));
  for (int64_t j = 0; j < N; j += Vec<T>::size()) sum = sum + Vec<T>::loadu(v + j, std::min<int64_t>(Vec<T>::size(), N - j));
  const T mean = lanes_sum(sum) / T(N);
  Vec<T> squares(T(0));
  for (int64_t j = 0; j < N; j += Vec<T>::size()) {
    const int64_t n = std::min<int64_t>(Vec<T>::size(), N - j);
    const Vec<T> d = Vec<T>::set(Vec<T>(T(0)), Vec<T>::loadu(v + j, n) - Vec<T>(mean), n);
    squares = squares + d * d;
  }
  return {mean, T(1) / std::sqrt(lanes_sum(squares) / T(N) + T(LN_EPS))};
}

// sum(x * y) over [0, N) and sum(x): the two means the normalisation's backward needs.
template <typename T>
inline std::pair<T, T> dot_and_sum(const T* x, const T* y, int64_t N) {
  Vec<T> dot(T(0)), sum(T(0));
  for (int64_t j = 0; j < N; j += Vec<T>::size()) {
    const int64_t n = std::min<int64_t>(Vec<T>::size(), N - j);
    const Vec<T> xv = Vec<T>::loadu(x + j, n);
    dot = dot + xv * Vec<T>::loadu(y + j, n), sum = sum + xv;
  }
  return {lanes_sum(dot), lanes_sum(sum)};
}

// dx[0, N) = rstd * (d - mean(d) - vhat * mean(d * vhat)), d = dx on entry (the gradient of the
// normalised v, the gain already applied): the backward of v -> vhat = (v - mean) * rstd.
template <typename T>
inline void normalisation_backward(T* dx, const T* vhat, T rstd, int64_t N) {
  const auto [dot, sum] = dot_and_sum(dx, vhat, N);
  const Vec<T> md(sum / T(N)), mdv(dot / T(N)), r(rstd);
  for (int64_t j = 0; j < N; j += Vec<T>::size()) {
    const int64_t n = std::min<int64_t>(Vec<T>::size(), N - j);
    (r * (Vec<T>::loadu(dx + j, n) - md - Vec<T>::loadu(vhat + j, n) * mdv)).store(dx + j, n);
  }
}

// acc[0, N) += x * y (or += x where y is null): a gain's (or a bias's) gradient, a row at a time.
template <typename T>
inline void accumulate(T* acc, const T* x, const T* y, int64_t N) {
  for (int64_t j = 0; j < N; j += Vec<T>::size()) {
    const int64_t n = std::min<int64_t>(Vec<T>::size(), N - j);
    const Vec<T> xv = Vec<T>::loadu(x + j, n);
    (Vec<T>::loadu(acc + j, n) + (y ? xv * Vec<T>::loadu(y + j, n) : xv)).store(acc + j, n);
  }
}

// Where a step reads its input share a_t (N = G*H values a row): from a (T, B, N) computed for the
// window (a layer above), or, for the first layer, the row of the normalised table LN(W_xh; g_x) + b_h
// (V, N) that its character picks, gathered in the loop.
template <typename T>
struct ShareRows {
  const T* a;        // a (T, B, N), or null: gathered
  const int64_t* x;  // the characters (T, B)
  const T* table;    // (V, N)

  const T* row(int64_t t, int64_t b, int64_t B, int64_t N) const {
    return a ? a + (t * B + b) * N : table + x[t * B + b] * N;
  }
};

}  // namespace charrnn
