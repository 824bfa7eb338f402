// Unit tests of src/tracer's pure parts: /proc parsers, page selection,
// syscall-restart handling in Registers, and the tracer against a live child.
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <fcntl.h>
#include <map>
#include <mutex>
#include <sys/syscall.h>
#include <thread>

#include "base/error.h"
#include "tracer/batch.h"
#include "tracer/cpu_features.h"
#include "tracer/devices.h"
#include "tracer/memory.h"
#include "tracer/net_lock.h"
#include "tracer/pagemap.h"
#include "tracer/proc.h"
#include "tracer/registers.h"
#include "tracer/remote.h"
#include "tracer/task.h"
#include "tracer/temp_files.h"
#include "temp_dir.h"

using namespace snap;

TEST(NetworkLock, DropRuleMatchesWhatThePeerSends) {
  image::InetSocket s;
  s.family = AF_INET;
  s.local = "10.1.2.3";
  s.local_port = 40000;
  s.peer = "10.9.8.7";
  s.peer_port = 5432;
  EXPECT_EQ(netlock::drop_rule(s),
            "ip saddr 10.9.8.7 ip daddr 10.1.2.3 tcp sport 5432 tcp dport 40000 drop");
  s.family = AF_INET6;  // an IPv6 socket talking IPv4: the packets are IPv4
  s.local = "::ffff:10.1.2.3";
  s.peer = "::ffff:10.9.8.7";
  EXPECT_EQ(netlock::drop_rule(s),
            "ip saddr 10.9.8.7 ip daddr 10.1.2.3 tcp sport 5432 tcp dport 40000 drop");
  s.local = "fd00::1";
  s.peer = "fd00::2";
  EXPECT_EQ(netlock::drop_rule(s),
            "ip6 saddr fd00::2 ip6 daddr fd00::1 tcp sport 5432 tcp dport 40000 drop");
}

// A path's temporary directory is the outermost one it lies strictly in,
// whole path components only.
TEST(StatefulDevices, GpusRdmaFuseByDriverNameOthersNot) {
  // As /proc/devices and /proc/misc show them on a GPU node with InfiniBand
  // (dynamic majors included) and XPMEM.
  const std::string devices =
      "Character devices:\n  1 mem\n  4 tty\n 10 misc\n195 nvidia-frontend\n226 drm\n"
      "231 infiniband_verbs\n237 nvidia-uvm\n241 kfd\n\nBlock devices:\n  7 loop\n231 sd\n";
  const std::string misc = "229 fuse\n 56 xpmem\n232 kvm\n200 tun\n 57 rdma_cm\n";
  auto what = [&](unsigned maj, unsigned min) {
    auto d = stateful_device(makedev(maj, min), devices, misc);
    return d ? d->what : std::string();
  };
  EXPECT_NE(what(195, 0).find("a GPU or accelerator (driver nvidia-frontend)"), std::string::npos);
  EXPECT_NE(what(237, 0).find("driver nvidia-uvm"), std::string::npos);
  EXPECT_NE(what(226, 128).find("a GPU or accelerator (driver drm)"), std::string::npos);
  EXPECT_NE(what(241, 0).find("driver kfd"), std::string::npos);
  EXPECT_NE(what(231, 192).find("an RDMA adapter (driver infiniband_verbs"), std::string::npos);
  EXPECT_NE(what(10, 57).find("an RDMA adapter (driver rdma_cm"), std::string::npos);
  EXPECT_NE(what(10, 56).find("single-copy module of MPI (driver xpmem)"), std::string::npos);
  EXPECT_NE(what(10, 229).find("FUSE"), std::string::npos);
  EXPECT_NE(what(10, 232).find("virtual machine"), std::string::npos);
  // Memory devices, terminals, an unattached TUN, an unknown number, and a
  // block major that a character driver shares: nothing.
  for (auto [maj, min] : {std::pair{1u, 3u}, {4u, 1u}, {10u, 200u}, {10u, 99u}, {7u, 0u}, {99u, 0u}})
    EXPECT_EQ(what(maj, min), "") << maj << ":" << min;
  auto d = stateful_device(makedev(231, 192), devices, misc);
  ASSERT_TRUE(d);
  EXPECT_NE(d->hint.find("TCP"), std::string::npos) << "the hint says what to do: " << d->hint;
}

TEST(TempFiles, OutermostRootWholeComponents) {
  const std::vector<std::string> roots = {"/tmp", "/var/tmp", "/dev/shm", "/tmp/job.7", "/scratch/j"};
  EXPECT_EQ(temp_root_of("/tmp/job.7/ompi/x", roots), "/tmp");
  EXPECT_EQ(temp_root_of("/scratch/j/a", roots), "/scratch/j");
  EXPECT_EQ(temp_root_of("/scratch/jx/a", roots), "");
  EXPECT_EQ(temp_root_of("/tmpfoo/a", roots), "");
  EXPECT_EQ(temp_root_of("/tmp", roots), "");
  EXPECT_EQ(temp_root_of("/tmp/", roots), "");
  EXPECT_EQ(temp_root_of("/home/u/tmp/a", roots), "");
}

