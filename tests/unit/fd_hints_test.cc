// Fds read from hints taken before the stop (tracer/fd_hints.h), on this
// test's own fd table.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <string>

#include "base/error.h"
#include "base/scoped_fd.h"
#include "tracer/fd_hints.h"
#include "tracer/fd_table.h"
#include "tracer/proc.h"
#include "temp_dir.h"

using namespace snap;
using snap::test_support::TempDir;

namespace {

const image::FileDesc* find_fd(const std::vector<image::FileDesc>& fds, int fd) {
  auto it = std::find_if(fds.begin(), fds.end(), [&](const auto& f) { return f.fd == fd; });
  return it == fds.end() ? nullptr : &*it;
}

bool applied(const proc::FdHints& hints, int fd) {
  const auto& a = hints.applied(::getpid());
  return std::binary_search(a.begin(), a.end(), fd);
}

ScopedFd open_file(const std::string& path, int flags = O_RDWR | O_CREAT) {
  ScopedFd fd(::open(path.c_str(), flags, 0600));
  if (!fd) throw SysError("open " + path, errno);
  return fd;
}

}  // namespace

TEST(FdHints, OnlyNamedFilesDirectoriesAndDevicesWithoutOwnerAreHints) {
  image::FileDesc f;
  f.type = image::FdType::Regular;
  f.path = "/data/input.dat";
  EXPECT_TRUE(proc::FdHints::can_hint(f));
  f.path = "/data/input.dat (deleted)";
  EXPECT_FALSE(proc::FdHints::can_hint(f));
  f.path = "net:[4026531840]";
  EXPECT_FALSE(proc::FdHints::can_hint(f));
  f.path = "/data/input.dat";
  f.owner = image::FileOwner{};
  EXPECT_FALSE(proc::FdHints::can_hint(f));
  f.owner.reset();
  f.type = image::FdType::Pipe;
  f.path = "/some/fifo";
  EXPECT_FALSE(proc::FdHints::can_hint(f));
  f.type = image::FdType::Tty;
  EXPECT_FALSE(proc::FdHints::can_hint(f));
}

TEST(FdHints, StoppedReadTakesOffsetFlagsAndWhatChangedSinceTheHints) {
  TempDir dir;
  ScopedFd file = open_file(dir.path() + "/a");
  ASSERT_EQ(::write(file.get(), "0123456789", 10), 10);
  ScopedFd replaced = open_file(dir.path() + "/b");
  ScopedFd folder = open_file(dir.path(), O_RDONLY | O_DIRECTORY);
  ScopedFd null = open_file("/dev/null", O_RDONLY);

  proc::FdHints hints = proc::FdHints::read({::getpid()});
  ASSERT_NE(hints.find(::getpid(), file.get()), nullptr);
  ASSERT_NE(hints.find(::getpid(), replaced.get()), nullptr);

  // What the job does between the hints and the stop.
  ASSERT_EQ(::lseek(file.get(), 4, SEEK_SET), 4);
  ASSERT_EQ(::fcntl(file.get(), F_SETFL, O_APPEND | O_NONBLOCK), 0);
  int p[2];
  ASSERT_EQ(::pipe(p), 0);
  ScopedFd pipe_r(p[0]), pipe_w(p[1]);
  ASSERT_EQ(::dup2(pipe_r.get(), replaced.get()), replaced.get());  // another file, same number
  ScopedFd added = open_file(dir.path() + "/c");
  ASSERT_EQ(::fcntl(null.get(), F_SETFD, FD_CLOEXEC), 0);

  auto fds = proc::read_fds(::getpid(), &hints);
  const auto* f = find_fd(fds, file.get());
  ASSERT_NE(f, nullptr);
  EXPECT_TRUE(applied(hints, file.get()));
  EXPECT_EQ(f->pos, 4u);
  EXPECT_TRUE(f->flags & O_APPEND);
  EXPECT_TRUE(f->flags & O_NONBLOCK);
  EXPECT_EQ(f->path, dir.path() + "/a");
  EXPECT_EQ(f->type, image::FdType::Regular);

  const auto* r = find_fd(fds, replaced.get());
  ASSERT_NE(r, nullptr);
  EXPECT_FALSE(applied(hints, replaced.get()));
  EXPECT_EQ(r->type, image::FdType::Pipe);

  const auto* c = find_fd(fds, added.get());
  ASSERT_NE(c, nullptr);
  EXPECT_FALSE(applied(hints, added.get()));
  EXPECT_EQ(c->path, dir.path() + "/c");

  EXPECT_TRUE(applied(hints, folder.get()));
  EXPECT_EQ(find_fd(fds, folder.get())->type, image::FdType::Directory);

  // Close-on-exec is the fd table's: the check afterwards brings it.
  const auto* n = find_fd(fds, null.get());
  ASSERT_NE(n, nullptr);
  EXPECT_TRUE(applied(hints, null.get()));
  hints.confirm(::getpid(), fds, ::getpid());
  EXPECT_TRUE(find_fd(fds, null.get())->flags & O_CLOEXEC);
  EXPECT_FALSE(find_fd(fds, file.get())->flags & O_CLOEXEC);
  EXPECT_EQ(find_fd(fds, file.get())->size, 10u);
}

