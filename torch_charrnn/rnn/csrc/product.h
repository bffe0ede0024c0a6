// The recurrent product x @ W + add for a weight fixed over a window (torch_charrnn/rnn/products.py
// is its Python twin and says why): oneDNN's packed product when the caller prepared `packed`
// (CPU, float32), addmm otherwise.
#pragma once

#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>

#include <optional>

namespace charrnn {

using at::Tensor;

struct Product {
  Tensor W;                       // (K, N)
  std::optional<Tensor> packed;   // W reordered for oneDNN, or none

  Tensor operator()(const Tensor& x, const Tensor& add) const {
    if (!packed) return at::addmm(add, x, W);
    static auto linear_add =
        c10::Dispatcher::singleton()
            .findSchemaOrThrow("mkldnn::_linear_pointwise", "binary")
            .typed<Tensor(const Tensor&, const Tensor&, const Tensor&, const std::optional<Tensor>&,
                          c10::string_view)>();
    return linear_add.call(x, add, *packed, std::nullopt, "add");
  }
};

}  // namespace charrnn
