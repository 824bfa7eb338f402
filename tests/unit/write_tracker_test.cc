// Tests of tracer/write_tracker: a forked child with several mappings is
// stopped, armed, resumed, made to write known pages, stopped again and
// scanned. Skipped (with the reason) where the kernel cannot track writes.
#include <dirent.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "base/error.h"
#include "base/scoped_fd.h"
#include "tracer/proc.h"
#include "tracer/remote.h"
#include "tracer/task.h"
#include "tracer/write_tracker.h"

namespace snap {
namespace {

constexpr uint64_t kPage = 4096;

#define SKIP_UNLESS_SUPPORTED()                                                  \
  do {                                                                           \
    const auto& sup = WriteTracker::supported();                                 \
    if (!sup.ok) GTEST_SKIP() << "kernel cannot track writes: " << sup.reason;   \
  } while (0)

// A command for the child: it does `op` and answers with one uint64_t.
struct Cmd {
  char op;
  uint64_t a, b;
};

// The job: a forked child with four mappings of its own, obeying commands
// on a pipe. A: 64 anonymous pages, all touched; B: 16 anonymous pages,
// untouched; C: 8 pages of a private file mapping, pages 0-3 read, page 1
// written (copied on write); D: 8 pages of a file mapped shared (a data
// file), page 0 written. Killed and reaped on destruction.
class Job {
 public:
  static constexpr size_t kA = 64, kB = 16, kC = 8, kD = 8;

  Job() {
    a_ = map(kA * kPage, -1);
    b_ = map(kB * kPage, -1);
    c_ = map(kC * kPage, unlinked_file(kC, 'f').get());
    d_ = map(kD * kPage, unlinked_file(kD, 'g').get(), MAP_SHARED);
    int cmd[2], ack[2];
    check_sys(::pipe2(cmd, O_CLOEXEC), "pipe2");
    check_sys(::pipe2(ack, O_CLOEXEC), "pipe2");
    pid_ = ::fork();
    if (pid_ == 0) {
      ::close(cmd[1]);
      ::close(ack[0]);
      ::_exit(serve(cmd[0], ack[1]));
    }
    ::close(cmd[0]);
    ::close(ack[1]);
    cmd_.reset(cmd[1]);
    ack_.reset(ack[0]);
    ask({'n', 0, 0});  // ready: its pages are touched
  }
  ~Job() {
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
    ::munmap(reinterpret_cast<void*>(a_), (kA + 1) * kPage);
    ::munmap(reinterpret_cast<void*>(b_), (kB + 1) * kPage);
    ::munmap(reinterpret_cast<void*>(c_), (kC + 1) * kPage);
    ::munmap(reinterpret_cast<void*>(d_), (kD + 1) * kPage);
  }
  Job(const Job&) = delete;
  Job& operator=(const Job&) = delete;

  pid_t pid() const { return pid_; }
  uint64_t a(size_t page) const { return a_ + page * kPage; }
  uint64_t b(size_t page) const { return b_ + page * kPage; }
  uint64_t c(size_t page) const { return c_ + page * kPage; }
  uint64_t d(size_t page) const { return d_ + page * kPage; }

  // Sends a command and waits (5 s at most) for the answer.
  uint64_t ask(Cmd c, const void* extra = nullptr, size_t extra_len = 0) {
    if (::write(cmd_.get(), &c, sizeof c) != sizeof c) throw SysError("write cmd", errno);
    if (extra && ::write(cmd_.get(), extra, extra_len) != static_cast<ssize_t>(extra_len))
      throw SysError("write cmd data", errno);
    pollfd p{ack_.get(), POLLIN, 0};
    if (::poll(&p, 1, 5000) != 1) throw Error("the job did not answer in 5 s");
    uint64_t v = 0;
    if (::read(ack_.get(), &v, sizeof v) != sizeof v) throw Error("the job ended");
    return v;
  }
  void write_page(uint64_t addr, uint64_t value = 0x5a) { ask({'w', addr, value}); }

