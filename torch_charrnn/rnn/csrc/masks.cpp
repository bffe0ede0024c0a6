// Dropout's and zoneout's masks on a CPU, from one seed: the arithmetic of
// torch_charrnn/rnn/bptt.py's `hashed_lanes`, which computes the same masks in torch where these
// kernels are not built. Value i of the masks is `below` where lane i % 4 (16 bits) of
// splitmix64(seed + (i / 4 + 1) * golden) is below `threshold` (of 65536), `above` elsewhere: a
// Bernoulli(threshold / 65536) draw per value, four from each 64-bit hash, with the threads sharing
// out the hashes (PyTorch's generator draws one number at a time, on one thread: at the configs'
// shape a window's masks took it 10 ms a state, a quarter of the tanh cell's step).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cstdint>
#include <vector>

namespace charrnn {

using at::Tensor;

inline uint64_t splitmix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// Masks of `shape`, with `like`'s dtype, on the CPU.
Tensor bernoulli_masks(std::vector<int64_t> shape, const Tensor& like, int64_t seed, int64_t threshold,
                       double below, double above) {
  Tensor out = at::empty(shape, like.options().device(at::kCPU));
  const int64_t n = out.numel(), words = (n + 3) / 4;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, out.scalar_type(), "bernoulli_masks", [&] {
    using S = scalar_t;
    S* p = out.data_ptr<S>();
    const S lo = static_cast<S>(below), hi = static_cast<S>(above);
    const uint64_t key = static_cast<uint64_t>(seed), thr = static_cast<uint64_t>(threshold);
    at::parallel_for(0, words, 4096, [&](int64_t w0, int64_t w1) {
      for (int64_t w = w0; w < w1; ++w) {
        const uint64_t z = splitmix64(key + static_cast<uint64_t>(w + 1) * 0x9E3779B97F4A7C15ull);
        for (int64_t lane = 0; lane < 4 && 4 * w + lane < n; ++lane) {
          p[4 * w + lane] = ((z >> (16 * lane)) & 0xFFFF) < thr ? lo : hi;
        }
      }
    });
  });
  return out;
}

TORCH_LIBRARY_FRAGMENT(charrnn, m) { m.def("bernoulli_masks", &bernoulli_masks); }

}  // namespace charrnn
