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

// The backward of a row's LN(v; g, b) = g * vhat + b, vhat = (v - mean) * rstd, taken as the row's
// dL/dLN(v) arrives, a few lanes at a time, from the loop that computes it: `add` takes d at [o, o + n),
// adds its share of the gain's gradient (and the bias's), stores d * g in dx and keeps the two sums the
// normalisation needs; `finish` (or `at`, lane by lane) then gives dL/dv = rstd * (dx - mean(dx) -
// vhat * mean(dx * vhat)). One pass over the row and its gradient where a pass a term took five.
template <typename T>
struct LayerNormBackward {
  const T* vhat;  // the row's vhat (N)
  const T* gain;  // g (N)
  T* dgain;       // the gain's gradient, added to (N)
  T* dx;          // d * g from `add`, dL/dv from `finish` (N)
  Vec<T> dot = Vec<T>(T(0)), sum = Vec<T>(T(0));
  Vec<T> md = Vec<T>(T(0)), mdv = Vec<T>(T(0)), r = Vec<T>(T(0));

  // d = dL/dLN(v) at [o, o + n) of the row; dbias: the bias's gradient at o, added to, or null
  void add(int64_t o, int64_t n, const Vec<T>& d, T* dbias = nullptr) {
    const Vec<T> vh = Vec<T>::loadu(vhat + o, n);
    (Vec<T>::loadu(dgain + o, n) + d * vh).store(dgain + o, n);
    if (dbias) (Vec<T>::loadu(dbias, n) + d).store(dbias, n);
    const Vec<T> dg = Vec<T>::set(Vec<T>(T(0)), d * Vec<T>::loadu(gain + o, n), n);
    dg.store(dx + o, n);
    dot = dot + dg * vh, sum = sum + dg;
  }

  // once every d of the row is in: the means, with the row's rstd and length
  void means(T rstd, int64_t N) {
    md = Vec<T>(lanes_sum(sum) / T(N)), mdv = Vec<T>(lanes_sum(dot) / T(N)), r = Vec<T>(rstd);
  }

  // dL/dv at [o, o + n), after `means`
  Vec<T> at(int64_t o, int64_t n) const {
    return r * (Vec<T>::loadu(dx + o, n) - md - Vec<T>::loadu(vhat + o, n) * mdv);
  }

  // dL/dv for the whole row, into dx
  void finish(T rstd, int64_t N) {
    means(rstd, N);
    for (int64_t j = 0; j < N; j += Vec<T>::size()) {
      const int64_t n = std::min<int64_t>(Vec<T>::size(), N - j);
      at(j, n).store(dx + j, n);
    }
  }
};

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
