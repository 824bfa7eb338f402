// OpenFiles and the general part of its FilePlanner (restore/file_planner.h):
// the plan of every fd, ghosts, files, pipes and FIFOs.
#include "restore/files.h"

#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <cstring>
#include <fmt/core.h>
#include <optional>
#include <string_view>

#include "base/error.h"
#include "base/log.h"
#include "restore/anon_fds.h"
#include "restore/fill.h"
#include "restore/file_planner.h"
#include "restore/ghosts.h"
#include "restore/ns_files.h"
#include "restore/tty.h"

namespace snap::restore {

namespace {

using image::FdType;

// `flags` to open the file of saved fd f by: an fd on a file made with
// O_TMPFILE keeps that in its flags (Python's tempfile.TemporaryFile opens
// so; /proc names such a file "DIR/#INODE (deleted)", so it is a ghost, or
// one reopened by its handle once linked), and opening with it would make
// another file (or, with its O_DIRECTORY, fail on a file: ENOTDIR).
int open_flags(const image::FileDesc& f, int flags) {
  if (f.type == FdType::Regular && (flags & O_TMPFILE) == O_TMPFILE) flags &= ~O_TMPFILE;
  return flags;
}

bool is_stdio(int fd) { return fd >= 0 && fd <= 2; }

}  // namespace

void FilePlanner::run() {
  int highest = 2;
  for (const auto& p : ckpt_.processes)
    for (const auto& f : p.fds) highest = std::max(highest, f.fd);
  out_.base_ = highest + 1;
  raise_fd_limit();
  index();
  remake_temp_files();  // before the ghosts, shared memory and fds that may be in them
  remake_ghosts();
  remake_named_shm();  // before any fd opens one by its path
  ptys_.emplace(ckpt_, [this](int fd, const std::string& what) { return keep(fd, what); },
                out_.warnings_);
  make_tcp_pairs();  // before any other socket binds
  for (const auto& p : ckpt_.processes)
    for (const auto& f : p.fds) uses_[desc_key(p, f)]++;
  for (const auto& p : ckpt_.processes) {
    if (p.zombie) continue;
    auto& files = out_.procs_[p.pid];
    for (const auto& f : p.fds) {
      FdAction a;
      a.target = f.fd;
      a.cloexec = (f.flags & O_CLOEXEC) != 0;
      a.epoll_targets = f.epoll_targets;
      a.file = &f;
      if (!own_file(p, f, a)) a.source = object_for(p, f);
      files.fds.push_back(std::move(a));
    }
    for (const auto& m : p.mappings)
      if (m.ghost)
        files.ghosts[m.ghost] = ghost_fd(m.ghost, fmt::format("pid {} {}", p.pid, m.path));
      else if (is_shm_object(m))
        files.shm[shm_key(m)] = memfd_for(m);
    if (p.cwd_ghost) files.cwd_fd = ghost_fd(p.cwd_ghost, fmt::format("pid {} cwd", p.pid));
    if (p.exe_ghost) files.exe_fd = ghost_fd(p.exe_ghost, fmt::format("pid {} exe", p.pid));
    files.ctty_fd = ptys_->ctty_of(p);
    files.fg_fd = ptys_->foreground_of(p);
  }
  connect_sockets();
  fill_shared_memory();
  ptys_->hang_up();
}

void FilePlanner::raise_fd_limit() {
  rlimit lim{};
  if (::getrlimit(RLIMIT_NOFILE, &lim) == 0 && lim.rlim_cur < lim.rlim_max) {
    lim.rlim_cur = lim.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &lim);
  }
}

