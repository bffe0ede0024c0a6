// The tanh cell's recurrence over a window, forward and backward, in C++: the arithmetic of
// torch_charrnn/rnn/cells/tanh.py's step and step_backward, with the loop over time here, tanh as
// vec.h computes it, and the threads sharing out the streams (shares.h): each runs its rows through
// every step, the product by W_hh and the elementwise work, without waiting for the others.
#include <torch/library.h>

#include "shares.h"
#include "vec.h"
#include "zoneout.h"

namespace charrnn {

using at::Tensor;

// a (T, B, H) = x_t W_xh + b_h; zones: zoneout's (zoneout.h). Returns hs (T, B, H), h_t = tanh(a_t +
// h_{t-1} W_hh) zoned, and the cell's own new h of every step, which backward reads (hs itself
// without zoneout).
std::tuple<Tensor, Tensor> tanh_forward(const Tensor& a, const Tensor& h0, const Tensor& W_hh,
                                        const std::vector<Tensor>& zones, int64_t parts) {
  const int64_t T = a.size(0), B = a.size(1), H = a.size(2);
  const Tensor a_ = a.contiguous(), h0_ = h0.contiguous(), W = W_hh.contiguous();
  Tensor hs = at::empty({T, B, H}, a.options());
  const bool zoned = !zones.empty() && zones[0].numel() > 0;
  Tensor fresh = zoned ? at::empty_like(hs) : hs;
  AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), "tanh_forward", [&] {
    using S = scalar_t;
    const S *ap = a_.data_ptr<S>(), *Wp = W.data_ptr<S>();
    S *hp = hs.data_ptr<S>(), *fp = fresh.data_ptr<S>();
    const Zone<S> zone = Zone<S>::of(zones, 0);
    in_shares(parts, B, [&](int64_t b0, int64_t b1, int64_t) {
      for (int64_t t = 0; t < T; ++t) {
        const S* h_prev = t > 0 ? hp + (t - 1) * B * H : h0_.data_ptr<S>();
        const S* at_ = ap + t * B * H;
        S *h = hp + t * B * H, *f = fp + t * B * H;
        const Zone<S> zt = zone.at(t, B * H);
        blocked_matmul(b1 - b0, H, H, h_prev + b0 * H, H, Wp, H, h + b0 * H, H, false);  // h_{t-1} W_hh, these rows
        for_units<S>(b0, b1, H, [&](int64_t b, int64_t j, int64_t n) {
          const int64_t k = b * H + j;
          const Vec<S> ht = tanh(Vec<S>::loadu(at_ + k, n) + Vec<S>::loadu(h + k, n));
          if (zoned) ht.store(f + k, n);
          zt.carry(k, n, Vec<S>::loadu(h_prev + k, n), ht).store(h + k, n);
        });
      }
    });
  });
  return {hs, fresh};
}

// dhs (T, B, H): each h_t's gradient from above, read only; dh_last: the last h's from after the
// window; fresh: the forward's new h of every step. Returns dL/da (T, B, H) (the same for u_t =
// h_{t-1} W_hh) and dL/dh0.
std::tuple<Tensor, Tensor> tanh_backward(const Tensor& dhs, const Tensor& dh_last, const Tensor& fresh,
                                         const Tensor& W_hh, const std::vector<Tensor>& zones, int64_t parts) {
  const int64_t T = dhs.size(0), B = dhs.size(1), H = dhs.size(2);
  const Tensor dhs_ = dhs.contiguous(), hs_ = fresh.contiguous(), WT = W_hh.t().contiguous();  // (H, H)
  Tensor dA = at::empty({T, B, H}, dhs.options());
  Tensor dh = dh_last.contiguous().clone();  // dL/dh_t through the recurrence: from after the window first
  AT_DISPATCH_FLOATING_TYPES(dhs.scalar_type(), "tanh_backward", [&] {
    using S = scalar_t;
    const S *above = dhs_.data_ptr<S>(), *hp = hs_.data_ptr<S>(), *WTp = WT.data_ptr<S>();
    S *dap = dA.data_ptr<S>(), *dhp = dh.data_ptr<S>();
    const Vec<S> one(S(1));
    const Zone<S> zone = Zone<S>::of(zones, 0);
    in_shares(parts, B, [&](int64_t b0, int64_t b1, int64_t) {
      for (int64_t t = T - 1; t >= 0; --t) {
        const S *up = above + t * B * H, *h = hp + t * B * H;
        S* da = dap + t * B * H;
        const Zone<S> zt = zone.at(t, B * H);
        for_units<S>(b0, b1, H, [&](int64_t b, int64_t j, int64_t n) {
          const int64_t k = b * H + j;
          const Vec<S> d = Vec<S>::loadu(dhp + k, n) + Vec<S>::loadu(up + k, n), ht = Vec<S>::loadu(h + k, n);
          (zt.fresh(k, n, d) * (one - ht * ht)).store(da + k, n);  // through zoneout and tanh
          if (zt.on) zt.around(k, n, d).store(dhp + k, n);           // into h_{t-1} around the step, to which ...
        });
        // ... (or into h_{t-1} alone) the path through u adds da_t W_hhᵀ, these rows
        blocked_matmul(b1 - b0, H, H, da + b0 * H, H, WTp, H, dhp + b0 * H, H, zt.on);
      }
    });
  });
  return {dA, dh};
}

TORCH_LIBRARY_FRAGMENT(charrnn, m) {
  m.def("tanh_forward", &tanh_forward);
  m.def("tanh_backward", &tanh_backward);
}

}  // namespace charrnn
