#include "restore/ghosts.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <linux/sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <fmt/core.h>
#include <random>

#include "base/error.h"
#include "tracer/ghost_files.h"

namespace snap::restore {

namespace {

using image::GhostFile;

std::string dir_of(const std::string& path) {
  auto slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : path.substr(0, slash);
}

bool exists(const std::string& path) {
  struct stat st {};
  return ::lstat(path.c_str(), &st) == 0;
}

// The directories above a ghost's path that are gone (a removed
// directory's ghost, or a file in one): made for the time the ghost is
// created, and removed again (innermost first) when this goes away.
class MissingParents {
 public:
  MissingParents(const std::string& path, const std::string& who) {
    std::vector<std::string> missing;
    for (std::string d = dir_of(path); d != "/" && d != "." && !exists(d); d = dir_of(d))
      missing.push_back(d);
    for (auto it = missing.rbegin(); it != missing.rend(); ++it) {
      if (::mkdir(it->c_str(), 0700) != 0)
        throw SysError(fmt::format("cannot restore {}: mkdir {} (a directory above it, gone "
                                   "since the dump)",
                                   who, *it),
                       errno);
      made_.push_back(*it);
    }
  }
  ~MissingParents() {
    for (auto it = made_.rbegin(); it != made_.rend(); ++it) ::rmdir(it->c_str());
  }
  MissingParents(const MissingParents&) = delete;
  MissingParents& operator=(const MissingParents&) = delete;

 private:
  std::vector<std::string> made_;
};

// The old path when it is free (so /proc shows "PATH (deleted)" again),
// else a sibling name no one uses.
std::string free_name(const std::string& path) {
  if (!exists(path)) return path;
  std::random_device rd;
  for (;;) {
    std::string name = fmt::format("{}.snap-ghost-{:08x}", path, rd());
    if (!exists(name)) return name;
  }
}

// Whether `path` is a regular file other than the saved file t: its size or
// modification time differ from those at the dump.
bool differs(const std::string& path, const GhostFile& t) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) return false;
  GhostFile now;
  fill_from_stat(st, now);
  return now.size != t.size || now.mtime_ns != t.mtime_ns;
}

void write_contents(int fd, const GhostFile& g, const std::string& who) {
  for (const auto& e : g.data)
    for (size_t done = 0; done < e.data.size();) {
      ssize_t n = ::pwrite(fd, e.data.data() + done, e.data.size() - done,
                           static_cast<off_t>(e.offset + done));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0)
        throw SysError(fmt::format("cannot restore {}: writing its saved contents at offset {}", who,
                                   e.offset + done),
                       n < 0 ? errno : EIO);
      done += static_cast<size_t>(n);
    }
  if (::ftruncate(fd, static_cast<off_t>(g.size)) != 0)
    throw SysError(fmt::format("cannot restore {}: ftruncate to {} bytes", who, g.size), errno);
}

timespec from_ns(int64_t ns) {
  return {static_cast<time_t>(ns / 1'000'000'000), static_cast<long>(ns % 1'000'000'000)};
}

// Owner first (chown clears set-id bits), then mode.
void set_owner_and_mode(int fd, uint32_t uid, uint32_t gid, uint32_t mode, const std::string& who,
                        std::vector<std::string>& warnings) {
  struct stat st {};
  if (::fstat(fd, &st) == 0 && (st.st_uid != uid || st.st_gid != gid) && ::fchown(fd, uid, gid) != 0)
    warnings.push_back(fmt::format("{}: cannot give it its owner {}:{} back ({}); it belongs to "
                                   "{}:{}",
                                   who, uid, gid, std::strerror(errno), st.st_uid, st.st_gid));
  if (::fchmod(fd, mode & 07777) != 0)
    throw SysError(fmt::format("cannot restore {}: fchmod {:o}", who, mode & 07777), errno);
}