void FilePlanner::index() {
  const Process& root = ckpt_.processes[0];
  for (const auto& p : ckpt_.processes) {
    pids_.insert(p.pid);
    for (size_t i = 1; i < p.threads.size(); i++) threads_[p.threads[i].tid] = p.pid;
  }
  for (const auto& p : ckpt_.processes)
    for (const auto& f : p.fds) {
      if (f.type == FdType::Pipe) {
        auto& pi = pipes_[f.inode];
        (is_read_end(f) ? pi.read : pi.write) = true;
        if (!f.pipe_data.empty() && !pi.data) pi.data = &f.pipe_data;
      }
      if (f.type == FdType::Socket && f.inode) {
        sockets_[f.inode] = &f;
        socket_cwd_[f.inode] = p.cwd;
        if (const auto& s = f.inet_socket; s && !s->tcp && !s->closed && s->local_port)
          bound_ports_[{s->protocol, s->family, s->local, s->local_port}].insert(f.inode);
      }
      // Pipe ends in flight on a socket count as held.
      if (f.unix_socket)
        for (const auto& m : f.unix_socket->queue_fds)
          for (const auto& d : m)
            if (d.type == FdType::Pipe) (is_read_end(d) ? pipes_[d.inode].read : pipes_[d.inode].write) = true;
    }
  // Stdio of the root that leads outside the image (the batch script's
  // pipe, the terminal, a socket) is snap restore's own, for every
  // process that shares it. Files are reopened instead.
  for (const auto& f : root.fds) {
    if (!is_stdio(f.fd) || f.type == FdType::Regular || f.type == FdType::Directory ||
        f.type == FdType::CharDev || f.pty)
      continue;
    if (f.type == FdType::Pipe) {
      const auto& pi = pipes_[f.inode];
      if (pi.read && pi.write) continue;  // both ends in the image: recreated
    }
    if (f.type == FdType::Socket && f.unix_socket && sockets_.count(f.unix_socket->peer_inode))
      continue;
    external_.emplace(desc_key(root, f), f.fd);
  }
}

// Every deleted file and memfd of the image, made again (held by snap
// until the skeletons inherit what they need of them). A deleted
// executable is held read-only once made: the kernel makes a file a
// process's /proc/PID/exe only while nothing has it open for writing.
void FilePlanner::remake_ghosts() {
  std::set<uint64_t> exes;
  for (const auto& p : ckpt_.processes)
    if (p.exe_ghost) exes.insert(p.exe_ghost);
  for (const auto& g : ckpt_.ghost_files) {
    std::string who = fmt::format("{} {}", g.kind == image::GhostFile::Kind::Memfd ? "memfd" : "deleted file",
                                  g.path);
    ScopedFd fd = recreate_ghost(g, who, out_.warnings_, out_.holders_, [&](int fd) {
      fill_from_pages(fd, image::ghost_pages_start(g.id), who);
    });
    if (fd && exes.count(g.id)) {
      ScopedFd ro(::open(fmt::format("/proc/self/fd/{}", fd.get()).c_str(), O_RDONLY | O_CLOEXEC));
      if (!ro) throw SysError("cannot restore " + who + " (an executable): reopening it read-only", errno);
      fd = std::move(ro);
    }
    ghosts_[g.id] = keep(fd.release(), "remaking " + who);
    if (g.kind == image::GhostFile::Kind::Memfd) memfds_.insert(g.id);
  }
}

// What the job held in the node's temporary directories and is gone now
// (another node, a site's cleanup), made again; what is there stays.
void FilePlanner::remake_temp_files() {
  std::vector<const image::GhostFile*> made;
  uint64_t from_pages = 0;
  size_t put_back = 0;
  for (const auto& t : ckpt_.temp_files) {
    auto fill = [&](int fd) {
      from_pages += fill_from_pages(fd, image::file_pages_start(t.id),
                                    fmt::format("the file {} ({})", t.path,
                                                t.put_back ? "named by --with-files"
                                                           : "in a temporary directory"));
    };
    // Those the user named go back as they were at the dump (not removed
    // again if the restore fails: they are then as the checkpoint has them).
    if (put_back_file(t, out_.warnings_, fill)) {
      put_back++;
      continue;
    }
    if (remake_temp_file(t, out_.warnings_, fill)) {
      out_.made_paths_.push_back(t.path);  // removed if the restore fails
      made.push_back(&t);
    }
  }
  if (put_back) vlog("put back {} file(s) named by --with-files as they were at the dump", put_back);
  // Directories get their modes and times once everything in them is
  // made (finish_made_directories).
  for (const auto* t : made)
    if (t->kind == image::GhostFile::Kind::Directory) out_.made_dirs_.push_back(*t);
  if (!made.empty())
    vlog("made {} of the job's {} files and directories in temporary directories again ({:.1f} "
         "MiB from the page store)",
         made.size(), ckpt_.temp_files.size(), static_cast<double>(from_pages) / (1 << 20));
}

