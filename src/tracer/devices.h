// Character devices whose state lives in their driver, not in the process:
// a GPU's memory and contexts, an RDMA adapter's queues and registered
// memory (InfiniBand, Omni-Path, Slingshot), MPI's single-copy kernel
// modules, the connection behind a FUSE mount, a virtual machine. A restore
// that reopened such a device by its path would give the job a fresh one,
// not its own: the job would fail later, or worse. A dump of a job that
// holds one (an fd or a mapping) is refused, saying which and what to do.
// Which driver owns a device number comes from /proc/devices (and
// /proc/misc for the misc devices' major 10).
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>
#include <vector>

#include "image/checkpoint.h"

namespace snap {

struct StatefulDevice {
  std::string what;  // "a GPU (driver nvidia-uvm)"
  std::string hint;  // what to do instead
};

// The class of character device `rdev` when its state lives in its driver;
// nullopt for others (memory devices, terminals, ...). `driver_names` maps
// a major to its driver's name, and a misc minor (major 10) to its name;
// the default reads this machine's /proc/devices and /proc/misc once.
std::optional<StatefulDevice> stateful_device(dev_t rdev);
std::optional<StatefulDevice> stateful_device(dev_t rdev, const std::string& devices_text,
                                              const std::string& misc_text);

// Throws Error naming the pid, the fd and the device when fd `fd` of `pid`
// (a character device, number `rdev`, at `path`) is a stateful one.
void refuse_stateful_device_fd(pid_t pid, int fd, const std::string& path, dev_t rdev);
// The same for `pid`'s mappings of character devices (a file under /dev,
// as the process sees it).
void refuse_stateful_device_mappings(pid_t pid, const std::vector<image::Mapping>& mappings);

}  // namespace snap
