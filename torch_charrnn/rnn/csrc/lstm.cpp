// The LSTM's recurrence over a window, forward and backward, in C++: the arithmetic of
// torch_charrnn/rnn/cells/lstm.py's step and step_backward, with the loop over time here and each
// step's elementwise work in one pass over the units instead of a dozen kernels (tanh as vec.h
// computes it). Gate order i, f, g, o.
#include <torch/library.h>

#include "product.h"
#include "vec.h"

namespace charrnn {

// One step's elementwise forward: from z (B, 4H) = a_t + h_{t-1} W_hh and c_{t-1}, the gates
// (i, f, o after their sigmoid, g after its tanh), c_t, tanh(c_t) and h_t.
template <typename T>
void step_forward(const T* z, const T* c_prev, T* gates, T* c, T* tc, T* h, int64_t B, int64_t H) {
  for_units<T>(B, H, [&](int64_t b, int64_t j, int64_t n) {
    const T* zb = z + b * 4 * H + j;
    T* gb = gates + b * 4 * H + j;
    const int64_t k = b * H + j;
    const Vec<T> i = sigmoid(Vec<T>::loadu(zb, n)), f = sigmoid(Vec<T>::loadu(zb + H, n));
    const Vec<T> g = tanh(Vec<T>::loadu(zb + 2 * H, n)), o = sigmoid(Vec<T>::loadu(zb + 3 * H, n));
    const Vec<T> ct = f * Vec<T>::loadu(c_prev + k, n) + i * g;  // c_t = f * c_{t-1} + i * g
    const Vec<T> t = tanh(ct);
    i.store(gb, n), f.store(gb + H, n), g.store(gb + 2 * H, n), o.store(gb + 3 * H, n);
    ct.store(c + k, n), t.store(tc + k, n);
    (o * t).store(h + k, n);  // h_t = o * tanh(c_t)
  });
}

// One step's elementwise backward: from dL/dh_t, dL/dc_t (from the step after, overwritten with
// dL/dc_{t-1}) and the forward's gates, tanh(c_t) and c_{t-1}, dL/dz (B, 4H).
template <typename T>
void step_backward(const T* dh, T* dc, const T* gates, const T* tc, const T* c_prev, T* dz, int64_t B,
                   int64_t H) {
  const Vec<T> one(T(1));
  for_units<T>(B, H, [&](int64_t b, int64_t j, int64_t n) {
    const T* gb = gates + b * 4 * H + j;
    T* db = dz + b * 4 * H + j;
    const int64_t k = b * H + j;
    const Vec<T> i = Vec<T>::loadu(gb, n), f = Vec<T>::loadu(gb + H, n);
    const Vec<T> g = Vec<T>::loadu(gb + 2 * H, n), o = Vec<T>::loadu(gb + 3 * H, n);
    const Vec<T> dht = Vec<T>::loadu(dh + k, n), t = Vec<T>::loadu(tc + k, n);
    // through h_t = o * tanh(c_t) into c_t, added to what flows in from the step after
    const Vec<T> dct = Vec<T>::loadu(dc + k, n) + dht * o * (one - t * t);
    (dct * f).store(dc + k, n);                                      // into c_{t-1}
    (dct * g * i * (one - i)).store(db, n);                          // into z_i, through sigmoid
    (dct * Vec<T>::loadu(c_prev + k, n) * f * (one - f)).store(db + H, n);  // into z_f
    (dct * i * (one - g * g)).store(db + 2 * H, n);                  // into z_g, through tanh
    (dht * t * o * (one - o)).store(db + 3 * H, n);                  // into z_o
  });
}

// a (T, B, 4H) = x_t W_xh + b_h; returns hs, cs, tcs = tanh(cs) (T, B, H) and the gates (T, B, 4H),
// i, f, o after their sigmoid and g after its tanh.
std::tuple<Tensor, Tensor, Tensor, Tensor> lstm_forward(const Tensor& a, const Tensor& h0, const Tensor& c0,
                                                        const Tensor& W_hh,
                                                        const std::optional<Tensor>& packed) {
  const int64_t T = a.size(0), B = a.size(1), H = h0.size(1);
  Tensor hs = at::empty({T, B, H}, h0.options());
  Tensor cs = at::empty_like(hs), tcs = at::empty_like(hs), gates = at::empty_like(a);
  const Product recur{W_hh, packed};
  Tensor h = h0, c = c0.contiguous();
  for (int64_t t = 0; t < T; ++t) {
    const Tensor z = recur(h, a[t]).contiguous();  // a_t + h_{t-1} W_hh
    AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), "lstm_forward", [&] {
      step_forward<scalar_t>(z.data_ptr<scalar_t>(), c.data_ptr<scalar_t>(), gates[t].data_ptr<scalar_t>(),
                             cs[t].data_ptr<scalar_t>(), tcs[t].data_ptr<scalar_t>(),
                             hs[t].data_ptr<scalar_t>(), B, H);
    });
    h = hs[t];
    c = cs[t];
  }
  return {hs, cs, tcs, gates};
}

// dhs (T, B, H): each h_t's gradient from above (the output layer or the next layer), read only;
// dh_last, dc_last: the last state's gradients from after the window. Returns dL/dz (T, B, 4H) (the
// same for a_t and u_t = h_{t-1} W_hh, which are added), dL/dh0 and dL/dc0.
std::tuple<Tensor, Tensor, Tensor> lstm_backward(const Tensor& dhs, const Tensor& dh_last,
                                                 const Tensor& dc_last, const Tensor& c0,
                                                 const Tensor& cs, const Tensor& tcs,
                                                 const Tensor& gates, const Tensor& W_hh_t,
                                                 const std::optional<Tensor>& packed) {
  const int64_t T = dhs.size(0), B = dhs.size(1), H = dhs.size(2);
  Tensor dZ = at::empty_like(gates);
  const Product back{W_hh_t, packed};
  Tensor dh = dhs[T - 1] + dh_last;  // dL/dh_t whole
  Tensor dc = dc_last.contiguous().clone();  // dL/dc_t from after the step
  const Tensor zero = at::zeros_like(dh), c0c = c0.contiguous();
  for (int64_t t = T - 1; t >= 0; --t) {
    const Tensor c_prev = t > 0 ? cs[t - 1] : c0c;
    dh = dh.contiguous();
    AT_DISPATCH_FLOATING_TYPES(dhs.scalar_type(), "lstm_backward", [&] {
      step_backward<scalar_t>(dh.data_ptr<scalar_t>(), dc.data_ptr<scalar_t>(), gates[t].data_ptr<scalar_t>(),
                              tcs[t].data_ptr<scalar_t>(), c_prev.data_ptr<scalar_t>(),
                              dZ[t].data_ptr<scalar_t>(), B, H);
    });
    dh = back(dZ[t], t > 0 ? dhs[t - 1] : zero);  // into h_{t-1} through u, plus its share from above
  }
  return {dZ, dh, dc};
}

TORCH_LIBRARY_FRAGMENT(charrnn, m) {
  m.def("lstm_forward", &lstm_forward);
  m.def("lstm_backward", &lstm_backward);
}

}  // namespace charrnn
