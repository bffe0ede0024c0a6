// The GRU's recurrence over a window, forward and backward, in C++: the arithmetic of
// torch_charrnn/rnn/cells/gru.py's step and step_backward, with the loop over time here, each
// step's elementwise work in one pass over the units, and the threads sharing out the streams
// (shares.h): each runs its rows through every step without waiting for the others. Gate order r, z, n.
#include <torch/library.h>

#include <vector>

#include "shares.h"
#include "vec.h"
#include "zoneout.h"

namespace charrnn {

using at::Tensor;

// a (T, B, 3H) = x_t W_xh + b_h; b_hn (H), added to u_n = h_{t-1} W_hn inside the reset product;
// zones: zoneout's (zoneout.h). Returns hs (zoned), ns, hns = u_n + b_hn (T, B, H) and rz (T, B, 2H),
// the two gates after their sigmoid.
std::tuple<Tensor, Tensor, Tensor, Tensor> gru_forward(const Tensor& a, const Tensor& h0, const Tensor& b_hn,
                                                       const Tensor& W_hh, const std::vector<Tensor>& zones,
                                                       int64_t parts) {
  const int64_t T = a.size(0), B = a.size(1), H = h0.size(1);
  const Tensor a_ = a.contiguous(), h0_ = h0.contiguous(), bn = b_hn.contiguous(), W = W_hh.contiguous();
  Tensor hs = at::empty({T, B, H}, h0.options());
  Tensor ns = at::empty_like(hs), hns = at::empty_like(hs), rzs = at::empty({T, B, 2 * H}, h0.options());
  AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), "gru_forward", [&] {
    using S = scalar_t;
    using V = Vec<S>;
    const S *ap = a_.data_ptr<S>(), *bnp = bn.data_ptr<S>(), *Wp = W.data_ptr<S>();
    S *hp = hs.data_ptr<S>(), *np = ns.data_ptr<S>(), *hnp = hns.data_ptr<S>(), *rzp = rzs.data_ptr<S>();
    const Zone<S> zone = Zone<S>::of(zones, 0);
    in_shares(parts, B, [&](int64_t b0, int64_t b1, int64_t) {
      std::vector<S> u((b1 - b0) * 3 * H);  // this step's h_{t-1} W_hh, these rows
      for (int64_t t = 0; t < T; ++t) {
        const S* h_prev = t > 0 ? hp + (t - 1) * B * H : h0_.data_ptr<S>();
        const Zone<S> zt = zone.at(t, B * H);
        blocked_matmul(b1 - b0, 3 * H, H, h_prev + b0 * H, H, Wp, 3 * H, u.data(), 3 * H, false);
        const int64_t s = t * B * H;
        for_units<S>(b0, b1, H, [&](int64_t b, int64_t j, int64_t n) {
          const int64_t g = (t * B + b) * 3 * H + j, k = b * H + j;
          const S* ub = u.data() + (b - b0) * 3 * H + j;
          const V r = sigmoid(V::loadu(ap + g, n) + V::loadu(ub, n));
          const V z = sigmoid(V::loadu(ap + g + H, n) + V::loadu(ub + H, n));
          const V hn = V::loadu(ub + 2 * H, n) + V::loadu(bnp + j, n);  // u_n + b_hn
          const V nt = tanh(V::loadu(ap + g + 2 * H, n) + r * hn);    // tanh(a_n + r * hn)
          S* rzb = rzp + (t * B + b) * 2 * H + j;
          r.store(rzb, n), z.store(rzb + H, n);
          hn.store(hnp + s + k, n), nt.store(np + s + k, n);
          const V hp_ = V::loadu(h_prev + k, n);
          zt.carry(k, n, hp_, nt + z * (hp_ - nt)).store(hp + s + k, n);  // (1 - z) * n + z * h_{t-1}, zoned
        });
      }
    });
  });
  return {hs, ns, hns, rzs};
}

