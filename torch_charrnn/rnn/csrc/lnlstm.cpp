// The layer-normalised LSTM's recurrence over a window, forward and backward, in C++: the
// arithmetic of torch_charrnn/rnn/cells/lnlstm.py's step and step_backward, with the loop over time
// here, each row's normalisations and elementwise work in a few passes over its units, and the
// threads sharing out the streams (shares.h). Gate order i, f, g, o. The input share a_t = LN(x_t
// W_xh; g_x) + b_h is the caller's (for the whole window at once); the loop normalises what depends
// on the recurrence, u = h_{t-1} W_hh over its 4H and c_t over its H.
#include <torch/library.h>

#include <vector>

#include "layernorm.h"
#include "shares.h"
#include "zoneout.h"

namespace charrnn {

using at::Tensor;

// inputs: characters (T, B), whose rows of `table` (V, 4H) = LN(W_xh; g_x) + b_h the loop gathers,
// or a layer above's shares a (T, B, 4H). Returns hs, cs (T, B, H), the gates (T, B, 4H: i, f, o after
// their sigmoid, g after its tanh), uhat (T, B, 4H, u normalised) and its 1/sigma (T, B), chat
// (T, B, H, c normalised) and its 1/sigma (T, B), and tcs = tanh(LN(c)) (T, B, H). zones: zoneout's
// (zoneout.h): hs and cs are then the states carried, and chat and tcs of the cell's own c_t.
std::vector<Tensor> lnlstm_forward(const Tensor& inputs, const Tensor& table, const Tensor& h0, const Tensor& c0,
                                   const Tensor& W_hh, const Tensor& g_h, const Tensor& g_c, const Tensor& b_c,
                                   const std::vector<Tensor>& zones, int64_t parts) {
  const int64_t T = inputs.size(0), B = inputs.size(1), H = h0.size(1), N = 4 * H;
  const bool gathered = !at::isFloatingType(inputs.scalar_type());
  const Tensor x = gathered ? inputs.contiguous().to(at::kLong) : Tensor();
  const Tensor a = gathered ? Tensor() : inputs.contiguous(), rows = table.contiguous();
  const Tensor h0_ = h0.contiguous(), c0_ = c0.contiguous(), W = W_hh.contiguous();
  const Tensor gh = g_h.contiguous(), gc = g_c.contiguous(), bc = b_c.contiguous();
  const auto options = h0.options();
  Tensor hs = at::empty({T, B, H}, options), cs = at::empty_like(hs), chat = at::empty_like(hs);
  Tensor tcs = at::empty_like(hs), gates = at::empty({T, B, N}, options), uhat = at::empty_like(gates);
  Tensor ru = at::empty({T, B}, options), rc = at::empty({T, B}, options);
  AT_DISPATCH_FLOATING_TYPES(h0.scalar_type(), "lnlstm_forward", [&] {
    using S = scalar_t;
    using V = Vec<S>;
    const ShareRows<S> in{gathered ? nullptr : a.data_ptr<S>(), gathered ? x.data_ptr<int64_t>() : nullptr,
                          rows.data_ptr<S>()};
    const S *Wp = W.data_ptr<S>(), *ghp = gh.data_ptr<S>(), *gcp = gc.data_ptr<S>(), *bcp = bc.data_ptr<S>();
    S *hp = hs.data_ptr<S>(), *cp = cs.data_ptr<S>(), *chp = chat.data_ptr<S>(), *tp = tcs.data_ptr<S>();
    S *gp = gates.data_ptr<S>(), *up = uhat.data_ptr<S>(), *rup = ru.data_ptr<S>(), *rcp = rc.data_ptr<S>();
    const Zone<S> zone_h = Zone<S>::of(zones, 0), zone_c = Zone<S>::of(zones, 1);
    in_shares(parts, B, [&](int64_t b0, int64_t b1, int64_t) {
      for (int64_t t = 0; t < T; ++t) {
        const Zone<S> zh = zone_h.at(t, B * H), zc = zone_c.at(t, B * H);
        const S* h_prev = t > 0 ? hp + (t - 1) * B * H : h0_.data_ptr<S>();
        const S* c_prev = t > 0 ? cp + (t - 1) * B * H : c0_.data_ptr<S>();
        S* u = up + t * B * N;  // h_{t-1} W_hh for these rows, normalised below in place
        blocked_matmul(b1 - b0, N, H, h_prev + b0 * H, H, Wp, N, u + b0 * N, N, false);
        for (int64_t b = b0; b < b1; ++b) {
          const int64_t r = t * B + b, k = r * H;
          S *ub = u + b * N, *gb = gp + r * N;
          const auto [mu, rsu] = moments(ub, N);
          rup[r] = rsu;
          const S* ab = in.row(t, b, B, N);
          for (int64_t j = 0; j < H; j += V::size()) {
            const int64_t n = std::min<int64_t>(V::size(), H - j);
            auto z = [&](int64_t block) {  // a_t + LN(u; g_h), one gate block; uhat kept
              const int64_t o = block * H + j;
              const V uh = (V::loadu(ub + o, n) - V(mu)) * V(rsu);
              uh.store(ub + o, n);
              return V::loadu(ab + o, n) + V::loadu(ghp + o, n) * uh;
            };
            const V i = sigmoid(z(0)), f = sigmoid(z(1)), g = tanh(z(2)), o = sigmoid(z(3));
            i.store(gb + j, n), f.store(gb + H + j, n), g.store(gb + 2 * H + j, n), o.store(gb + 3 * H + j, n);
            (f * V::loadu(c_prev + b * H + j, n) + i * g).store(cp + k + j, n);  // c_t = f * c_{t-1} + i * g
          }
          const auto [mc, rsc] = moments(cp + k, H);
          rcp[r] = rsc;
          for (int64_t j = 0; j < H; j += V::size()) {
            const int64_t n = std::min<int64_t>(V::size(), H - j), q = b * H + j;
            const V ct = V::loadu(cp + k + j, n), ch = (ct - V(mc)) * V(rsc);
            const V tc = tanh(V::loadu(gcp + j, n) * ch + V::loadu(bcp + j, n));  // tanh(LN(c_t; g_c, b_c))
            ch.store(chp + k + j, n), tc.store(tp + k + j, n);
            const V ht = V::loadu(gb + 3 * H + j, n) * tc;  // h_t = o * tanh(LN(c_t))
            if (zc.on) zc.carry(q, n, V::loadu(c_prev + q, n), ct).store(cp + k + j, n);
            zh.carry(q, n, zh.on ? V::loadu(h_prev + q, n) : V(S(0)), ht).store(hp + k + j, n);
          }
        }
      }
    });
  });
  return {hs, cs, gates, uhat, ru, chat, rc, tcs};
}

// dhs (T, B, H): each h_t's gradient from above, read only; dh_last, dc_last: the last state's from
// after the window; the forward's outputs. Returns dL/da (T, B, 4H) (dL/dz), dL/du (T, B, 4H, u =
// h_{t-1} W_hh before its normalisation), dL/dh0, dL/dc0 and the gradients of g_h, g_c and b_c side by
// side (4H + 2H), each thread adding its streams' into its own, added together at the end.
std::vector<Tensor> lnlstm_backward(const Tensor& dhs, const Tensor& dh_last, const Tensor& dc_last,
                                    const Tensor& c0, const Tensor& cs, const Tensor& gates, const Tensor& uhat,
                                    const Tensor& ru, const Tensor& chat, const Tensor& rc, const Tensor& tcs,
                                    const Tensor& W_hh, const Tensor& g_h, const Tensor& g_c,
                                    const std::vector<Tensor>& zones, int64_t parts) {
  const int64_t T = dhs.size(0), B = dhs.size(1), H = dhs.size(2), N = 4 * H;
  const Tensor dhs_ = dhs.contiguous(), c0_ = c0.contiguous(), WT = W_hh.t().contiguous();  // (4H, H)
  const Tensor gh = g_h.contiguous(), gc = g_c.contiguous();
  Tensor dZ = at::empty_like(gates), dU = at::empty_like(gates);
  Tensor dh = dh_last.contiguous().clone();  // dL/dh_t through the recurrence: from after the window first
  Tensor dc = dc_last.contiguous().clone();  // dL/dc_t from after the step
  Tensor own = at::zeros({parts, N + 2 * H}, dhs.options());  // each share's g_h, g_c and b_c gradients
  AT_DISPATCH_FLOATING_TYPES(dhs.scalar_type(), "lnlstm_backward", [&] {
    using S = scalar_t;
    using V = Vec<S>;
    const S *above = dhs_.data_ptr<S>(), *cp = cs.data_ptr<S>(), *gp = gates.data_ptr<S>();
    const S *up = uhat.data_ptr<S>(), *rup = ru.data_ptr<S>(), *chp = chat.data_ptr<S>();
    const S *rcp = rc.data_ptr<S>(), *tp = tcs.data_ptr<S>(), *WTp = WT.data_ptr<S>();
    const S *ghp = gh.data_ptr<S>(), *gcp = gc.data_ptr<S>();
    S *dzp = dZ.data_ptr<S>(), *dup = dU.data_ptr<S>(), *dhp = dh.data_ptr<S>(), *dcp = dc.data_ptr<S>();
    const V one(S(1));
    const Zone<S> zone_h = Zone<S>::of(zones, 0), zone_c = Zone<S>::of(zones, 1);
    in_shares(parts, B, [&](int64_t b0, int64_t b1, int64_t first) {
      S* dg_h = own.data_ptr<S>() + first * (N + 2 * H);
      S *dg_c = dg_h + N, *db_c = dg_c + H;
      std::vector<S> d(H);  // a row's dL/dLN(c_t) times g_c, for its normalisation's backward
      for (int64_t t = T - 1; t >= 0; --t) {
        const Zone<S> zh = zone_h.at(t, B * H), zc = zone_c.at(t, B * H);
        const S* c_prev = t > 0 ? cp + (t - 1) * B * H : c0_.data_ptr<S>();
        for (int64_t b = b0; b < b1; ++b) {
          const int64_t r = t * B + b, k = r * H, q = b * H;
          const S *gb = gp + r * N, *ub = up + r * N;
          S *dzb = dzp + r * N, *dub = dup + r * N;
          LayerNormBackward<S> ln_c{chp + k, gcp, dg_c, d.data()}, ln_u{ub, ghp, dg_h, dub};
          for (int64_t j = 0; j < H; j += V::size()) {  // through h_t = o * tanh(LN(c_t))
            const int64_t n = std::min<int64_t>(V::size(), H - j);
            const V o = V::loadu(gb + 3 * H + j, n), tc = V::loadu(tp + k + j, n);
            const V dh = V::loadu(above + k + j, n) + V::loadu(dhp + q + j, n);  // dL/dh_t, zoned
            const V dht = zh.fresh(q + j, n, dh);                                 // the cell's own h_t's
            if (zh.on) zh.around(q + j, n, dh).store(dhp + q + j, n);  // into h_{t-1} around the step
            ln_c.add(j, n, dht * o * (one - tc * tc), db_c + j);  // into LN(c_t), through tanh
            const V dzo = dht * tc * o * (one - o);                // into z_o, through sigmoid
            dzo.store(dzb + 3 * H + j, n);
            ln_u.add(3 * H + j, n, dzo);
          }
          ln_c.means(rcp[r], H);
          for (int64_t j = 0; j < H; j += V::size()) {
            const int64_t n = std::min<int64_t>(V::size(), H - j);
            const V i = V::loadu(gb + j, n), f = V::loadu(gb + H + j, n), g = V::loadu(gb + 2 * H + j, n);
            const V dcz = V::loadu(dcp + q + j, n);  // dL/dc_t, zoned, from c_{t+1}
            const V dct = ln_c.at(j, n) + zc.fresh(q + j, n, dcz);  // and through LN(c_t)
            (zc.on ? dct * f + zc.around(q + j, n, dcz) : dct * f).store(dcp + q + j, n);  // into c_{t-1}
            const V dzi = dct * g * i * (one - i), dzf = dct * V::loadu(c_prev + q + j, n) * f * (one - f);
            const V dzg = dct * i * (one - g * g);
            dzi.store(dzb + j, n), dzf.store(dzb + H + j, n), dzg.store(dzb + 2 * H + j, n);  // into z_i, z_f, z_g
            ln_u.add(j, n, dzi), ln_u.add(H + j, n, dzf), ln_u.add(2 * H + j, n, dzg);  // and LN(u; g_h)
          }
          ln_u.finish(rup[r], N);  // into u, through its normalisation
        }
        // into h_{t-1} through u: du_t W_hhᵀ, these rows (added to what went around the step)
        blocked_matmul(b1 - b0, H, N, dup + (t * B + b0) * N, N, WTp, H, dhp + b0 * H, H, zh.on);
      }
    });
  });
  return {dZ, dU, dh, dc, own.sum(0)};
}

TORCH_LIBRARY_FRAGMENT(charrnn, m) {
  m.def("lnlstm_forward", &lnlstm_forward);
  m.def("lnlstm_backward", &lnlstm_backward);
}

}  // namespace charrnn
