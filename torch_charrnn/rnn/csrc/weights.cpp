// The weight gradients of a layer over a window, for every cell, each with its rows or columns
// shared out among threads (shares.h): the recurrent weight's, dW_hh = sum_t h_{t-1}ᵀ du_t, and a
// layer above the first's input weight, dW_xh = sum_t below_tᵀ da_t, one product over the window
// each rather than one a step; and the first layer's input weight and bias, whose rows were
// gathered by character.
#include <torch/library.h>

#include <utility>
#include <vector>

#include "shares.h"
#include "vec.h"

namespace charrnn {

using at::Tensor;

// The blocks of columns of du (T, B, N_i each), each contiguous in its last dimension with rows
// evenly spaced (a column slice of a wider tensor will do, uncopied), and their total width.
static std::pair<std::vector<Tensor>, int64_t> column_blocks(at::TensorList dU, int64_t B) {
  std::vector<Tensor> blocks;
  int64_t N = 0;
  for (const Tensor& d : dU) {
    const bool spaced = d.stride(2) == 1 && d.stride(0) == B * d.stride(1);
    blocks.push_back(spaced ? d : d.contiguous());
    N += d.size(2);
  }
  return {blocks, N};
}

// dW (H, N) = sum over the window's T * B rows r of x_rᵀ du_r, x_r = row(r) (H values, contiguous),
// the blocks of du side by side, each thread its own rows of dW (units of x).
template <typename S, typename Row>
void weight_grad(const Row& row, int64_t TB, int64_t H, const std::vector<Tensor>& blocks, int64_t N, S* dWp,
                 int64_t parts) {
  constexpr int64_t KB = BLOCK, NB = BLOCK;  // blocks of the sum and of dW's columns that stay in cache
  // Each block of the sum multiplies a panel of xᵀ, these units' rows of KB columns, transposed
  // into a buffer of the thread's own (KB, not T * B, columns: no copy of the window). Its rows
  // are padded: rows a multiple of 4 KiB apart fall in the same few cache sets, and writing or
  // reading down a column of them thrashed those.
  constexpr int64_t ld = KB + 16;
  in_shares(parts, H, [&](int64_t u0, int64_t u1, int64_t) {
    std::vector<S> panel((u1 - u0) * ld);
    for (int64_t k = 0; k < TB; k += KB) {
      const int64_t K = std::min(KB, TB - k);
      for (int64_t r = 0; r < K; ++r) {  // row k + r of x, these units, as a column
        const S* x = row(k + r);
        for (int64_t i = u0; i < u1; ++i) panel[(i - u0) * ld + r] = x[i];
      }
      int64_t column = 0;  // where this block of du's columns starts in dW
      for (const Tensor& d : blocks) {
        const S* dup = d.data_ptr<S>();
        const int64_t Nd = d.size(2), ldd = d.stride(1);
        for (int64_t n = 0; n < Nd; n += NB) {
          matmul(u1 - u0, std::min(NB, Nd - n), K, panel.data(), ld, dup + k * ldd + n, ldd,
                 dWp + u0 * N + column + n, N, k > 0);
        }
        column += Nd;
      }
    }
  });
}

// h0 (B, H), hs (T, B, H), dU: the blocks of columns of du (column_blocks). Returns
// sum_t h_{t-1}ᵀ du_t (H, sum N_i), h_{-1} being h0: the recurrent weight's gradient.
Tensor recurrent_weight_grad(const Tensor& h0, const Tensor& hs, at::TensorList dU, int64_t parts) {
  const int64_t T = hs.size(0), B = hs.size(1), H = hs.size(2);
  const Tensor h0_ = h0.contiguous(), hs_ = hs.contiguous();
  auto [blocks, N] = column_blocks(dU, B);
  Tensor dW = at::empty({H, N}, hs.options());
  AT_DISPATCH_FLOATING_TYPES(hs.scalar_type(), "recurrent_weight_grad", [&] {
    using S = scalar_t;
    const S *h0p = h0_.data_ptr<S>(), *hsp = hs_.data_ptr<S>();
    const auto row = [&](int64_t r) { return r < B ? h0p + r * H : hsp + (r - B) * H; };  // [h0; hs[:-1]]
    weight_grad<S>(row, T * B, H, blocks, N, dW.data_ptr<S>(), parts);
  });
  return dW;
}

// below (T, B, H), the input of a layer above the first, and dU as above: sum_t below_tᵀ du_t
// (H, sum N_i), the input weight's gradient.
Tensor input_weight_grad(const Tensor& below, at::TensorList dU, int64_t parts) {
  const int64_t T = below.size(0), B = below.size(1), H = below.size(2);
  const Tensor x = below.contiguous();
  auto [blocks, N] = column_blocks(dU, B);
  Tensor dW = at::empty({H, N}, below.options());
  AT_DISPATCH_FLOATING_TYPES(below.scalar_type(), "input_weight_grad", [&] {
    using S = scalar_t;
    const S* xp = x.data_ptr<S>();
    weight_grad<S>([&](int64_t r) { return xp + r * H; }, T * B, H, blocks, N, dW.data_ptr<S>(), parts);
  });
  return dW;
}

// x (T, B) characters, dA (T, B, N) the gradient of each a_t = W_xh[x_t] + b_h: returns dW_xh (V, N),
// each character's row the sum of dA where it was read, and db_h (N), in one pass over dA (rather
// than index_add_ and a sum, two passes and the first on one thread), each thread its columns.
std::tuple<Tensor, Tensor> input_grads(const Tensor& x, const Tensor& dA, int64_t V, int64_t parts) {
  const int64_t R = x.numel(), N = dA.size(-1);
  const Tensor x_ = x.contiguous().to(at::kLong), dA_ = dA.contiguous();
  Tensor dW = at::zeros({V, N}, dA.options()), db = at::zeros({N}, dA.options());
  AT_DISPATCH_FLOATING_TYPES(dA.scalar_type(), "input_grads", [&] {
    using S = scalar_t;
    const int64_t* xp = x_.data_ptr<int64_t>();
    const S* dap = dA_.data_ptr<S>();
    S *dWp = dW.data_ptr<S>(), *dbp = db.data_ptr<S>();
    in_shares(parts, N, [&](int64_t c0, int64_t c1, int64_t) {
      for (int64_t r = 0; r < R; ++r) {  // in order, as index_add_ adds
        add_into(dap + r * N, dbp, dWp + xp[r] * N, c0, c1);
      }
    });
  });
  return {dW, db};
}

TORCH_LIBRARY_FRAGMENT(charrnn, m) {
  m.def("recurrent_weight_grad", &recurrent_weight_grad);
  m.def("input_weight_grad", &input_weight_grad);
  m.def("input_grads", &input_grads);
}

}  // namespace charrnn
