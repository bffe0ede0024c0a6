// What the tests ask of team.h (tests/test_native.py): that its shares run on threads of their
// own, meet where they should, and that one share's failure reaches the caller instead of leaving
// the others waiting.
#include <torch/library.h>

#include <mutex>
#include <set>
#include <stdexcept>

#include "team.h"

namespace charrnn {

// `parts` shares meet `steps` times; at each meeting every share must see every other share's
// count for that step. Share `fail` (none if negative) throws at step 1. Returns how many
// distinct threads ran shares.
int64_t team_check(int64_t parts, int64_t steps, int64_t fail) {
  std::vector<int64_t> counts(parts, 0);
  std::set<std::thread::id> threads;
  std::mutex lock;
  in_team(parts, [&](int64_t first, int64_t last, const auto& meet) {
    {
      std::lock_guard<std::mutex> guard(lock);
      threads.insert(std::this_thread::get_id());
    }
    for (int64_t step = 0; step < steps; ++step) {
      for (int64_t p = first; p < last; ++p) {
        if (p == fail && step == 1) throw std::runtime_error("share " + std::to_string(p) + " failed");
        counts[p] = step + 1;
      }
      meet();
      for (int64_t q = 0; q < parts; ++q) {
        TORCH_CHECK(counts[q] >= step + 1, "share ", q, " had not finished step ", step, " at the meeting");
      }
      meet();  // everyone has checked before anyone moves on
    }
  });
  return static_cast<int64_t>(threads.size());
}

TORCH_LIBRARY_FRAGMENT(charrnn, m) {
  m.def("team_check", &team_check);
}

}  // namespace charrnn
