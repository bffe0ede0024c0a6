// The tanh cell's recurrence over a window, forward and backward, in C++: the arithmetic of
// torch_charrnn/rnn/cells/tanh.py's step and step_backward, with the loop over time here and tanh
// as vec.h computes it.
#include <torch/library.h>

#include "product.h"
#include "vec.h"

namespace charrnn {

// a (T, B, H) = x_t W_xh + b_h; returns hs (T, B, H), h_t = tanh(a_t + h_{t-1} W_hh).
Tensor tanh_forward(const Tensor& a, const Tensor& h0, const Tensor& W_hh,
                    const std::optional<Tensor>& packed) {
  const int64_t T = a.size(0), B = a.size(1), H = a.size(2);
  Tensor hs = at::empty_like(a);
  const Product recur{W_hh, packed};
  Tensor h = h0;
  for (int64_t t = 0; t < T; ++t) {
    const Tensor z = recur(h, a[t]).contiguous();  // a_t + h_{t-1} W_hh
    h = hs[t];
    AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), "tanh_forward", [&] {
      const scalar_t* zp = z.data_ptr<scalar_t>();
      scalar_t* hp = h.data_ptr<scalar_t>();
      for_units<scalar_t>(B, H, [&](int64_t b, int64_t j, int64_t n) {
        tanh(Vec<scalar_t>::loadu(zp + b * H + j, n)).store(hp + b * H + j, n);
      });
    });
  }
  return hs;
}

// dhs (T, B, H): each h_t's gradient from above, read only; dh_last: the last h's from after the
// window. Returns dL/da (T, B, H) (the same for u_t = h_{t-1} W_hh) and dL/dh0.
std::tuple<Tensor, Tensor> tanh_backward(const Tensor& dhs, const Tensor& dh_last, const Tensor& hs,
                                         const Tensor& W_hh_t, const std::optional<Tensor>& packed) {
  const int64_t T = dhs.size(0);
  Tensor dA = at::empty_like(dhs), zero = at::zeros_like(dh_last);
  const Product back{W_hh_t, packed};
  Tensor dh = dhs[T - 1] + dh_last;
  for (int64_t t = T - 1; t >= 0; --t) {
    Tensor da = dA[t];
    at::tanh_backward_out(da, dh, hs[t]);  // (1 - h^2) * dh
    dh = back(da, t > 0 ? dhs[t - 1] : zero);  // into h_{t-1} through u, plus its share from above
  }
  return {dA, dh};
}

TORCH_LIBRARY_FRAGMENT(charrnn, m) {
  m.def("tanh_forward", &tanh_forward);
  m.def("tanh_backward", &tanh_backward);
}

}  // namespace charrnn