 private:
  // An unlinked temporary file of `pages` pages of `fill`.
  static ScopedFd unlinked_file(size_t pages, char fill) {
    char tmpl[] = "/tmp/snap-wt-XXXXXX";
    ScopedFd f(::mkstemp(tmpl));
    if (!f) throw SysError("mkstemp", errno);
    ::unlink(tmpl);
    std::vector<char> data(pages * kPage, fill);
    if (::write(f.get(), data.data(), data.size()) != static_cast<ssize_t>(data.size()))
      throw SysError("write", errno);
    return f;
  }

  // A mapping of its own: an inaccessible page after it keeps the kernel
  // from merging it with its neighbour.
  static uint64_t map(size_t len, int fd, int sharing = MAP_PRIVATE) {
    void* p = ::mmap(nullptr, len + kPage, PROT_READ | PROT_WRITE,
                     sharing | (fd < 0 ? MAP_ANONYMOUS : 0), fd, 0);
    if (p == MAP_FAILED) throw SysError("mmap", errno);
    ::mprotect(static_cast<char*>(p) + len, kPage, PROT_NONE);
    return reinterpret_cast<uint64_t>(p);
  }

  int serve(int in, int out) {
    for (size_t i = 0; i < kA; i++) reinterpret_cast<volatile char*>(a_)[i * kPage] = 1;
    volatile char sink = 0;
    for (size_t i = 0; i < 4; i++) sink = sink + reinterpret_cast<volatile char*>(c_)[i * kPage];
    reinterpret_cast<volatile char*>(c_)[1 * kPage] = 'w';
    reinterpret_cast<volatile char*>(d_)[0] = 'w';
    for (;;) {
      Cmd c{};
      if (::read(in, &c, sizeof c) != sizeof c) return 0;
      uint64_t r = 0;
      switch (c.op) {
        case 'n': break;
        case 'w': *reinterpret_cast<volatile uint64_t*>(c.a) = c.b; break;
        case 'g': r = *reinterpret_cast<volatile uint64_t*>(c.a); break;
        case 'k':  // the kernel writes the page: read() into it
          if (::read(in, reinterpret_cast<void*>(c.a), 8) != 8) return 3;
          break;
        case 'd': r = static_cast<uint64_t>(::madvise(reinterpret_cast<void*>(c.a), c.b, MADV_DONTNEED)); break;
        case 'p': r = static_cast<uint64_t>(::mprotect(reinterpret_cast<void*>(c.a), c.b, PROT_READ)); break;
        case 'm': {
          void* p = ::mmap(nullptr, c.b, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
          if (p == MAP_FAILED) return 4;
          std::memset(p, 1, c.b);
          r = reinterpret_cast<uint64_t>(p);
          break;
        }
        case 'f': {  // fork: the grandchild writes c.a, the job then c.b
          pid_t g = ::fork();
          if (g == 0) {
            *reinterpret_cast<volatile uint64_t*>(c.a) = 0x77;
            ::_exit(*reinterpret_cast<volatile uint64_t*>(c.a) == 0x77 ? 0 : 1);
          }
          int st = 0;
          if (g < 0 || ::waitpid(g, &st, 0) != g) return 5;
          *reinterpret_cast<volatile uint64_t*>(c.b) = 0x88;
          r = static_cast<uint64_t>(st);
          break;
        }
        default: return 2;
      }
      if (::write(out, &r, sizeof r) != sizeof r) return 1;
    }
  }

  pid_t pid_ = -1;
  uint64_t a_ = 0, b_ = 0, c_ = 0, d_ = 0;
  ScopedFd cmd_, ack_;
};

// Runs `fn` with the job stopped (all of it: it has one thread).
void stopped(pid_t pid, const std::function<void(Task&)>& fn) {
  auto task = Task::seize_and_stop(pid);
  fn(*task);
}

WriteTracker arm(pid_t pid) {
  std::optional<WriteTracker> t;
  stopped(pid, [&](Task& task) {
    RemoteSyscalls rs(task, find_syscall_site(pid));
    t.emplace(WriteTracker::arm(rs, proc::read_mappings(pid)));
  });
  return std::move(*t);
}

std::map<uint64_t, RangeReport> scan(WriteTracker& t) {
  std::map<uint64_t, RangeReport> by_start;
  stopped(t.pid(), [&](Task&) {
    for (auto& r : t.scan_and_rearm(proc::read_mappings(t.pid()))) by_start[r.start] = r;
  });
  return by_start;
}

std::vector<PageRun> runs(std::initializer_list<std::pair<uint64_t, uint64_t>> l) {
  std::vector<PageRun> out;
  for (auto [s, e] : l) out.push_back({s, e});
  return out;
}

std::string vmflags_at(pid_t pid, uint64_t start) {
  for (const auto& e : proc::read_smaps(pid))
    if (e.start == start) return e.vmflags;
  return "(no mapping)";
}

TEST(WriteTracker, SupportedSaysWhy) {
  const auto& s = WriteTracker::supported();
  EXPECT_FALSE(s.reason.empty());
  std::printf("write tracking: %s (%s)\n", s.ok ? "yes" : "no", s.reason.c_str());
}

TEST(WriteTracker, ReportsExactlyTheWrittenPagesAndRearms) {
  SKIP_UNLESS_SUPPORTED();
  Job job;
  WriteTracker t = arm(job.pid());
  EXPECT_NE(vmflags_at(job.pid(), job.a(0)).find("uw"), std::string::npos);
  for (size_t p : {3, 10, 11, 12}) job.write_page(job.a(p));
  job.write_page(job.b(5));  // untouched before: a new page
  job.write_page(job.c(2));  // a file page: copied on write
  uint64_t v = 42;
  job.ask({'k', job.a(30), 0}, &v, sizeof v);  // written by the kernel (read())
  auto r = scan(t);
  ASSERT_TRUE(r.count(job.a(0)) && r.count(job.b(0)) && r.count(job.c(0)));
  const auto &a = r[job.a(0)], &b = r[job.b(0)], &c = r[job.c(0)];
  ASSERT_TRUE(a.tracked) << a.why;
  ASSERT_TRUE(b.tracked) << b.why;
  ASSERT_TRUE(c.tracked) << c.why;
  EXPECT_EQ(a.written, runs({{job.a(3), job.a(4)}, {job.a(10), job.a(13)}, {job.a(30), job.a(31)}}));
  EXPECT_EQ(b.written, runs({{job.b(5), job.b(6)}}));
  EXPECT_EQ(c.written, runs({{job.c(2), job.c(3)}}));
  EXPECT_EQ(a.resident, runs({{job.a(0), job.a(Job::kA)}}));
  EXPECT_EQ(b.resident, runs({{job.b(5), job.b(6)}}));
  // Pages 1 (written before arming) and 2 are the mapping's own; 0 and 3
  // are the file's.
  EXPECT_EQ(c.resident, runs({{job.c(1), job.c(3)}}));

  // Re-armed: the job runs on without writing these pages; nothing written.
  job.ask({'n', 0, 0});
  auto r2 = scan(t);
  EXPECT_TRUE(r2[job.a(0)].tracked && r2[job.b(0)].tracked && r2[job.c(0)].tracked);
  EXPECT_TRUE(r2[job.a(0)].written.empty());
  EXPECT_TRUE(r2[job.b(0)].written.empty());
  EXPECT_TRUE(r2[job.c(0)].written.empty());
  EXPECT_EQ(r2[job.a(0)].resident, a.resident);

  // And writes after the scan are seen by the next one, values intact.
  job.write_page(job.a(63), 7);
  auto r3 = scan(t);
  EXPECT_EQ(r3[job.a(0)].written, runs({{job.a(63), job.a(64)}}));
  EXPECT_EQ(job.ask({'g', job.a(63), 0}), 7u);
  EXPECT_EQ(job.ask({'g', job.a(30), 0}), 42u);
}

TEST(WriteTracker, ZappedPagesAreNotResidentNorWritten) {
  SKIP_UNLESS_SUPPORTED();
  Job job;
  WriteTracker t = arm(job.pid());
  EXPECT_EQ(job.ask({'d', job.a(20), 2 * kPage}), 0u);  // MADV_DONTNEED
  EXPECT_EQ(job.ask({'d', job.c(1), kPage}), 0u);       // back to the file's page
  auto r = scan(t);
  const auto& a = r[job.a(0)];
  ASSERT_TRUE(a.tracked) << a.why;
  EXPECT_TRUE(a.written.empty());
  EXPECT_EQ(a.resident, runs({{job.a(0), job.a(20)}, {job.a(22), job.a(Job::kA)}}));
  EXPECT_FALSE(runs_contain(a.resident, job.a(21)));
  EXPECT_TRUE(runs_contain(a.resident, job.a(22)));
  EXPECT_TRUE(r[job.c(0)].written.empty());
  EXPECT_TRUE(r[job.c(0)].resident.empty());
  // Written again after the zap: written and resident.
  job.write_page(job.a(21));
  auto r2 = scan(t);
  EXPECT_EQ(r2[job.a(0)].written, runs({{job.a(21), job.a(22)}}));
  EXPECT_TRUE(runs_contain(r2[job.a(0)].resident, job.a(21)));
}

// A data file mapped shared, armed as a range (job/file_precopy.h): the
// pages written since are unprotected, and so is one written and then
// zapped (nothing else tells it was written); one zapped unwritten, one
// read, one written before arming are not.
TEST(WriteTracker, SharedFileRangeTellsWrittenAndZappedPages) {
  SKIP_UNLESS_SUPPORTED();
  Job job;
  std::optional<WriteTracker> t;
  stopped(job.pid(), [&](Task& task) {
    RemoteSyscalls rs(task, find_syscall_site(job.pid()));
    t.emplace(WriteTracker::arm_ranges(rs, runs({{job.d(0), job.d(Job::kD)}})));
  });
  ASSERT_EQ(t->armed(), runs({{job.d(0), job.d(Job::kD)}}));
  job.write_page(job.d(2));
  job.write_page(job.d(5));
  EXPECT_EQ(job.ask({'d', job.d(5), kPage}), 0u);  // written, then zapped
  EXPECT_EQ(job.ask({'d', job.d(6), kPage}), 0u);  // zapped unwritten
  EXPECT_EQ(job.ask({'g', job.d(7), 0}) & 0xff, uint64_t{'g'});  // read
  std::vector<PageRun> got;
  stopped(job.pid(), [&](Task&) { got = t->unprotected(job.d(0), job.d(Job::kD)); });
  EXPECT_EQ(got, runs({{job.d(2), job.d(3)}, {job.d(5), job.d(6)}}));
  EXPECT_EQ(job.ask({'g', job.d(5), 0}), 0x5au);  // the write is in the file
}

TEST(WriteTracker, NewAndReshapedMappingsAreUntrackedThenArmed) {
  SKIP_UNLESS_SUPPORTED();
  Job job;
  WriteTracker t = arm(job.pid());
  uint64_t fresh = job.ask({'m', 0, 8 * kPage});
  EXPECT_EQ(job.ask({'p', job.a(0), 4 * kPage}), 0u);  // splits A
  auto r = scan(t);
  ASSERT_TRUE(r.count(fresh));
  EXPECT_FALSE(r[fresh].tracked);
  EXPECT_NE(r[fresh].why.find("mapped since"), std::string::npos) << r[fresh].why;
  ASSERT_TRUE(r.count(job.a(0)) && r.count(job.a(4)));
  EXPECT_FALSE(r[job.a(0)].tracked);  // read-only now: not trackable
  EXPECT_FALSE(r[job.a(4)].tracked);
  EXPECT_NE(r[job.a(4)].why.find("changed shape"), std::string::npos) << r[job.a(4)].why;
  EXPECT_TRUE(r[job.b(0)].tracked) << r[job.b(0)].why;
  // Armed by that scan: the next one tracks them.
  job.write_page(fresh + kPage);
  job.write_page(job.a(5));
  auto r2 = scan(t);
  ASSERT_TRUE(r2[fresh].tracked) << r2[fresh].why;
  EXPECT_EQ(r2[fresh].written, runs({{fresh + kPage, fresh + 2 * kPage}}));
  ASSERT_TRUE(r2[job.a(4)].tracked) << r2[job.a(4)].why;
  EXPECT_EQ(r2[job.a(4)].written, runs({{job.a(5), job.a(6)}}));
}

// Armed as a dump's reading before the stop arms it (job/memory_precopy.h):
// the userfaultfd made with the job stopped, the mappings protected from
// snap once it runs, only their populated pages. since_armed() then tells,
// with the job stopped and nothing protected again, the pages written and
// those that hold state: a page zapped since is neither, one zapped and
// read again (the zero page) is written, a page first touched since is
// written (read only, too: a false positive), a file page copied on write
// is written; a mapping made since, or a part made read-only, has no
// report, the part of a split mapping still armed has its own.
// written_pages() counts while the job runs; disarm() ends it all.
TEST(WriteTracker, ArmedWhileRunningTellsWrittenAndHeldPages) {
  SKIP_UNLESS_SUPPORTED();
  Job job;
  std::optional<WriteTracker> t;
  stopped(job.pid(), [&](Task& task) {
    RemoteSyscalls rs(task, find_syscall_site(job.pid()));
    t.emplace(WriteTracker::open(rs));
  });
  t->arm_mappings(proc::read_mappings(job.pid()), true);  // the job runs
  EXPECT_NE(vmflags_at(job.pid(), job.a(0)).find("uw"), std::string::npos);
  ASSERT_TRUE(runs_contain(t->armed(), job.a(0)) && runs_contain(t->armed(), job.b(0)) &&
              runs_contain(t->armed(), job.c(0)));
  for (size_t p : {3, 10, 11}) job.write_page(job.a(p));
  EXPECT_EQ(job.ask({'d', job.a(20), 2 * kPage}), 0u);  // zapped: gone
  EXPECT_EQ(job.ask({'d', job.a(50), kPage}), 0u);      // zapped, then read: the zero page,
  EXPECT_EQ(job.ask({'g', job.a(50), 0}), 0u);          // changed: written
  job.write_page(job.b(5));                               // first touched, written
  EXPECT_EQ(job.ask({'g', job.b(7), 0}), 0u);             // first touched, read
  job.write_page(job.c(2));                               // copied on write
  // While it runs (A, B and C: its stack and data are armed too).
  EXPECT_EQ(t->written_pages(runs({{job.a(0), job.a(Job::kA)}, {job.b(0), job.b(Job::kB)},
                                   {job.c(0), job.c(Job::kC)}})),
            4u + 2u + 1u);
  uint64_t fresh = 0;
  std::vector<std::optional<WriteTracker::Since>> since;
  std::vector<image::Mapping> maps;
  fresh = job.ask({'m', 0, 8 * kPage});
  stopped(job.pid(), [&](Task&) {
    maps = proc::read_mappings(job.pid());
    since = t->since_armed(maps);
  });
  ASSERT_EQ(since.size(), maps.size());
  std::map<uint64_t, std::optional<WriteTracker::Since>> at;
  for (size_t i = 0; i < maps.size(); i++) at[maps[i].start] = since[i];
  ASSERT_TRUE(at[job.a(0)] && at[job.b(0)] && at[job.c(0)]);
  EXPECT_FALSE(at[fresh]) << "mapped after arming";
  EXPECT_EQ(at[job.a(0)]->written,
            runs({{job.a(3), job.a(4)}, {job.a(10), job.a(12)}, {job.a(50), job.a(51)}}));
  EXPECT_EQ(at[job.a(0)]->held, runs({{job.a(0), job.a(20)}, {job.a(22), job.a(Job::kA)}}));
  EXPECT_EQ(at[job.b(0)]->written, runs({{job.b(5), job.b(6)}, {job.b(7), job.b(8)}}));
  EXPECT_EQ(at[job.b(0)]->held, at[job.b(0)]->written);
  EXPECT_EQ(at[job.c(0)]->written, runs({{job.c(2), job.c(3)}}));
  EXPECT_EQ(at[job.c(0)]->held, runs({{job.c(1), job.c(3)}}));  // its own pages only
  // Split since (mprotect of its first pages): the part made read-only
  // has no report, the rest, still armed and writable, has its own.
  EXPECT_EQ(job.ask({'p', job.a(0), 4 * kPage}), 0u);
  job.write_page(job.a(6));
  stopped(job.pid(), [&](Task&) {
    maps = proc::read_mappings(job.pid());
    since = t->since_armed(maps);
  });
  at.clear();
  for (size_t i = 0; i < maps.size(); i++) at[maps[i].start] = since[i];
  EXPECT_FALSE(at[job.a(0)]);
  ASSERT_TRUE(at[job.a(4)]);
  EXPECT_EQ(at[job.a(4)]->written,
            runs({{job.a(6), job.a(7)}, {job.a(10), job.a(12)}, {job.a(50), job.a(51)}}));
  EXPECT_EQ(at[job.a(4)]->held, runs({{job.a(4), job.a(20)}, {job.a(22), job.a(Job::kA)}}));
  // Asked to stop, it returns before any piece, what is armed left as it
  // was (what a child of snap's goes on with), then ends it all.
  const std::vector<PageRun> armed_before = t->armed();
  std::stop_source stop;
  stop.request_stop();
  EXPECT_FALSE(t->disarm(8 * kPage, std::chrono::microseconds(0), stop.get_token()));
  EXPECT_TRUE(t->armed() == armed_before);
  EXPECT_NE(vmflags_at(job.pid(), job.b(0)).find("uw"), std::string::npos);
  EXPECT_TRUE(t->disarm(8 * kPage, std::chrono::microseconds(0)));
  EXPECT_TRUE(t->armed().empty());
  EXPECT_EQ(vmflags_at(job.pid(), job.b(0)).find("uw"), std::string::npos);
  EXPECT_EQ(vmflags_at(job.pid(), job.a(4)).find("uw"), std::string::npos);
  EXPECT_EQ(job.ask({'g', job.a(3), 0}), 0x5au);
  job.write_page(job.a(40), 12);
  EXPECT_EQ(job.ask({'g', job.a(40), 0}), 12u);
}

std::vector<std::string> fd_list(pid_t pid) {
  std::vector<std::string> out;
  std::string dir = "/proc/" + std::to_string(pid) + "/fd";
  DIR* d = ::opendir(dir.c_str());
  if (!d) return out;
  while (dirent* e = ::readdir(d)) {
    if (e->d_name[0] == '.') continue;
    out.push_back(std::string(e->d_name) + " -> " + proc::read_link(dir + "/" + e->d_name));
  }
  ::closedir(d);
  std::sort(out.begin(), out.end());
  return out;
}

TEST(WriteTracker, LeavesNoDescriptorOrMappingInTheJob) {
  SKIP_UNLESS_SUPPORTED();
  Job job;
  std::string maps_path = "/proc/" + std::to_string(job.pid()) + "/maps";
  std::optional<WriteTracker> t;
  std::vector<std::string> fds_before, fds_after;
  std::string maps_before, maps_after;
  stopped(job.pid(), [&](Task& task) {
    fds_before = fd_list(job.pid());
    maps_before = proc::read_file(maps_path);
    {
      RemoteSyscalls rs(task, find_syscall_site(job.pid()));
      t.emplace(WriteTracker::arm(rs, proc::read_mappings(job.pid())));
    }
    fds_after = fd_list(job.pid());
    maps_after = proc::read_file(maps_path);
  });
  EXPECT_EQ(fds_before, fds_after);
  EXPECT_EQ(maps_before, maps_after);
  for (const auto& f : fds_after) EXPECT_EQ(f.find("userfaultfd"), std::string::npos) << f;
  job.write_page(job.a(1));
  scan(*t);
  EXPECT_EQ(fd_list(job.pid()), fds_before);
  EXPECT_EQ(proc::read_file(maps_path), maps_before);
}

TEST(WriteTracker, ForkInTheJobKeepsTheParentTracked) {
  SKIP_UNLESS_SUPPORTED();
  Job job;
  WriteTracker t = arm(job.pid());
  // The grandchild writes A page 40 in its own copy; the job writes page 41.
  EXPECT_EQ(job.ask({'f', job.a(40), job.a(41)}), 0u);  // grandchild exit status 0
  auto r = scan(t);
  ASSERT_TRUE(r[job.a(0)].tracked) << r[job.a(0)].why;
  EXPECT_EQ(r[job.a(0)].written, runs({{job.a(41), job.a(42)}}));
  EXPECT_EQ(job.ask({'g', job.a(40), 0}), 1u);  // the grandchild's write stayed its own
  // Pages shared copy-on-write with the (gone) child: written once more.
  job.write_page(job.a(40), 9);
  auto r2 = scan(t);
  EXPECT_EQ(r2[job.a(0)].written, runs({{job.a(40), job.a(41)}}));
  EXPECT_EQ(job.ask({'g', job.a(40), 0}), 9u);
}

TEST(WriteTracker, JobRunsOnWhenTheHolderDies) {
  SKIP_UNLESS_SUPPORTED();
  Job job;
  int ready[2];
  ASSERT_EQ(::pipe2(ready, O_CLOEXEC), 0);
  pid_t holder = ::fork();
  if (holder == 0) {
    ::close(ready[0]);
    int rc = 0;
    try {
      WriteTracker t = arm(job.pid());
      char c = 'a';
      if (::write(ready[1], &c, 1) != 1) rc = 2;
      for (;;) ::pause();
    } catch (...) {
      rc = 1;
    }
    ::_exit(rc);
  }
  ::close(ready[1]);
  char c = 0;
  pollfd p{ready[0], POLLIN, 0};
  ASSERT_EQ(::poll(&p, 1, 10000), 1);
  ASSERT_EQ(::read(ready[0], &c, 1), 1);
  ::close(ready[0]);
  EXPECT_NE(vmflags_at(job.pid(), job.a(0)).find("uw"), std::string::npos);
  job.write_page(job.a(2), 11);  // tracked, not blocked
  ASSERT_EQ(::kill(holder, SIGKILL), 0);
  int st = 0;
  ASSERT_EQ(::waitpid(holder, &st, 0), holder);
  EXPECT_TRUE(WIFSIGNALED(st));
  // The context went with its holder: the ranges are unregistered.
  std::string flags;
  for (int i = 0; i < 100; i++) {
    flags = vmflags_at(job.pid(), job.a(0));
    if (flags.find("uw") == std::string::npos) break;
    ::usleep(10000);
  }
  EXPECT_EQ(flags.find("uw"), std::string::npos) << flags;
  for (size_t pg = 0; pg < Job::kA; pg++) job.write_page(job.a(pg), 100 + pg);
  for (size_t pg = 0; pg < Job::kA; pg++) EXPECT_EQ(job.ask({'g', job.a(pg), 0}), 100 + pg);
}

}  // namespace
}  // namespace snap
