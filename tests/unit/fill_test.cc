// Filling a process's memory from an image (src/restore/fill.h), into a real
// child process: every page lands where the image says, zero pages are
// written only where memory does not start as zeros, any number of threads.
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <map>
#include <random>

#include <gtest/gtest.h>

#include "tests/unit/temp_dir.h"

#include "base/error.h"
#include "image/checkpoint.h"
#include "image/image_reader.h"
#include "image/image_writer.h"
#include "restore/fill.h"
#include "restore/page_copier.h"
#include "tracer/userfaultfd.h"

namespace snap::restore {
namespace {

using image::kPageSize;
using image::Mapping;
using image::MappingKind;
using test_support::TempDir;
using Page = std::vector<uint8_t>;

constexpr pid_t kSavedPid = 100;
constexpr uint64_t kPages = 600;
constexpr uint8_t kStale = 0xaa;  // what the child's memory holds before the fill

// Two regions of this process, inherited by the child at the same address:
// one stands for private anonymous memory, one for a file mapping.
struct Regions {
  uint8_t* anon = nullptr;
  uint8_t* file = nullptr;
  Regions() {
    for (uint8_t** r : {&anon, &file}) {
      void* p = ::mmap(nullptr, kPages * kPageSize, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
      if (p == MAP_FAILED) throw std::runtime_error("mmap");
      *r = static_cast<uint8_t*>(p);
      std::memset(*r, kStale, kPages * kPageSize);
    }
  }
  ~Regions() {
    ::munmap(anon, kPages * kPageSize);
    ::munmap(file, kPages * kPageSize);
  }
};

// Page i of a region: random, text, zero or repeated, in stretches.
Page page_for(uint64_t i, std::mt19937_64& rng) {
  Page p(kPageSize);
  if (i < 150 || i >= 450) {
    for (size_t k = 0; k < kPageSize; k += 8) {
      uint64_t v = rng();
      std::memcpy(&p[k], &v, 8);
    }
  } else if (i < 300) {
    std::string s = "line " + std::to_string(i) + " of some text that compresses well. ";
    for (size_t k = 0; k < kPageSize; ++k) p[k] = static_cast<uint8_t>(s[k % s.size()]);
  } else if (i >= 400) {
    std::memset(p.data(), 0x5c, kPageSize);  // the same page 50 times
  }  // 300..399: zero
  return p;
}

Mapping mapping(const uint8_t* start, MappingKind kind) {
  Mapping m;
  m.start = reinterpret_cast<uint64_t>(start);
  m.end = m.start + kPages * kPageSize;
  m.prot = PROT_READ | PROT_WRITE;
  m.kind = kind;
  if (kind == MappingKind::File) m.path = "/some/file";
  m.pages_dumped = kPages;
  return m;
}

// Writes an image of both regions' pages; returns them by address.
std::map<uint64_t, Page> write_image(const std::string& dir, const Regions& r,
                                     image::Process& proc) {
  std::mt19937_64 rng(3);
  std::map<uint64_t, Page> want;
  auto w = image::ImageWriter::create(dir, false);
  proc.pid = kSavedPid;
  proc.ppid = 1;
  proc.pgid = proc.sid = kSavedPid;
  image::ThreadState t;
  t.tid = kSavedPid;
  proc.threads.push_back(t);
  for (auto [base, kind] : {std::pair{r.anon, MappingKind::Anonymous},
                            std::pair{r.file, MappingKind::File}}) {
    Mapping m = mapping(base, kind);
    proc.mappings.push_back(m);
    for (uint64_t i = 0; i < kPages; ++i) {
      Page p = page_for(i, rng);
      uint64_t addr = m.start + i * kPageSize;
      w.add_pages(kSavedPid, m.start, addr, p.data(), 1);
      want[addr] = p;
    }
  }
  image::Checkpoint c;
  c.processes.push_back(proc);
  w.commit(c);
  return want;
}

Page read_page(pid_t pid, uint64_t addr) {
  Page p(kPageSize);
  iovec local{p.data(), kPageSize}, remote{reinterpret_cast<void*>(addr), kPageSize};
  if (::process_vm_readv(pid, &local, 1, &remote, 1, 0) != static_cast<ssize_t>(kPageSize))
    throw std::runtime_error("process_vm_readv");
  return p;
}

// A child that waits to be killed, with the regions as they are now.
class Child {
 public:
  Child() {
    pid_ = ::fork();
    if (pid_ < 0) throw std::runtime_error("fork");
    if (pid_ == 0)
      for (;;) ::pause();
  }
  ~Child() {
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
  }
  pid_t pid() const { return pid_; }
  Page read(uint64_t addr) const { return read_page(pid_, addr); }