// The larger files of temporary directories (tracer/temp_file_contents.h):
// read in whole pages (holes skipped, the last page padded with zeros) as
// pages of their file; one written to or truncated after it was added is
// forgotten and its entry removed (a second name of the written one too:
// they share a watch); one left alone is kept, and so is one removed since
// (snap's fd still reads it as it was at the stop).
TEST(TempFiles, ContentsKeptOnlyWhenUnchangedSinceAdded) {
  test_support::TempDir d;
  const uint64_t size = 3 * image::kPageSize + 10;
  std::vector<uint8_t> bytes(size);
  for (size_t i = 0; i < size; i++) bytes[i] = static_cast<uint8_t>(i * 13 + 1);
  auto make = [&](const std::string& name) {
    const std::string path = d / name;
    ScopedFd fd(::open(path.c_str(), O_CREAT | O_TRUNC | O_WRONLY | O_CLOEXEC, 0600));
    EXPECT_TRUE(fd.valid());
    EXPECT_EQ(::pwrite(fd.get(), bytes.data(), image::kPageSize, 0), static_cast<ssize_t>(image::kPageSize));
    // Page 1 is a hole.
    EXPECT_EQ(::pwrite(fd.get(), bytes.data() + 2 * image::kPageSize, size - 2 * image::kPageSize,
                       2 * image::kPageSize),
              static_cast<ssize_t>(size - 2 * image::kPageSize));
    return path;
  };
  const std::vector<std::string> names = {"kept", "written", "truncated", "removed", "link"};
  image::Checkpoint ckpt;
  TempFileContents contents;
  for (size_t i = 0; i < names.size(); i++) {
    const std::string path = d / names[i];
    if (names[i] == "link") EXPECT_EQ(::link((d / "written").c_str(), path.c_str()), 0);
    else make(names[i]);
    std::string why;
    ScopedFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    ASSERT_TRUE(contents.add(path, std::move(fd), size, &why)) << why;
    image::GhostFile t;
    t.id = i + 1;
    t.path = path;
    t.size = size;
    t.data_in_pages = true;
    ckpt.temp_files.push_back(t);
  }
  {
    ScopedFd fd(::open((d / "written").c_str(), O_WRONLY | O_CLOEXEC));
    EXPECT_EQ(::pwrite(fd.get(), "x", 1, 5), 1);
  }
  EXPECT_EQ(::truncate((d / "truncated").c_str(), 100), 0);
  EXPECT_EQ(::unlink((d / "removed").c_str()), 0);
  std::map<uint64_t, std::map<uint64_t, std::vector<uint8_t>>> pages;  // start -> offset ->
  std::vector<uint64_t> forgotten;
  const uint64_t kept = contents.store(
      ckpt, [&](pid_t pid, uint64_t start, uint64_t addr, const uint8_t* data, size_t n) {
        EXPECT_EQ(pid, image::kFilePagesPid);
        for (size_t i = 0; i < n; i++)
          pages[start][addr - start + i * image::kPageSize].assign(
              data + i * image::kPageSize, data + (i + 1) * image::kPageSize);
      }, [&](uint64_t start) { forgotten.push_back(start); });
  EXPECT_EQ(kept, 2 * size);
  EXPECT_EQ(forgotten, (std::vector<uint64_t>{image::file_pages_start(2), image::file_pages_start(3),
                                              image::file_pages_start(5)}));
  ASSERT_EQ(ckpt.temp_files.size(), 2u);
  EXPECT_EQ(ckpt.temp_files[0].path, d / "kept");
  EXPECT_EQ(ckpt.temp_files[1].path, d / "removed");
  EXPECT_EQ(pages[image::file_pages_start(4)], pages[image::file_pages_start(1)]);
  const auto& got = pages[image::file_pages_start(1)];
  ASSERT_EQ(got.size(), 3u);  // pages 0, 2 and 3; the hole not read
  EXPECT_EQ(got.at(0), std::vector<uint8_t>(bytes.begin(), bytes.begin() + image::kPageSize));
  EXPECT_EQ(got.at(2 * image::kPageSize),
            std::vector<uint8_t>(bytes.begin() + 2 * image::kPageSize, bytes.begin() + 3 * image::kPageSize));
  std::vector<uint8_t> last(bytes.begin() + 3 * image::kPageSize, bytes.end());
  last.resize(image::kPageSize, 0);
  EXPECT_EQ(got.at(3 * image::kPageSize), last);
}

TEST(ProcParse, MapsLinesWithPathsSpacesAndSpecials) {
  auto maps = proc::parse_maps(
      "55d0c0a00000-55d0c0a02000 r--p 00000000 fe:00 1234                       /usr/bin/my prog\n"
      "7f5f7aeef000-7f5f7aef1000 rw-p 00033000 fe:00 332383   /usr/lib/ld.so (deleted)\n"
      "7ffda6c06000-7ffda6c27000 rw-p 00000000 00:00 0                          [stack]\n"
      "7f0000000000-7f0000001000 rw-s 00000000 00:01 77                         /dev/zero (deleted)\n"
      "ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0                  [vsyscall]\n");
  ASSERT_EQ(maps.size(), 5u);
  EXPECT_EQ(maps[0].start, 0x55d0c0a00000u);
  EXPECT_EQ(maps[0].end, 0x55d0c0a02000u);
  EXPECT_TRUE(maps[0].r);
  EXPECT_FALSE(maps[0].w);
  EXPECT_EQ(maps[0].path, "/usr/bin/my prog");
  EXPECT_EQ(maps[0].dev_major, 0xfeu);
  EXPECT_EQ(maps[0].inode, 1234u);
  EXPECT_EQ(maps[1].offset, 0x33000u);
  EXPECT_EQ(maps[1].path, "/usr/lib/ld.so (deleted)");
  EXPECT_EQ(maps[2].path, "[stack]");
  EXPECT_TRUE(maps[3].shared);
  EXPECT_TRUE(maps[4].x);
  EXPECT_FALSE(maps[4].r);
}

TEST(ProcParse, SmapsKeepsVmFlagsPerMapping) {
  auto e = proc::parse_smaps(
      "00400000-00401000 r-xp 00000000 fe:00 42   /bin/x\n"
      "Size:                  4 kB\n"
      "VmFlags: rd ex mr mw me dw \n"
      "7ffda6c06000-7ffda6c27000 rw-p 00000000 00:00 0  [stack]\n"
      "Rss:                  12 kB\n"
      "VmFlags: rd wr mr mw me gd ac \n");
  ASSERT_EQ(e.size(), 2u);
  EXPECT_EQ(e[0].vmflags, "rd ex mr mw me dw");
  EXPECT_EQ(e[1].vmflags, "rd wr mr mw me gd ac");
}

TEST(ProcParse, StatWithParenthesesAndSpacesInComm) {
  std::string fields;
  // After "state": fields 4..52 of proc(5); put field number N as its value.
  for (int n = 4; n <= 52; n++) fields += " " + std::to_string(n);
  auto st = proc::parse_stat("4242 (a (weird) name) S" + fields + "\n");
  EXPECT_EQ(st.pid, 4242);
  EXPECT_EQ(st.comm, "a (weird) name");
  EXPECT_EQ(st.state, 'S');
  EXPECT_EQ(st.ppid, 4);
  EXPECT_EQ(st.pgrp, 5);
  EXPECT_EQ(st.session, 6);
  EXPECT_EQ(st.flags, 9u);
  EXPECT_EQ(st.start_code, 26u);
  EXPECT_EQ(st.start_stack, 28u);
  EXPECT_EQ(st.exit_signal, 38);
  EXPECT_EQ(st.start_brk, 47u);
  EXPECT_EQ(st.env_end, 51u);
  EXPECT_EQ(st.exit_code, 52);  // a zombie's wait status
}