// Owner, mode, then times.
void set_attributes(int fd, const GhostFile& g, const std::string& who,
                    std::vector<std::string>& warnings) {
  set_owner_and_mode(fd, g.uid, g.gid, g.mode, who, warnings);
  timespec times[2] = {from_ns(g.atime_ns), from_ns(g.mtime_ns)};
  if (::futimens(fd, times) != 0)
    throw SysError(fmt::format("cannot restore {}: futimens", who), errno);
}

ScopedFd reopen_self(int fd, int flags) {
  std::string link = fmt::format("/proc/self/fd/{}", fd);
  return ScopedFd(::open(link.c_str(), flags | O_CLOEXEC));
}

int wanted_flags(const GhostFile& g) {
  switch (g.kind) {
    case GhostFile::Kind::Fifo: return O_RDWR | O_NONBLOCK;
    case GhostFile::Kind::Directory: return O_RDONLY | O_DIRECTORY;
    default: return O_RDWR;
  }
}

// The inode another link still leads to, by its handle; checked to be the
// one of the dump.
ScopedFd open_by_handle(const GhostFile& g, const std::string& who) {
  std::string dir = dir_of(g.path);
  while (dir != "/" && !exists(dir)) dir = dir_of(dir);
  // Not O_PATH: open_by_handle_at refuses such a mount fd (EBADF).
  ScopedFd mount(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!mount) throw SysError(fmt::format("cannot restore {}: open {}", who, dir), errno);
  if (g.handle.size() > MAX_HANDLE_SZ) throw Error(who + ": the saved file handle is too long");
  alignas(file_handle) unsigned char buf[sizeof(file_handle) + MAX_HANDLE_SZ] = {};
  auto* h = reinterpret_cast<file_handle*>(buf);
  h->handle_bytes = static_cast<unsigned>(g.handle.size());
  h->handle_type = g.handle_type;
  std::copy(g.handle.begin(), g.handle.end(), h->f_handle);
  ScopedFd path(::open_by_handle_at(mount.get(), h, O_PATH | O_CLOEXEC));
  struct stat st {};
  if (!path || ::fstat(path.get(), &st) != 0 || st.st_ino != g.inode)
    throw SysError(fmt::format("cannot restore {}: it was unlinked, but at the dump {} other "
                               "link(s) led to its inode {}, which is gone now",
                               who, g.nlink, g.inode),
                   path ? ESTALE : errno,
                   "restore where the file's other name still exists (the dump kept no copy)");
  ScopedFd fd = reopen_self(path.get(), wanted_flags(g));
  if (!fd && g.kind == GhostFile::Kind::File) fd = reopen_self(path.get(), O_RDONLY);
  if (!fd) throw SysError(fmt::format("cannot restore {}: reopen by handle", who), errno);
  return fd;
}

using Fill = std::function<void(int fd)>;

ScopedFd make_memfd(const GhostFile& g, const std::string& who, std::vector<std::string>& warnings,
                    const Fill& fill_from_pages) {
  ScopedFd fd(::memfd_create(g.path.c_str(), MFD_CLOEXEC | MFD_ALLOW_SEALING));
  if (!fd) throw SysError(fmt::format("cannot restore {}: memfd_create(\"{}\")", who, g.path), errno);
  if (g.data_in_pages) fill_from_pages(fd.get());
  write_contents(fd.get(), g, who);
  set_attributes(fd.get(), g, who, warnings);
  if (g.seals && ::fcntl(fd.get(), F_ADD_SEALS, g.seals) != 0)
    throw SysError(fmt::format("cannot restore {}: F_ADD_SEALS {:#x}", who, g.seals), errno);
  return fd;
}

