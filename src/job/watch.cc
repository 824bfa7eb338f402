#include "job/watch.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/file.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fmt/core.h>
#include <thread>

#include "base/error.h"
#include "base/log.h"
#include "base/scoped_fd.h"
#include "image/image_writer.h"
#include "job/control.h"
#include "job/dump.h"
#include "tracer/task.h"

namespace snap::job {

namespace {

namespace fs = std::filesystem;

bool exists(const std::string& path) {
  struct stat st {};
  return ::lstat(path.c_str(), &st) == 0;
}

// Something that becomes readable when the job has ended: a pidfd (--pid),
// or an inotify watch on the checkpoint directory that sees snap run remove
// its control socket (--dir).
class JobEnd {
 public:
  explicit JobEnd(const WatchOptions& o) {
    if (o.pid) {
      fd_.reset(static_cast<int>(::syscall(SYS_pidfd_open, o.pid, 0)));
      if (!fd_) throw SysError(fmt::format("pidfd_open(pid {})", o.pid), errno, "is the job running?");
      return;
    }
    sock_ = control_socket_path(o.dir);
    // snap run may start just after us: give it a minute.
    for (int i = 0; !exists(sock_); i++) {
      if (i == 120)
        throw Error("no snap run owns " + o.dir,
                    "start the job with 'snap run --dir " + o.dir + " -- PROGRAM' first");
      std::this_thread::sleep_for(std::chrono::milliseconds(500));
    }
    fd_.reset(::inotify_init1(IN_CLOEXEC | IN_NONBLOCK));
    if (!fd_ || ::inotify_add_watch(fd_.get(), o.dir.c_str(), IN_DELETE | IN_MOVED_FROM) < 0)
      throw SysError("inotify on " + o.dir, errno);
    lock_ = o.dir + "/run.lock";
  }
  // How long to wait before looking again: a snap run that was killed
  // leaves its socket behind, so its lock is looked at every second.
  int poll_timeout_ms() const { return sock_.empty() ? -1 : 1000; }
  int fd() const { return fd_.get(); }
  // After fd() polled readable (or to check now).
  bool ended() {
    if (sock_.empty()) {
      pollfd p{fd_.get(), POLLIN, 0};
      return ::poll(&p, 1, 0) > 0;
    }
    char buf[4096];
    while (::read(fd_.get(), buf, sizeof buf) > 0) {}
    return !exists(sock_) || !lock_held();
  }

 private:
  bool lock_held() const {
    ScopedFd l(::open(lock_.c_str(), O_RDONLY | O_CLOEXEC));
    return l && ::flock(l.get(), LOCK_SH | LOCK_NB) < 0 && errno == EWOULDBLOCK;
  }

  ScopedFd fd_;
  std::string sock_, lock_;
};

void checkpoint_now(const WatchOptions& o) {
  if (!o.dir.empty()) {
    auto n = request_checkpoint(o.dir, true, false);
    std::fprintf(stderr, "snap watch: checkpoint %d of %s is safe\n", n.value_or(0), o.dir.c_str());
    return;
  }
  auto writer = image::ImageWriter::create(o.output, true);
  ImageSink sink(writer);
  auto r = dump_tree(o.pid, sink, DumpOptions{});
  std::fprintf(stderr, "snap watch: pid %d checkpointed to %s in %.2f s (frozen %.2f s)\n", o.pid,
               o.output.c_str(), r.seconds, r.frozen);
}

}  // namespace

int watch_file(const WatchOptions& o) {
  if (o.pid) check_dumpable(o.pid);
  fs::path file = fs::absolute(o.file);
  std::string parent = file.parent_path().string();
  ScopedFd in(::inotify_init1(IN_CLOEXEC | IN_NONBLOCK));
  if (!in || ::inotify_add_watch(in.get(), parent.c_str(),
                                 IN_CREATE | IN_MOVED_TO | IN_CLOSE_WRITE | IN_ATTRIB) < 0)
    throw SysError("inotify on " + parent, errno, "the folder of --file must exist");
  JobEnd end(o);
  std::fprintf(stderr, "snap watch: waiting for %s\n", file.c_str());
  for (;;) {
    // The file may be there already, or have come while a checkpoint ran.
    if (exists(file.string())) {
      try {
        checkpoint_now(o);
      } catch (const Error& e) {
        warn("checkpoint failed, still watching: {}", e.what());
      }
      if (::unlink(file.c_str()) < 0 && errno != ENOENT)
        warn("could not remove {}: {}", file.string(), std::strerror(errno));
    }
    if (end.ended()) break;
    pollfd fds[2] = {{in.get(), POLLIN, 0}, {end.fd(), POLLIN, 0}};
    if (::poll(fds, 2, end.poll_timeout_ms()) < 0 && errno != EINTR) throw SysError("poll", errno);
    char buf[4096];
    while (::read(in.get(), buf, sizeof buf) > 0) {}  // which event does not matter
  }
  std::fprintf(stderr, "snap watch: the job has ended\n");
  return 0;
}

}  // namespace snap::job