TEST(FdHints, AFileLockedSinceTheHintsHasItsLockRead) {
  TempDir dir;
  ScopedFd file = open_file(dir.path() + "/locked");
  proc::FdHints hints = proc::FdHints::read({::getpid()});
  ASSERT_NE(hints.find(::getpid(), file.get()), nullptr);
  ASSERT_EQ(::flock(file.get(), LOCK_EX), 0);
  auto fds = proc::read_fds(::getpid(), &hints);
  const auto* f = find_fd(fds, file.get());
  ASSERT_NE(f, nullptr);
  EXPECT_TRUE(applied(hints, file.get()));
  ASSERT_EQ(f->locks.size(), 1u);
  EXPECT_EQ(f->locks[0].kind, image::LockKind::Flock);
}

TEST(FdHints, AFileDeletedBetweenTheHintsAndTheStopIsReadWhole) {
  TempDir dir;
  const std::string path = dir.path() + "/gone";
  ScopedFd file = open_file(path);
  proc::FdHints hints = proc::FdHints::read({::getpid()});
  ASSERT_EQ(::unlink(path.c_str()), 0);
  auto fds = proc::read_fds(::getpid(), &hints);
  EXPECT_FALSE(applied(hints, file.get()));
  const auto* f = find_fd(fds, file.get());
  ASSERT_NE(f, nullptr);
  EXPECT_EQ(f->path, path + " (deleted)");
}

TEST(FdHints, AFileDeletedAfterTheStopKeepsItsNameAndSizeThen) {
  TempDir dir;
  const std::string path = dir.path() + "/replaced";
  ScopedFd file = open_file(path);
  ASSERT_EQ(::write(file.get(), "0123456789", 10), 10);
  proc::FdHints hints = proc::FdHints::read({::getpid()});
  auto fds = proc::read_fds(::getpid(), &hints);
  ASSERT_TRUE(applied(hints, file.get()));
  // Once the job runs again: it grows the file, then renames another over it.
  ASSERT_EQ(::write(file.get(), "abc", 3), 3);
  ScopedFd other = open_file(path + ".new");
  ASSERT_EQ(::rename((path + ".new").c_str(), path.c_str()), 0);
  hints.confirm(::getpid(), fds, ::getpid());
  const auto* f = find_fd(fds, file.get());
  ASSERT_NE(f, nullptr);
  EXPECT_EQ(f->path, path);
  EXPECT_EQ(f->size, 10u);
}

TEST(FdHints, AFileReadFromItsFdinfoAndDeletedSinceFailsTheCheck) {
  // Locked at the hints: read from its fdinfo at the stop, its name checked
  // afterwards, when a deletion may have been before the stop or after.
  TempDir dir;
  const std::string path = dir.path() + "/gone";
  ScopedFd file = open_file(path);
  ASSERT_EQ(::flock(file.get(), LOCK_EX), 0);
  proc::FdHints hints = proc::FdHints::read({::getpid()});
  auto fds = proc::read_fds(::getpid(), &hints);
  ASSERT_TRUE(applied(hints, file.get()));
  ASSERT_EQ(::unlink(path.c_str()), 0);
  try {
    hints.confirm(::getpid(), fds, ::getpid());
    FAIL() << "a deleted file passed the check";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("deleted"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("fd " + std::to_string(file.get())), std::string::npos)
        << e.what();
  }
}

TEST(FdHints, ProcLocksGivesTheLockedInodes) {
  constexpr char kLocks[] =
      "1: POSIX  ADVISORY  WRITE 1234 08:02:131090 0 EOF\n"
      "1: -> POSIX  ADVISORY  WRITE 1240 08:02:131090 0 EOF\n"
      "2: FLOCK  ADVISORY  WRITE 99 00:2d:77 0 EOF\n"
      "3: OFDLCK ADVISORY  READ  -1 fe:01:5 0 EOF\n";
  EXPECT_EQ(proc::parse_locked_inodes(kLocks), (std::vector<uint64_t>{5, 77, 131090}));
  EXPECT_TRUE(proc::parse_locked_inodes("").empty());
}