// A new file of g's kind (directory, FIFO or regular file) at `name`,
// which must be free, opened as wanted_flags says.
ScopedFd create_node(const GhostFile& g, const std::string& name, const std::string& who) {
  auto fail = [&](const char* what) {
    return SysError(fmt::format("cannot restore {}: {} {}", who, what, name), errno);
  };
  ScopedFd fd;
  switch (g.kind) {
    case GhostFile::Kind::Directory:
      if (::mkdir(name.c_str(), 0700) != 0) throw fail("mkdir");
      fd.reset(::open(name.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
      break;
    case GhostFile::Kind::Fifo:
      if (::mkfifo(name.c_str(), 0600) != 0) throw fail("mkfifo");
      fd.reset(::open(name.c_str(), O_RDWR | O_NONBLOCK | O_CLOEXEC));
      break;
    default:
      fd.reset(::open(name.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
      if (!fd) throw fail("create");
      break;
  }
  if (!fd) throw fail("open");
  return fd;
}

ScopedFd make_unlinked(const GhostFile& g, const std::string& who, std::vector<std::string>& warnings,
                       const Fill& fill_from_pages) {
  MissingParents parents(g.path, who);
  std::string name = free_name(g.path);
  ScopedFd fd = create_node(g, name, who);
  const bool dir = g.kind == GhostFile::Kind::Directory;
  if ((dir ? ::rmdir(name.c_str()) : ::unlink(name.c_str())) != 0)
    throw SysError(fmt::format("cannot restore {}: {} {}", who, dir ? "rmdir" : "unlink", name),
                   errno);
  if (g.kind == GhostFile::Kind::File) {
    if (g.data_in_pages) fill_from_pages(fd.get());
    write_contents(fd.get(), g, who);
  }
  set_attributes(fd.get(), g, who, warnings);
  return fd;
}

// /proc/PID of a process that has ended: a process is started with that
// pid (clone3 set_tid), which waits to be killed; its directory is opened.
ScopedFd make_proc_dir(const GhostFile& g, const std::string& who, std::vector<pid_t>& holders) {
  pid_t want = static_cast<pid_t>(std::stol(g.path.substr(6)));
  clone_args args{};
  args.exit_signal = SIGCHLD;
  args.set_tid = reinterpret_cast<uint64_t>(&want);
  args.set_tid_size = 1;
  long pid = ::syscall(SYS_clone3, &args, sizeof args);
  if (pid == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);  // never outlives snap restore
    for (;;) ::pause();
  }
  if (pid < 0)
    throw SysError(fmt::format("cannot restore {}: it was the directory of process {}, which had "
                               "ended; starting a process with that pid (clone3 set_tid)",
                               who, want),
                   errno, "restore as root, with pid " + std::to_string(want) + " free");
  holders.push_back(static_cast<pid_t>(pid));
  ScopedFd fd(::open(g.path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd) throw SysError(fmt::format("cannot restore {}: open {}", who, g.path), errno);
  return fd;
}

}  // namespace

ScopedFd make_named_shm(const image::Mapping& m, std::vector<std::string>& warnings,
                        bool* was_there) {
  const auto& n = *m.named_shm;
  const std::string who = "the shared memory file " + m.path;
  const std::string name = free_name(m.path);
  *was_there = name != m.path;
  ScopedFd fd(::open(name.c_str(), O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
  if (!fd)
    throw SysError(fmt::format("cannot restore {}: create {}", who, name), errno,
                   "its directory must exist and be writable by the user who restores");
  try {
    if (::ftruncate(fd.get(), static_cast<off_t>(n.size)) != 0)
      throw SysError(fmt::format("cannot restore {}: ftruncate to {} bytes", who, n.size), errno);
    set_owner_and_mode(fd.get(), n.uid, n.gid, n.mode, who, warnings);
    if (*was_there && ::rename(name.c_str(), m.path.c_str()) != 0)
      throw SysError(fmt::format("cannot restore {}: rename {} to it", who, name), errno);
  } catch (...) {
    ::unlink(name.c_str());
    throw;
  }
  return fd;
}

bool put_back_file(const GhostFile& t, std::vector<std::string>& warnings,
                   const std::function<void(int fd)>& fill_from_pages) {
  if (!t.put_back || t.kind != GhostFile::Kind::File || !exists(t.path) || !differs(t.path, t))
    return false;
  const std::string who = fmt::format("the file {} (named by --with-files)", t.path);
  // Beside it, then renamed over it: it is either as it was at the dump or
  // as the restore found it, never half of each.
  const std::string name = t.path + ".snap-put-back";
  ::unlink(name.c_str());  // left by a restore killed in between
  ScopedFd fd = create_node(t, name, who);
  try {
    if (t.data_in_pages) fill_from_pages(fd.get());
    write_contents(fd.get(), t, who);
    set_attributes(fd.get(), t, who, warnings);
    if (::rename(name.c_str(), t.path.c_str()) != 0)
      throw SysError(fmt::format("cannot restore {}: rename {} to it", who, name), errno);
  } catch (...) {
    ::unlink(name.c_str());
    throw;
  }
  return true;
}

bool remake_temp_file(const GhostFile& t, std::vector<std::string>& warnings,
                      const std::function<void(int fd)>& fill_from_pages) {
  if (exists(t.path)) {
    // Left as it is: it may be another process's file too (a log the job
    // shares with its shell); the user knows whether to remove it.
    if (t.kind == GhostFile::Kind::File && differs(t.path, t))
      warnings.push_back(fmt::format(
          "{} (in a temporary directory) changed since the dump (its size or modification "
          "time): the restored job finds it as it is now; the image holds it as it was at the "
          "dump, and removing it before the restore has that one made again",
          t.path));
    return false;
  }
  const std::string who = fmt::format("{} {} ({})",
                                      t.kind == GhostFile::Kind::Directory ? "the directory"
                                      : t.kind == GhostFile::Kind::Fifo    ? "the FIFO"
                                                                           : "the file",
                                      t.path,
                                      t.put_back ? "named by --with-files" : "in a temporary directory");
  ScopedFd fd;
  try {
    fd = create_node(t, t.path, who);
  } catch (const SysError&) {
    if (exists(dir_of(t.path))) throw;
    throw Error(fmt::format("cannot restore {}: the directory {} is gone, and the image does not "
                            "hold it",
                            who, dir_of(t.path)),
                "create it (the job's $TMPDIR, say) and restore again");
  }
  try {
    if (t.kind == GhostFile::Kind::File) {
      if (t.data_in_pages) fill_from_pages(fd.get());
      write_contents(fd.get(), t, who);
    }
    if (t.kind == GhostFile::Kind::Directory)  // what goes in it is made first
      set_owner_and_mode(fd.get(), t.uid, t.gid, t.mode | S_IRWXU, who, warnings);
    else
      set_attributes(fd.get(), t, who, warnings);
  } catch (...) {
    if (t.kind == GhostFile::Kind::Directory ? ::rmdir(t.path.c_str()) : ::unlink(t.path.c_str())) {}
    throw;
  }
  return true;
}

void finish_temp_directory(const GhostFile& t, std::vector<std::string>& warnings) {
  const std::string who = fmt::format("the directory {} (in a temporary directory)", t.path);
  ScopedFd fd(::open(t.path.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (!fd) throw SysError(fmt::format("cannot restore {}: open", who), errno);
  set_attributes(fd.get(), t, who, warnings);
}

ScopedFd recreate_ghost(const GhostFile& g, const std::string& who, std::vector<std::string>& warnings,
                        std::vector<pid_t>& holders, const Fill& fill_from_pages) {
  if (g.kind == GhostFile::Kind::Memfd) return make_memfd(g, who, warnings, fill_from_pages);
  if (g.kind == GhostFile::Kind::ProcDir) return make_proc_dir(g, who, holders);
  if (g.nlink > 0) return open_by_handle(g, who);
  return make_unlinked(g, who, warnings, fill_from_pages);
}

}  // namespace snap::restore