// The contents of a file whose contents are in the page store
// (image::GhostFile::data_in_pages) from mapping `start` of its pagemap
// tables, written into fd, its holes and zero pages left holes. Returns the
// bytes written.
uint64_t FilePlanner::fill_from_pages(int fd, uint64_t start, const std::string& who) {
  // The workers that fill shared memory files (restore/fill.h), the file
  // taken as a mapping of it from offset 0.
  image::Mapping whole;
  whole.start = start;
  try {
    return fill_file(fd, {{image::kFilePagesPid, &whole}}, img_, fill_);
  } catch (const SysError& e) {
    throw Error(fmt::format("cannot restore {}: {}", who, e.what()), e.hint());
  }
}

int FilePlanner::ghost_fd(uint64_t id, const std::string& who) {
  auto it = ghosts_.find(id);
  if (it == ghosts_.end())
    throw Error(fmt::format("{} refers to deleted file {}, which the image does not hold", who, id),
                "the image is damaged");
  return it->second;
}

// An fd on a deleted file or memfd: a new open file description of the
// remade file (through /proc/self/fd), with the fd's flags and offset. But
// O_NOFOLLOW (kept in an fd's flags: Open MPI opens its shared memory file
// so): on /proc/self/fd's link it would refuse to follow it (ELOOP).
// A memfd's first read-write description is memfd_create's own, as the
// job's was: an open of /proc/self/fd counts as a writer of the file, and
// while one holds it, running the memfd as a program (execveat(fd, "",
// AT_EMPTY_PATH), as runtimes that keep their binary in a memfd do) fails
// with ETXTBSY.
int FilePlanner::ghost_description(const Process& p, const FileDesc& f) {
  const int remade = ghost_fd(f.ghost, fd_name(p, f));
  if (memfds_.count(f.ghost) && (f.flags & O_ACCMODE) == O_RDWR &&
      memfd_own_given_.insert(f.ghost).second) {
    const std::string what = "cannot restore " + fd_name(p, f);
    int fd = keep(::fcntl(remade, F_DUPFD_CLOEXEC, 0), what + ": dup");
    constexpr int kStatusFlags = O_APPEND | O_NONBLOCK | O_ASYNC | O_DIRECT | O_NOATIME;
    if ((f.flags & kStatusFlags) && ::fcntl(fd, F_SETFL, f.flags & kStatusFlags) < 0)
      throw SysError(what + ": fcntl(F_SETFL)", errno);
    if (::lseek(fd, static_cast<off_t>(f.pos), SEEK_SET) < 0)
      throw SysError(what + ": lseek", errno);
    return fd;
  }
  std::string path = fmt::format("/proc/self/fd/{}", remade);
  if (f.type == FdType::Fifo) return fifo(p, f, path);
  return reopen(p, f, path, f.flags & ~O_NOFOLLOW);
}

int FilePlanner::keep(int fd, const std::string& what) {
  if (fd < 0) throw SysError(what, errno);
  int moved = ::fcntl(fd, F_DUPFD_CLOEXEC, out_.base_);
  int err = errno;
  ::close(fd);
  if (moved < 0)
    throw SysError(what + ": moving it above fd " + std::to_string(out_.base_), err,
                   "raise the open files limit (ulimit -n)");
  out_.owned_.emplace_back(moved);
  return moved;
}