TEST(ProcParse, StatousAndFdinfo) {
  auto s = proc::parse_status("Name:\tcounter\nUmask:\t0027\nState:\tS (sleeping)\nTgid:\t7\n"
                              "PPid:\t1\nTracerPid:\t99\nUid:\t1000\t1001\t1002\t1003\n"
                              "Gid:\t10\t11\t12\t13\nVmLck:\t      16 kB\nVmRSS:\t    2048 kB\n"
                              "VmSwap:\t      12 kB\nThreads:\t257\n");
  EXPECT_EQ(s.name, "counter");
  EXPECT_FALSE(s.caps.has_value());  // not all five shown: not known
  auto c = proc::parse_status("Name:\tx\nCapInh:\t0000000000000400\nCapPrm:\t000001ffffffffff\n"
                              "CapEff:\t0000000000000003\nCapBnd:\t000001fffffffdff\n"
                              "CapAmb:\t0000000000000400\n").caps;
  ASSERT_TRUE(c.has_value());
  EXPECT_EQ(c->inheritable, 0x400u);
  EXPECT_EQ(c->permitted, 0x1ffffffffffull);
  EXPECT_EQ(c->effective, 3u);
  EXPECT_EQ(c->bounding, 0x1fffffffdffull);
  EXPECT_EQ(c->ambient, 0x400u);
  EXPECT_EQ(s.threads, 257);
  EXPECT_EQ(s.rss_bytes, 2048u << 10);
  EXPECT_EQ(s.swap_bytes, 12u << 10);
  EXPECT_EQ(s.locked_bytes, 16u << 10);
  EXPECT_EQ(s.umask, 027u);
  EXPECT_EQ(s.tracer_pid, 99);
  EXPECT_EQ(s.uids[1], 1001u);
  EXPECT_EQ(s.gids[3], 13u);
  EXPECT_EQ(s.sig_blocked, ~0ULL);  // not shown: all, as far as anyone may rely
  EXPECT_TRUE(s.x86_thread_features.empty());
  auto sig = proc::parse_status("SigBlk:\t0000000000000400\nSigIgn:\t0000000000001000\n"
                                "x86_Thread_features:\tshstk wrss\n");
  EXPECT_EQ(sig.sig_blocked, 0x400u);  // SIGSEGV (11)
  EXPECT_EQ(sig.sig_ignored, 0x1000u);
  EXPECT_EQ(sig.x86_thread_features, (std::vector<std::string>{"shstk", "wrss"}));
  auto fi = proc::parse_fdinfo("pos:\t4096\nflags:\t02100002\nmnt_id:\t25\nino:\t777\n");
  EXPECT_EQ(fi.pos, 4096u);
  EXPECT_EQ(fi.flags, 02100002);
  EXPECT_EQ(fi.ino, 777u);
  EXPECT_EQ(proc::parse_pid_list("12 13 \n"), (std::vector<pid_t>{12, 13}));
}

TEST(ProcParse, FdinfoOfAnonFdsAndLocks) {
  auto sig = proc::parse_fdinfo("pos:\t0\nflags:\t02004002\nmnt_id:\t15\nino:\t1\n"
                                "sigmask:\t0000000000000200\n");
  EXPECT_EQ(sig.sigmask, 0x200u);
  auto pidfd = proc::parse_fdinfo("pos:\t0\nflags:\t02000002\nmnt_id:\t16\nino:\t1\n"
                                  "Pid:\t4321\nNSpid:\t4321\n");
  EXPECT_EQ(pidfd.pidfd_pid, 4321);
  EXPECT_EQ(proc::parse_fdinfo("Pid:\t-1\n").pidfd_pid, -1);
  auto tfd = proc::parse_fdinfo("pos:\t0\nflags:\t02\nclockid: 1\nticks: 4\nsettime flags: 01\n"
                                "it_value: (0, 49406829)\nit_interval: (4, 5)\n");
  ASSERT_TRUE(tfd.timerfd.has_value());
  EXPECT_EQ(tfd.timerfd->clock_id, 1);
  EXPECT_EQ(tfd.timerfd->ticks, 4u);
  EXPECT_EQ(tfd.timerfd->settime_flags, 1);
  EXPECT_EQ(tfd.timerfd->value_ns, 49406829);
  EXPECT_EQ(tfd.timerfd->interval_ns, 4000000005);
  auto ino = proc::parse_fdinfo(
      "pos:\t0\nflags:\t04000\ninotify wd:1a ino:a888bf sdev:800001 mask:fce ignored_mask:0 "
      "fhandle-bytes:8 fhandle-type:1 f_handle:bf88a800bcd1e5c8\n");
  ASSERT_EQ(ino.inotify.size(), 1u);
  EXPECT_EQ(ino.inotify[0].wd, 0x1a);
  EXPECT_EQ(ino.inotify[0].ino, 0xa888bfu);
  EXPECT_EQ(ino.inotify[0].sdev, 0x800001u);
  EXPECT_EQ(ino.inotify[0].mask, 0xfceu);
  EXPECT_EQ(ino.inotify[0].handle_type, 1);
  EXPECT_EQ(ino.inotify[0].handle.size(), 8u);
  auto locks = proc::parse_fdinfo(
      "pos:\t0\nflags:\t02\nlock:\t1: POSIX  ADVISORY  WRITE 1234 08:01:5678 100 199\n"
      "lock:\t2: FLOCK  ADVISORY  READ 1234 08:01:5678 0 EOF\n"
      "lock:\t3: OFDLCK ADVISORY  READ -1 08:01:5678 7 EOF\n"
      "lock:\t4: LEASE  ACTIVE    WRITE 1234 08:01:5678 0 EOF\n");
  ASSERT_EQ(locks.locks.size(), 4u);
  EXPECT_EQ(locks.locks[0].kind, image::LockKind::Posix);
  EXPECT_TRUE(locks.locks[0].write);
  EXPECT_EQ(locks.locks[0].start, 100u);
  EXPECT_EQ(locks.locks[0].len, 100u);
  EXPECT_EQ(locks.locks[1].kind, image::LockKind::Flock);
  EXPECT_FALSE(locks.locks[1].write);
  EXPECT_EQ(locks.locks[2].kind, image::LockKind::Ofd);
  EXPECT_EQ(locks.locks[2].start, 7u);
  EXPECT_EQ(locks.locks[2].len, 0u);
  EXPECT_EQ(locks.locks[3].kind, image::LockKind::Lease);
  EXPECT_TRUE(locks.unsupported_lock.empty());
  auto breaking = proc::parse_fdinfo("lock:\t1: LEASE  BREAKING  READ 1234 08:01:5678 0 EOF\n");
  EXPECT_TRUE(breaking.locks.empty());
  EXPECT_NE(breaking.unsupported_lock.find("BREAKING"), std::string::npos);
}

TEST(ProcParse, MalformedInputIsAnError) {
  EXPECT_THROW(proc::parse_stat("garbage"), Error);
  EXPECT_TRUE(proc::parse_maps("not a maps line\n").empty());
  EXPECT_TRUE(proc::parse_maps("00400000-00401000 r-xp 00000000 fe:00 4x2 /bin/x\n").empty());
  EXPECT_TRUE(proc::parse_maps("00400000-00401000 r-xp 00000000 fe00 42 /bin/x\n").empty());
}

TEST(PageSelection, AnonymousTakesPresentAndSwapped) {
  image::Mapping m;
  m.start = 0x10000;
  m.end = 0x10000 + 4 * 4096;
  m.kind = image::MappingKind::Anonymous;
  std::vector<uint64_t> pm = {0, 1ull << 63, 1ull << 62, (1ull << 63) | (1ull << 61)};
  EXPECT_EQ(select_pages(m, pm), (std::vector<uint64_t>{0x11000, 0x12000, 0x13000}));
}

