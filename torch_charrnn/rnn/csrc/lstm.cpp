// The LSTM's recurrence over a window, forward and backward, in C++: the arithmetic of
// torch_charrnn/rnn/cells/lstm.py's step and step_backward, with the loop over time here and each
// step's elementwise work in one pass over the units instead of a dozen kernels (tanh as vec.h
// computes it), and the threads sharing out the streams (shares.h). Gate order i, f, g, o.
#include <torch/library.h>

#include "shares.h"
#include "vec.h"
#include "zoneout.h"

namespace charrnn {

using at::Tensor;

// Where a step reads its input share a_t = x_t W_xh + b_h, row by row: from a (T, B, 4H) computed for
// the window (a layer that reads the layer below's h: one product), or, for the first layer, which
// reads characters, gathered in the loop from the row of W_xh each character picks, plus b_h, so
// that the window's a is never written out and read back.
template <typename T>
struct Inputs {
  const T* a;        // a (T, B, 4H), or null: gathered
  const int64_t* x;  // the characters (T, B)
  const T* W_xh;     // (V, 4H)
  const T* b_h;      // (4H)

  const T* row(int64_t t, int64_t b, int64_t B, int64_t H4) const {
    return a ? a + (t * B + b) * H4 : W_xh + x[t * B + b] * H4;
  }
};

// One step's elementwise forward for rows [b0, b1): from z = a_t + h_{t-1} W_hh, whose product is
// in `gates` (B, 4H) and is overwritten with the gates (i, f, o after their sigmoid, g after its
// tanh), and c_{t-1}: c_t, tanh(c_t) and h_t, zoned where zh, zc say (c_t and h_t carried; tanh(c_t)
// of the cell's own c_t, from which its own h_t is made).
template <typename T>
void step_forward(const Inputs<T>& in, int64_t t, T* gates, const T* h_prev, const T* c_prev, T* c, T* tc, T* h,
                  const Zone<T>& zh, const Zone<T>& zc, int64_t B, int64_t H, int64_t b0, int64_t b1) {
  for_units<T>(b0, b1, H, [&](int64_t b, int64_t j, int64_t n) {
    const int64_t r = b * 4 * H + j, k = b * H + j;
    const T* ab = in.row(t, b, B, 4 * H) + j;
    auto z = [&](int64_t block) {  // a_t + h_{t-1} W_hh, one gate block
      Vec<T> a = Vec<T>::loadu(ab + block * H, n);
      if (!in.a) a = a + Vec<T>::loadu(in.b_h + block * H + j, n);  // gathered: x_t W_xh + b_h
      return a + Vec<T>::loadu(gates + r + block * H, n);
    };
    const Vec<T> i = sigmoid(z(0)), f = sigmoid(z(1)), g = tanh(z(2)), o = sigmoid(z(3));
    const Vec<T> cp = Vec<T>::loadu(c_prev + k, n);
    const Vec<T> ct = f * cp + i * g;  // c_t = f * c_{t-1} + i * g
    const Vec<T> t_ = tanh(ct);
    T* gb = gates + r;
    i.store(gb, n), f.store(gb + H, n), g.store(gb + 2 * H, n), o.store(gb + 3 * H, n);
    zc.carry(k, n, cp, ct).store(c + k, n), t_.store(tc + k, n);
    zh.carry(k, n, zh.on ? Vec<T>::loadu(h_prev + k, n) : Vec<T>(T(0)), o * t_).store(h + k, n);  // h_t = o * tanh(c_t)
  });
}

// One step's elementwise backward for rows [b0, b1): from dL/dh_t (its share from
// above, `dh_above`, and through the recurrence, `dh_rec`), dL/dc_t (from the step after,
// overwritten with dL/dc_{t-1}) and the forward's gates, tanh(c_t) and c_{t-1}, dL/dz (B, 4H).
// Where h is zoned, dh_rec is overwritten with what goes around the step into h_{t-1}.
template <typename T>
void step_backward(const T* dh_above, T* dh_rec, T* dc, const T* gates, const T* tc, const T* c_prev, T* dz,
                   const Zone<T>& zh, const Zone<T>& zc, int64_t H, int64_t b0, int64_t b1) {
  const Vec<T> one(T(1));
  for_units<T>(b0, b1, H, [&](int64_t b, int64_t j, int64_t n) {
    const T* gb = gates + b * 4 * H + j;
    T* db = dz + b * 4 * H + j;
    const int64_t k = b * H + j;
    const Vec<T> i = Vec<T>::loadu(gb, n), f = Vec<T>::loadu(gb + H, n);
    const Vec<T> g = Vec<T>::loadu(gb + 2 * H, n), o = Vec<T>::loadu(gb + 3 * H, n);
    const Vec<T> dh = Vec<T>::loadu(dh_above + k, n) + Vec<T>::loadu(dh_rec + k, n);
    const Vec<T> dht = zh.fresh(k, n, dh), dcz = Vec<T>::loadu(dc + k, n);  // the cell's own h_t's
    if (zh.on) zh.around(k, n, dh).store(dh_rec + k, n);
    const Vec<T> t = Vec<T>::loadu(tc + k, n);
    // through h_t = o * tanh(c_t) into c_t, added to what flows in from the step after
    const Vec<T> dct = zc.fresh(k, n, dcz) + dht * o * (one - t * t);
    (zc.on ? dct * f + zc.around(k, n, dcz) : dct * f).store(dc + k, n);  // into c_{t-1}
    (dct * g * i * (one - i)).store(db, n);                          // into z_i, through sigmoid
    (dct * Vec<T>::loadu(c_prev + k, n) * f * (one - f)).store(db + H, n);  // into z_f
    (dct * i * (one - g * g)).store(db + 2 * H, n);                  // into z_g, through tanh
    (dht * t * o * (one - o)).store(db + 3 * H, n);                  // into z_o
  });
}

// dL/db_h += dL/dz_t and, for the first layer, dL/dW_xh[x] += dL/dz_t (the gathered rows), for
// rows [b0, b1), while dz_t is still in cache: the same sums as index_add_ and a sum over the
// window, without reading its dL/dz back.
template <typename T>
void accumulate_inputs(const T* dz, const int64_t* x, T* dW_xh, T* db_h, int64_t H, int64_t b0, int64_t b1) {
  for (int64_t b = b0; b < b1; ++b) {
    add_into(dz + b * 4 * H, db_h, x ? dW_xh + x[b] * 4 * H : nullptr, 0, 4 * H);
  }
}

// inputs: characters (T, B) for the first layer, whose rows of W_xh the loop gathers; for a layer
// above, its input shares a (T, B, 4H) = h_below W_xh + b_h (one product, made by the caller).
// zones: zoneout's (zoneout.h). Returns hs, cs (zoned), tcs = tanh of the cell's own c_t (T, B, H)
// and the gates (T, B, 4H), i, f, o after their sigmoid and g after its tanh. `parts` threads share
// out the streams (shares.h): each runs its rows through every step, h_{t-1} W_hh and the
// elementwise step, without waiting for the others.
std::tuple<Tensor, Tensor, Tensor, Tensor> lstm_forward(const Tensor& inputs, const Tensor& W_xh,
                                                        const Tensor& b_h, const Tensor& h0, const Tensor& c0,
                                                        const Tensor& W_hh, const std::vector<Tensor>& zones,
                                                        int64_t parts) {
  const int64_t T = inputs.size(0), B = inputs.size(1), H = h0.size(1);
  const bool gathered = !at::isFloatingType(inputs.scalar_type());
  const Tensor x = gathered ? inputs.contiguous().to(at::kLong) : Tensor();
  const Tensor a = gathered ? Tensor() : inputs.contiguous();
  const Tensor Wx = W_xh.contiguous(), bh = b_h.contiguous();
  const Tensor h0_ = h0.contiguous(), c0_ = c0.contiguous(), W = W_hh.contiguous();
  Tensor hs = at::empty({T, B, H}, h0.options());
  Tensor cs = at::empty_like(hs), tcs = at::empty_like(hs), gates = at::empty({T, B, 4 * H}, h0.options());
  AT_DISPATCH_FLOATING_TYPES(h0.scalar_type(), "lstm_forward", [&] {
    using S = scalar_t;
    const Inputs<S> in{gathered ? nullptr : a.data_ptr<S>(), gathered ? x.data_ptr<int64_t>() : nullptr,
                       Wx.data_ptr<S>(), bh.data_ptr<S>()};
    const S* Wp = W.data_ptr<S>();
    S *hp = hs.data_ptr<S>(), *cp = cs.data_ptr<S>(), *tp = tcs.data_ptr<S>(), *gp = gates.data_ptr<S>();
    const Zone<S> zh = Zone<S>::of(zones, 0), zc = Zone<S>::of(zones, 1);
    in_shares(parts, B, [&](int64_t b0, int64_t b1, int64_t) {
      for (int64_t t = 0; t < T; ++t) {
        const S* h_prev = t > 0 ? hp + (t - 1) * B * H : h0_.data_ptr<S>();
        const S* c_prev = t > 0 ? cp + (t - 1) * B * H : c0_.data_ptr<S>();
        S* g = gp + t * B * 4 * H;
        // h_{t-1} W_hh for these rows
        blocked_matmul(b1 - b0, 4 * H, H, h_prev + b0 * H, H, Wp, 4 * H, g + b0 * 4 * H, 4 * H, false);
        step_forward<S>(in, t, g, h_prev, c_prev, cp + t * B * H, tp + t * B * H, hp + t * B * H,
                        zh.at(t, B * H), zc.at(t, B * H), B, H, b0, b1);
      }
    });
  });
  return {hs, cs, tcs, gates};
}

// dhs (T, B, H): each h_t's gradient from above (the output layer or the next layer), read only;
// dh_last, dc_last: the last state's gradients from after the window; below: the layer's input.
// Returns dL/dz (T, B, 4H) (the same for a_t and u_t = h_{t-1} W_hh, which are added), dL/dh0,
// dL/dc0, dL/db_h and, for the first layer, which read characters, dL/dW_xh (undefined above it,
// where W_xh's gradient is one product the caller makes). The threads share out the streams as in
// the forward: each does its rows' elementwise step, adds it to input gradients of its own (added
// together at the end), and multiplies it by W_hhᵀ into its rows of dL/dh_{t-1}.
std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> lstm_backward(
    const Tensor& dhs, const Tensor& dh_last, const Tensor& dc_last, const Tensor& c0, const Tensor& cs,
    const Tensor& tcs, const Tensor& gates, const Tensor& W_hh, const Tensor& below, const Tensor& W_xh,
    const std::vector<Tensor>& zones, int64_t parts) {
  const int64_t T = dhs.size(0), B = dhs.size(1), H = dhs.size(2);
  const bool gathered = !at::isFloatingType(below.scalar_type());
  const Tensor x = gathered ? below.contiguous().to(at::kLong) : Tensor();
  const Tensor dhs_ = dhs.contiguous(), c0_ = c0.contiguous(), WT = W_hh.t().contiguous();  // (4H, H)
  Tensor dZ = at::empty_like(gates);
  Tensor dh = dh_last.contiguous().clone();  // dL/dh_t through the recurrence: from after the window first
  Tensor dc = dc_last.contiguous().clone();  // dL/dc_t from after the step
  // each share's dL/dW_xh (for the first layer) and dL/db_h, side by side: (parts, V + 1, 4H)
  const int64_t V = gathered ? W_xh.size(0) : 0;
  Tensor inputs_grad = at::zeros({parts, V + 1, 4 * H}, dhs.options());
  AT_DISPATCH_FLOATING_TYPES(dhs.scalar_type(), "lstm_backward", [&] {
    using S = scalar_t;
    const S *above = dhs_.data_ptr<S>(), *cp = cs.data_ptr<S>(), *tp = tcs.data_ptr<S>();
    const S *gp = gates.data_ptr<S>(), *WTp = WT.data_ptr<S>();
    const int64_t* xp = gathered ? x.data_ptr<int64_t>() : nullptr;
    S *dzp = dZ.data_ptr<S>(), *dhp = dh.data_ptr<S>(), *dcp = dc.data_ptr<S>();
    const Zone<S> zh = Zone<S>::of(zones, 0), zc = Zone<S>::of(zones, 1);
    in_shares(parts, B, [&](int64_t b0, int64_t b1, int64_t first) {
      S* dW = inputs_grad.data_ptr<S>() + first * (V + 1) * 4 * H;  // this share's: W_xh's rows, then b_h
      for (int64_t t = T - 1; t >= 0; --t) {
        const S* c_prev = t > 0 ? cp + (t - 1) * B * H : c0_.data_ptr<S>();
        S* dz = dzp + t * B * 4 * H;
        step_backward<S>(above + t * B * H, dhp, dcp, gp + t * B * 4 * H, tp + t * B * H, c_prev, dz,
                         zh.at(t, B * H), zc.at(t, B * H), H, b0, b1);
        accumulate_inputs<S>(dz, xp ? xp + t * B : nullptr, dW, dW + V * 4 * H, H, b0, b1);
        // into h_{t-1} through u: dz_t W_hhᵀ, these rows (added to what went around the step)
        blocked_matmul(b1 - b0, H, 4 * H, dz + b0 * 4 * H, 4 * H, WTp, H, dhp + b0 * H, H, zh.on);
      }
    });
  });
  const Tensor summed = inputs_grad.sum(0);
  return {dZ, dh, dc, summed[V], gathered ? summed.narrow(0, 0, V) : Tensor()};
}

TORCH_LIBRARY_FRAGMENT(charrnn, m) {
  m.def("lstm_forward", &lstm_forward);
  m.def("lstm_backward", &lstm_backward);
}

}  // namespace charrnn