// A file (or eventfd) no other fd shares: checked here, opened by the
// skeleton itself. False for what must be one object made by snap.
bool FilePlanner::own_file(const Process& p, const FileDesc& f, FdAction& a) {
  DescKey key = desc_key(p, f);
  // A /proc file of the job's own exists only once its process or thread
  // does, which snap's objects precede: each fd of one shared description
  // is opened by its holder, as a description of its own.
  const bool job_proc = f.type == FdType::Regular && is_job_proc_file(f.path);
  // A watch on a deleted file is added on snap's fd on its remade ghost.
  if ((uses_[key] != 1 && !job_proc) || external_.count(key) || f.ghost ||
      namespace_kind(f.path) || watches_ghost(f))
    return false;
  if (uses_[key] != 1 && split_.insert(key).second)
    out_.warnings_.push_back(fmt::format(
        "{}: {} fds share this /proc file of the job; each comes back with a description of its "
        "own (a read through one no longer moves the others' offset)",
        fd_name(p, f), uses_[key]));
  switch (f.type) {
    case FdType::Regular:
      if (!check_file(p, f)) {
        a.path = "/dev/null";
        a.flags = O_RDWR | (f.flags & O_CLOEXEC);
        return true;
      }
      break;
    case FdType::Directory:
    case FdType::CharDev:
      break;
    case FdType::Tty:
      if (f.pty && !ptys_->opened_by_skeleton(p, f)) return false;
      a.flags = f.flags | O_NOCTTY;
      a.path = f.path;
      a.pos = f.pos;
      return true;
    case FdType::EventFd:
      a.eventfd = true;
      a.eventfd_count = f.eventfd_count;
      a.eventfd_semaphore = f.eventfd_semaphore;
      a.flags = f.flags;
      return true;
    case FdType::Epoll:
      a.epoll = true;
      a.flags = f.flags;
      return true;
    case FdType::SignalFd:
    case FdType::TimerFd:
    case FdType::Inotify:
    case FdType::PidFd:
      a.anon = true;
      a.flags = f.flags;
      return true;
    default:
      return false;
  }
  a.path = f.path;
  a.flags = f.flags;
  a.pos = f.pos;
  a.thread_of = names_image_thread(f.path);
  return true;
}

int FilePlanner::object_for(const Process& p, const FileDesc& f) {
  DescKey key = desc_key(p, f);
  if (f.type == FdType::Pipe && f.file_id && !external_.count(key))
    return pipe_description(p, f, key);
  if (auto it = objects_.find(key); it != objects_.end()) return it->second;
  int fd = create(p, f, key);
  objects_[key] = fd;
  return fd;
}

int FilePlanner::create(const Process& p, const FileDesc& f, const DescKey& key) {
  if (auto ext = external_.find(key); ext != external_.end()) {
    int own = ::fcntl(ext->second, F_DUPFD_CLOEXEC, out_.base_);
    if (own >= 0) {
      out_.owned_.emplace_back(own);
      return own;
    }
    out_.warnings_.push_back(fmt::format("{}: snap restore's own fd {} is closed; /dev/null "
                                         "stands in",
                                         fd_name(p, f), ext->second));
    return keep(::open("/dev/null", O_RDWR), "open /dev/null");
  }
  if (f.ghost) return ghost_description(p, f);
  switch (f.type) {
    case FdType::Regular:
      return open_file(p, f);
    case FdType::Directory:
    case FdType::CharDev:
      return reopen(p, f, f.path, f.flags);
    case FdType::Tty:
      if (f.pty) return ptys_->open_end(f, fd_name(p, f));
      return reopen(p, f, f.path, f.flags | O_NOCTTY);
    case FdType::EventFd:
      return keep(make_eventfd(f.eventfd_count, f.eventfd_semaphore, f.flags),
                  "eventfd for " + fd_name(p, f));
    case FdType::Epoll:
      return keep(make_epoll(f.flags), "epoll_create1 for " + fd_name(p, f));
    case FdType::SignalFd:
    case FdType::TimerFd:
    case FdType::Inotify: {
      std::string why;
      int fd = make_anon_fd(f, &why, &ghosts_);
      if (fd < 0) throw Error("cannot restore " + fd_name(p, f) + ": " + why);
      return keep(fd, fd_name(p, f));
    }
    case FdType::PidFd:
      // Made before the skeletons: the process it refers to is not there yet.
      throw Error(fd_name(p, f) + ": a pidfd shared by several fds or processes",
                  "restoring shared pidfds is not supported yet");
    case FdType::Pipe:
      return pipe_end(p, f);
    case FdType::Fifo:
      return fifo(p, f, f.path);
    case FdType::Socket:
      return socket(p, f);
    case FdType::Other:
      // An O_PATH fd on a symbolic link itself (O_PATH | O_NOFOLLOW).
      if ((f.flags & O_PATH) && S_ISLNK(f.mode)) return reopen(p, f, f.path, f.flags | O_NOFOLLOW);
      break;
  }
  throw Error(fd_name(p, f) + ": restoring this kind of file is not supported yet");
}

