#include "tracer/mempolicy.h"

#include <fcntl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <string_view>

#include "base/scoped_fd.h"

namespace snap {

namespace {

// The kernel's MPOL_* modes and flags (linux/mempolicy.h).
constexpr int kMpolPreferred = 1, kMpolBind = 2, kMpolInterleave = 3, kMpolLocal = 4,
              kMpolPreferredMany = 5, kMpolWeightedInterleave = 6;
constexpr int kMpolFStaticNodes = 1 << 15, kMpolFRelativeNodes = 1 << 14;

}  // namespace

std::string task_mempolicy(pid_t pid) {
  // Only the first line: the kernel walks the pages of what it prints.
  ScopedFd fd(::open(("/proc/" + std::to_string(pid) + "/numa_maps").c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return {};
  char buf[512];
  ssize_t n = ::read(fd.get(), buf, sizeof buf - 1);
  if (n <= 0) return {};
  std::string_view line(buf, static_cast<size_t>(n));
  line = line.substr(0, line.find('\n'));
  // "ADDRESS POLICY key=value..."; "prefer (many)" has a space of its own.
  const size_t sp = line.find(' ');
  if (sp == std::string_view::npos) return {};
  std::string_view rest = line.substr(sp + 1);
  size_t end = rest.find(' ');
  if (rest.starts_with("prefer (many)") || rest.starts_with("weighted interleave")) {
    end = rest.find(' ', rest.find(' ') + 1);
  }
  std::string policy(rest.substr(0, end));
  return policy == "default" ? std::string() : policy;
}

std::optional<MemPolicy> parse_mempolicy(const std::string& text) {
  static const std::pair<std::string_view, int> kModes[] = {
      {"prefer (many)", kMpolPreferredMany}, {"weighted interleave", kMpolWeightedInterleave},
      {"interleave", kMpolInterleave},       {"prefer", kMpolPreferred},
      {"bind", kMpolBind},                   {"local", kMpolLocal}};
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
  if (t.starts_with("=static")) {
    p.flags |= kMpolFStaticNodes;
    t.remove_prefix(7);
  } else if (t.starts_with("=relative")) {
    p.flags |= kMpolFRelativeNodes;
    t.remove_prefix(9);
  }
  if (t.empty()) return p.mode == kMpolLocal ? std::optional<MemPolicy>(p) : std::nullopt;
  if (t[0] != ':') return std::nullopt;
  auto nodes = parse_cpu_list(t.substr(1));
  if (!nodes || nodes->empty()) return std::nullopt;
  p.nodes = *nodes;
  return p;
}

CpuList allowed_memory_nodes() {
  constexpr unsigned long kMaxNode = 1024, kMemsAllowed = 4;  // MPOL_F_MEMS_ALLOWED
  unsigned long mask[kMaxNode / (8 * sizeof(unsigned long))] = {};
  CpuList out;
  if (::syscall(SYS_get_mempolicy, nullptr, mask, kMaxNode, nullptr, kMemsAllowed) != 0) return out;
  for (uint32_t n = 0; n < kMaxNode; n++)
    if (mask[n / (8 * sizeof(unsigned long))] & (1ul << (n % (8 * sizeof(unsigned long)))))
      out.push_back(n);
  return out;
}

}  // namespace snap
