#include "base/parallel.h"

#include <algorithm>
#include <atomic>
#include <exception>
#include <thread>
#include <utility>
#include <vector>

namespace snap {

void parallel_for(size_t n, unsigned threads, const std::function<void(size_t)>& fn) {
  threads = std::max(1u, threads);
  std::vector<std::pair<size_t, std::exception_ptr>> errors(threads, {SIZE_MAX, nullptr});
  std::atomic<bool> failed{false};
  auto work = [&](unsigned k) {
    for (size_t i = k; i < n && !failed.load(std::memory_order_relaxed); i += threads) {
      try {
        fn(i);
      } catch (...) {
        errors[k] = {i, std::current_exception()};
        failed = true;
        return;
      }
    }
  };
  {
    std::vector<std::jthread> helpers;
    for (unsigned k = 1; k < threads; k++) helpers.emplace_back(work, k);
    work(0);
  }
  auto first = std::min_element(errors.begin(), errors.end(),
                                [](const auto& a, const auto& b) { return a.first < b.first; });
  if (first->second) std::rethrow_exception(first->second);
}

}  // namespace snap