// A pipe end can have several open file descriptions (one opened again
// through /proc/PID/fd/N), each with its own status flags: the first is
// the end pipe2() made, the others are opened again the same way.
int FilePlanner::pipe_description(const Process& p, const FileDesc& f, const DescKey& end_key) {
  DescKey own{5, f.file_id, 0};
  if (auto it = objects_.find(own); it != objects_.end()) return it->second;
  int end;
  if (auto it = objects_.find(end_key); it != objects_.end()) {
    end = it->second;
  } else {
    end = create(p, f, end_key);
    objects_[end_key] = end;
  }
  int fd = end;
  auto [claim, first] = pipe_end_owner_.emplace(end_key, f.file_id);
  if (!first && claim->second != f.file_id) {
    std::string path = fmt::format("/proc/self/fd/{}", end);
    fd = keep(::open(path.c_str(), (f.flags & O_ACCMODE) | O_NONBLOCK | O_CLOEXEC),
              "cannot restore " + fd_name(p, f) + ": open " + path);
  }
  if (::fcntl(fd, F_SETFL, f.flags & kStatusFlags) < 0)
    throw SysError("cannot restore " + fd_name(p, f) + ": fcntl(F_SETFL)", errno);
  objects_[own] = fd;
  return fd;
}

int FilePlanner::reopen(const Process& p, const FileDesc& f, const std::string& path, int flags) {
  int fd = keep(::open(path.c_str(), open_flags(f, flags) & ~(O_CREAT | O_EXCL | O_TRUNC)),
                "cannot restore " + fd_name(p, f) + ": open");
  if (f.pos && ::lseek(fd, static_cast<off_t>(f.pos), SEEK_SET) < 0 && errno != ESPIPE)
    throw SysError("cannot restore " + fd_name(p, f) + ": lseek", errno);
  return fd;
}

// A regular file must be there and long enough for its offset. False:
// gone, and allowed (/dev/null stands in, with a warning).
bool FilePlanner::check_file(const Process& p, const FileDesc& f) {
  // /proc/PID/... of a process of the image: there once the skeleton,
  // which opens it itself, has that pid again (a thread's once the
  // process has made it: restore/thread_proc_files.h).
  if (is_job_proc_file(f.path)) return true;
  if (f.path.ends_with(" (deleted)"))
    throw Error(fd_name(p, f) + ": the file was deleted before the dump, and the image "
                                "does not hold it (an older snap took it)",
                "dump the job again with this version of snap");
  auto [st, err] = stat_once(f.path);
  if (err) {
    if (!allow_changed_)
      throw SysError("cannot restore " + fd_name(p, f), err,
                     "put the file back, or pass --allow-changed-files to open /dev/null instead");
    out_.warnings_.push_back(fd_name(p, f) + " is gone; /dev/null stands in");
    return false;
  }
  if (static_cast<uint64_t>(st.st_size) < f.pos && !(f.flags & O_APPEND)) {
    std::string msg = fmt::format("{} is now {} bytes, shorter than the saved offset {}",
                                  fd_name(p, f), st.st_size, f.pos);
    if (!allow_changed_)
      throw Error(msg, "the job wrote there; restore an image taken with the file as it is, "
                       "or pass --allow-changed-files");
    out_.warnings_.push_back(msg);
  }
  return true;
}