TEST(PageSelection, PteMarkersAreNotPages) {
  image::Mapping m;
  m.start = 0x10000;
  m.end = 0x10000 + 3 * 4096;
  m.kind = image::MappingKind::Anonymous;
  // A userfaultfd write-protect marker on an unpopulated page, as pagemap
  // shows it to root (swapped | uffd-wp, swap type 31); a page in swap file
  // 0 at offset 5; the same marker seen without CAP_SYS_ADMIN (type hidden).
  std::vector<uint64_t> pm = {0x420000000000003full, (1ull << 62) | (5ull << 5), 1ull << 62};
  EXPECT_TRUE(is_pte_marker(pm[0]));
  EXPECT_FALSE(is_pte_marker(pm[1]));
  EXPECT_EQ(select_pages(m, pm), (std::vector<uint64_t>{0x11000, 0x12000}));
}

// Pages held by ranges of this process, counted per range: neighbours and a
// range far away (its own walk), a range holding nothing, and pages both
// inside and past a range's end (only the inside ones count).
TEST(PageSelection, HeldPagesPerRange) {
  const uint64_t ps = 4096, size = 512ull << 20;
  auto* p = static_cast<uint8_t*>(
      mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0));
  ASSERT_NE(p, MAP_FAILED);
  const auto base = reinterpret_cast<uint64_t>(p);
  for (uint64_t i = 0; i < 3; i++) p[i * ps] = 1;            // range 0: 3 pages
  for (uint64_t i = 0; i < 40; i++) p[(16 + i) * ps] = 1;    // range 1: 16 of its pages, 24 past it
  p[(400ull << 20) + 5 * ps] = 1;                            // range 3, far away: 1 page
  const std::vector<std::pair<uint64_t, uint64_t>> ranges = {
      {base, base + 8 * ps},
      {base + 16 * ps, base + 32 * ps},
      {base + 100 * ps, base + 200 * ps},
      {base + (400ull << 20), base + (400ull << 20) + 64 * ps}};
  int fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  EXPECT_EQ(pagemap::held_pages(fd, "pagemap", ranges), (std::vector<uint64_t>{3, 16, 0, 1}));
  close(fd);
  munmap(p, size);
}

// A sparse reservation of this process: PAGEMAP_SCAN's answer (where the
// kernel has it) and the chunked pagemap read agree, page for page, and the
// chunked read is exact across chunk boundaries.
TEST(PageSelection, SparseReservationScanAndChunkedReadAgree) {
  const uint64_t size = 64ull << 30, ps = 4096;
  auto* p = static_cast<uint8_t*>(
      mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0));
  ASSERT_NE(p, MAP_FAILED);
  auto base = reinterpret_cast<uint64_t>(p);
  std::vector<uint64_t> want;
  // More separate runs than one PAGEMAP_SCAN call returns (4096).
  const uint64_t n = 5000;
  for (uint64_t i = 0; i < n; i++) {
    uint64_t off = i * (size / n) / ps * ps;
    p[off] = 1;
    want.push_back(base + off);
    if (i % 10 == 0) {  // a run of two
      p[off + ps] = 1;
      want.push_back(base + off + ps);
    }
  }
  image::Mapping m;
  for (auto& mm : proc::read_mappings(getpid()))
    if (mm.start == base) m = mm;
  ASSERT_EQ(m.start, base);
  EXPECT_NE(m.vmflags.find("nr"), std::string::npos);
  EXPECT_EQ(pages_to_dump(getpid(), m), want);
  EXPECT_EQ(pages_to_dump(getpid(), m, PagemapWay::kChunkedRead), want);

  // Chunks of 3 entries over 10 pages around the first run: the same
  // entries, in order, as one read.
  int fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  std::vector<uint64_t> whole, chunked;
  std::vector<uint64_t> addrs;
  pagemap::read_chunks(fd, "pagemap", base, base + 10 * ps, [&](uint64_t at, const uint64_t* e, size_t n) {
    EXPECT_EQ(n, 10u);
    EXPECT_EQ(at, base);
    whole.assign(e, e + n);
  });
  pagemap::read_chunks(fd, "pagemap", base, base + 10 * ps,
                       [&](uint64_t at, const uint64_t* e, size_t n) {
                         EXPECT_LE(n, 3u);
                         addrs.push_back(at);
                         chunked.insert(chunked.end(), e, e + n);
                       },
                       3);
  close(fd);
  EXPECT_EQ(chunked, whole);
  EXPECT_EQ(addrs, (std::vector<uint64_t>{base, base + 3 * ps, base + 6 * ps, base + 9 * ps}));
  ASSERT_EQ(whole.size(), 10u);
  EXPECT_TRUE(whole[0] & pagemap::kPresent);
  EXPECT_TRUE(whole[1] & pagemap::kPresent);
  EXPECT_FALSE(whole[2] & pagemap::kPresent);
  munmap(p, size);
}

TEST(PageSelection, PrivateFileTakesOnlyCopiedOnWritePages) {
  image::Mapping m;
  m.start = 0x10000;
  m.end = 0x10000 + 3 * 4096;
  m.kind = image::MappingKind::File;
  // page cache (file page), COW'd anonymous page, not present
  std::vector<uint64_t> pm = {(1ull << 63) | (1ull << 61), 1ull << 63, 0};
  EXPECT_EQ(select_pages(m, pm), (std::vector<uint64_t>{0x11000}));
  m.shared = true;
  EXPECT_FALSE(mapping_has_content(m));
  m.kind = image::MappingKind::Vdso;
  EXPECT_FALSE(mapping_has_content(m));
}

TEST(Registers, RestartIsMadeExplicit) {
  Registers r;
  r.raw().orig_rax = 230;                     // clock_nanosleep
  r.raw().rax = static_cast<uint64_t>(-516);  // -ERESTART_RESTARTBLOCK
  r.raw().rip = 0x401002;
  ASSERT_TRUE(r.in_restartable_syscall());
  Registers n = r.with_restart_applied();
  EXPECT_EQ(n.raw().rax, 230u);
  EXPECT_EQ(n.raw().rip, 0x401000u);
  EXPECT_EQ(static_cast<int64_t>(n.raw().orig_rax), -1);
  EXPECT_FALSE(n.in_restartable_syscall());

  Registers done;
  done.raw().orig_rax = 0;
  done.raw().rax = static_cast<uint64_t>(-4);  // -EINTR: finished, not restarted
  EXPECT_FALSE(done.in_restartable_syscall());
  EXPECT_EQ(done.with_restart_applied().raw().rip, done.raw().rip);
}

