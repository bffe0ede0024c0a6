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

#include <algorithm>
#include <cstdint>
#include <vector>

namespace charrnn {

using at::Tensor;

inline uint64_t splitmix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// Values [4 * w0, min(4 * w1, n)) of the masks into p: a block of hashes split into their 16-bit
// lanes, then the block's values from the lanes, two loops the compiler vectorizes (everything they
// read a value, not a reference that a store to p might alias)
template <typename S>
void fill_masks(S* p, int64_t w0, int64_t w1, int64_t n, uint64_t key, uint64_t threshold, S below, S above) {
  constexpr int64_t WORDS = 64;
  uint16_t lanes[4 * WORDS];
  for (int64_t b = w0; b < w1; b += WORDS) {
    const int64_t words = std::min(WORDS, w1 - b), values = std::min(4 * words, n - 4 * b);
    for (int64_t j = 0; j < words; ++j) {
      const uint64_t z = splitmix64(key + static_cast<uint64_t>(b + j + 1) * 0x9E3779B97F4A7C15ull);
      for (int lane = 0; lane < 4; ++lane) lanes[4 * j + lane] = static_cast<uint16_t>(z >> (16 * lane));
    }
    S* q = p + 4 * b;
    for (int64_t i = 0; i < values; ++i) q[i] = lanes[i] < threshold ? below : above;
  }
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
    at::parallel_for(0, words, 4096, [=](int64_t w0, int64_t w1) { fill_masks(p, w0, w1, n, key, thr, lo, hi); });
  });
  return out;
}

TORCH_LIBRARY_FRAGMENT(charrnn, m) { m.def("bernoulli_masks", &bernoulli_masks); }

}  // namespace charrnn