// stat(2) of a path, once however many fds name it (a job may hold one
// file open thousands of times): the result, or the errno.
std::pair<struct stat, int> FilePlanner::stat_once(const std::string& path) {
  auto [it, fresh] = stats_.try_emplace(path);
  if (fresh && ::stat(path.c_str(), &it->second.first) != 0) it->second.second = errno;
  return it->second;
}

namespace {

// The number `s` starts with, ended by its end or a '/', and what follows
// it; none when it does not start so.
std::optional<std::pair<pid_t, std::string_view>> leading_number(std::string_view s) {
  pid_t n = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), n);
  if (ec != std::errc() || (end != s.data() + s.size() && *end != '/')) return std::nullopt;
  return std::pair{n, s.substr(static_cast<size_t>(end - s.data()))};
}

std::optional<std::pair<pid_t, std::string_view>> proc_number(std::string_view path) {
  if (!path.starts_with("/proc/")) return std::nullopt;
  return leading_number(path.substr(6));
}

}  // namespace

// /proc/TID/... or /proc/PID/task/TID/... (as /proc/thread-self resolves)
// where TID is a thread of the image that is not its process's leader.
pid_t FilePlanner::names_image_thread(const std::string& path) const {
  auto n = proc_number(path);
  if (!n) return 0;
  if (auto it = threads_.find(n->first); it != threads_.end()) return it->second;
  if (!n->second.starts_with("/task/")) return 0;
  auto t = leading_number(n->second.substr(6));
  auto it = t ? threads_.find(t->first) : threads_.end();
  return it != threads_.end() ? it->second : 0;
}

bool FilePlanner::is_image_proc_file(const std::string& path) const {
  auto n = proc_number(path);
  return n && pids_.count(n->first);
}

int FilePlanner::open_file(const Process& p, const FileDesc& f) {
  if (namespace_kind(f.path))
    return keep(open_namespace(f.path, f.flags, "cannot restore " + fd_name(p, f)),
                "open namespace");
  if (!check_file(p, f)) return keep(::open("/dev/null", O_RDWR), "open /dev/null");
  return reopen(p, f, f.path, f.flags);
}

// Puts `data` into a pipe through its write end, growing the pipe if the
// data exceeds its capacity (the job may have grown it too).
void FilePlanner::refill(const Process& p, const FileDesc& f, int write_fd,
                         const std::vector<uint8_t>& data) {
  if (data.size() > 65536) ::fcntl(write_fd, F_SETPIPE_SZ, static_cast<int>(data.size()));
  ::fcntl(write_fd, F_SETFL, O_NONBLOCK);
  ssize_t n = ::write(write_fd, data.data(), data.size());
  if (n != static_cast<ssize_t>(data.size()))
    throw SysError(fmt::format("cannot put back the {} unread bytes of the pipe of {}",
                               data.size(), fd_name(p, f)),
                   n < 0 ? errno : EAGAIN);
}

// The capacity the job gave the pipe (F_SETPIPE_SZ); beyond
// /proc/sys/fs/pipe-max-size that needs CAP_SYS_RESOURCE.
void FilePlanner::set_pipe_size(const Process& p, const FileDesc& f, int fd) {
  if (f.pipe_size && ::fcntl(fd, F_GETPIPE_SZ) != static_cast<int>(f.pipe_size) &&
      ::fcntl(fd, F_SETPIPE_SZ, static_cast<int>(f.pipe_size)) < 0)
    out_.warnings_.push_back(fmt::format("{}: cannot give the pipe its size of {} bytes again "
                                         "({}); it keeps {}",
                                         fd_name(p, f), f.pipe_size, std::strerror(errno),
                                         ::fcntl(fd, F_GETPIPE_SZ)));
}

