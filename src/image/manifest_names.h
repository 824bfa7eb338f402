// The names the manifest gives the image's enums (shared by the manifest's
// writer, manifest.cc, and its reader, manifest_read.cc), indexed by the
// enum value. Internal to src/image.
#pragma once

namespace snap::image {

inline constexpr const char* kMappingKindNames[] = {"anonymous", "shared_anon", "file",
                                                    "heap",      "stack",       "vdso",
                                                    "vvar",      "vvar_vclock", "vsyscall",
                                                    "aio"};
inline constexpr const char* kFdTypeNames[] = {"regular",  "directory", "pipe",    "fifo",
                                               "socket",   "tty",       "chardev", "eventfd",
                                               "epoll",    "signalfd",  "timerfd", "inotify",
                                               "pidfd",    "other"};
inline constexpr const char* kLockKindNames[] = {"posix", "flock", "ofd", "lease"};
inline constexpr const char* kGhostKindNames[] = {"file", "memfd", "fifo", "directory", "proc_dir"};

}  // namespace snap::image
