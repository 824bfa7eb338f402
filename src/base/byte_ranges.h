// Byte ranges [first, end) of a file or an address space, as sorted lists.
#pragma once

#include <algorithm>
#include <cstdint>
#include <utility>
#include <vector>

namespace snap {

using ByteRange = std::pair<uint64_t, uint64_t>;  // [first, end)

// `r` sorted, overlapping or touching ranges made one.
inline std::vector<ByteRange> merge_ranges(std::vector<ByteRange> r) {
  std::sort(r.begin(), r.end());
  std::vector<ByteRange> out;
  for (const auto& x : r)
    if (!out.empty() && x.first <= out.back().second)
      out.back().second = std::max(out.back().second, x.second);
    else
      out.push_back(x);
  return out;
}

// The parts of `ranges` that `minus` does not cover (both merged:
// merge_ranges).
inline std::vector<ByteRange> subtract_ranges(const std::vector<ByteRange>& ranges,
                                              const std::vector<ByteRange>& minus) {
  std::vector<ByteRange> out;
  size_t j = 0;
  for (auto [a, b] : ranges) {
    while (j < minus.size() && minus[j].second <= a) j++;
    for (size_t k = j; k < minus.size() && minus[k].first < b && a < b; k++) {
      if (minus[k].first > a) out.push_back({a, minus[k].first});
      a = std::max(a, minus[k].second);
    }
    if (a < b) out.push_back({a, b});
  }
  return out;
}

}  // namespace snap