// dhs (T, B, H): each h_t's gradient from above, read only; dh_last: the last h's from after the
// window. Returns dL/da (T, B, 3H), the n block of dL/du (T, B, H) (where u_n sits inside the reset
// product; dL/du's r and z blocks are dL/da's) and dL/dh0.
std::tuple<Tensor, Tensor, Tensor> gru_backward(const Tensor& dhs, const Tensor& dh_last, const Tensor& h0,
                                                const Tensor& hs, const Tensor& ns, const Tensor& hns,
                                                const Tensor& rzs, const Tensor& W_hh,
                                                const std::vector<Tensor>& zones, int64_t parts) {
  const int64_t T = dhs.size(0), B = dhs.size(1), H = dhs.size(2);
  const Tensor dhs_ = dhs.contiguous(), h0_ = h0.contiguous(), hs_ = hs.contiguous();
  const Tensor WT = W_hh.t().contiguous();  // (3H, H)
  Tensor dA = at::empty({T, B, 3 * H}, dhs.options()), dUn = at::empty({T, B, H}, dhs.options());
  Tensor dh = dh_last.contiguous().clone();  // dL/dh_t through the recurrence: from after the window first
  AT_DISPATCH_FLOATING_TYPES(dhs.scalar_type(), "gru_backward", [&] {
    using S = scalar_t;
    using V = Vec<S>;
    const S *above = dhs_.data_ptr<S>(), *hp = hs_.data_ptr<S>(), *WTp = WT.data_ptr<S>();
    const S *np = ns.data_ptr<S>(), *hnp = hns.data_ptr<S>(), *rzp = rzs.data_ptr<S>();
    S *dap = dA.data_ptr<S>(), *dunp = dUn.data_ptr<S>(), *dhp = dh.data_ptr<S>();
    const V one(S(1));
    const Zone<S> zone = Zone<S>::of(zones, 0);
    in_shares(parts, B, [&](int64_t b0, int64_t b1, int64_t) {
      std::vector<S> du((b1 - b0) * 3 * H);  // this step's dL/du whole, these rows, for the product
      for (int64_t t = T - 1; t >= 0; --t) {
        const S* h_prev = t > 0 ? hp + (t - 1) * B * H : h0_.data_ptr<S>();
        const Zone<S> zt = zone.at(t, B * H);
        const int64_t s = t * B * H;
        for_units<S>(b0, b1, H, [&](int64_t b, int64_t j, int64_t n) {
          const int64_t g = (t * B + b) * 3 * H + j, k = b * H + j;
          const S* rzb = rzp + (t * B + b) * 2 * H + j;
          const V r = V::loadu(rzb, n), z = V::loadu(rzb + H, n);
          const V nt = V::loadu(np + s + k, n), hn = V::loadu(hnp + s + k, n);
          const V dh = V::loadu(dhp + k, n) + V::loadu(above + s + k, n);  // dL/dh_t, zoned
          const V d = zt.fresh(k, n, dh);                                    // the cell's new h_t's
          const V dn = d * (one - z) * (one - nt * nt);                    // into n, through tanh
          const V dr = dn * hn * r * (one - r);                            // into r, through sigmoid
          const V dz = d * (V::loadu(h_prev + k, n) - nt) * z * (one - z);  // into z, through sigmoid
          const V dhn = dn * r;                                            // into u_n, inside r *
          dr.store(dap + g, n), dz.store(dap + g + H, n), dn.store(dap + g + 2 * H, n);
          S* dub = du.data() + (b - b0) * 3 * H + j;
          dr.store(dub, n), dz.store(dub + H, n), dhn.store(dub + 2 * H, n);
          dhn.store(dunp + s + k, n);
          // into h_{t-1} around u (the skip path, and around the step where zoneout kept it), to which ...
          (zt.on ? d * z + zt.around(k, n, dh) : d * z).store(dhp + k, n);
        });
        // ... the path through u adds du_t W_hhᵀ, these rows
        blocked_matmul(b1 - b0, H, 3 * H, du.data(), 3 * H, WTp, H, dhp + b0 * H, H, true);
      }
    });
  });
  return {dA, dUn, dh};
}

TORCH_LIBRARY_FRAGMENT(charrnn, m) {
  m.def("gru_forward", &gru_forward);
  m.def("gru_backward", &gru_backward);
}

}  // namespace charrnn
