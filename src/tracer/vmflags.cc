#include "tracer/vmflags.h"

#include <sys/sysmacros.h>

#include <algorithm>

#include <fmt/core.h>

#include "base/error.h"

namespace snap::proc {

namespace {

// Flags a fork does not give the child: they cannot be confirmed from the
// snapshot and stay as the hints (checked against VmLck) said.
constexpr std::string_view kNotInherited[] = {"lo", "lf", "um", "uw", "ui"};

bool same_mapping(const MapEntry& e, const image::Mapping& m) {
  const int prot = (e.r ? 1 : 0) | (e.w ? 2 : 0) | (e.x ? 4 : 0);
  return e.start == m.start && e.end == m.end && prot == m.prot && e.shared == m.shared &&
         e.offset == m.pgoff && makedev(e.dev_major, e.dev_minor) == m.dev &&
         e.inode == m.inode && e.path == m.path;
}

// /proc lists mappings by address already: sorted only if they are not.
void sort_by_start(std::vector<MapEntry>& entries) {
  auto by_start = [](const MapEntry& a, const MapEntry& b) { return a.start < b.start; };
  if (!std::is_sorted(entries.begin(), entries.end(), by_start))
    std::sort(entries.begin(), entries.end(), by_start);
}

// The entry of `sorted` (by start, as /proc lists them) that starts at `start`.
const MapEntry* find_at(const std::vector<MapEntry>& sorted, uint64_t start) {
  auto it = std::lower_bound(sorted.begin(), sorted.end(), start,
                             [](const MapEntry& e, uint64_t s) { return e.start < s; });
  return it != sorted.end() && it->start == start ? &*it : nullptr;
}

// The entry of `sorted` that holds all of [start, end): the mapping itself,
// or one the kernel merged it into after the mappings were read (snap's
// userfaultfd registration of a grown neighbour, while the job was stopped,
// gives both the same flags).
const MapEntry* find_covering(const std::vector<MapEntry>& sorted, uint64_t start, uint64_t end) {
  auto it = std::upper_bound(sorted.begin(), sorted.end(), start,
                             [](uint64_t s, const MapEntry& e) { return s < e.start; });
  if (it == sorted.begin()) return nullptr;
  --it;
  return it->start <= start && end <= it->end ? &*it : nullptr;
}

}  // namespace

VmFlagsHints VmFlagsHints::read(const std::vector<pid_t>& pids) {
  VmFlagsHints hints;
  for (pid_t pid : pids) {
    try {
      std::string maps_text;
      std::vector<MapEntry> smaps = read_smaps(pid, &maps_text);
      hints.add(pid, std::move(smaps), std::move(maps_text));
    } catch (const std::exception&) {
      // Gone or not readable: the dump itself will say what is wrong.
    }
  }
  return hints;
}

void VmFlagsHints::add(pid_t pid, std::vector<MapEntry> smaps, std::string maps_text) {
  sort_by_start(smaps);
  by_pid_[pid] = std::move(smaps);
  maps_text_[pid] = std::move(maps_text);
}

std::optional<std::vector<MapEntry>> VmFlagsHints::take_if_same(pid_t pid,
                                                                std::string_view maps_text,
                                                                uint64_t locked_bytes) {
  auto text = maps_text_.find(pid);
  auto it = by_pid_.find(pid);
  if (text == maps_text_.end() || it == by_pid_.end() || text->second.empty() ||
      text->second != maps_text)
    return std::nullopt;
  uint64_t locked = 0;
  for (const auto& e : it->second)
    if (image::has_vmflag(e.vmflags, "lo")) locked += e.end - e.start;
  if (locked != locked_bytes) return std::nullopt;
  std::vector<MapEntry> out = std::move(it->second);
  by_pid_.erase(it);
  maps_text_.erase(text);
  applied_.insert(pid);
  return out;
}

size_t VmFlagsHints::mapping_count() const {
  size_t n = 0;
  for (const auto& [pid, entries] : by_pid_) n += entries.size();
  return n;
}

size_t VmFlagsHints::maps_text_size(pid_t pid) const {
  auto it = maps_text_.find(pid);
  return it == maps_text_.end() ? 0 : it->second.size();
}

bool VmFlagsHints::apply(pid_t pid, std::vector<image::Mapping>& mappings,
                         uint64_t locked_bytes) {
  auto it = by_pid_.find(pid);
  if (it == by_pid_.end()) return false;
  std::vector<const std::string*> flags;
  flags.reserve(mappings.size());
  uint64_t locked = 0;
  for (const auto& m : mappings) {
    const MapEntry* e = find_at(it->second, m.start);
    if (!e || !same_mapping(*e, m)) return false;
    if (image::has_vmflag(e->vmflags, "lo")) locked += m.end - m.start;
    flags.push_back(&e->vmflags);
  }
  if (locked != locked_bytes) return false;
  for (size_t i = 0; i < mappings.size(); i++) mappings[i].vmflags = *flags[i];
  applied_.insert(pid);
  return true;
}

void confirm_vmflags(pid_t pid, std::vector<image::Mapping>& mappings,
                     std::vector<MapEntry> snapshot,
                     const std::function<bool(const image::Mapping&)>& read_from_job) {
  sort_by_start(snapshot);
  for (auto& m : mappings) {
    const bool from_job = read_from_job(m);
    const MapEntry* c = find_covering(snapshot, m.start, m.end);
    if (!from_job && (!c || image::has_vmflag(c->vmflags, "wf")))
      throw Error(fmt::format(
          "pid {}: mapping {:#x}-{:#x} became {} while snap was stopping the job, so its memory "
          "was not read as it was; nothing was written: run the dump again",
          pid, m.start, m.end, c ? "MADV_WIPEONFORK" : "MADV_DONTFORK (or was remapped)"));
    // Not in the snapshot and read from the job: MADV_DONTFORK, or a sparse
    // reservation kept out of the fork; the hint's flags stay.
    if (!c) continue;
    std::string flags = c->vmflags;
    for (auto f : kNotInherited)
      if (image::has_vmflag(m.vmflags, f) && !image::has_vmflag(flags, f))
        flags += " " + std::string(f);
    m.vmflags = std::move(flags);
  }
}

void reread_vmflags(pid_t pid, std::vector<image::Mapping>& mappings) {
  std::vector<MapEntry> now = read_smaps(pid);
  sort_by_start(now);
  for (auto& m : mappings) {
    const MapEntry* e = find_at(now, m.start);
    if (!e || e->end != m.end)
      throw Error(fmt::format("pid {}: mapping {:#x}-{:#x} changed while the job was stopped", pid,
                              m.start, m.end));
    m.vmflags = e->vmflags;
  }
}

}  // namespace snap::proc
