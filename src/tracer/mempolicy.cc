#include "tracer/mempolicy.h"

#include <fcntl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <iterator>
#include <string_view>

#include "base/scoped_fd.h"
#include "tracer/proc.h"

namespace snap {

namespace {

// The kernel's MPOL_* modes and flags (linux/mempolicy.h).
constexpr int kMpolDefault = 0, kMpolPreferred = 1, kMpolBind = 2, kMpolInterleave = 3, kMpolLocal = 4,
              kMpolPreferredMany = 5, kMpolWeightedInterleave = 6;
constexpr int kMpolFStaticNodes = 1 << 15, kMpolFRelativeNodes = 1 << 14,
              kMpolFNumaBalancing = 1 << 13;

// The policy field of a numa_maps line ("ADDRESS POLICY key=value..."),
// "default" given as empty; "prefer (many)" and "weighted interleave" have
// a space of their own. Sets `start` to the line's address.
std::optional<std::string> line_policy(std::string_view line, uint64_t* start = nullptr) {
  const size_t sp = line.find(' ');
  if (sp == std::string_view::npos || sp == 0) return std::nullopt;
  if (start) {
    uint64_t v = 0;
    auto [end, ec] = std::from_chars(line.data(), line.data() + sp, v, 16);
    if (ec != std::errc() || end != line.data() + sp) return std::nullopt;
    *start = v;
  }
  std::string_view rest = line.substr(sp + 1);
  size_t end = rest.find(' ');
  if (rest.starts_with("prefer (many)") || rest.starts_with("weighted interleave"))
    end = rest.find(' ', rest.find(' ') + 1);
  std::string policy(rest.substr(0, end));
  if (policy == "default") policy.clear();
  return policy;
}

}  // namespace

std::string task_mempolicy(pid_t pid) {
  // Only the first line: the kernel walks the pages of what it prints.
  ScopedFd fd(::open(("/proc/" + std::to_string(pid) + "/numa_maps").c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return {};
  char buf[512];
  ssize_t n = ::read(fd.get(), buf, sizeof buf - 1);
  if (n <= 0) return {};
  std::string_view line(buf, static_cast<size_t>(n));
  return line_policy(line.substr(0, line.find('\n'))).value_or(std::string());
}

namespace {

// Calls fn(start, policy, line) for each line of numa_maps text.
template <typename Fn>
void each_line(std::string_view text, Fn fn) {
  while (!text.empty()) {
    const size_t nl = text.find('\n');
    const std::string_view line = text.substr(0, nl);
    uint64_t start = 0;
    if (auto policy = line_policy(line, &start)) fn(start, std::move(*policy), line);
    if (nl == std::string_view::npos) break;
    text.remove_prefix(nl + 1);
  }
}

}  // namespace

std::map<uint64_t, std::string> numa_maps_policies(std::string_view text) {
  std::map<uint64_t, std::string> out;
  each_line(text, [&](uint64_t start, std::string policy, std::string_view) {
    out[start] = std::move(policy);
  });
  return out;
}

std::map<uint64_t, uint64_t> numa_maps_huge_page_sizes(std::string_view text) {
  constexpr std::string_view kKey = "kernelpagesize_kB=";
  std::map<uint64_t, uint64_t> out;
  each_line(text, [&](uint64_t start, const std::string&, std::string_view line) {
    const size_t k = line.find(kKey);
    uint64_t kib = 0;
    if (line.find(" huge ") == std::string_view::npos || k == std::string_view::npos ||
        std::from_chars(line.data() + k + kKey.size(), line.data() + line.size(), kib).ec !=
            std::errc())
      return;
    out[start] = kib << 10;
  });
  return out;
}

std::map<uint64_t, std::string> mapping_mempolicies(pid_t pid) {
  auto text = proc::try_read_file("/proc/" + std::to_string(pid) + "/numa_maps");
  return text ? numa_maps_policies(*text) : std::map<uint64_t, std::string>{};
}

void record_mapping_mempolicies(const std::map<uint64_t, std::string>& policies,
                                const std::string& task_policy,
                                std::vector<image::Mapping>& mappings) {
  for (auto& m : mappings) {
    auto it = policies.find(m.start);
    if (it == policies.end()) continue;
    m.mempolicy = it->second == task_policy ? std::string() : it->second;
  }
}

std::optional<MemPolicy> parse_mempolicy(const std::string& text) {
  static const std::pair<std::string_view, int> kModes[] = {
      {"prefer (many)", kMpolPreferredMany}, {"weighted interleave", kMpolWeightedInterleave},
      {"interleave", kMpolInterleave},       {"prefer", kMpolPreferred},
      {"bind", kMpolBind},                   {"local", kMpolLocal},
      {"default", kMpolDefault}};
  std::string_view t = text;
  MemPolicy p;
  bool found = false;
  for (const auto& [name, mode] : kModes)
    if (t.starts_with(name)) {
      p.mode = mode;
      t.remove_prefix(name.size());
      found = true;
      break;
    }
  if (!found) return std::nullopt;
  // "=static", "=relative", "=balancing", "=static|balancing".
  if (t.starts_with("=")) {
    t.remove_prefix(1);
    for (bool more = true; more;) {
      if (t.starts_with("static")) {
        p.flags |= kMpolFStaticNodes;
        t.remove_prefix(6);
      } else if (t.starts_with("relative")) {
        p.flags |= kMpolFRelativeNodes;
        t.remove_prefix(8);
      } else if (t.starts_with("balancing")) {
        p.flags |= kMpolFNumaBalancing;
        t.remove_prefix(9);
      } else {
        return std::nullopt;
      }
      more = t.starts_with("|");
      if (more) t.remove_prefix(1);
    }
  }
  if (t.empty())
    return p.mode == kMpolLocal || p.mode == kMpolDefault ? std::optional<MemPolicy>(p)
                                                          : std::nullopt;
  if (p.mode == kMpolDefault) return std::nullopt;
  if (t[0] != ':') return std::nullopt;
  auto nodes = parse_cpu_list(t.substr(1));
  if (!nodes || nodes->empty()) return std::nullopt;
  p.nodes = *nodes;
  return p;
}

CpuList nodes_of(const uint64_t* mask, size_t words) {
  CpuList out;
  for (uint32_t n = 0; n < words * 64; n++)
    if (mask[n / 64] & (uint64_t{1} << (n % 64))) out.push_back(n);
  return out;
}

std::vector<uint64_t> nodemask_of(const CpuList& nodes, size_t words) {
  if (!nodes.empty()) words = std::max<size_t>(words, nodes.back() / 64 + 1);
  std::vector<uint64_t> mask(words, 0);
  for (uint32_t n : nodes) mask[n / 64] |= uint64_t{1} << (n % 64);
  return mask;
}

MemPolicy mempolicy_of(int mode_and_flags, const uint64_t* mask, size_t words) {
  MemPolicy p;
  p.flags = mode_and_flags & (kMpolFStaticNodes | kMpolFRelativeNodes | kMpolFNumaBalancing);
  p.mode = mode_and_flags & ~p.flags;
  p.nodes = nodes_of(mask, words);
  return p;
}

std::string mempolicy_text(const MemPolicy& p) {
  static const char* const kNames[] = {"default", "prefer", "bind", "interleave", "local",
                                       "prefer (many)", "weighted interleave"};
  std::string out = p.mode >= 0 && p.mode < static_cast<int>(std::size(kNames))
                        ? kNames[p.mode]
                        : "mode " + std::to_string(p.mode);  // parse_mempolicy refuses it
  std::string flags;
  if (p.flags & kMpolFStaticNodes) flags = "static";
  else if (p.flags & kMpolFRelativeNodes) flags = "relative";
  if (p.flags & kMpolFNumaBalancing) flags += flags.empty() ? "balancing" : "|balancing";
  if (!flags.empty()) out += "=" + flags;
  if (!p.nodes.empty()) out += ":" + cpu_list_text(p.nodes);
  return out;
}

CpuList allowed_memory_nodes() {
  constexpr unsigned long kMaxNode = 1024, kMemsAllowed = 4;  // MPOL_F_MEMS_ALLOWED
  uint64_t mask[kMaxNode / 64] = {};
  if (::syscall(SYS_get_mempolicy, nullptr, mask, kMaxNode, nullptr, kMemsAllowed) != 0) return {};
  return nodes_of(mask, kMaxNode / 64);
}

}  // namespace snap