TEST(Registers, BytesRoundTripAndSizeChecked) {
  Registers r;
  r.raw().r15 = 0x1122334455667788;
  r.raw().fs_base = 0x7f0000001000;
  auto b = r.to_bytes();
  EXPECT_EQ(Registers::from_bytes(b).raw().r15, 0x1122334455667788u);
  b.pop_back();
  EXPECT_THROW(Registers::from_bytes(b), Error);
}

// A live child: seized, its registers read, memory pages found, detached,
// and it carries on.
TEST(Tracer, SeizeReadDetachLeavesChildRunning) {
  int to_parent[2];
  ASSERT_EQ(pipe(to_parent), 0);
  pid_t child = fork();
  if (child == 0) {
    // Touch exactly 3 pages of an 8-page anonymous mapping.
    auto* p = static_cast<uint8_t*>(mmap(nullptr, 8 * 4096, PROT_READ | PROT_WRITE,
                                         MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
    p[0] = 1;
    p[2 * 4096] = 2;
    p[5 * 4096] = 3;
    uint64_t addr = reinterpret_cast<uint64_t>(p);
    if (write(to_parent[1], &addr, sizeof addr) != sizeof addr) _exit(1);
    for (;;) pause();
  }
  uint64_t addr = 0;
  ASSERT_EQ(read(to_parent[0], &addr, sizeof addr), static_cast<ssize_t>(sizeof addr));
  {
    SeizedTree tree = SeizedTree::seize(child);
    ASSERT_EQ(tree.processes().size(), 1u);
    ASSERT_EQ(tree.thread_count(), 1u);
    auto& task = *tree.processes()[0].tasks[0];
    EXPECT_NE(task.regs().ip().as_int(), 0u);
    EXPECT_GT(task.xsave().size(), 512u);
    image::Mapping m;
    for (auto& mm : proc::read_mappings(child))
      if (mm.start == addr) m = mm;
    ASSERT_EQ(m.start, addr);
    auto pages = pages_to_dump(child, m);
    EXPECT_EQ(pages, (std::vector<uint64_t>{addr, addr + 2 * 4096, addr + 5 * 4096}));
  }
  // Detached: the child still runs and answers a signal.
  EXPECT_EQ(kill(child, SIGTERM), 0);
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGTERM);
}

// What collect read at a stop is kept for the parasite's guard (one taker),
// and dropped as soon as it could be stale: a register set, a resume.
TEST(Tracer, StopStateIsTakenOnceAndDroppedWhenItCouldBeStale) {
  pid_t child = fork();
  if (child == 0) {
    for (;;) pause();
  }
  {
    SeizedTree tree = SeizedTree::seize(child);
    auto& task = *tree.processes()[0].tasks[0];
    const Registers regs = task.regs();
    task.keep_stop_state({regs, task.xsave(), task.signal_mask()});
    auto taken = task.take_stop_state();
    ASSERT_TRUE(taken);
    EXPECT_EQ(taken->regs.ip().as_int(), regs.ip().as_int());
    EXPECT_GT(taken->xsave.size(), 512u);
    EXPECT_FALSE(task.take_stop_state());  // taken once
    task.keep_stop_state({regs, {}, 0});
    task.set_regs(regs);
    EXPECT_FALSE(task.take_stop_state());  // registers set: dropped
    task.keep_stop_state({regs, {}, 0});
    task.set_signal_mask(task.signal_mask());
    EXPECT_FALSE(task.take_stop_state());  // mask set: dropped
    task.keep_stop_state({regs, {}, 0});
    task.detach();
    EXPECT_FALSE(task.take_stop_state());  // running again: dropped
  }
  EXPECT_EQ(kill(child, SIGKILL), 0);
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
}

// Several threads stopped at once (seize all, interrupt all, then wait):
// every one is stopped and stays so (its counter stands still), a thread that does not exist is reported with ESRCH and stops
// none of the others, and after the tasks go every thread runs again.
TEST(Tracer, ThreadsAreStoppedTogether) {
  constexpr int kThreads = 6;
  auto* counters = static_cast<volatile uint64_t*>(mmap(nullptr, 4096, PROT_READ | PROT_WRITE,
                                                        MAP_SHARED | MAP_ANONYMOUS, -1, 0));
  ASSERT_NE(counters, MAP_FAILED);
  pid_t child = fork();
  if (child == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    for (int i = 0; i < kThreads; i++)
      std::thread([counters, i] {
        for (;;) {
          counters[i] = counters[i] + 1;
          usleep(i % 2 ? 1000 : 10);
        }
      }).detach();
    for (;;) pause();
  }
  std::vector<pid_t> tids;
  for (int tries = 0; tries < 2000 && tids.size() < kThreads + 1; tries++) {
    tids = proc::list_threads(child);
    usleep(1000);
  }
  ASSERT_EQ(tids.size(), static_cast<size_t>(kThreads + 1));
  for (int i = 0; i < kThreads; i++)
    while (counters[i] == 0) usleep(100);
  pid_t gone = fork();  // a tid that no longer exists
  if (gone == 0) _exit(0);
  ASSERT_EQ(waitpid(gone, nullptr, 0), gone);
  auto with_gone = tids;
  with_gone.insert(with_gone.begin() + 2, gone);
  {
    Task::Stopped s = Task::seize_and_stop_all(with_gone, child);
    ASSERT_EQ(s.failed.size(), 1u);
    EXPECT_EQ(s.failed[0].first, gone);
    try {
      std::rethrow_exception(s.failed[0].second);
    } catch (const SysError& e) {
      EXPECT_EQ(e.err(), ESRCH);
    }
    ASSERT_EQ(s.tasks.size(), tids.size());
    for (size_t i = 0; i < tids.size(); i++) {
      EXPECT_EQ(s.tasks[i]->tid(), tids[i]);
      auto stat = proc::read_file("/proc/" + std::to_string(child) + "/task/" +
                                  std::to_string(tids[i]) + "/stat");
      EXPECT_EQ(stat.substr(stat.rfind(')') + 2, 1), "t") << "thread " << tids[i];
    }
    std::vector<uint64_t> before(counters, counters + kThreads);
    usleep(20000);
    EXPECT_EQ(std::vector<uint64_t>(counters, counters + kThreads), before);
  }
  std::vector<uint64_t> after(counters, counters + kThreads);
  usleep(20000);
  for (int i = 0; i < kThreads; i++) EXPECT_GT(counters[i], after[i]) << "thread " << i;
  kill(child, SIGKILL);
  waitpid(child, nullptr, 0);
  munmap(const_cast<uint64_t*>(counters), 4096);
}

// snap run is its job's parent and its tracer at once: a job that ends while
// a checkpoint stops it must leave its exit status for snap run's own wait
// (taking it there made snap run wait forever for an ended job).
TEST(Tracer, ExitWhileBeingStoppedIsLeftToTheParent) {
  int go[2];
  ASSERT_EQ(pipe(go), 0);
  pid_t child = fork();
  if (child == 0) {
    char c;
    if (read(go[0], &c, 1) != 1) _exit(1);
    _exit(7);
  }
  close(go[0]);
  ASSERT_EQ(ptrace(PTRACE_SEIZE, child, nullptr, nullptr), 0);
  ASSERT_EQ(write(go[1], "x", 1), 1);  // it exits now, traced by us
  EXPECT_FALSE(wait_stop_leaving_exit(child).has_value());
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);  // still ours to collect
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 7);
  close(go[1]);

  // A stop is returned (and taken): a seized, interrupted child.
  child = fork();
  if (child == 0) {
    for (;;) pause();
  }
  ASSERT_EQ(ptrace(PTRACE_SEIZE, child, nullptr, nullptr), 0);
  ASSERT_EQ(ptrace(PTRACE_INTERRUPT, child, nullptr, nullptr), 0);
  auto stop = wait_stop_leaving_exit(child);
  ASSERT_TRUE(stop.has_value());
  EXPECT_TRUE(WIFSTOPPED(*stop) && (*stop >> 16) == PTRACE_EVENT_STOP);
  kill(child, SIGKILL);
  ASSERT_EQ(waitpid(child, &status, __WALL), child);
}

