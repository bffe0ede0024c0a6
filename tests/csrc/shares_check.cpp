// Test-only, built by tests/test_native.py beside the shipped kernels: what the tests ask of
// shares.h, that its shares cover every row once and run at once on threads of their own, PyTorch's.
#include <torch/library.h>

#include <mutex>
#include <set>
#include <thread>
#include <vector>

#include "shares.h"  // torch_charrnn/rnn/csrc/, on the include path

namespace charrnn {

// Shares n rows out in `parts` and checks that each row was given to exactly one share. Returns
// how many distinct threads ran shares.
int64_t shares_check(int64_t parts, int64_t n) {
  std::vector<int64_t> given(n, 0);
  std::set<std::thread::id> threads;
  std::mutex lock;
  in_shares(parts, n, [&](int64_t begin, int64_t end, int64_t) {
    std::lock_guard<std::mutex> guard(lock);
    threads.insert(std::this_thread::get_id());
    for (int64_t r = begin; r < end; ++r) ++given[r];
  });
  for (int64_t r = 0; r < n; ++r) TORCH_CHECK(given[r] == 1, "row ", r, " was given to ", given[r], " shares");
  return static_cast<int64_t>(threads.size());
}

TORCH_LIBRARY_FRAGMENT(charrnn, m) {
  m.def("shares_check", &shares_check);
}

}  // namespace charrnn
