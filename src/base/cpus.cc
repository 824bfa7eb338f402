#include "base/cpus.h"

#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstdlib>
#include <memory>

namespace snap {

namespace {

using CpuSet = std::unique_ptr<cpu_set_t, void (*)(cpu_set_t*)>;

CpuSet alloc_set(size_t ncpus) {
  return CpuSet(CPU_ALLOC(ncpus), [](cpu_set_t* s) { CPU_FREE(s); });
}

// sched_getaffinity(tid) into a set large enough for any machine this runs
// on (CPU_SETSIZE is 1024); calls `use` with it and its size.
template <typename F>
bool with_affinity(pid_t tid, F use) {
  for (size_t ncpus = CPU_SETSIZE; ncpus <= (1u << 16); ncpus *= 4) {
    const size_t size = CPU_ALLOC_SIZE(ncpus);
    CpuSet set = alloc_set(ncpus);
    if (!set) return false;
    CPU_ZERO_S(size, set.get());
    if (::sched_getaffinity(tid, size, set.get()) == 0) {
      use(set.get(), size, ncpus);
      return true;
    }
    if (errno != EINVAL) return false;
  }
  return false;
}

}  // namespace

unsigned usable_cpus() {
  int n = 0;
  if (with_affinity(0, [&](cpu_set_t* set, size_t size, size_t) { n = CPU_COUNT_S(size, set); }))
    return n > 0 ? static_cast<unsigned>(n) : 1;
  long online = ::sysconf(_SC_NPROCESSORS_ONLN);
  return online > 0 ? static_cast<unsigned>(online) : 1;
}

std::string cpu_list_text(const CpuList& cpus) {
  std::string out;
  for (size_t i = 0; i < cpus.size();) {
    size_t j = i;
    while (j + 1 < cpus.size() && cpus[j + 1] == cpus[j] + 1) j++;
    if (!out.empty()) out += ',';
    out += std::to_string(cpus[i]);
    if (j > i) out += '-' + std::to_string(cpus[j]);
    i = j + 1;
  }
  return out;
}

std::optional<CpuList> parse_cpu_list(std::string_view text) {
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.remove_suffix(1);
  CpuList out;
  auto number = [](std::string_view s, uint32_t& v) {
    auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    return ec == std::errc() && end == s.data() + s.size() && !s.empty();
  };
  while (!text.empty()) {
    const size_t comma = text.find(',');
    std::string_view part = text.substr(0, comma);
    text = comma == std::string_view::npos ? std::string_view() : text.substr(comma + 1);
    const size_t dash = part.find('-');
    uint32_t from = 0, to = 0;
    if (!number(part.substr(0, dash), from)) return std::nullopt;
    to = from;
    if (dash != std::string_view::npos && !number(part.substr(dash + 1), to)) return std::nullopt;
    if (to < from || to - from > (1u << 16)) return std::nullopt;
    for (uint32_t c = from; c <= to; c++) out.push_back(c);
  }
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

CpuList thread_cpus(pid_t tid) {
  CpuList out;
  with_affinity(tid, [&](cpu_set_t* set, size_t size, size_t ncpus) {
    for (size_t c = 0; c < ncpus; c++)
      if (CPU_ISSET_S(c, size, set)) out.push_back(static_cast<uint32_t>(c));
  });
  return out;
}

int set_thread_cpus(pid_t tid, const CpuList& cpus) {
  const size_t ncpus = std::max<size_t>(CPU_SETSIZE, cpus.empty() ? 0 : cpus.back() + 1);
  const size_t size = CPU_ALLOC_SIZE(ncpus);
  CpuSet set = alloc_set(ncpus);
  if (!set) return ENOMEM;
  CPU_ZERO_S(size, set.get());
  for (uint32_t c : cpus) CPU_SET_S(c, size, set.get());
  return ::sched_setaffinity(tid, size, set.get()) == 0 ? 0 : errno;
}

}  // namespace snap
