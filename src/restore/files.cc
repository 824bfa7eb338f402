#include "restore/files.h"

#include <fcntl.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <fmt/core.h>
#include <map>
#include <set>

#include "base/error.h"

namespace snap::restore {

namespace {

bool is_stdio(int fd) { return fd >= 0 && fd <= 2; }

std::string fd_name(const image::FileDesc& f) {
  return fmt::format("fd {} ({})", f.fd, f.path);
}

}  // namespace

FdPlan plan_fds(const image::Process& p, bool allow_changed_files) {
  using T = image::FdType;
  FdPlan plan;
  // Pipes whose both ends belong to the process are rebuilt inside it.
  std::map<uint64_t, std::pair<bool, bool>> pipe_ends;  // inode -> (has read, has write)
  for (const auto& f : p.fds)
    if (f.type == T::Pipe) {
      auto& e = pipe_ends[f.inode];
      ((f.flags & O_ACCMODE) == O_RDONLY ? e.first : e.second) = true;
    }
  std::map<uint64_t, int> groups;

  for (const auto& f : p.fds) {
    FdAction a;
    a.target = f.fd;
    a.flags = f.flags;
    a.cloexec = (f.flags & O_CLOEXEC) != 0;
    a.path = f.path;
    a.pos = f.pos;
    bool file_like = f.type == T::Regular || f.type == T::Directory || f.type == T::CharDev;
    if (is_stdio(f.fd) && !file_like) {
      // Stdio that is a pipe, terminal or socket leads to whoever started
      // the job (the batch script, the shell): the restored job gets snap
      // restore's own. Files (an input deck, --output) are reopened below.
      a.kind = FdAction::kInherit;
      a.inherit = f.fd;
      plan.actions.push_back(std::move(a));
      continue;
    }
    switch (f.type) {
      case T::Regular: {
        if (f.path.ends_with(" (deleted)"))
          throw Error(fd_name(f) + ": the file was deleted before the dump",
                      "restoring deleted files is not supported yet");
        struct stat st {};
        if (::stat(f.path.c_str(), &st) != 0) {
          if (!allow_changed_files)
            throw SysError("cannot restore " + fd_name(f), errno,
                           "put the file back, or pass --allow-changed-files to open /dev/null instead");
          plan.warnings.push_back(fd_name(f) + " is gone; /dev/null stands in");
          a.path = "/dev/null";
          a.flags = O_RDWR | (f.flags & O_CLOEXEC);
          a.pos = 0;
        } else if (static_cast<uint64_t>(st.st_size) < f.pos && !(f.flags & O_APPEND)) {
          std::string msg = fmt::format("{} is now {} bytes, shorter than the saved offset {}",
                                        fd_name(f), st.st_size, f.pos);
          if (!allow_changed_files)
            throw Error(msg, "the job wrote there; restore an image taken with the file as it is, "
                             "or pass --allow-changed-files");
          plan.warnings.push_back(msg);
        }
        a.kind = FdAction::kOpen;
        break;
      }
      case T::Directory:
      case T::CharDev:
        a.kind = FdAction::kOpen;
        break;
      case T::EventFd:
        a.kind = FdAction::kEventFd;
        break;
      case T::Pipe:
        if (pipe_ends[f.inode].first && pipe_ends[f.inode].second) {
          a.kind = FdAction::kPipe;
          auto [it, fresh] = groups.emplace(f.inode, plan.pipe_groups);
          if (fresh) plan.pipe_groups++;
          a.pipe_group = it->second;
          a.read_end = (f.flags & O_ACCMODE) == O_RDONLY;
          a.pipe_data = f.pipe_data;
          break;
        }
        [[fallthrough]];
      case T::Tty:
      case T::Fifo:
      case T::Socket:
      case T::Other:
        if (f.type == T::Tty) {
          a.kind = FdAction::kOpen;
          a.flags = (f.flags & ~O_CREAT) | O_NOCTTY;
          break;
        }
        if (f.type == T::Pipe || f.type == T::Fifo) {
          // The peer is not in the image: the job sees it gone (EOF on
          // read, EPIPE on write), as if the peer had exited.
          a.kind = FdAction::kOrphanPipe;
          a.read_end = (f.flags & O_ACCMODE) == O_RDONLY;
          plan.warnings.push_back(fd_name(f) + " led to a process outside the image; it comes back "
                                  "as a pipe whose other end is closed");
          break;
        }
        throw Error(fd_name(f) + " leads outside the checkpointed processes",
                    "restoring sockets is not supported yet");
    }
    plan.actions.push_back(std::move(a));
  }
  return plan;
}

int install_fds(const FdPlan& plan, int keep_fd, std::string* err) {
  int base = 3;
  for (const auto& a : plan.actions) base = std::max(base, a.target + 1);
  auto fail = [&](const std::string& what, int target) {
    *err = fmt::format("fd {}: {}: {}", target, what, std::strerror(errno));
    return -1;
  };

  int keep = ::fcntl(keep_fd, F_DUPFD_CLOEXEC, base);
  if (keep < 0) return fail("moving the status pipe", keep_fd);

  std::vector<std::pair<int, int>> pipes(static_cast<size_t>(plan.pipe_groups), {-1, -1});
  for (auto& pp : pipes) {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) < 0) return fail("pipe2", -1);
    pp = {::fcntl(fds[0], F_DUPFD_CLOEXEC, base), ::fcntl(fds[1], F_DUPFD_CLOEXEC, base)};
    ::close(fds[0]);
    ::close(fds[1]);
  }

  // First every source at a number above all targets, then into place, so
  // that no dup2 overwrites a source still needed.
  std::vector<int> sources;
  for (const auto& a : plan.actions) {
    int src = -1;
    switch (a.kind) {
      case FdAction::kOpen: {
        int fd = ::open(a.path.c_str(), a.flags & ~(O_CREAT | O_EXCL | O_TRUNC));
        if (fd < 0) return fail("open " + a.path, a.target);
        if (a.pos && ::lseek(fd, static_cast<off_t>(a.pos), SEEK_SET) < 0 && errno != ESPIPE)
          return fail("lseek " + a.path, a.target);
        src = ::fcntl(fd, F_DUPFD_CLOEXEC, base);
        ::close(fd);
        break;
      }
      case FdAction::kInherit:
        src = ::fcntl(a.inherit, F_DUPFD_CLOEXEC, base);
        break;
      case FdAction::kEventFd:
        src = ::eventfd(0, EFD_CLOEXEC | (a.flags & O_NONBLOCK ? EFD_NONBLOCK : 0));
        if (src >= 0 && src < base) {
          int moved = ::fcntl(src, F_DUPFD_CLOEXEC, base);
          ::close(src);
          src = moved;
        }
        break;
      case FdAction::kOrphanPipe: {
        int p[2];
        if (::pipe2(p, O_CLOEXEC) < 0) return fail("pipe2", a.target);
        src = ::fcntl(a.read_end ? p[0] : p[1], F_DUPFD_CLOEXEC, base);
        ::close(p[0]);
        ::close(p[1]);
        break;
      }
      case FdAction::kPipe: {
        auto& pp = pipes[static_cast<size_t>(a.pipe_group)];
        src = ::fcntl(a.read_end ? pp.first : pp.second, F_DUPFD_CLOEXEC, base);
        if (!a.read_end && !a.pipe_data.empty() &&
            ::write(pp.second, a.pipe_data.data(), a.pipe_data.size()) < 0)
          return fail("refilling a pipe", a.target);
        break;
      }
    }
    if (src < 0) return fail("creating the descriptor", a.target);
    sources.push_back(src);
  }
  std::set<int> wanted{keep};
  for (size_t i = 0; i < plan.actions.size(); i++) {
    const auto& a = plan.actions[i];
    if (::dup3(sources[i], a.target, a.cloexec ? O_CLOEXEC : 0) < 0) return fail("dup3", a.target);
    if (!a.cloexec) ::fcntl(a.target, F_SETFD, 0);
    // Open file status flags that open() does not set (O_NONBLOCK on pipes);
    // never on inherited stdio, whose flags snap restore shares.
    if (a.kind != FdAction::kInherit)
      ::fcntl(a.target, F_SETFL, a.flags & (O_APPEND | O_NONBLOCK | O_ASYNC | O_DIRECT | O_NOATIME));
    wanted.insert(a.target);
  }
  // Close everything else (snap's own fds, the sources).
  int next = 0;
  for (int fd : wanted) {
    if (fd > next) ::close_range(static_cast<unsigned>(next), static_cast<unsigned>(fd - 1), 0);
    next = fd + 1;
  }
  ::close_range(static_cast<unsigned>(next), ~0u, 0);
  return keep;
}

}  // namespace snap::restore