int FilePlanner::pipe_end(const Process& p, const FileDesc& f) {
  // Both ends are made at once, and get their status flags once.
  const PipeInfo& pi = pipes_.at(f.inode);
  int ends[2];
  if (::pipe2(ends, O_CLOEXEC) < 0) throw SysError("pipe2 for " + fd_name(p, f), errno);
  ScopedFd r(ends[0]), w(ends[1]);
  set_pipe_size(p, f, w.get());
  if (pi.data) refill(p, f, w.get(), *pi.data);
  int flags_r = O_RDONLY, flags_w = O_WRONLY;
  for (const auto& q : ckpt_.processes)
    for (const auto& g : q.fds)
      if (g.type == FdType::Pipe && g.inode == f.inode)
        (is_read_end(g) ? flags_r : flags_w) = g.flags;
  ::fcntl(w.get(), F_SETFL, flags_w & kStatusFlags);
  ::fcntl(r.get(), F_SETFL, flags_r & kStatusFlags);
  if (!(pi.read && pi.write))
    out_.warnings_.push_back(fmt::format(
        "{}: no process of the image held the pipe's other end; it comes back closed ({})",
        fd_name(p, f), pi.read ? "the job reads the saved data, then end of file"
                               : "a write gets EPIPE"));
  int rfd = pi.read ? keep(r.release(), "pipe") : -1;
  int wfd = pi.write ? keep(w.release(), "pipe") : -1;
  if (pi.read) objects_[{1, f.inode, 0}] = rfd;
  if (pi.write) objects_[{1, f.inode, 1}] = wfd;
  return is_read_end(f) ? rfd : wfd;
}

// A named pipe is opened by its name; a first O_RDWR open keeps the pipe
// from blocking or failing while the others open their ends.
int FilePlanner::fifo(const Process& p, const FileDesc& f, const std::string& path) {
  ScopedFd anchor(::open(path.c_str(), O_RDWR | O_NONBLOCK | O_CLOEXEC));
  if (!anchor) {
    out_.warnings_.push_back(fd_name(p, f) + ": the FIFO is gone; it comes back as a pipe whose "
                                             "other end is closed");
    int ends[2];
    if (::pipe2(ends, O_CLOEXEC) < 0) throw SysError("pipe2 for " + fd_name(p, f), errno);
    ScopedFd r(ends[0]), w(ends[1]);
    return keep(is_read_end(f) ? r.release() : w.release(), "pipe");
  }
  int fd = keep(::open(path.c_str(), (f.flags & ~(O_CREAT | O_EXCL | O_TRUNC)) | O_NONBLOCK),
                "cannot restore " + fd_name(p, f) + ": open");
  ::fcntl(fd, F_SETFL, f.flags & kStatusFlags);
  set_pipe_size(p, f, anchor.get());
  // The data is the FIFO's: put back once, whichever of its fds carries it.
  if (!f.pipe_data.empty() && fifo_filled_.insert(f.inode).second)
    refill(p, f, anchor.get(), f.pipe_data);
  return fd;
}

OpenFiles OpenFiles::create(const image::Checkpoint& ckpt, image::ImageReader& img,
                            bool allow_changed_files, bool tcp_close, const FillOptions& fill) {
  OpenFiles out;
  FilePlanner(ckpt, img, allow_changed_files, tcp_close, out, fill).run();
  return out;
}

OpenFiles::~OpenFiles() {
  end_holders();
  // Innermost first: what was made in a directory made again goes before it.
  for (auto it = made_paths_.rbegin(); it != made_paths_.rend(); ++it)
    if (::unlink(it->c_str()) != 0 && errno == EISDIR) ::rmdir(it->c_str());
}

void OpenFiles::finish_made_directories() {
  std::vector<std::string> warnings;
  for (auto it = made_dirs_.rbegin(); it != made_dirs_.rend(); ++it)
    finish_temp_directory(*it, warnings);
  for (const auto& w : warnings) warn("{}", w);
  made_dirs_.clear();
}

void OpenFiles::end_holders() {
  for (pid_t pid : holders_) {
    ::kill(pid, SIGKILL);
    while (::waitpid(pid, nullptr, 0) < 0 && errno == EINTR) {}
  }
  holders_.clear();
}

}  // namespace snap::restore
