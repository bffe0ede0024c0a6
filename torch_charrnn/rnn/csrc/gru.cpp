// The GRU's recurrence over a window, forward and backward, in C++: the arithmetic of
// torch_charrnn/rnn/cells/gru.py's step and step_backward, with the loop over time here and each
// step's elementwise work in one pass over the units. Gate order r, z, n.
#include <torch/library.h>

#include "product.h"
#include "vec.h"

namespace charrnn {

// a (T, B, 3H) = x_t W_xh + b_h; hn_bias (B, 3H) = [0 | 0 | b_hn] for every stream. Returns hs,
// ns, hns = u_n + b_hn (T, B, H) and rz (T, B, 2H), the two gates after their sigmoid.
std::tuple<Tensor, Tensor, Tensor, Tensor> gru_forward(const Tensor& a, const Tensor& h0,
                                                       const Tensor& hn_bias, const Tensor& W_hh,
                                                       const std::optional<Tensor>& packed) {
  const int64_t T = a.size(0), B = a.size(1), H = h0.size(1);
  Tensor hs = at::empty({T, a.size(1), H}, h0.options());
  Tensor ns = at::empty_like(hs), hns = at::empty_like(hs);
  Tensor rzs = at::empty({T, a.size(1), 2 * H}, h0.options());
  const Product recur{W_hh, packed};
  Tensor h = h0.contiguous();
  for (int64_t t = 0; t < T; ++t) {
    const Tensor u = recur(h, hn_bias).contiguous();  // h_{t-1} W_hh, with b_hn in the n block
    const Tensor at_ = a[t];
    Tensor ht = hs[t];
    AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), "gru_forward", [&] {
      using V = Vec<scalar_t>;
      const scalar_t *ap = at_.data_ptr<scalar_t>(), *up = u.data_ptr<scalar_t>(), *hp = h.data_ptr<scalar_t>();
      scalar_t *rzp = rzs[t].data_ptr<scalar_t>(), *np = ns[t].data_ptr<scalar_t>();
      scalar_t *hnp = hns[t].data_ptr<scalar_t>(), *outp = ht.data_ptr<scalar_t>();
      for_units<scalar_t>(B, H, [&](int64_t b, int64_t j, int64_t n) {
        const int64_t g = b * 3 * H + j, k = b * H + j;
        const V r = sigmoid(V::loadu(ap + g, n) + V::loadu(up + g, n));
        const V z = sigmoid(V::loadu(ap + g + H, n) + V::loadu(up + g + H, n));
        const V hn = V::loadu(up + g + 2 * H, n);
        const V nt = tanh(V::loadu(ap + g + 2 * H, n) + r * hn);  // tanh(a_n + r * hn)
        const V hp_ = V::loadu(hp + k, n);
        r.store(rzp + b * 2 * H + j, n), z.store(rzp + b * 2 * H + H + j, n);
        hn.store(hnp + k, n), nt.store(np + k, n);
        (nt + z * (hp_ - nt)).store(outp + k, n);  // (1 - z) * n + z * h_{t-1}
      });
    });
    h = ht;
  }
  return {hs, ns, hns, rzs};
}

// dhs (T, B, H): each h_t's gradient from above, read only; dh_last: the last h's from after the
// window. Returns dL/da (T, B, 3H), the n block of dL/du (T, B, H) (where u_n sits inside the reset
// product; dL/du's r and z blocks are dL/da's) and dL/dh0.
std::tuple<Tensor, Tensor, Tensor> gru_backward(const Tensor& dhs, const Tensor& dh_last, const Tensor& h0,
                                                const Tensor& hs, const Tensor& ns, const Tensor& hns,
                                                const Tensor& rzs, const Tensor& W_hh_t,
                                                const std::optional<Tensor>& packed) {
  const int64_t T = dhs.size(0), B = dhs.size(1), H = dhs.size(2);
  Tensor dA = at::empty({T, B, 3 * H}, dhs.options()), dUn = at::empty({T, B, H}, dhs.options());
  Tensor du = at::empty({B, 3 * H}, dhs.options());  // this step's dL/du whole, for the product
  const Product back{W_hh_t, packed};
  Tensor dh = dhs[T - 1] + dh_last, zero = at::zeros_like(dh_last);
  const Tensor h0c = h0.contiguous();
  Tensor direct = at::empty_like(dh);
  for (int64_t t = T - 1; t >= 0; --t) {
    const Tensor h_prev = t > 0 ? hs[t - 1] : h0c;
    Tensor da = dA[t], dun = dUn[t];
    dh = dh.contiguous();
    AT_DISPATCH_FLOATING_TYPES(dhs.scalar_type(), "gru_backward", [&] {
      using V = Vec<scalar_t>;
      const scalar_t *rzp = rzs[t].data_ptr<scalar_t>(), *np = ns[t].data_ptr<scalar_t>();
      const scalar_t *hnp = hns[t].data_ptr<scalar_t>(), *hpp = h_prev.data_ptr<scalar_t>();
      const scalar_t* dhp = dh.data_ptr<scalar_t>();
      scalar_t *dap = da.data_ptr<scalar_t>(), *dup = du.data_ptr<scalar_t>(), *dunp = dun.data_ptr<scalar_t>();
      scalar_t* dirp = direct.data_ptr<scalar_t>();
      const V one(scalar_t(1));
      for_units<scalar_t>(B, H, [&](int64_t b, int64_t j, int64_t n) {
        const int64_t g = b * 3 * H + j, k = b * H + j;
        const V r = V::loadu(rzp + b * 2 * H + j, n), z = V::loadu(rzp + b * 2 * H + H + j, n);
        const V nt = V::loadu(np + k, n), hn = V::loadu(hnp + k, n), d = V::loadu(dhp + k, n);
        const V dn = d * (one - z) * (one - nt * nt);  // into n, through tanh
        const V dr = dn * hn * r * (one - r);          // into r, through sigmoid
        const V dz = d * (V::loadu(hpp + k, n) - nt) * z * (one - z);  // into z, through sigmoid
        const V dhn = dn * r;                          // into u_n, which sits inside r *
        dr.store(dap + g, n), dz.store(dap + g + H, n), dn.store(dap + g + 2 * H, n);
        dr.store(dup + g, n), dz.store(dup + g + H, n), dhn.store(dup + g + 2 * H, n);
        dhn.store(dunp + k, n);
        (d * z).store(dirp + k, n);  // the skip path into h_{t-1}
      });
    });
    dh = back(du, t > 0 ? dhs[t - 1] : zero).add_(direct);  // into h_{t-1}: through u and around it
  }
  return {dA, dUn, dh};
}

TORCH_LIBRARY_FRAGMENT(charrnn, m) {
  m.def("gru_forward", &gru_forward);
  m.def("gru_backward", &gru_backward);
}

}  // namespace charrnn