// A thread but the leader is nobody's child: its exit is taken at once (no
// look first), its process goes on, and the leader's own exit stays for the
// parent as above.
TEST(Tracer, ThreadExitWhileBeingStoppedIsTakenAndItsProcessGoesOn) {
  int go[2], said[2];
  ASSERT_EQ(pipe(go), 0);
  ASSERT_EQ(pipe(said), 0);
  pid_t child = fork();
  if (child == 0) {
    std::thread t([&] {
      pid_t tid = static_cast<pid_t>(syscall(SYS_gettid));
      if (write(said[1], &tid, sizeof tid) != sizeof tid) _exit(1);
      char c;
      if (read(go[0], &c, 1) != 1) _exit(1);
    });
    t.join();  // the thread has exited
    if (write(said[1], "j", 1) != 1) _exit(1);
    char c;
    if (read(go[0], &c, 1) != 1) _exit(1);
    _exit(9);
  }
  pid_t tid = 0;
  ASSERT_EQ(read(said[0], &tid, sizeof tid), static_cast<ssize_t>(sizeof tid));
  ASSERT_NE(tid, child);
  ASSERT_EQ(ptrace(PTRACE_SEIZE, tid, nullptr, nullptr), 0);
  ASSERT_EQ(write(go[1], "x", 1), 1);  // the thread exits now, traced by us
  EXPECT_FALSE(wait_stop_leaving_exit(tid, false).has_value());
  char j = 0;
  ASSERT_EQ(read(said[0], &j, 1), 1);  // its process went on: it joined it
  EXPECT_EQ(j, 'j');
  ASSERT_EQ(write(go[1], "x", 1), 1);
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 9);
  for (int fd : {go[0], go[1], said[0], said[1]}) close(fd);
}

