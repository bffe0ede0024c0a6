// Zoneout of a cell's state in the loops over time: each unit of each stream keeps its previous
// value with probability p at each step, the state carried being m * prev + (1 - m) * fresh, with
// `fresh` the cell's new value. The arithmetic of torch_charrnn/rnn/bptt.py's `zoned` (forward) and
// `through_zoneout` (backward), for one state.
//
// Each kernel takes a list `zones` with one tensor per state of the cell, h first: its keep masks
// (T, B, H), 1 where a unit keeps its value, in training; a 0-d tensor holding p in evaluation,
// where the state moves by its expectation; or an empty tensor where the state is not zoned. An
// empty list: no zoneout at all, and the loops run exactly as without it.
#pragma once

#include <ATen/ATen.h>

#include <vector>

#include "vec.h"

namespace charrnn {

template <typename T>
struct Zone {
  const T* m = nullptr;  // the keep masks of a step (B, H), or null: the rate p, or no zoneout
  T p = T(0);
  bool on = false;

  // state k's zoneout among `zones`
  static Zone of(const std::vector<at::Tensor>& zones, size_t k) {
    Zone z;
    if (k >= zones.size() || zones[k].numel() == 0) return z;
    const at::Tensor& keep = zones[k];
    TORCH_CHECK(keep.scalar_type() == c10::CppTypeToScalarType<T>::value, "zoneout: masks of another dtype");
    z.on = true;
    if (keep.dim() == 0) {
      z.p = keep.item<T>();
    } else {
      TORCH_CHECK(keep.is_contiguous(), "zoneout: masks must be contiguous");
      z.m = keep.data_ptr<T>();
    }
    return z;
  }

  // the same zoneout at step t of a window whose steps are BH = B * H values apart
  Zone at(int64_t t, int64_t BH) const {
    Zone z = *this;
    if (m) z.m = m + t * BH;
    return z;
  }

  Vec<T> keep(int64_t i, int64_t n) const { return m ? Vec<T>::loadu(m + i, n) : Vec<T>(p); }

  // forward: the state carried at unit i (of this step's B * H), m * prev + (1 - m) * fresh (exact
  // where m is 0 or 1)
  Vec<T> carry(int64_t i, int64_t n, const Vec<T>& prev, const Vec<T>& fresh) const {
    if (!on) return fresh;
    const Vec<T> k = keep(i, n);
    return k * prev + (Vec<T>(T(1)) - k) * fresh;
  }

  // backward, from d = dL/d(the state carried): the cell's new value's share, (1 - m) * d ...
  Vec<T> fresh(int64_t i, int64_t n, const Vec<T>& d) const {
    return on ? (Vec<T>(T(1)) - keep(i, n)) * d : d;
  }

  // ... and what goes around the step, straight into the previous state, m * d
  Vec<T> around(int64_t i, int64_t n, const Vec<T>& d) const { return keep(i, n) * d; }
};

}  // namespace charrnn
