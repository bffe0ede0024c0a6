// The layer-normalised GRU's recurrence over a window, forward and backward, in C++: the arithmetic
// of torch_charrnn/rnn/cells/lngru.py's step and step_backward, with the loop over time here, each
// row's normalisation and elementwise work in a few passes over its units, and the threads sharing
// out the streams (shares.h). Gate order r, z, n. The input share a_t = LN(x_t W_xh; g_x) + b_h is
// the caller's; the loop normalises u = h_{t-1} W_hh over its 3H.
#include <torch/library.h>

#include <vector>

#include "layernorm.h"
#include "shares.h"
#include "zoneout.h"

namespace charrnn {

using at::Tensor;

// inputs: characters (T, B), whose rows of `table` (V, 3H) = LN(W_xh; g_x) + b_h the loop gathers,
// or a layer above's shares a (T, B, 3H). Returns hs, ns, hns = LN(u; g_h)_n + b_hn (T, B, H), rz
// (T, B, 2H) after their sigmoid, uhat (T, B, 3H, u normalised) and its 1/sigma (T, B). zones:
// zoneout's (zoneout.h), hs then the h carried.
std::vector<Tensor> lngru_forward(const Tensor& inputs, const Tensor& table, const Tensor& h0,
                                  const Tensor& W_hh, const Tensor& g_h, const Tensor& b_hn,
                                  const std::vector<Tensor>& zones, int64_t parts) {
  const int64_t T = inputs.size(0), B = inputs.size(1), H = h0.size(1), N = 3 * H;
  const bool gathered = !at::isFloatingType(inputs.scalar_type());
  const Tensor x = gathered ? inputs.contiguous().to(at::kLong) : Tensor();
  const Tensor a = gathered ? Tensor() : inputs.contiguous(), rows = table.contiguous();
  const Tensor h0_ = h0.contiguous(), W = W_hh.contiguous(), gh = g_h.contiguous(), bn = b_hn.contiguous();
  const auto options = h0.options();
  Tensor hs = at::empty({T, B, H}, options), ns = at::empty_like(hs), hns = at::empty_like(hs);
  Tensor rzs = at::empty({T, B, 2 * H}, options), uhat = at::empty({T, B, N}, options);
  Tensor ru = at::empty({T, B}, options);
  AT_DISPATCH_FLOATING_TYPES(h0.scalar_type(), "lngru_forward", [&] {
    using S = scalar_t;
    using V = Vec<S>;
    const ShareRows<S> in{gathered ? nullptr : a.data_ptr<S>(), gathered ? x.data_ptr<int64_t>() : nullptr,
                          rows.data_ptr<S>()};
    const S *Wp = W.data_ptr<S>(), *ghp = gh.data_ptr<S>(), *bnp = bn.data_ptr<S>();
    S *hp = hs.data_ptr<S>(), *np = ns.data_ptr<S>(), *hnp = hns.data_ptr<S>(), *rzp = rzs.data_ptr<S>();
    S *up = uhat.data_ptr<S>(), *rup = ru.data_ptr<S>();
    const Zone<S> zone = Zone<S>::of(zones, 0);
    in_shares(parts, B, [&](int64_t b0, int64_t b1, int64_t) {
      for (int64_t t = 0; t < T; ++t) {
        const S* h_prev = t > 0 ? hp + (t - 1) * B * H : h0_.data_ptr<S>();
        const Zone<S> zt = zone.at(t, B * H);
        S* u = up + t * B * N;  // h_{t-1} W_hh for these rows, normalised below in place
        blocked_matmul(b1 - b0, N, H, h_prev + b0 * H, H, Wp, N, u + b0 * N, N, false);
        for (int64_t b = b0; b < b1; ++b) {
          const int64_t r = t * B + b, k = r * H;
          S* ub = u + b * N;
          const auto [mu, rsu] = moments(ub, N);
          rup[r] = rsu;
          const S* ab = in.row(t, b, B, N);
          for (int64_t j = 0; j < H; j += V::size()) {
            const int64_t n = std::min<int64_t>(V::size(), H - j);
            auto ln = [&](int64_t block) {  // LN(u; g_h), one gate block; uhat kept
              const int64_t o = block * H + j;
              const V uh = (V::loadu(ub + o, n) - V(mu)) * V(rsu);
              uh.store(ub + o, n);
              return V::loadu(ghp + o, n) * uh;
            };
            const V rg = sigmoid(V::loadu(ab + j, n) + ln(0));
            const V zg = sigmoid(V::loadu(ab + H + j, n) + ln(1));
            const V hn = ln(2) + V::loadu(bnp + j, n);                  // LN(u)_n + b_hn
            const V nt = tanh(V::loadu(ab + 2 * H + j, n) + rg * hn);  // tanh(a_n + r * hn)
            S* rzb = rzp + r * 2 * H + j;
            rg.store(rzb, n), zg.store(rzb + H, n);
            hn.store(hnp + k + j, n), nt.store(np + k + j, n);
            const V hp_ = V::loadu(h_prev + b * H + j, n);
            zt.carry(b * H + j, n, hp_, nt + zg * (hp_ - nt)).store(hp + k + j, n);  // (1 - z) n + z h_{t-1}, zoned
          }
        }
      }
    });
  });
  return {hs, ns, hns, rzs, uhat, ru};
}

// dhs (T, B, H): each h_t's gradient from above, read only; dh_last: the last h's from after the
// window; the forward's outputs. Returns dL/da (T, B, 3H), dL/du (T, B, 3H, u = h_{t-1} W_hh before
// its normalisation), dL/dh0 and the gradients of g_h and b_hn side by side (3H + H), each thread
// adding its streams' into its own, added together at the end.
std::vector<Tensor> lngru_backward(const Tensor& dhs, const Tensor& dh_last, const Tensor& h0, const Tensor& hs,
                                   const Tensor& ns, const Tensor& hns, const Tensor& rzs, const Tensor& uhat,
                                   const Tensor& ru, const Tensor& W_hh, const Tensor& g_h,
                                   const std::vector<Tensor>& zones, int64_t parts) {
  const int64_t T = dhs.size(0), B = dhs.size(1), H = dhs.size(2), N = 3 * H;
  const Tensor dhs_ = dhs.contiguous(), h0_ = h0.contiguous(), hs_ = hs.contiguous();
  const Tensor WT = W_hh.t().contiguous(), gh = g_h.contiguous();  // (3H, H)
  Tensor dA = at::empty({T, B, N}, dhs.options()), dU = at::empty_like(dA);
  Tensor dh = dh_last.contiguous().clone();  // dL/dh_t through the recurrence: from after the window first
  Tensor own = at::zeros({parts, N + H}, dhs.options());  // each share's g_h and b_hn gradients
  AT_DISPATCH_FLOATING_TYPES(dhs.scalar_type(), "lngru_backward", [&] {
    using S = scalar_t;
    using V = Vec<S>;
    const S *above = dhs_.data_ptr<S>(), *hp = hs_.data_ptr<S>(), *WTp = WT.data_ptr<S>();
    const S *np = ns.data_ptr<S>(), *hnp = hns.data_ptr<S>(), *rzp = rzs.data_ptr<S>();
    const S *up = uhat.data_ptr<S>(), *rup = ru.data_ptr<S>(), *ghp = gh.data_ptr<S>();
    S *dap = dA.data_ptr<S>(), *dup = dU.data_ptr<S>(), *dhp = dh.data_ptr<S>();
    const V one(S(1));
    const Zone<S> zone = Zone<S>::of(zones, 0);
    in_shares(parts, B, [&](int64_t b0, int64_t b1, int64_t first) {
      S* dg_h = own.data_ptr<S>() + first * (N + H);
      S* db_hn = dg_h + N;
      for (int64_t t = T - 1; t >= 0; --t) {
        const S* h_prev = t > 0 ? hp + (t - 1) * B * H : h0_.data_ptr<S>();
        const Zone<S> zt = zone.at(t, B * H);
        for (int64_t b = b0; b < b1; ++b) {
          const int64_t r = t * B + b, k = r * H, q = b * H;
          const S* ub = up + r * N;
          S *dab = dap + r * N, *dub = dup + r * N;
          LayerNormBackward<S> ln_u{ub, ghp, dg_h, dub};
          for (int64_t j = 0; j < H; j += V::size()) {
            const int64_t n = std::min<int64_t>(V::size(), H - j);
            const S* rzb = rzp + r * 2 * H + j;
            const V rg = V::loadu(rzb, n), zg = V::loadu(rzb + H, n);
            const V nt = V::loadu(np + k + j, n), hn = V::loadu(hnp + k + j, n);
            const V dh = V::loadu(dhp + q + j, n) + V::loadu(above + k + j, n);  // dL/dh_t, zoned
            const V d = zt.fresh(q + j, n, dh);                                  // the cell's new h_t's
            const V dn = d * (one - zg) * (one - nt * nt);                       // into n, through tanh
            const V dr = dn * hn * rg * (one - rg);                              // into r, through sigmoid
            const V dz = d * (V::loadu(h_prev + q + j, n) - nt) * zg * (one - zg);  // into z
            const V dhn = dn * rg;                                              // into LN(u)_n + b_hn
            dr.store(dab + j, n), dz.store(dab + H + j, n), dn.store(dab + 2 * H + j, n);
            ln_u.add(j, n, dr), ln_u.add(H + j, n, dz), ln_u.add(2 * H + j, n, dhn, db_hn + j);  // into LN(u)
            // into h_{t-1} around u (the skip path, and around the step where zoneout kept it), to which ...
            (zt.on ? d * zg + zt.around(q + j, n, dh) : d * zg).store(dhp + q + j, n);
          }
          ln_u.finish(rup[r], N);  // into u, through its normalisation
        }
        // ... the path through u adds du_t W_hhᵀ, these rows
        blocked_matmul(b1 - b0, H, N, dup + (t * B + b0) * N, N, WTp, H, dhp + b0 * H, H, true);
      }
    });
  });
  return {dA, dU, dh, own.sum(0)};
}

TORCH_LIBRARY_FRAGMENT(charrnn, m) {
  m.def("lngru_forward", &lngru_forward);
  m.def("lngru_backward", &lngru_backward);
}

}  // namespace charrnn