namespace {

// Memory only this process maps (an unshared copy is counted clean).
uint64_t private_kib(pid_t pid) {
  auto text = proc::read_file("/proc/" + std::to_string(pid) + "/smaps_rollup");
  auto field = [&](const std::string& name) {
    return std::stoull(text.substr(text.find(name + ":") + name.size() + 1));
  };
  return field("Private_Clean") + field("Private_Dirty");
}

// A process holding 32 MiB of touched memory forks; the child shares every
// page copy-on-write with its parent, as a dump snapshot does.
struct ForkedPair {
  pid_t parent = -1, child = -1;
  uint64_t region = 0;
  ForkedPair() {
    int p[2];
    if (pipe(p) != 0) return;
    parent = fork();
    if (parent == 0) {
      size_t len = 32 << 20;
      auto* m = static_cast<uint8_t*>(mmap(nullptr, len, PROT_READ | PROT_WRITE,
                                           MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
      for (size_t i = 0; i < len; i += 4096) m[i] = static_cast<uint8_t>(i >> 12 | 1);
      pid_t c = fork();
      if (c == 0)
        for (;;) pause();
      uint64_t msg[2] = {reinterpret_cast<uint64_t>(m), static_cast<uint64_t>(c)};
      if (write(p[1], msg, sizeof msg) != sizeof msg) _exit(1);
      for (;;) pause();
    }
    uint64_t msg[2];
    if (read(p[0], msg, sizeof msg) == sizeof msg) {
      region = msg[0];
      child = static_cast<pid_t>(msg[1]);
    }
    close(p[0]);
    close(p[1]);
  }
  ~ForkedPair() {
    kill(child, SIGKILL);
    kill(parent, SIGKILL);
    waitpid(parent, nullptr, 0);  // the child goes to our subreaper or init
  }
  uint64_t read_child(ReadVia via) {
    auto maps = proc::read_mappings(child);
    uint64_t bytes = 0;
    dump_memory(child, maps,
                [&](pid_t, uint64_t, uint64_t, const uint8_t*, size_t n) { bytes += n * 4096; },
                [&](const image::Mapping& m) { return m.start == region; }, via);
    return bytes;
  }
};

}  // namespace

// What dump_memory reads from a snapshot must not be copied: the snapshot
// would otherwise hold a second copy of the job's memory. (For the record,
// the same read with process_vm_readv is measured too: on kernels that
// unshare pinned copy-on-write pages, it copies all 32 MiB. That is why
// snapshots are read through /proc/PID/mem.)
TEST(Snapshot, ReadingThroughProcMemCopiesNoSharedPage) {
  ForkedPair pair;
  ASSERT_GT(pair.child, 0);
  uint64_t before = private_kib(pair.child);
  EXPECT_EQ(pair.read_child(ReadVia::kMemFile), 32u << 20);
  EXPECT_LT(private_kib(pair.child), before + 4096) << "reading made private copies";

  ForkedPair other;
  ASSERT_GT(other.child, 0);
  uint64_t readv_before = private_kib(other.child);
  other.read_child(ReadVia::kProcessVmReadv);
  ::testing::Test::RecordProperty("process_vm_readv_copied_kib",
                                  std::to_string(private_kib(other.child) - readv_before));
}

// Reader threads (dump --jobs) read exactly what the caller alone reads:
// the same pages with the same contents, whatever thread hands them over
// and in whatever order; batches may mix many small mappings, and the
// ranges reported done cover each mapping once, in order, only after its
// pages were handed over.
TEST(DumpMemory, ReaderThreadsReadWhatOneThreadReads) {
  int to_parent[2];
  ASSERT_EQ(pipe(to_parent), 0);
  pid_t child = fork();
  if (child == 0) {
    // 600 one-page mappings that cannot merge (a page apart), then a 40 MiB
    // one with stretches touched and untouched; every page touched holds
    // its own address.
    constexpr size_t kSmall = 600, kBig = 40 << 20;
    auto* base = static_cast<uint8_t*>(mmap(nullptr, 2 * kSmall * 4096 + kBig, PROT_NONE,
                                            MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
    for (size_t i = 0; i < kSmall; i++) {
      uint8_t* p = base + 2 * i * 4096;
      mmap(p, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
      *reinterpret_cast<uint64_t*>(p) = reinterpret_cast<uint64_t>(p);
    }
    uint8_t* big = base + 2 * kSmall * 4096;
    mmap(big, kBig, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
    for (size_t off = 0; off < kBig; off += 4096)
      if ((off >> 12) % 1000 < 700) *reinterpret_cast<uint64_t*>(big + off) = reinterpret_cast<uint64_t>(big + off);
    uint64_t lo = reinterpret_cast<uint64_t>(base), hi = lo + 2 * kSmall * 4096 + kBig;
    uint64_t msg[2] = {lo, hi};
    if (write(to_parent[1], msg, sizeof msg) != sizeof msg) _exit(1);
    for (;;) pause();
  }
  uint64_t range[2] = {};
  ASSERT_EQ(read(to_parent[0], range, sizeof range), static_cast<ssize_t>(sizeof range));
  auto inside = [&](const image::Mapping& m) { return m.start >= range[0] && m.end <= range[1]; };
  const uint64_t big = range[0] + 2 * 600 * 4096;
  auto touched = [&](uint64_t a) {
    return a < big ? (a - range[0]) / 4096 % 2 == 0 : (a - big) / 4096 % 1000 < 700;
  };

  struct Result {
    std::map<uint64_t, uint64_t> pages;  // address -> first word
    std::map<uint64_t, std::vector<std::pair<uint64_t, uint64_t>>> done;  // mapping -> ranges
    std::vector<uint64_t> done_order;
    bool early = false;  // a range reported before its pages
  };
  auto run = [&](unsigned threads) {
    Result r;
    std::mutex mu;
    auto maps = proc::read_mappings(child);
    MemoryReaders readers(threads);
    dump_memory(child, maps,
                [&](pid_t, uint64_t start, uint64_t addr, const uint8_t* data, size_t n) {
                  std::lock_guard lock(mu);
                  for (size_t i = 0; i < n; i++) {
                    uint64_t w;
                    std::memcpy(&w, data + i * 4096, sizeof w);
                    EXPECT_TRUE(r.pages.emplace(addr + i * 4096, w).second) << "twice: " << addr;
                    EXPECT_GE(addr, start);
                  }
                },
                inside, ReadVia::kMemFile, nullptr, {},
                [&](const image::Mapping& m, uint64_t start, uint64_t end) {
                  std::lock_guard lock(mu);
                  // Every page of the range the child touched was handed over.
                  for (uint64_t a = start; a < end; a += 4096)
                    if (touched(a) && !r.pages.count(a)) r.early = true;
                  r.done[m.start].emplace_back(start, end);
                  if (r.done_order.empty() || r.done_order.back() != m.start) r.done_order.push_back(m.start);
                },
                threads ? &readers : nullptr);
    return r;
  };
  Result one = run(0), many = run(3);
  size_t nmaps = 0;  // the one-page mappings, the PROT_NONE pages between them, the big one
  for (const auto& m : proc::read_mappings(child)) nmaps += inside(m);
  kill(child, SIGKILL);
  waitpid(child, nullptr, 0);

  EXPECT_EQ(nmaps, 1201u);
  EXPECT_EQ(one.pages.size(), 600u + 7000 + 240);  // 40 MiB: 10,240 pages, 700 of each 1000
  EXPECT_EQ(many.pages, one.pages);
  for (const auto& [addr, w] : many.pages) ASSERT_EQ(w, addr) << "page " << addr;
  for (const Result* r : {&one, &many}) {
    EXPECT_FALSE(r->early) << "a range was reported done before its pages were read";
    EXPECT_EQ(r->done.size(), nmaps);
    EXPECT_TRUE(std::is_sorted(r->done_order.begin(), r->done_order.end()));
    EXPECT_EQ(r->done_order.size(), r->done.size()) << "a mapping's ranges came in two stretches";
    for (const auto& [start, ranges] : r->done) {
      uint64_t at = start;
      for (const auto& [a, b] : ranges) {
        EXPECT_EQ(a, at) << "mapping " << start << ": ranges not contiguous";
        EXPECT_GT(b, a);
        at = b;
      }
    }
  }
}

TEST(YamaHint, ScopeOneSaysOnlyAncestorsAndPointsToSnapRun) {
  auto h1 = yama_eperm_hint(1);
  EXPECT_NE(h1.find("ptrace_scope is 1"), std::string::npos) << h1;
  EXPECT_NE(h1.find("ancestors"), std::string::npos) << h1;
  EXPECT_NE(h1.find("'snap run'"), std::string::npos) << h1;
  EXPECT_NE(yama_eperm_hint(2).find("CAP_SYS_PTRACE"), std::string::npos);
  EXPECT_NE(yama_eperm_hint(3).find("disabled"), std::string::npos);
  EXPECT_TRUE(yama_eperm_hint(0).empty());
}

namespace snap {
namespace {

TEST(ProcLimits, ParsedLikePrlimit) {
  // Our own limits both ways: /proc/self/limits and getrlimit agree.
  auto text = proc::read_file("/proc/self/limits");
  auto limits = proc::parse_limits(text);
  ASSERT_GE(limits.size(), static_cast<size_t>(RLIM_NLIMITS));
  for (int r = 0; r < RLIM_NLIMITS; r++) {
    rlimit lim{};
    ASSERT_EQ(::getrlimit(static_cast<__rlimit_resource>(r), &lim), 0);
    EXPECT_EQ(limits[static_cast<size_t>(r)].resource, r);
    EXPECT_EQ(limits[static_cast<size_t>(r)].cur, lim.rlim_cur) << "resource " << r;
    EXPECT_EQ(limits[static_cast<size_t>(r)].max, lim.rlim_max) << "resource " << r;
  }
}

}  // namespace
}  // namespace snap

// A batch runs its calls inside the child in order, passes arguments
// written to its arena, returns every result, lets calls marked may-fail
// fail, stops at the first call that must not fail (naming it, the later
// calls not run), and leaves the child running as before.
TEST(SyscallBatch, RunsInTheTargetAndStopsAtTheFirstFailure) {
  int to_parent[2];
  ASSERT_EQ(pipe(to_parent), 0);
  pid_t child = fork();
  if (child == 0) {
    char c = 1;
    if (write(to_parent[1], &c, 1) != 1) _exit(1);
    for (;;) pause();
  }
  char c;
  ASSERT_EQ(read(to_parent[0], &c, 1), 1);
  {
    SeizedTree tree = SeizedTree::seize(child);
    Task& task = *tree.processes()[0].tasks[0];
    RemoteSyscalls rs(task, find_syscall_site(child));
    SyscallBatch batch(rs);
    batch.reserve(4, 64);
    batch.add("getpid", SYS_getpid);
    const std::string path = "/proc/self/status";
    batch.add("open", SYS_openat, static_cast<uint64_t>(AT_FDCWD), batch.put(path).as_int(), O_RDONLY);
    batch.add("close of a bad fd", SyscallBatch::kMayFail, SYS_close, 12345);
    auto results = batch.run();
    ASSERT_EQ(results.size(), 3u);
    EXPECT_EQ(results[0], child);
    EXPECT_GE(results[1], 0);
    EXPECT_EQ(results[2], -EBADF);
    // The fd it opened is the child's.
    EXPECT_EQ(::access(("/proc/" + std::to_string(child) + "/fd/" + std::to_string(results[1])).c_str(), F_OK), 0);

    // A mmap that must land at its address, then a failing call that stops
    // the batch: the call after it never runs.
    batch.reserve(3, 0);
    batch.add("close", SYS_close, static_cast<uint64_t>(results[1]));
    batch.add("dup of a bad fd", SYS_dup, 12345);
    batch.add("getppid", SYS_getppid);
    try {
      batch.run();
      ADD_FAILURE() << "a failing call did not stop the batch";
    } catch (const SysError& e) {
      EXPECT_NE(std::string(e.what()).find("dup of a bad fd in pid " + std::to_string(child)),
                std::string::npos) << e.what();
    }
    EXPECT_NE(::access(("/proc/" + std::to_string(child) + "/fd/" + std::to_string(results[1])).c_str(), F_OK), 0);
  }
  // The batch area is gone and the child still runs.
  for (auto& m : proc::read_mappings(child, proc::MapDetail::kRangesOnly))
    EXPECT_FALSE(m.path.empty() && m.prot == (PROT_READ | PROT_EXEC)) << std::hex << m.start;
  EXPECT_EQ(kill(child, SIGTERM), 0);
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGTERM);
}

namespace {
image::CpuInfo cpu_with(std::vector<image::XsaveComponent> layout, uint64_t xcr0,
                        std::vector<std::string> features = {"sse2"}) {
  return {"v", "m", std::move(features), xcr0, std::move(layout)};
}
}  // namespace

TEST(CpuFeatures, ThisCpuIsWhatCpuidSays) {
  const auto& c = snap::tracer::this_cpu();
  EXPECT_FALSE(c.vendor.empty());
  EXPECT_TRUE(std::is_sorted(c.features.begin(), c.features.end()));
  EXPECT_NE(std::find(c.features.begin(), c.features.end(), "sse2"), c.features.end());
  EXPECT_EQ(c.xcr0 & 3, 3u);  // x87 and SSE on every x86_64 kernel
  EXPECT_TRUE(snap::tracer::cpu_lacks(c, c).empty());
}

TEST(CpuFeatures, LacksNamesFeaturesThenStateComponents) {
  auto saved = cpu_with({}, 0xe7, {"avx2", "avx512f", "sse2"});
  auto here = cpu_with({}, 0x7, {"avx2", "sse2", "sha_ni"});
  EXPECT_EQ(snap::tracer::cpu_lacks(saved, here),
            (std::vector<std::string>{"avx512f", "XSAVE state avx512_opmask",
                                      "XSAVE state avx512_zmm_hi256",
                                      "XSAVE state avx512_hi16_zmm"}));
  EXPECT_TRUE(snap::tracer::cpu_lacks(here, saved).size() == 1);  // sha_ni
}

TEST(CpuFeatures, XsaveMovedToAnotherLayout) {
  // Intel's standard-format offsets to AMD's: every component in use moves,
  // the legacy area stays, the header says what is there.
  auto intel = cpu_with({{2, 576, 256}, {5, 1088, 64}, {6, 1152, 512}, {7, 1664, 1024}}, 0xe7);
  auto amd = cpu_with({{2, 576, 256}, {5, 832, 64}, {6, 896, 512}, {7, 1408, 1024}}, 0xe7);
  std::vector<uint8_t> area(2688, 0);
  for (size_t i = 0; i < 512; i++) area[i] = static_cast<uint8_t>(i);
  const uint64_t in_use = 0x87;  // x87, SSE, AVX, hi16_zmm (opmask in its initial state)
  std::memcpy(area.data() + 512, &in_use, 8);
  std::memset(area.data() + 576, 0x22, 256);
  std::memset(area.data() + 1088, 0x55, 64);  // stale bytes of a component not in use
  std::memset(area.data() + 1664, 0x77, 1024);
  std::vector<std::string> dropped;
  auto out = snap::tracer::refit_xsave(area, intel, amd, 2432, &dropped);
  ASSERT_EQ(out.size(), 2432u);
  EXPECT_TRUE(dropped.empty());
  EXPECT_EQ(std::memcmp(out.data(), area.data(), 464), 0);
  uint64_t header = 0, xcr0 = 0;
  std::memcpy(&header, out.data() + 512, 8);
  std::memcpy(&xcr0, out.data() + 464, 8);
  EXPECT_EQ(header, in_use);
  EXPECT_EQ(xcr0, 0xe7u);
  EXPECT_EQ(out[576], 0x22);
  EXPECT_EQ(out[832], 0);  // not in use: left in its initial state
  EXPECT_EQ(out[1408], 0x77);
  EXPECT_EQ(out[2431], 0x77);
  // Back, and the same layout: nothing moves.
  auto again = snap::tracer::refit_xsave(out, amd, amd, 2432, &dropped);
  EXPECT_EQ(again, out);
  // A CPU without AVX-512: its state in use is dropped, and named.
  auto avx2 = cpu_with({{2, 576, 256}}, 0x7);
  auto small = snap::tracer::refit_xsave(area, intel, avx2, 832, &dropped);
  ASSERT_EQ(small.size(), 832u);
  EXPECT_EQ(dropped, (std::vector<std::string>{"avx512_hi16_zmm"}));
  std::memcpy(&header, small.data() + 512, 8);
  EXPECT_EQ(header, 0x7u);
  EXPECT_EQ(small[831], 0x22);
  // And from that CPU to a larger one: AVX moves, the rest starts initial.
  auto big = snap::tracer::refit_xsave(small, avx2, intel, 2688, &dropped);
  ASSERT_EQ(big.size(), 2688u);
  EXPECT_EQ(dropped.size(), 1u);  // nothing more dropped
  std::memcpy(&header, big.data() + 512, 8);
  EXPECT_EQ(header, 0x7u);
  EXPECT_EQ(big[576], 0x22);
  EXPECT_EQ(big[831], 0x22);
  EXPECT_EQ(big[1664], 0);
}
