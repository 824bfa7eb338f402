#include "tracer/devices.h"

#include <sys/stat.h>
#include <sys/sysmacros.h>

#include <array>
#include <charconv>
#include <map>
#include <mutex>
#include <string_view>

#include <fmt/core.h>

#include "base/error.h"
#include "tracer/proc.h"

namespace snap {

namespace {

struct Family {
  std::vector<std::string_view> names;  // drivers; a name ending in '*' is a prefix
  const char* what;                     // with {} for the driver's name
  const char* hint;
};

const std::array<Family, 5>& families() {
  static const std::array<Family, 5> all{{
      {{"nvidia*", "drm", "kfd", "accel", "habanalabs", "dxg"},
       "a GPU or accelerator (driver {}): its memory and contexts live in the device and its "
       "driver, which snap cannot save",
       "dump the job where it holds no GPU context (before it starts using the GPU, or once it "
       "has released it), or checkpoint a part of the job that runs on CPUs"},
      {{"infiniband_verbs", "infiniband_mad", "infiniband_cm", "rdma_cm", "uverbs*", "hfi1", "qib",
        "ipath", "cxi*"},
       "an RDMA adapter (driver {}: InfiniBand, Omni-Path, Slingshot): its queues and registered "
       "memory live in the adapter, which snap cannot save",
       "run the job's MPI (or other RDMA user) over TCP and shared memory for a checkpointable run "
       "(Open MPI: --mca pml ob1 --mca btl tcp,self,vader; UCX: UCX_TLS=tcp,self,sm; libfabric: "
       "FI_PROVIDER=tcp)"},
      {{"xpmem", "knem"},
       "a single-copy module of MPI (driver {}): its mappings of other processes' memory live in "
       "the driver, which snap cannot save",
       "configure the MPI library not to use XPMEM or KNEM (copies through CMA or shared memory "
       "instead) for a checkpointable run"},
      {{"fuse", "cuse"},
       "the connection behind a FUSE file system a process of the job serves (driver {}: "
       "squashfuse, sshfs): the mount ends with that process",
       "mount that file system outside the job (or unmount it) before the dump"},
      {{"kvm", "vfio", "vhost-net", "vhost-vsock", "vhost-scsi"},
       "a virtual machine or a device passed through to one (driver {})",
       "snap cannot save it: checkpoint the virtual machine with its own tools"},
  }};
  return all;
}

bool matches(std::string_view pattern, std::string_view name) {
  if (pattern.ends_with('*')) return name.starts_with(pattern.substr(0, pattern.size() - 1));
  return pattern == name;
}

// "NUMBER NAME" lines into number -> name; for /proc/devices, only those of
// its "Character devices:" part.
std::map<unsigned, std::string> numbered_names(const std::string& text, bool character_part) {
  std::map<unsigned, std::string> out;
  bool in = !character_part;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t end = text.find('\n', pos);
    if (end == std::string::npos) end = text.size();
    std::string_view line(text.data() + pos, end - pos);
    pos = end + 1;
    if (line.starts_with("Character devices:")) in = true;
    else if (line.starts_with("Block devices:")) in = false;
    if (!in) continue;
    while (!line.empty() && line.front() == ' ') line.remove_prefix(1);
    unsigned n = 0;
    auto [p, ec] = std::from_chars(line.data(), line.data() + line.size(), n);
    if (ec != std::errc() || p == line.data() + line.size() || *p != ' ') continue;
    out[n] = std::string(line.substr(static_cast<size_t>(p - line.data()) + 1));
  }
  return out;
}

constexpr unsigned kMiscMajor = 10;

}  // namespace

namespace {

std::optional<StatefulDevice> classify(const std::string& driver) {
  for (const Family& f : families())
    for (std::string_view name : f.names)
      if (matches(name, driver))
        return StatefulDevice{fmt::format(fmt::runtime(f.what), driver), f.hint};
  return std::nullopt;
}

// The driver of `rdev` in the parsed tables; empty when not there.
std::string driver_of(dev_t rdev, const std::map<unsigned, std::string>& devices,
                      const std::map<unsigned, std::string>& misc) {
  const auto& table = major(rdev) == kMiscMajor ? misc : devices;
  auto it = table.find(major(rdev) == kMiscMajor ? minor(rdev) : major(rdev));
  return it == table.end() ? std::string() : it->second;
}

}  // namespace

std::optional<StatefulDevice> stateful_device(dev_t rdev, const std::string& devices_text,
                                              const std::string& misc_text) {
  std::string driver = driver_of(rdev, numbered_names(devices_text, true),
                                 numbered_names(misc_text, false));
  if (driver.empty()) return std::nullopt;
  return classify(driver);
}

std::optional<StatefulDevice> stateful_device(dev_t rdev) {
  // Read once, and again when a number is not there: a driver registers
  // its numbers when it is loaded (nvidia-uvm at a job's first CUDA call),
  // maybe after a long-lived snap run read the tables.
  static std::mutex mu;
  static std::map<unsigned, std::string> devices, misc;
  static bool read = false;
  std::lock_guard lock(mu);
  std::string driver = read ? driver_of(rdev, devices, misc) : std::string();
  if (driver.empty()) {
    devices = numbered_names(proc::try_read_file("/proc/devices").value_or(""), true);
    misc = numbered_names(proc::try_read_file("/proc/misc").value_or(""), false);
    read = true;
    driver = driver_of(rdev, devices, misc);
  }
  if (driver.empty()) return std::nullopt;
  return classify(driver);
}

void refuse_stateful_device_fd(pid_t pid, int fd, const std::string& path, dev_t rdev) {
  if (auto d = stateful_device(rdev))
    throw Error(fmt::format("pid {} fd {} ({}) is {}", pid, fd, path, d->what), d->hint);
}

void refuse_stateful_device_mappings(pid_t pid, const std::vector<image::Mapping>& mappings) {
  for (const auto& m : mappings) {
    if (m.kind != image::MappingKind::File || !m.path.starts_with("/dev/") ||
        m.path.ends_with(" (deleted)"))
      continue;
    struct stat st {};
    // As the process sees it (its own mount namespace, a container's /dev).
    if (::stat(fmt::format("/proc/{}/root{}", pid, m.path).c_str(), &st) != 0 ||
        !S_ISCHR(st.st_mode))
      continue;
    if (auto d = stateful_device(st.st_rdev))
      throw Error(fmt::format("pid {} mapping {:#x}-{:#x} ({}) is {}", pid, m.start, m.end, m.path,
                              d->what),
                  d->hint);
  }
}

}  // namespace snap