 private:
  pid_t pid_ = -1;
};

// The regions, an image of their pages, and what the image says of them.
struct Saved {
  Regions regions;
  TempDir t;
  image::Process proc;
  std::map<uint64_t, Page> want = write_image(t / "img", regions, proc);
  image::ImageReader img = image::ImageReader::open(t / "img");
  const uint64_t anon = reinterpret_cast<uint64_t>(regions.anon);
};

TEST(FillMemory, EveryPageLandsAndZerosOnlyWhereMemoryIsNotFresh) {
  Saved saved;
  auto& [regions, t, proc, want, img, anon] = saved;
  for (unsigned jobs : {1u, 2u, 5u}) {
    Child child;
    uint64_t written = fill_memory(child.pid(), proc, img, FillOptions{jobs, {}});
    // Everything but the anonymous region's 100 zero pages.
    EXPECT_EQ(written, (2 * kPages - 100) * kPageSize) << jobs << " thread(s)";
    for (const auto& [addr, page] : want) {
      bool zero = std::all_of(page.begin(), page.end(), [](uint8_t b) { return b == 0; });
      bool in_anon = addr >= anon && addr < anon + kPages * kPageSize;
      Page expected = zero && in_anon ? Page(kPageSize, kStale) : page;
      ASSERT_EQ(child.read(addr), expected)
          << "page " << (addr - (in_anon ? anon : reinterpret_cast<uint64_t>(regions.file))) /
                            kPageSize
          << (in_anon ? " of the anonymous region" : " of the file region") << ", " << jobs
          << " thread(s)";
    }
  }
}

// A child whose anonymous region is fresh memory but for its first
// kTouched pages (which hold kStale), with a userfaultfd context of its own
// that the test takes (pidfd_getfd) and the child then closes, as a restore
// does with the process it rebuilds.
constexpr uint64_t kTouched = 10;
class ChildWithContext {
 public:
  explicit ChildWithContext(uint8_t* anon) {
    int up[2], down[2];
    if (::pipe(up) || ::pipe(down)) throw std::runtime_error("pipe");
    pid_ = ::fork();
    if (pid_ < 0) throw std::runtime_error("fork");
    if (pid_ == 0) {
      void* p = ::mmap(anon, kPages * kPageSize, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
      if (p != anon) ::_exit(1);
      std::memset(anon, kStale, kTouched * kPageSize);
      int fd = static_cast<int>(::syscall(SYS_userfaultfd, O_CLOEXEC | uffd::kUserModeOnly));
      if (::write(up[1], &fd, sizeof fd) != sizeof fd) ::_exit(1);
      char c;
      if (::read(down[0], &c, 1) != 1) ::_exit(1);
      ::close(fd);
      for (;;) ::pause();
    }
    ::close(up[1]);
    ::close(down[0]);
    int fd = -1;
    if (::read(up[0], &fd, sizeof fd) != sizeof fd || fd < 0)
      throw std::runtime_error("the child made no userfaultfd");
    ScopedFd pidfd(uffd::pidfd_open(pid_));
    uffd_.reset(uffd::pidfd_getfd(pidfd.get(), fd));
    if (!uffd_) throw std::runtime_error("pidfd_getfd");
    if (::write(down[1], "x", 1) != 1) throw std::runtime_error("pipe");
    ::close(up[0]);
    ::close(down[1]);
  }
  ~ChildWithContext() {
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
  }
  pid_t pid() const { return pid_; }
  Page read(uint64_t addr) const { return read_page(pid_, addr); }
  ScopedFd take_context() { return std::move(uffd_); }

 private:
  pid_t pid_ = -1;
  ScopedFd uffd_;
};

TEST(FillMemory, ACopierFillsFreshPagesAndLeavesPresentOnesToTheWriter) {
  Saved saved;
  auto& [regions, t, proc, want, img, anon] = saved;
  const uint64_t anon_end = anon + kPages * kPageSize;
  for (unsigned jobs : {1u, 3u}) {
    ChildWithContext child(regions.anon);
    uint64_t written = 0, copied = 0;
    {
      ScopedFd fd = child.take_context();
      uffd::enable_features(fd.get(), 0);
      ASSERT_EQ(uffd::register_missing(fd.get(), anon, anon_end), 0);
      PageCopier copier(std::move(fd), child.pid(), {{anon, anon_end}});
      EXPECT_TRUE(copier.covers(remote_addr(anon)));
      EXPECT_TRUE(copier.covers(remote_addr(anon_end - 1)));
      EXPECT_FALSE(copier.covers(remote_addr(anon_end)));
      EXPECT_FALSE(copier.covers(remote_addr(reinterpret_cast<uint64_t>(regions.file))));
      written = fill_memory(child.pid(), proc, img, FillOptions{jobs, {}}, &copier);
      copied = copier.copied();
    }  // closed: the region unregistered, so its untouched pages read as zeros
    EXPECT_EQ(written, (2 * kPages - 100) * kPageSize) << jobs << " worker(s)";
    // Not the touched pages (there already: written by process_vm_writev),
    // nor the 100 zero ones.
    EXPECT_EQ(copied, (kPages - 100 - kTouched) * kPageSize) << jobs << " worker(s)";
    for (const auto& [addr, page] : want) {
      bool in_anon = addr >= anon && addr < anon_end;
      bool zero = std::all_of(page.begin(), page.end(), [](uint8_t b) { return b == 0; });
      Page expected = zero && in_anon ? Page(kPageSize, 0) : page;
      ASSERT_EQ(child.read(addr), expected) << "page at " << std::hex << addr << ", " << jobs
                                            << " worker(s)";
    }
  }
}

TEST(FillMemory, ADamagedBlockIsNamed) {
  Regions regions;
  TempDir t;
  image::Process proc;
  write_image(t / "img", regions, proc);
  {
    // Flip a byte in the middle of pages.bin.
    std::fstream f(t / "img/pages.bin", std::ios::in | std::ios::out | std::ios::binary);
    f.seekg(0, std::ios::end);
    auto mid = f.tellg() / 2;
    f.seekg(mid);
    char c = 0;
    f.read(&c, 1);
    c = static_cast<char>(c ^ 1);
    f.seekp(mid);
    f.write(&c, 1);
  }
  auto img = image::ImageReader::open(t / "img");
  Child child;
  try {
    fill_memory(child.pid(), proc, img, FillOptions{2, {}});
    ADD_FAILURE() << "a damaged block was written";
  } catch (const Error& e) {
    std::string msg = e.what();
    EXPECT_NE(msg.find("pages.bin: block "), std::string::npos) << msg;
    EXPECT_NE(msg.find("checksum mismatch"), std::string::npos) << msg;
  }
}

TEST(FillMemory, UsableCpusIsAtLeastOne) { EXPECT_GE(usable_cpus(), 1u); }

}  // namespace
}  // namespace snap::restore
