// The on-disk image: manifest encoding, page store, commit rules.
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <thread>

#include <gtest/gtest.h>

#include "tests/unit/temp_dir.h"
#include "tests/unit/v6_layout.h"
#include "tests/unit/test_pages.h"

#include "base/error.h"
#include "image/checkpoint.h"
#include "image/image_reader.h"
#include "image/image_writer.h"
#include "image/manifest.h"
#include "image/manifest_file.h"
#include "image/staged_file.h"
#include "base/scoped_fd.h"

namespace snap::image {
namespace {

namespace fs = std::filesystem;
using Page = std::vector<uint8_t>;

// ---- helpers ----

using test_support::TempDir;

constexpr pid_t kPid = 100;
constexpr uint64_t kStart = 0x7f0000000000;
constexpr uint64_t kMapPages = 4096;

Checkpoint sample_checkpoint() {
  Checkpoint c;
  c.snap_version = "0.1.0";
  c.created = "2024-01-02T03:04:05Z";
  c.hostname = "node17";
  c.kernel_release = "6.1.0-18-amd64";
  for (pid_t pid : {kPid, kPid + 1}) {
    Process p;
    p.pid = pid;
    p.ppid = pid == kPid ? 1 : kPid;
    p.pgid = p.sid = kPid;
    p.comm = "solver";
    p.exe = "/opt/app/solver";
    p.cwd = "/scratch/job";
    p.root = "/";
    p.umask = 027;
    p.uids = {1000, 1000, 1000, 1000};
    p.gids = {100, 100, 100, 100};
    p.rlimits = {{7, 1024, 4096}, {3, 8 << 20, UINT64_MAX}};
    p.mm.start_brk = 0x555000;
    p.mm.brk = 0x576000;
    p.mm.auxv = {6, 4096, 0, 0};
    Mapping m;
    m.start = kStart;
    m.end = kStart + kMapPages * kPageSize;
    m.prot = 3;
    m.kind = MappingKind::Anonymous;
    m.vmflags = "rd wr mr mw me ac";
    p.mappings.push_back(m);
    Mapping f;
    f.start = 0x400000;
    f.end = 0x401000;
    f.prot = 5;
    f.kind = MappingKind::File;
    f.path = "/opt/app/solver";
    f.dev = 0x803;
    f.inode = 42;
    p.mappings.push_back(f);
    FileDesc fd;
    fd.fd = 3;
    fd.type = FdType::Pipe;
    fd.path = "pipe:[1234]";
    fd.flags = 02000001;
    fd.inode = 1234;
    fd.pipe_data = {'h', 'i', 0, 0xff};
    p.fds.push_back(fd);
    ThreadState t;
    t.tid = pid;
    t.gpregs.assign(216, 0);
    for (size_t i = 0; i < t.gpregs.size(); ++i) t.gpregs[i] = static_cast<uint8_t>(i * 7);
    t.xsave.assign(2688, 0xab);
    t.sigmask = 1ull << 13;
    t.pending = {std::vector<uint8_t>(128, 1)};
    t.in_syscall = true;
    t.syscall_nr = 230;
    t.sigaltstack = std::array<uint64_t, 3>{0x7000, 0, 8192};
    t.clear_child_tid = 0x7ffff000;
    p.threads.push_back(t);
    ThreadState t2;
    t2.tid = pid + 1000;
    p.threads.push_back(t2);
    p.sigactions.push_back({10, 0x401000, 0x4000000, 0x401100, 0});
    c.processes.push_back(p);
  }
  return c;
}

// sample_checkpoint() with its first mapping `npages` pages long.
Checkpoint checkpoint_of(uint64_t npages) {
  Checkpoint c = sample_checkpoint();
  c.processes[0].mappings[0].end = kStart + npages * kPageSize;
  return c;
}

using test_support::random_page;
using test_support::text_page;

// Everything for_each_run delivers, by page address; zero pages as empty.
std::map<uint64_t, Page> read_back(ImageReader& r, pid_t pid, uint64_t start) {
  std::map<uint64_t, Page> out;
  r.for_each_run(pid, start, [&](const PageRun& run) {
    for (size_t i = 0; i < run.npages; ++i) {
      uint64_t addr = run.addr + i * kPageSize;
      EXPECT_FALSE(out.count(addr)) << "page delivered twice: " << addr;
      out[addr] = run.zero() ? Page{} : Page(run.data + i * kPageSize,
                                            run.data + (i + 1) * kPageSize);
    }
  });
  return out;
}

void add(ImageWriter& w, pid_t pid, uint64_t addr, const Page& p) {
  w.add_pages(pid, kStart, addr, p.data(), 1);
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

// ---- manifest ----

TEST(Manifest, RoundTrip) {
  Checkpoint c = sample_checkpoint();
  std::string json = to_json(c);
  Checkpoint back = checkpoint_from_json(json);
  ASSERT_EQ(back.processes.size(), 2u);
  const Process& p = back.processes[0];
  EXPECT_EQ(back.hostname, "node17");
  EXPECT_EQ(p.umask, 027u);
  EXPECT_EQ(p.rlimits[1].max, UINT64_MAX);
  EXPECT_EQ(p.mappings[1].kind, MappingKind::File);
  EXPECT_EQ(p.mappings[1].inode, 42u);
  EXPECT_EQ(p.fds[0].type, FdType::Pipe);
  EXPECT_EQ(p.fds[0].flags, 02000001);
  EXPECT_EQ(p.fds[0].pipe_data, (std::vector<uint8_t>{'h', 'i', 0, 0xff}));
  EXPECT_EQ(p.threads[0].gpregs, c.processes[0].threads[0].gpregs);
  EXPECT_EQ(p.threads[0].xsave, c.processes[0].threads[0].xsave);
  EXPECT_EQ(p.threads[0].pending, c.processes[0].threads[0].pending);
  EXPECT_EQ(p.threads[0].sigaltstack, c.processes[0].threads[0].sigaltstack);
  EXPECT_EQ(p.threads[0].clear_child_tid, 0x7ffff000u);
  EXPECT_FALSE(p.threads[1].sigaltstack.has_value());
  EXPECT_FALSE(p.threads[1].clear_child_tid.has_value());
  EXPECT_EQ(p.threads[0].syscall_nr, 230);
  EXPECT_EQ(p.mm.auxv, c.processes[0].mm.auxv);
  EXPECT_EQ(p.sigactions[0].restorer, 0x401100u);
  EXPECT_EQ(to_json(back), json);  // nothing lost anywhere
}

// Format 11: a mapping's guard regions; one outside its mapping is damage.
TEST(Manifest, GuardRegionsRoundTrip) {
  Checkpoint c = sample_checkpoint();
  auto& m = c.processes[0].mappings[0];
  m.guards = {{kStart + kPageSize, kStart + 3 * kPageSize}, {kStart + 9 * kPageSize, kStart + 10 * kPageSize}};
  std::string json = to_json(c);
  Checkpoint back = checkpoint_from_json(json);
  EXPECT_EQ(back.processes[0].mappings[0].guards, m.guards);
  EXPECT_TRUE(back.processes[0].mappings[1].guards.empty());
  EXPECT_EQ(json.find("guards"), json.rfind("guards"));  // written only where there are some
  EXPECT_EQ(to_json(back), json);

  m.guards = {{kStart - kPageSize, kStart + kPageSize}};  // begins before the mapping
  EXPECT_THROW(checkpoint_from_json(to_json(c)), Error);
  m.guards = {{kStart + kPageSize, kStart + kPageSize + 100}};  // not page-aligned
  EXPECT_THROW(checkpoint_from_json(to_json(c)), Error);
}

// Format 15: a thread's own seccomp, its filters in their order with their
// flags, or strict mode; a program of no whole instruction is damage.
TEST(Manifest, SeccompRoundTrip) {
  Checkpoint c = sample_checkpoint();
  auto& t = c.processes[0].threads;
  const std::vector<uint8_t> allow = {6, 0, 0, 0, 0, 0, 0xff, 0x7f};  // ret SECCOMP_RET_ALLOW
  const std::vector<uint8_t> deny = {6, 0, 0, 0, 1, 0, 5, 0};         // ret SECCOMP_RET_ERRNO | 1
  t[0].seccomp = Seccomp{false, {{allow, 0}, {deny, 2 /* SECCOMP_FILTER_FLAG_LOG */}}};
  t[1].seccomp = Seccomp{true, {}};
  std::string json = to_json(c);
  Checkpoint back = checkpoint_from_json(json);
  const auto& b = back.processes[0].threads;
  ASSERT_TRUE(b[0].seccomp && b[1].seccomp);
  EXPECT_FALSE(b[0].seccomp->strict);
  ASSERT_EQ(b[0].seccomp->filters.size(), 2u);
  EXPECT_EQ(b[0].seccomp->filters[0].program, allow);
  EXPECT_EQ(b[0].seccomp->filters[0].flags, 0u);
  EXPECT_EQ(b[0].seccomp->filters[1].program, deny);
  EXPECT_EQ(b[0].seccomp->filters[1].flags, 2u);
  EXPECT_TRUE(b[1].seccomp->strict);
  EXPECT_TRUE(b[1].seccomp->filters.empty());
  EXPECT_FALSE(back.processes[1].threads[0].seccomp.has_value());
  EXPECT_EQ(to_json(back), json);

  t[0].seccomp->filters[1].program.pop_back();  // 7 bytes: no whole instruction
  std::string msg = error_of([&] { checkpoint_from_json(to_json(c)); });
  EXPECT_NE(msg.find("seccomp.filters[1].program"), std::string::npos) << msg;
}

// Hugetlb memory's page size; one the mapping is not aligned to, or not a
// power of two, is damage.
TEST(Manifest, HugetlbPageSizeRoundTrip) {
  Checkpoint c = sample_checkpoint();
  auto& m = c.processes[0].mappings[0];
  m.start = 0x7f0000000000, m.end = m.start + (8 << 20);
  m.hugetlb_page = 2 << 20;
  std::string json = to_json(c);
  Checkpoint back = checkpoint_from_json(json);
  EXPECT_EQ(back.processes[0].mappings[0].hugetlb_page, uint64_t{2} << 20);
  EXPECT_EQ(back.processes[0].mappings[1].hugetlb_page, 0u);
  EXPECT_EQ(json.find("hugetlb_page"), json.rfind("hugetlb_page"));  // written only where set
  EXPECT_EQ(to_json(back), json);

  m.hugetlb_page = 3 << 20;  // not a power of two
  EXPECT_THROW(checkpoint_from_json(to_json(c)), Error);
  m.hugetlb_page = 1 << 30;  // the mapping is not aligned to it
  EXPECT_THROW(checkpoint_from_json(to_json(c)), Error);
}

// Format 11: an AIO ring's head, tail and uncollected events; events that do
// not fill the slots from head to tail are damage.
TEST(Manifest, AioRingRoundTrip) {
  Checkpoint c = sample_checkpoint();
  // An AIO ring with two events left uncollected across its wrap.
  Mapping aio;
  aio.start = 0x7f1000000000;
  aio.end = aio.start + kPageSize;
  aio.kind = MappingKind::Aio;
  aio.aio_nr = 127;
  aio.aio_head = 126;
  aio.aio_tail = 1;
  aio.aio_events.assign(64, 0xab);
  c.processes[0].mappings.push_back(aio);
  Checkpoint back = checkpoint_from_json(to_json(c));
  const auto& a = back.processes[0].mappings.back();
  EXPECT_EQ(a.aio_head, 126u);
  EXPECT_EQ(a.aio_tail, 1u);
  EXPECT_EQ(a.aio_events, aio.aio_events);
  c.processes[0].mappings.back().aio_events.resize(32);  // one event for two slots: damaged
  EXPECT_THROW(checkpoint_from_json(to_json(c)), Error);
}

// Format 2: zombies, child subreaper, shared open files, unix sockets.
TEST(Manifest, TreeFieldsRoundTrip) {
  Checkpoint c = sample_checkpoint();
  c.processes[0].child_subreaper = 1;
  // Capability sets wider than 32 bits (CAP_CHECKPOINT_RESTORE is 40).
  c.processes[0].caps = Capabilities{1ull << 10, (1ull << 40) | 3, 3, 0x1ffffffffffull, 1ull << 10};
  // Scheduling: a real-time thread, and a SCHED_DEADLINE one (its times).
  c.processes[0].threads[0].sched = Scheduling{2, true, 0, 3, 0, 0, 0, (3 << 13) | 7};  // SCHED_RR, idle I/O
  c.processes[0].threads[1].sched = Scheduling{6, false, 0, 0, 10'000'000, 30'000'000, 0};
  // CPU binding: one thread bound, against what the job was given.
  c.job_cpus = {0, 1, 2, 3, 8};
  c.processes[0].threads[1].cpus = {2, 3, 8};
  c.processes[0].fds[0].file_id = 1;
  c.processes[1].fds[0].file_id = 1;
  FileDesc sock;
  sock.fd = 4;
  sock.type = FdType::Socket;
  sock.path = "socket:[5001]";
  sock.inode = 5001;
  sock.file_id = 2;
  UnixSocket u;
  u.type = 5;  // SOCK_SEQPACKET
  u.state = 1;
  u.peer_inode = 5002;
  u.name = "@abstract\x01name";
  u.queue = {{'o', 'n', 'e'}, {}, {0, 0xff, 7}};
  u.name_file = UnixSocket::NameFile{0640, 1000, 100};
  sock.unix_socket = u;
  c.processes[0].fds.push_back(sock);
  Process z;
  z.pid = kPid + 2;
  z.ppid = kPid;
  z.pgid = z.sid = kPid;
  z.comm = "worker";
  z.zombie = true;
  z.exit_status = 7 << 8;
  c.processes.push_back(z);

  std::string json = to_json(c);
  Checkpoint back = checkpoint_from_json(json);
  ASSERT_EQ(back.processes.size(), 3u);
  EXPECT_EQ(back.processes[0].child_subreaper, 1);
  EXPECT_FALSE(back.processes[1].child_subreaper.has_value());
  EXPECT_EQ(back.processes[0].caps, c.processes[0].caps);
  EXPECT_FALSE(back.processes[1].caps.has_value());
  EXPECT_EQ(back.processes[0].threads[0].sched, c.processes[0].threads[0].sched);
  EXPECT_EQ(back.processes[0].threads[1].sched, c.processes[0].threads[1].sched);
  EXPECT_FALSE(back.processes[1].threads[0].sched.has_value());
  EXPECT_EQ(back.job_cpus, c.job_cpus);
  EXPECT_EQ(back.processes[0].threads[1].cpus, c.processes[0].threads[1].cpus);
  EXPECT_TRUE(back.processes[0].threads[0].cpus.empty());
  EXPECT_FALSE(back.processes[0].zombie);
  EXPECT_EQ(back.processes[0].fds[0].file_id, 1u);
  EXPECT_EQ(back.processes[1].fds[0].file_id, 1u);
  EXPECT_FALSE(back.processes[0].fds[0].unix_socket.has_value());
  const auto& s = back.processes[0].fds[1];
  ASSERT_TRUE(s.unix_socket.has_value());
  EXPECT_EQ(s.file_id, 2u);
  EXPECT_EQ(s.unix_socket->type, 5);
  EXPECT_EQ(s.unix_socket->state, 1);
  EXPECT_EQ(s.unix_socket->peer_inode, 5002u);
  EXPECT_EQ(s.unix_socket->name, u.name);
  EXPECT_EQ(s.unix_socket->name_file, u.name_file);
  EXPECT_EQ(s.unix_socket->queue, u.queue);
  const Process& bz = back.processes[2];
  EXPECT_TRUE(bz.zombie);
  EXPECT_EQ(bz.exit_status, 7 << 8);
  EXPECT_EQ(bz.comm, "worker");
  EXPECT_EQ(bz.ppid, kPid);
  EXPECT_TRUE(bz.threads.empty() && bz.mappings.empty() && bz.fds.empty());
  EXPECT_EQ(to_json(back), json);  // nothing lost anywhere
}

TEST(Manifest, AnonFdsLocksAndOwnersRoundTrip) {
  Checkpoint c = sample_checkpoint();
  auto& fds = c.processes[0].fds;
  FileDesc sfd;
  sfd.fd = 5;
  sfd.type = FdType::SignalFd;
  sfd.signalfd_mask = (1ull << 9) | (1ull << 63);
  FileDesc tfd;
  tfd.fd = 6;
  tfd.type = FdType::TimerFd;
  tfd.timerfd = image::TimerFdState{1, 1, 3, 4000000000, 123456789};
  FileDesc ifd;
  ifd.fd = 7;
  ifd.type = FdType::Inotify;
  ifd.inotify_watches = {{1, 0x100, "/tmp/a dir", 2049, 77, 0, {}}, {9, 0xfff, "", 1, 2, 3, {}}};
  fds.push_back(sfd);
  fds.push_back(tfd);
  fds.push_back(ifd);
  FileDesc pfd;
  pfd.fd = 8;
  pfd.type = FdType::PidFd;
  pfd.pidfd_pid = 4321;
  fds.push_back(pfd);
  fds[0].locks = {{image::LockKind::Posix, true, 10, 5}, {image::LockKind::Lease, false, 0, 0}};
  fds[0].owner = image::FileOwner{2, 4242, 29, 1, 2};
  std::string json = to_json(c);
  Checkpoint back = checkpoint_from_json(json);
  const auto& b = back.processes[0].fds;
  ASSERT_EQ(b.size(), fds.size());
  EXPECT_EQ(b[1].type, FdType::SignalFd);
  EXPECT_EQ(b[1].signalfd_mask, sfd.signalfd_mask);
  ASSERT_TRUE(b[2].timerfd.has_value());
  EXPECT_EQ(b[2].timerfd->ticks, 3u);
  EXPECT_EQ(b[2].timerfd->interval_ns, 4000000000);
  ASSERT_EQ(b[3].inotify_watches.size(), 2u);
  EXPECT_EQ(b[3].inotify_watches[0].path, "/tmp/a dir");
  EXPECT_EQ(b[3].inotify_watches[1].wd, 9);
  EXPECT_EQ(b[3].inotify_watches[0].ghost, 0u);
  EXPECT_EQ(b[3].inotify_watches[1].ghost, 3u);  // a watch on a deleted file
  ASSERT_EQ(b[0].locks.size(), 2u);
  EXPECT_EQ(b[0].locks[0].kind, image::LockKind::Posix);
  EXPECT_EQ(b[0].locks[0].len, 5u);
  EXPECT_EQ(b[0].locks[1].kind, image::LockKind::Lease);
  ASSERT_TRUE(b[0].owner.has_value());
  EXPECT_EQ(b[0].owner->pid, 4242);
  EXPECT_EQ(b[0].owner->signum, 29);
  EXPECT_FALSE(b[1].owner.has_value());
  EXPECT_EQ(b[4].type, FdType::PidFd);
  EXPECT_EQ(b[4].pidfd_pid, 4321);
  EXPECT_EQ(to_json(back), json);
}

TEST(Manifest, SocketFieldsRoundTrip) {
  Checkpoint c = sample_checkpoint();
  FileDesc lis;
  lis.fd = 5;
  lis.type = FdType::Socket;
  lis.path = "socket:[6001]";
  lis.inode = 6001;
  UnixSocket u;
  u.type = 1;
  u.state = 10;
  u.name = "srv.sock";
  u.shutdown = 2;
  u.backlog = 16;
  u.pending = {41, 42};  // connections not accepted yet, in accept order
  u.pending_on = 40;
  u.name_inode = 777;
  u.name_deleted = true;
  u.peer_name = "/run/other";
  u.queue = {{'a'}, {'b'}};
  FileDesc in_flight;
  in_flight.type = FdType::Pipe;
  in_flight.inode = 6100;
  in_flight.path = "pipe:[6100]";
  u.queue_fds = {{}, {in_flight}};
  u.queue_senders = {"@teller", ""};
  lis.unix_socket = u;
  lis.sock_options = {{1, 2, {1, 0, 0, 0}}, {6, 4, {0x2c, 1, 0, 0}}};
  lis.sock_filter = {6, 0, 0, 0, 0xff, 0xff, 0, 0};
  FileDesc tcp;
  tcp.fd = 6;
  tcp.type = FdType::Socket;
  tcp.path = "socket:[6002]";
  tcp.inode = 6002;
  InetSocket in;
  in.family = 10;
  in.type = 1;
  in.protocol = 6;
  in.state = 10;
  in.local = "::1";
  in.local_port = 8888;
  in.backlog = 128;
  in.shutdown = 1;
  tcp.inet_socket = in;
  c.processes[0].fds.push_back(lis);
  c.processes[0].fds.push_back(tcp);

  std::string json = to_json(c);
  Checkpoint back = checkpoint_from_json(json);
  const auto& l = back.processes[0].fds[1];
  ASSERT_TRUE(l.unix_socket.has_value());
  EXPECT_EQ(l.unix_socket->shutdown, 2);
  EXPECT_EQ(l.unix_socket->backlog, 16);
  EXPECT_EQ(l.unix_socket->pending, (std::vector<uint64_t>{41, 42}));
  EXPECT_EQ(l.unix_socket->pending_on, 40u);
  EXPECT_EQ(l.unix_socket->name_inode, 777u);
  EXPECT_TRUE(l.unix_socket->name_deleted);
  EXPECT_EQ(l.unix_socket->peer_name, "/run/other");
  ASSERT_EQ(l.unix_socket->queue_fds.size(), 2u);
  EXPECT_TRUE(l.unix_socket->queue_fds[0].empty());
  ASSERT_EQ(l.unix_socket->queue_fds[1].size(), 1u);
  EXPECT_EQ(l.unix_socket->queue_fds[1][0].type, FdType::Pipe);
  EXPECT_EQ(l.unix_socket->queue_fds[1][0].inode, 6100u);
  EXPECT_EQ(l.unix_socket->queue_senders, (std::vector<std::string>{"@teller", ""}));
  ASSERT_EQ(l.sock_options.size(), 2u);
  EXPECT_EQ(l.sock_options[1].level, 6);
  EXPECT_EQ(l.sock_options[1].name, 4);
  EXPECT_EQ(l.sock_options[1].value, lis.sock_options[1].value);
  EXPECT_EQ(l.sock_filter, lis.sock_filter);
  const auto& t = back.processes[0].fds[2];
  ASSERT_TRUE(t.inet_socket.has_value());
  EXPECT_FALSE(t.unix_socket.has_value());
  EXPECT_EQ(t.inet_socket->family, 10);
  EXPECT_EQ(t.inet_socket->local, "::1");
  EXPECT_EQ(t.inet_socket->local_port, 8888);
  EXPECT_EQ(t.inet_socket->backlog, 128);
  EXPECT_EQ(t.inet_socket->shutdown, 1);
  EXPECT_TRUE(t.inet_socket->peer.empty());
  EXPECT_FALSE(t.inet_socket->tcp.has_value());
  EXPECT_EQ(to_json(back), json);
}

// An established TCP connection saved in repair mode: every field back,
// queues byte for byte; a window is optional.
TEST(Manifest, TcpConnectionRoundTrip) {
  Checkpoint c = sample_checkpoint();
  FileDesc f;
  f.fd = 7;
  f.type = FdType::Socket;
  f.path = "socket:[7001]";
  f.inode = 7001;
  InetSocket in;
  in.family = 2;
  in.type = 1;
  in.protocol = 6;
  in.state = 1;
  in.local = "127.0.0.1";
  in.local_port = 40000;
  in.peer = "127.0.0.1";
  in.peer_port = 8080;
  TcpConnection t;
  t.send_seq = 0xfffffff0u;
  t.recv_seq = 12345;
  t.send_queue = {1, 2, 3, 0, 255};
  t.unsent = 2;
  t.recv_queue = {'h', 'i', '\n'};
  t.mss = 65483;
  t.options = 7;
  t.snd_wscale = 7;
  t.rcv_wscale = 9;
  t.timestamp = 4000000000u;
  t.window = std::array<uint32_t, 5>{1, 2, 3, 4, 5};
  t.network_lock = "snap_7_1700000000000000001";
  in.tcp = t;
  f.inet_socket = in;
  c.processes[0].fds.push_back(f);
  FileDesc g = f;
  g.fd = 8;
  g.inet_socket->tcp->window.reset();
  g.inet_socket->tcp->network_lock.clear();
  g.inet_socket->tcp->peeked = true;  // saved without repair mode
  c.processes[0].fds.push_back(g);
  FileDesc closed = f;  // dump --tcp-close: nothing of it read
  closed.fd = 9;
  closed.inet_socket->tcp.reset();
  closed.inet_socket->closed = true;
  c.processes[0].fds.push_back(closed);

  std::string json = to_json(c);
  Checkpoint back = checkpoint_from_json(json);
  const auto& b = back.processes[0].fds[back.processes[0].fds.size() - 3];
  ASSERT_TRUE(b.inet_socket && b.inet_socket->tcp);
  const auto& bt = *b.inet_socket->tcp;
  EXPECT_EQ(bt.send_seq, t.send_seq);
  EXPECT_EQ(bt.recv_seq, t.recv_seq);
  EXPECT_EQ(bt.send_queue, t.send_queue);
  EXPECT_EQ(bt.unsent, 2u);
  EXPECT_EQ(bt.recv_queue, t.recv_queue);
  EXPECT_EQ(bt.mss, t.mss);
  EXPECT_EQ(bt.options, 7u);
  EXPECT_EQ(bt.snd_wscale, 7u);
  EXPECT_EQ(bt.rcv_wscale, 9u);
  EXPECT_EQ(bt.timestamp, t.timestamp);
  EXPECT_EQ(bt.window, t.window);
  EXPECT_EQ(bt.network_lock, t.network_lock);
  const auto& peeked = back.processes[0].fds[back.processes[0].fds.size() - 2];
  EXPECT_FALSE(peeked.inet_socket->tcp->window.has_value());
  EXPECT_TRUE(peeked.inet_socket->tcp->network_lock.empty());
  EXPECT_EQ(json.find("network_lock"), json.rfind("network_lock"));  // written only when there is one
  EXPECT_FALSE(bt.peeked);
  EXPECT_TRUE(peeked.inet_socket->tcp->peeked);
  EXPECT_EQ(json.find("peeked"), json.rfind("peeked"));  // written only when set
  const auto& cl = back.processes[0].fds.back();
  EXPECT_TRUE(cl.inet_socket->closed && !cl.inet_socket->tcp);
  EXPECT_FALSE(b.inet_socket->closed || peeked.inet_socket->closed);
  EXPECT_EQ(json.find("\"closed\""), json.rfind("\"closed\""));  // written only when set
  EXPECT_EQ(to_json(back), json);

  // More unsent bytes than the queue holds: a damaged image.
  auto at = json.find("\"unsent\":2");
  ASSERT_NE(at, std::string::npos);
  json.replace(at, 11, "\"unsent\":9");
  EXPECT_THROW(checkpoint_from_json(json), Error);
}

// Deleted files and memfds: the ghost table and what refers to it.
TEST(Manifest, GhostFilesRoundTrip) {
  Checkpoint c = sample_checkpoint();
  GhostFile g;
  g.id = 1;
  g.kind = GhostFile::Kind::Memfd;
  g.path = "name with \"quotes\"";
  g.mode = 0100640;
  g.uid = 1000;
  g.gid = 100;
  g.size = 1 << 20;
  g.atime_ns = 1700000000123456789;
  g.mtime_ns = 1700000001000000000;
  g.seals = 0x2;
  g.data = {{0, {1, 2, 3}}, {65536, {0xff}}};
  GhostFile linked;
  linked.id = 2;
  linked.kind = GhostFile::Kind::File;
  linked.path = "/tmp/x";
  linked.nlink = 1;
  linked.handle_type = 1;
  linked.handle = {9, 8, 7, 6};
  c.ghost_files = {g, linked};
  c.processes[0].fds[0].ghost = 2;
  c.processes[0].mappings[0].ghost = 1;
  c.processes[1].cwd_ghost = 1;

  std::string json = to_json(c);
  Checkpoint back = checkpoint_from_json(json);
  ASSERT_EQ(back.ghost_files.size(), 2u);
  const GhostFile& b = back.ghost_files[0];
  EXPECT_EQ(b.kind, GhostFile::Kind::Memfd);
  EXPECT_EQ(b.path, g.path);
  EXPECT_EQ(b.mode, g.mode);
  EXPECT_EQ(b.atime_ns, g.atime_ns);
  EXPECT_EQ(b.seals, 0x2u);
  ASSERT_EQ(b.data.size(), 2u);
  EXPECT_EQ(b.data[1].offset, 65536u);
  EXPECT_EQ(b.data[1].data, std::vector<uint8_t>{0xff});
  EXPECT_EQ(back.ghost_files[1].handle, linked.handle);
  EXPECT_EQ(back.ghost_files[1].nlink, 1u);
  EXPECT_EQ(back.processes[0].fds[0].ghost, 2u);
  EXPECT_EQ(back.processes[0].fds.size() > 1 ? back.processes[0].fds[1].ghost : 0u, 0u);
  EXPECT_EQ(back.processes[0].mappings[0].ghost, 1u);
  EXPECT_EQ(back.processes[1].cwd_ghost, 1u);
  EXPECT_EQ(back.processes[0].cwd_ghost, 0u);
  EXPECT_EQ(to_json(back), json);  // nothing lost anywhere
}

// The job's files in temporary directories: their own list, in order,
// apart from the ghosts; an image without them has no such key.
TEST(Manifest, TempFilesRoundTrip) {
  Checkpoint c = sample_checkpoint();
  EXPECT_EQ(to_json(c).find("temp_files"), std::string::npos);
  GhostFile dir;
  dir.id = 1;
  dir.kind = GhostFile::Kind::Directory;
  dir.path = "/tmp/ompi.node.1000";
  dir.mode = 040700;
  dir.uid = 1000;
  GhostFile file;
  file.id = 2;
  file.kind = GhostFile::Kind::File;
  file.path = "/tmp/ompi.node.1000/hwloc.sm";
  file.mode = 0100600;
  file.size = 16384;
  file.nlink = 1;
  file.data = {{0, {1, 2, 3}}};
  GhostFile fifo;
  fifo.id = 3;
  fifo.kind = GhostFile::Kind::Fifo;
  fifo.path = "/tmp/ompi.node.1000/0/debugger_attach_fifo";
  fifo.mode = 010644;
  c.temp_files = {dir, file, fifo};

  std::string json = to_json(c);
  Checkpoint back = checkpoint_from_json(json);
  EXPECT_TRUE(back.ghost_files.empty());
  ASSERT_EQ(back.temp_files.size(), 3u);
  EXPECT_EQ(back.temp_files[0].kind, GhostFile::Kind::Directory);
  EXPECT_EQ(back.temp_files[0].mode, 040700u);
  EXPECT_EQ(back.temp_files[1].path, file.path);
  EXPECT_EQ(back.temp_files[1].size, 16384u);
  ASSERT_EQ(back.temp_files[1].data.size(), 1u);
  EXPECT_EQ(back.temp_files[1].data[0].data, (std::vector<uint8_t>{1, 2, 3}));
  EXPECT_EQ(back.temp_files[2].kind, GhostFile::Kind::Fifo);
  EXPECT_EQ(to_json(back), json);
}

// The sample's first mapping made a MAP_SHARED mapping of `path`.
Mapping& shared_file_mapping(Checkpoint& c, const std::string& path) {
  Mapping& m = c.processes[0].mappings[0];
  m.kind = MappingKind::File;
  m.shared = true;
  m.path = path;
  return m;
}

// A shared mapping of a file in /dev/shm: it counts as shared memory (its
// pages are in the page store) and keeps its file's size, mode and owner.
TEST(Manifest, NamedShmRoundTrip) {
  Checkpoint c = sample_checkpoint();
  Mapping& m = shared_file_mapping(c, "/dev/shm/vader_segment.0");
  EXPECT_FALSE(is_shm_object(m));
  m.named_shm = Mapping::NamedShm{4194312, 0100600, 1000, 100};
  EXPECT_TRUE(is_shm_object(m));
  std::string json = to_json(c);
  Checkpoint back = checkpoint_from_json(json);
  const Mapping& b = back.processes[0].mappings[0];
  ASSERT_TRUE(b.named_shm.has_value());
  EXPECT_EQ(b.named_shm->size, 4194312u);
  EXPECT_EQ(b.named_shm->mode, 0100600u);
  EXPECT_EQ(b.named_shm->uid, 1000u);
  EXPECT_EQ(b.named_shm->gid, 100u);
  EXPECT_FALSE(back.processes[0].mappings.size() > 1 && back.processes[0].mappings[1].named_shm);
  EXPECT_EQ(to_json(back), json);
}

// A data file the job maps shared and writes (numpy.memmap): shared memory
// too (the mapped part's pages are in the page store), its size at the
// dump kept; a manifest that marks anything else so is refused.
TEST(Manifest, SavedFileRoundTrip) {
  Checkpoint c = sample_checkpoint();
  Mapping& m = shared_file_mapping(c, "/home/u/run/field.dat");
  EXPECT_FALSE(is_shm_object(m));
  m.saved_file = Mapping::SavedFile{266340};
  EXPECT_TRUE(is_shm_object(m));
  std::string json = to_json(c);
  Checkpoint back = checkpoint_from_json(json);
  ASSERT_TRUE(back.processes[0].mappings[0].saved_file.has_value());
  EXPECT_EQ(back.processes[0].mappings[0].saved_file->size, 266340u);
  EXPECT_EQ(to_json(back), json);
  m.shared = false;  // a private mapping has nothing to write back
  EXPECT_THROW(checkpoint_from_json(to_json(c)), Error);
}

TEST(Manifest, CpuAndVdsoRoundTrip) {
  Checkpoint c = sample_checkpoint();
  EXPECT_FALSE(checkpoint_from_json(to_json(c)).cpu.has_value());  // older images have none
  c.cpu = CpuInfo{"GenuineIntel", "Intel(R) Xeon(R) Gold 6248", {"avx2", "avx512f", "sse2"}, 0x2e7,
                  {{2, 576, 256}, {5, 1088, 64}, {6, 1152, 512}, {7, 1664, 1024}, {9, 2688, 8}}};
  std::string json = to_json(c);
  Checkpoint back = checkpoint_from_json(json);
  ASSERT_TRUE(back.cpu.has_value());
  EXPECT_EQ(back.cpu->model, c.cpu->model);
  EXPECT_EQ(back.cpu->features, c.cpu->features);
  EXPECT_EQ(back.cpu->xcr0, 0x2e7u);
  EXPECT_EQ(back.cpu->xsave_layout, c.cpu->xsave_layout);
  EXPECT_EQ(to_json(back), json);
  c.vdso = {0x7f, 'E', 'L', 'F', 2, 1, 1, 0};
  back = checkpoint_from_json(to_json(c));
  EXPECT_EQ(back.vdso, c.vdso);
}

TEST(Manifest, PtyFieldsRoundTrip) {
  Checkpoint c = sample_checkpoint();
  image::Pty t;
  t.index = 3;
  t.termios = {0x500, 0x5, 0xbf, 0x8a3b, 0, std::vector<uint8_t>(19, 7), 38400, 38400};
  t.winsize = {40, 132, 0, 0};
  t.packet = true;
  t.session = 101;
  t.fg_pgrp = 102;
  t.input = {'l', 'i', 'n', 'e', '\n', 'l'};
  t.input_eofs = {5, 6};
  t.output = {'o', 'k', '\r', '\n'};
  t.uid = 1000;
  t.gid = 5;
  t.mode = 020620;
  image::Pty gone;
  gone.index = 4;
  gone.hung_up = true;
  c.ptys = {t, gone};
  FileDesc m;
  m.fd = 9;
  m.type = FdType::Tty;
  m.path = "/dev/ptmx";
  m.pty = image::PtyEnd{3, true};
  c.processes[0].fds.push_back(m);

  std::string json = to_json(c);
  Checkpoint back = checkpoint_from_json(json);
  ASSERT_EQ(back.ptys.size(), 2u);
  const image::Pty& b = back.ptys[0];
  EXPECT_EQ(b.index, 3u);
  EXPECT_EQ(b.termios.lflag, 0x8a3bu);
  EXPECT_EQ(b.termios.cc, t.termios.cc);
  EXPECT_EQ(b.winsize[1], 132);
  EXPECT_TRUE(b.packet);
  EXPECT_FALSE(b.locked);
  EXPECT_EQ(b.session, 101);
  EXPECT_EQ(b.fg_pgrp, 102);
  EXPECT_EQ(b.input, t.input);
  EXPECT_EQ(b.input_eofs, t.input_eofs);
  EXPECT_EQ(b.output, t.output);
  EXPECT_EQ(b.mode, 020620u);
  EXPECT_TRUE(back.ptys[1].hung_up);
  ASSERT_TRUE(back.processes[0].fds.back().pty.has_value());
  EXPECT_TRUE(back.processes[0].fds.back().pty->master);
  EXPECT_FALSE(back.processes[0].fds.front().pty.has_value());
  EXPECT_EQ(to_json(back), json);
}

TEST(Manifest, TruncatedIsAClearError) {
  std::string json = to_json(sample_checkpoint());
  std::string msg = error_of([&] { checkpoint_from_json(json.substr(0, json.size() / 2)); });
  EXPECT_NE(msg.find("manifest.json"), std::string::npos) << msg;
  EXPECT_NE(msg.find("truncated"), std::string::npos) << msg;
  EXPECT_NE(error_of([&] { checkpoint_from_json(""); }), "(no error)");
}

TEST(Manifest, BadFieldIsNamed) {
  std::string json = to_json(sample_checkpoint());
  std::string bad = json;
  bad.replace(bad.find("\"gpregs\""), 8, "\"gpregz\"");
  std::string msg = error_of([&] { checkpoint_from_json(bad); });
  EXPECT_NE(msg.find("checkpoint.processes[0].threads[0].gpregs: missing"), std::string::npos)
      << msg;
  bad = json;
  bad.replace(bad.find("\"anonymous\""), 11, "\"anonymouz\"");
  msg = error_of([&] { checkpoint_from_json(bad); });
  EXPECT_NE(msg.find("processes[0].mappings[0].kind"), std::string::npos) << msg;
  bad = json;
  size_t at = bad.find("\"umask\":") + 8;
  bad.replace(at, 2, "-1");
  msg = error_of([&] { checkpoint_from_json(bad); });
  EXPECT_NE(msg.find("processes[0].umask"), std::string::npos) << msg;
}

TEST(Manifest, OtherVersionRefused) {
  std::string json = to_json(sample_checkpoint());
  const std::string now = "\"format_version\":" + std::to_string(kFormatVersion);
  size_t at = json.find(now);
  ASSERT_NE(at, std::string::npos);
  json.replace(at, now.size(), "\"format_version\":" + std::to_string(kFormatVersion + 1));
  std::string msg = error_of([&] { checkpoint_from_json(json); });
  EXPECT_NE(msg.find("format version " + std::to_string(kFormatVersion + 1) + " is not supported"),
            std::string::npos)
      << msg;
}

// ---- page store ----

TEST(PageStore, DuplicatesStoredOnce) {
  TempDir t;
  std::mt19937_64 rng(1);
  Page a = random_page(rng);
  {
    auto w = ImageWriter::create(t / "img", false);
    add(w, kPid, kStart, a);
    add(w, kPid, kStart + 5 * kPageSize, a);
    add(w, kPid + 1, kStart + 9 * kPageSize, a);  // another process
    w.commit(sample_checkpoint());
    ImageStats s = w.stats();
    EXPECT_EQ(s.pages, 3u);
    EXPECT_EQ(s.unique_pages, 1u);
    EXPECT_EQ(s.duplicate_pages, 2u);
  }
  auto r = ImageReader::open(t / "img");
  EXPECT_EQ(r.stats().unique_pages, 1u);
  EXPECT_EQ(r.stats().duplicate_pages, 2u);
  EXPECT_EQ(r.checkpoint().processes[0].mappings[0].pages_dumped, 2u);
  EXPECT_EQ(r.checkpoint().processes[1].mappings[0].pages_dumped, 1u);
  auto got = read_back(r, kPid, kStart);
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[kStart], a);
  EXPECT_EQ(got[kStart + 5 * kPageSize], a);
  EXPECT_EQ(read_back(r, kPid + 1, kStart)[kStart + 9 * kPageSize], a);
  r.verify_all();
}

// Pages given, then forgotten at some addresses and given again there (a
// data file's pages read while the job ran, some written by it before the
// stop): each address reads back as given last, whether its first page was
// stored, a duplicate (a run repeating one page), zero, or in the middle of
// a run; pages given in a forgotten range where none were before are there
// too, and addresses forgotten that were never given stay absent.
TEST(PageStore, PagesForgottenAndGivenAgain) {
  TempDir t;
  std::mt19937_64 rng(11);
  std::vector<Page> first, second;
  for (int i = 0; i < 16; i++) first.push_back(random_page(rng));
  for (int i = 0; i < 16; i++) second.push_back(random_page(rng));
  Page a = random_page(rng);
  {
    auto w = ImageWriter::create(t / "img", false);
    std::vector<uint8_t> buf;
    for (const auto& p : first) buf.insert(buf.end(), p.begin(), p.end());
    w.add_pages(kPid, kStart, kStart, buf.data(), 16);  // one run of 16 stored pages
    for (int i = 20; i < 24; i++) add(w, kPid, kStart + i * kPageSize, a);  // one page repeated
    add(w, kPid, kStart + 30 * kPageSize, Page(kPageSize, 0));             // zero
    const std::vector<ByteRange> gone = {{kStart + 3 * kPageSize, kStart + 5 * kPageSize},
                                         {kStart + 15 * kPageSize, kStart + 22 * kPageSize},
                                         {kStart + 30 * kPageSize, kStart + 31 * kPageSize},
                                         {kStart + 40 * kPageSize, kStart + 41 * kPageSize}};
    w.forget_pages(kPid, kStart, gone);
    for (const auto& [from, to] : gone)
      for (uint64_t addr = from; addr < to && addr < kStart + 32 * kPageSize; addr += kPageSize)
        if (addr < kStart + 24 * kPageSize || addr == kStart + 30 * kPageSize)
          add(w, kPid, addr, second[(addr - kStart) / kPageSize % 16]);
    EXPECT_EQ(w.stats().pages, 21u - 6u + 10u);  // 6 forgotten, 10 given again (4 new)
    w.commit(sample_checkpoint());
  }
  auto r = ImageReader::open(t / "img");
  auto got = read_back(r, kPid, kStart);
  ASSERT_EQ(got.size(), 25u);
  for (int i = 0; i < 24; i++) {
    const bool again = (i >= 3 && i < 5) || (i >= 15 && i < 22);
    const Page& want = again ? second[i % 16] : i < 16 ? first[i] : a;
    EXPECT_EQ(got[kStart + i * kPageSize], want) << i;
  }
  EXPECT_EQ(got[kStart + 30 * kPageSize], second[30 % 16]);
  EXPECT_FALSE(got.count(kStart + 40 * kPageSize));
  r.verify_all();
}

// Pages of a plain image forgotten once their raw block was written (memory
// read before the stop and written again before it): pages given later take
// their places in pages.bin instead of being appended, unless another
// address shares the page (deduplicated); a page equal to what a place held
// before is not taken for the page that holds it now. Every address reads
// back as given last, the image checks whole, and a byte flipped in a
// block written over is still caught. (Room for the pages that take places
// is reserved first, as memory read before the stop does.)
TEST(PageStore, ForgottenPagesPlacesTakenByPagesGivenLater) {
  TempDir t;
  std::mt19937_64 rng(12);
  std::vector<Page> first, later;
  for (int i = 0; i < 128; i++) first.push_back(random_page(rng));  // two raw blocks
  for (int i = 0; i < 4; i++) later.push_back(random_page(rng));
  const auto at = [](uint64_t i) { return kStart + i * kPageSize; };
  {
    auto w = ImageWriter::create(t / "img", false);
    std::vector<uint8_t> buf;
    for (const auto& p : first) buf.insert(buf.end(), p.begin(), p.end());
    w.add_pages(kPid, kStart, kStart, buf.data(), 128);
    add(w, kPid, at(200), first[10]);  // shares page 10's place
    w.reserve_places(3);               // room for the three that take places
    w.forget_pages(kPid, kStart, {{at(5), at(7)}, {at(10), at(11)}, {at(70), at(71)}});
    add(w, kPid, at(5), later[0]);
    add(w, kPid, at(6), later[1]);
    add(w, kPid, at(70), later[2]);
    add(w, kPid, at(10), later[3]);    // page 10's place is shared: appended
    add(w, kPid, at(300), first[5]);   // what page 5's place held: stored again
    w.commit(checkpoint_of(301));
    EXPECT_EQ(w.stats().unique_pages, 130u);
  }
  EXPECT_EQ(fs::file_size(t / "img/pages.bin"), 130 * kPageSize);  // not 133
  auto r = ImageReader::open(t / "img");
  auto got = read_back(r, kPid, kStart);
  ASSERT_EQ(got.size(), 130u);
  for (int i = 0; i < 128; i++) {
    const Page& want = i == 5    ? later[0]
                       : i == 6  ? later[1]
                       : i == 70 ? later[2]
                       : i == 10 ? later[3]
                                 : first[i];
    EXPECT_EQ(got[at(i)], want) << i;
  }
  EXPECT_EQ(got[at(200)], first[10]);
  EXPECT_EQ(got[at(300)], first[5]);
  r.verify_all();

  test_support::flip_byte_in_block(t / "img/pages.bin", 0);
  auto damaged = ImageReader::open(t / "img");
  std::string msg = error_of([&] { damaged.verify_all(); });
  EXPECT_NE(msg.find("pages.bin: block 0 "), std::string::npos) << msg;
  EXPECT_NE(msg.find("checksum mismatch"), std::string::npos) << msg;
}

// Pages given for one mapping, which was split since (memory read while the
// job ran, then mprotect or munmap of a part): those of the part that
// starts elsewhere now are moved to that part's mapping, whatever run they
// were in (stored, a repeated page, zero), and read back there; what stays
// reads back under the first part; addresses moved that were never given
// stay absent.
TEST(PageStore, PagesMovedToTheMappingSplitOff) {
  TempDir t;
  std::mt19937_64 rng(12);
  std::vector<Page> pages;
  for (int i = 0; i < 16; i++) pages.push_back(random_page(rng));
  Page a = random_page(rng);
  const uint64_t half = kStart + 12 * kPageSize;
  Checkpoint c = sample_checkpoint();
  ASSERT_GE(c.processes[0].mappings[0].end, kStart + 24 * kPageSize);
  Mapping second = c.processes[0].mappings[0];
  c.processes[0].mappings[0].end = half;
  second.start = half;
  c.processes[0].mappings.insert(c.processes[0].mappings.begin() + 1, second);
  {
    auto w = ImageWriter::create(t / "img", false);
    std::vector<uint8_t> buf;
    for (const auto& p : pages) buf.insert(buf.end(), p.begin(), p.end());
    w.add_pages(kPid, kStart, kStart, buf.data(), 16);                       // stored, 0-15
    for (int i = 16; i < 20; i++) add(w, kPid, kStart + i * kPageSize, a);  // repeated
    add(w, kPid, kStart + 22 * kPageSize, Page(kPageSize, 0));             // zero
    w.move_pages(kPid, kStart, half, {{half, kStart + 30 * kPageSize}});
    EXPECT_EQ(w.stats().pages, 21u);
    w.commit(c);
  }
  auto r = ImageReader::open(t / "img");
  auto low = read_back(r, kPid, kStart), high = read_back(r, kPid, half);
  ASSERT_EQ(low.size(), 12u);
  for (int i = 0; i < 12; i++) EXPECT_EQ(low[kStart + i * kPageSize], pages[i]) << i;
  ASSERT_EQ(high.size(), 9u);
  for (int i = 12; i < 16; i++) EXPECT_EQ(high[kStart + i * kPageSize], pages[i]) << i;
  for (int i = 16; i < 20; i++) EXPECT_EQ(high[kStart + i * kPageSize], a) << i;
  EXPECT_EQ(high[kStart + 22 * kPageSize], Page{});  // zero
  EXPECT_FALSE(high.count(kStart + 25 * kPageSize));
  r.verify_all();
}

// A file of the temporary directories whose contents are in the page store
// (GhostFile::data_in_pages): its pages are keyed by kFilePagesPid and the
// file's id, deduplicated with memory, read back by offset; forgotten pages
// leave no table; pages for a file the checkpoint does not say is stored
// are refused at commit, as are pages past its end. A memfd of the same id
// (ghost_files) has keys of its own.
TEST(PageStore, FileContentsKeyedByTheirFile) {
  TempDir t;
  std::mt19937_64 rng(3);
  Page a = random_page(rng), b = random_page(rng);
  Checkpoint c = sample_checkpoint();
  GhostFile file;
  file.id = 2;
  file.kind = GhostFile::Kind::File;
  file.path = "/tmp/job/scratch.bin";
  file.size = 2 * kPageSize + 100;  // three pages, the last one in part
  file.data_in_pages = true;
  c.temp_files = {file};
  GhostFile memfd = file;
  memfd.kind = GhostFile::Kind::Memfd;
  memfd.path = "big";
  memfd.size = kPageSize;
  c.ghost_files = {memfd};
  const uint64_t start = file_pages_start(2), ghost = ghost_pages_start(2);
  EXPECT_NE(start, ghost);
  {
    auto w = ImageWriter::create(t / "img", false);
    add(w, kPid, kStart, a);
    w.add_pages(kFilePagesPid, start, start, a.data(), 1);  // the same as memory: stored once
    w.add_pages(kFilePagesPid, start, start + 2 * kPageSize, b.data(), 1);
    w.add_pages(kFilePagesPid, ghost, ghost, b.data(), 1);
    w.add_pages(kFilePagesPid, file_pages_start(5), file_pages_start(5), b.data(), 1);
    w.forget(kFilePagesPid, file_pages_start(5));  // no such file: forgotten, so no table
    w.commit(c);
  }
  auto r = ImageReader::open(t / "img");
  ASSERT_EQ(r.checkpoint().temp_files.size(), 1u);
  EXPECT_TRUE(r.checkpoint().temp_files[0].data_in_pages);
  auto got = read_back(r, kFilePagesPid, start);
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[start], a);
  EXPECT_EQ(got[start + 2 * kPageSize], b);
  auto in_memfd = read_back(r, kFilePagesPid, ghost);
  ASSERT_EQ(in_memfd.size(), 1u);
  EXPECT_EQ(in_memfd[ghost], b);
  EXPECT_TRUE(r.checkpoint().ghost_files.at(0).data_in_pages);
  EXPECT_EQ(r.stats().unique_pages, 2u);
  EXPECT_EQ(r.stats().file_pages, 3u);
  r.verify_all();

  // A deleted file another name still leads to keeps no contents.
  {
    TempDir u;
    Checkpoint bad = c;
    bad.ghost_files[0].kind = GhostFile::Kind::File;
    bad.ghost_files[0].nlink = 1;
    auto w = ImageWriter::create(u / "img", false);
    w.add_pages(kFilePagesPid, ghost, ghost, a.data(), 1);
    EXPECT_NE(error_of([&] { w.commit(bad); }).find("image: "), std::string::npos);
  }

  // Pages past the file's last page, or for a file not stored this way.
  for (bool in_pages : {true, false}) {
    TempDir u;
    Checkpoint bad = c;
    bad.temp_files[0].data_in_pages = in_pages;
    auto w = ImageWriter::create(u / "img", false);
    w.add_pages(kFilePagesPid, start, start + 3 * kPageSize, a.data(), 1);
    EXPECT_NE(error_of([&] { w.commit(bad); }).find("image: "), std::string::npos) << in_pages;
  }
}

TEST(PageStore, ZeroPagesNotStored) {
  TempDir t;
  std::vector<uint8_t> zeros(100 * kPageSize, 0);
  {
    auto w = ImageWriter::create(t / "img", false);
    w.add_pages(kPid, kStart, kStart, zeros.data(), 100);
    w.commit(sample_checkpoint());
    EXPECT_EQ(w.stats().zero_pages, 100u);
    EXPECT_EQ(w.stats().unique_pages, 0u);
  }
  EXPECT_EQ(fs::file_size(t / "img/pages.bin"), 0u);
  auto r = ImageReader::open(t / "img");
  int runs = 0;
  r.for_each_run(kPid, kStart, [&](const PageRun& run) {
    ++runs;
    EXPECT_TRUE(run.zero());
    EXPECT_EQ(run.addr, kStart);
    EXPECT_EQ(run.npages, 100u);
  });
  EXPECT_EQ(runs, 1);
  EXPECT_EQ(r.checkpoint().processes[0].mappings[0].pages_dumped, 100u);
  r.verify_all();
}

TEST(PageStore, CompressibleDataShrinks) {
  TempDir t;
  auto w = ImageWriter::create(t / "img", false);
  for (uint64_t i = 0; i < 200; ++i) add(w, kPid, kStart + i * kPageSize, text_page(i));
  w.commit(sample_checkpoint());
  ImageStats s = w.stats();
  EXPECT_EQ(s.unique_pages, 200u);
  EXPECT_EQ(s.blocks, 4u);  // 64 + 64 + 64 + 8
  EXPECT_EQ(s.raw_blocks, 0u);
  EXPECT_LT(s.stored_bytes, s.raw_bytes / 4);
  EXPECT_EQ(fs::file_size(t / "img/pages.bin"), s.stored_bytes);
  auto r = ImageReader::open(t / "img");
  auto got = read_back(r, kPid, kStart);
  ASSERT_EQ(got.size(), 200u);
  for (uint64_t i = 0; i < 200; ++i) ASSERT_EQ(got[kStart + i * kPageSize], text_page(i));
}

// Consecutive raw blocks are joined into blocks of up to 1024 pages, and
// pages.bin holds nothing but their bytes: 2500 random pages take 3 blocks
// (1024 + 1024 + 452), 3 index entries, and not one byte more than the pages.
TEST(PageStore, IncompressibleDataStoredRaw) {
  TempDir t;
  std::mt19937_64 rng(2);
  constexpr uint64_t kPages = 2500;
  std::vector<Page> pages;
  Checkpoint c = checkpoint_of(kPages);
  auto w = ImageWriter::create(t / "img", false);
  for (uint64_t i = 0; i < kPages; ++i) {
    pages.push_back(random_page(rng));
    add(w, kPid, kStart + i * kPageSize, pages.back());
  }
  w.commit(c);
  ImageStats s = w.stats();
  EXPECT_EQ(s.blocks, 3u);
  EXPECT_EQ(s.raw_blocks, 3u);
  EXPECT_EQ(s.stored_bytes, kPages * kPageSize);
  EXPECT_EQ(fs::file_size(t / "img/pages.bin"), kPages * kPageSize);
  EXPECT_EQ(fs::file_size(t / "img/pages.idx"), 32 + 3 * 24);
  auto r = ImageReader::open(t / "img");
  EXPECT_EQ(r.stats().raw_blocks, 3u);
  auto got = read_back(r, kPid, kStart);
  ASSERT_EQ(got.size(), kPages);
  for (uint64_t i = 0; i < kPages; ++i) ASSERT_EQ(got[kStart + i * kPageSize], pages[i]) << i;
  r.verify_all();
}

// Compression::kAuto (snap dump's default): blocks of random data are
// stored raw without trying; of compressible ones at least an eighth are
// compressed (all, while the disk falls behind), the rest stored raw while
// the disk keeps up. Either way every page reads back exactly.
TEST(PageStore, AutoCompressionStoresWhatItDecidesExactly) {
  TempDir t;
  std::mt19937_64 rng(12);
  constexpr uint64_t kText = 64 * 400, kRandom = 64 * 20;
  std::vector<Page> randoms;
  Checkpoint c = checkpoint_of(kText + kRandom);
  {
    auto w = ImageWriter::create(t / "img", false);
    w.set_compression(Compression::kAuto);
    std::vector<uint8_t> batch;
    for (uint64_t i = 0; i < kText; i += 64) {
      batch.clear();
      for (uint64_t k = i; k < i + 64; ++k) {
        Page p = text_page(k);
        batch.insert(batch.end(), p.begin(), p.end());
      }
      w.add_pages(kPid, kStart, kStart + i * kPageSize, batch.data(), 64);
    }
    for (uint64_t i = 0; i < kRandom; ++i) {
      randoms.push_back(random_page(rng));
      add(w, kPid, kStart + (kText + i) * kPageSize, randoms.back());
    }
    w.commit(c);
    ImageStats s = w.stats();
    // Raw blocks next to each other are joined (up to 16 of 64 pages each).
    EXPECT_GE(s.raw_blocks, 1u) << "random blocks are stored raw";
    EXPECT_GE(s.blocks - s.raw_blocks, kText / 64 / 8 - 8)
        << "at least an eighth of the compressible blocks are compressed";
    EXPECT_GE(s.stored_bytes, kRandom * kPageSize);
  }
  auto r = ImageReader::open(t / "img");
  r.verify_all();
  auto got = read_back(r, kPid, kStart);
  ASSERT_EQ(got.size(), kText + kRandom);
  for (uint64_t i = 0; i < kText; ++i) ASSERT_EQ(got[kStart + i * kPageSize], text_page(i)) << i;
  for (uint64_t i = 0; i < kRandom; ++i)
    ASSERT_EQ(got[kStart + (kText + i) * kPageSize], randoms[i]) << i;
}

// Compression::kAuto on a job of mostly incompressible data (a GiB of
// random numbers, its libraries' and stacks' pages after it): the disk
// keeps up with raw blocks, which once lowered the compressed share to an
// eighth, so the few compressible blocks at the end went raw and the image
// was larger than it need be. They are all compressed.
TEST(PageStore, AutoCompressionCompressesTheFewCompressibleBlocksOfRandomData) {
  TempDir t;
  std::mt19937_64 rng(5);
  constexpr uint64_t kRandom = 64 * 640, kFew = 64 * 8;  // 40 MiB, then 8 blocks
  // Random numbers as text: lz4 shrinks them a little, slowly (not the
  // cheap compression that is always done).
  auto numbers_page = [&] {
    Page p(kPageSize);
    size_t at = 0;
    while (at < p.size()) {
      std::string n = std::to_string(rng() % 10000) + " ";
      for (char ch : n)
        if (at < p.size()) p[at++] = static_cast<uint8_t>(ch);
    }
    return p;
  };
  Checkpoint c = checkpoint_of(kRandom + kFew);
  std::vector<Page> few;
  {
    auto w = ImageWriter::create(t / "img", false);
    w.set_compression(Compression::kAuto);
    std::vector<uint8_t> batch;
    for (uint64_t i = 0; i < kRandom + kFew; i += 64) {
      batch.clear();
      for (uint64_t k = i; k < i + 64; ++k) {
        Page p = k < kRandom ? random_page(rng) : numbers_page();
        if (k >= kRandom) few.push_back(p);
        batch.insert(batch.end(), p.begin(), p.end());
      }
      w.add_pages(kPid, kStart, kStart + i * kPageSize, batch.data(), 64);
    }
    w.commit(c);
    ImageStats s = w.stats();
    EXPECT_EQ(s.blocks - s.raw_blocks, kFew / 64) << "every compressible block compressed";
    EXPECT_LT(s.stored_bytes, (kRandom + kFew) * kPageSize);
  }
  auto r = ImageReader::open(t / "img");
  r.verify_all();
  auto got = read_back(r, kPid, kStart);
  ASSERT_EQ(got.size(), kRandom + kFew);
  for (uint64_t i = 0; i < kFew; ++i)
    ASSERT_EQ(got[kStart + (kRandom + i) * kPageSize], few[i]) << i;
}

// A mix of everything over many blocks, fed from two threads, with gaps.
TEST(PageStore, ManyBlocksReadBackExactly) {
  TempDir t;
  std::mt19937_64 rng(3);
  std::map<pid_t, std::map<uint64_t, Page>> want;
  std::vector<Page> pool;  // pages that will reappear
  for (int i = 0; i < 20; ++i) pool.push_back(random_page(rng));
  for (pid_t pid : {kPid, kPid + 1}) {
    for (uint64_t i = 0; i < 2000; ++i) {
      if (i % 97 == 13) continue;  // not dumped
      uint64_t addr = kStart + i * kPageSize;
      switch (rng() % 4) {
        case 0: want[pid][addr] = Page{}; break;
        case 1: want[pid][addr] = pool[rng() % pool.size()]; break;
        case 2: want[pid][addr] = random_page(rng); break;
        default: want[pid][addr] = text_page(rng()); break;
      }
    }
  }
  {
    auto w = ImageWriter::create(t / "img", false);
    auto feed = [&](pid_t pid) {
      // In batches of consecutive pages, as a dumper would.
      std::vector<uint8_t> batch;
      uint64_t batch_addr = 0;
      auto flush = [&] {
        w.add_pages(pid, kStart, batch_addr, batch.data(), batch.size() / kPageSize);
        batch.clear();
      };
      for (const auto& [addr, p] : want[pid]) {
        if (!batch.empty() && batch_addr + batch.size() != addr) flush();
        if (batch.empty()) batch_addr = addr;
        if (p.empty()) batch.insert(batch.end(), kPageSize, 0);
        else batch.insert(batch.end(), p.begin(), p.end());
        if (batch.size() == 37 * kPageSize) flush();
      }
      if (!batch.empty()) flush();
    };
    std::thread other(feed, kPid + 1);
    feed(kPid);
    other.join();
    w.commit(sample_checkpoint());
    EXPECT_GT(w.stats().blocks, 20u);
    EXPECT_GT(w.stats().duplicate_pages, 0u);
  }
  auto r = ImageReader::open(t / "img");
  r.verify_all();
  for (pid_t pid : {kPid, kPid + 1}) {
    auto got = read_back(r, pid, kStart);
    ASSERT_EQ(got.size(), want[pid].size());
    for (const auto& [addr, p] : want[pid]) ASSERT_EQ(got[addr], p) << "pid " << pid << " " << addr;
  }
  size_t max_run = 0;
  r.for_each_run(kPid, kStart, [&](const PageRun& run) { max_run = std::max(max_run, run.npages); });
  EXPECT_GT(max_run, 1u);
}

// What a dump with --jobs does: several threads add pages at once, the
// same pages among them (dedup across threads), more blocks than the
// writer has buffers for (so threads wait for room, and each compresses the
// blocks it completes). With one job the writer has the fewest buffers.
void many_threads_add_at_once(unsigned jobs) {
  TempDir t;
  constexpr int kThreads = 4;
  constexpr uint64_t kPages = 3000;  // per thread, in the one mapping
  std::mt19937_64 rng(11);
  std::vector<Page> pool;
  for (int i = 0; i < 30; ++i) pool.push_back(random_page(rng));
  std::map<uint64_t, Page> want;
  for (uint64_t i = 0; i < kThreads * kPages; ++i) {
    uint64_t addr = kStart + i * kPageSize;
    switch (rng() % 5) {
      case 0: want[addr] = Page{}; break;
      case 1: want[addr] = pool[rng() % pool.size()]; break;
      case 2: want[addr] = random_page(rng); break;
      default: want[addr] = text_page(rng() % 5000); break;  // some equal by chance
    }
  }
  Checkpoint c = checkpoint_of(kThreads * kPages);
  {
    auto w = ImageWriter::create(t / "img", false);
    w.set_jobs(jobs);
    // Thread k takes every kThreads-th stretch of 50 pages.
    auto feed = [&](int k) {
      std::vector<uint8_t> batch;
      for (uint64_t first = k * 50; first < kThreads * kPages; first += kThreads * 50) {
        batch.clear();
        for (uint64_t i = first; i < first + 50; ++i) {
          const Page& p = want[kStart + i * kPageSize];
          if (p.empty()) batch.insert(batch.end(), kPageSize, 0);
          else batch.insert(batch.end(), p.begin(), p.end());
        }
        w.add_pages(kPid, kStart, kStart + first * kPageSize, batch.data(), 50);
      }
    };
    std::vector<std::thread> threads;
    for (int k = 0; k < kThreads; ++k) threads.emplace_back(feed, k);
    for (auto& th : threads) th.join();
    w.commit(c);
    EXPECT_GT(w.stats().blocks, 50u);
    EXPECT_GT(w.stats().duplicate_pages, 0u);
    EXPECT_GT(w.stats().zero_pages, 0u);
  }
  auto r = ImageReader::open(t / "img");
  r.verify_all();
  auto got = read_back(r, kPid, kStart);
  ASSERT_EQ(got.size(), want.size());
  for (const auto& [addr, p] : want) ASSERT_EQ(got[addr], p) << addr;
  // Stretches from different threads that continue each other are one run
  // in pagemap.bin again.
  size_t runs = 0;
  r.for_each_run(kPid, kStart, [&](const PageRun&) { runs++; });
  EXPECT_LT(runs, want.size());
}

TEST(PageStore, ManyThreadsAddAtOnce) { many_threads_add_at_once(4); }
TEST(PageStore, ManyThreadsAddAtOnceFewBuffers) { many_threads_add_at_once(1); }

TEST(PageStore, FlippedByteNamesTheBlock) {
  TempDir t;
  {
    auto w = ImageWriter::create(t / "img", false);
    for (uint64_t i = 0; i < 200; ++i) add(w, kPid, kStart + i * kPageSize, text_page(i));
    w.commit(sample_checkpoint());
  }
  test_support::flip_byte_in_block(t / "img/pages.bin", 2);

  auto r = ImageReader::open(t / "img");  // sizes are intact
  std::string msg = error_of([&] { r.verify_all(); });
  EXPECT_NE(msg.find("pages.bin: block 2 "), std::string::npos) << msg;
  EXPECT_NE(msg.find("checksum mismatch"), std::string::npos) << msg;
  // Restore reading the damaged block fails as well, and not on another one.
  msg = error_of([&] { read_back(r, kPid, kStart); });
  EXPECT_NE(msg.find("block 2 "), std::string::npos) << msg;
}

TEST(PageStore, DamagedIndexRefusedOnOpen) {
  TempDir t;
  {
    auto w = ImageWriter::create(t / "img", false);
    add(w, kPid, kStart, text_page(1));
    w.commit(sample_checkpoint());
  }
  std::fstream f(t / "img/pages.idx", std::ios::in | std::ios::out | std::ios::binary);
  f.seekp(40);
  f.write("X", 1);
  f.close();
  std::string msg = error_of([&] { ImageReader::open(t / "img"); });
  EXPECT_NE(msg.find("pages.idx: checksum"), std::string::npos) << msg;
}

// ---- version 6 and 7 layout ----

// A plain image's pages.idx holds its block table only (24-byte entries,
// version 7); the pagemap is in pagemap.bin.lz4, the checkpoint in
// checkpoint.json.lz4, listed and checksummed by a small manifest.json, and
// comes back whole.
TEST(Layout, PlainImageIndexWithoutHashesAndCheckpointFile) {
  TempDir t;
  Checkpoint c = sample_checkpoint();
  {
    auto w = ImageWriter::create(t / "img", false);
    for (uint64_t i = 0; i < 200; ++i) add(w, kPid, kStart + i * kPageSize, text_page(i));
    w.commit(c);
  }
  const uint64_t nblocks = (200 + 63) / 64;
  EXPECT_EQ(fs::file_size(t / "img/pages.idx"), 32 + nblocks * 24);
  std::ifstream idx(t / "img/pages.idx", std::ios::binary);
  char magic[8];
  idx.read(magic, 8);
  EXPECT_EQ(std::string(magic, 8), "SNAPIDX4");
  EXPECT_TRUE(fs::exists(t / "img/pagemap.bin.lz4"));
  EXPECT_FALSE(fs::exists(t / "img/pagemap.bin"));
  std::ifstream mf(t / "img/manifest.json");
  std::string manifest((std::istreambuf_iterator<char>(mf)), {});
  EXPECT_EQ(manifest.find("\"checkpoint\""), std::string::npos) << manifest;
  EXPECT_NE(manifest.find("checkpoint.json.lz4"), std::string::npos) << manifest;

  auto r = ImageReader::open(t / "img");
  EXPECT_EQ(r.stats().unique_pages, 200u);
  auto got = read_back(r, kPid, kStart);
  ASSERT_EQ(got.size(), 200u);
  for (uint64_t i = 0; i < 200; ++i) EXPECT_EQ(got[kStart + i * kPageSize], text_page(i));
  r.verify_all();
  // The checkpoint as it was committed (with the pages_dumped the writer
  // fills in), and `snap info --manifest`'s document shows it inline.
  Manifest m = read_manifest(t / "img");
  c.processes[0].mappings[0].pages_dumped = 200;
  EXPECT_EQ(to_json(m.checkpoint), to_json(c));
  EXPECT_NE(to_json(m).find("\"checkpoint\":{\"snap_version\""), std::string::npos);
}

// An image of format version 6 (a header before each block, 64 pages a
// block, 16-byte index entries, pagemap.bin uncompressed) reads back
// exactly, raw, compressed, zero and repeated pages alike; a damaged block
// of it is named.
TEST(Layout, Version6PageStoreStillRead) {
  TempDir t;
  std::mt19937_64 rng(6);
  constexpr uint64_t kPages = 700;
  std::vector<Page> want;
  Checkpoint c = checkpoint_of(kPages);
  {
    auto w = ImageWriter::create(t / "img", false);
    for (uint64_t i = 0; i < kPages; ++i) {
      Page p = i < 200 || i >= 500 ? random_page(rng)
               : i < 400           ? text_page(i)
               : i < 450           ? Page(kPageSize, 0)
                                   : text_page(1000);
      add(w, kPid, kStart + i * kPageSize, p);
      want.push_back(i >= 400 && i < 450 ? Page{} : p);  // zero pages read back empty
    }
    w.commit(c);
  }
  test_support::image_to_v6(t / "img");
  EXPECT_TRUE(fs::exists(t / "img/pagemap.bin"));
  {
    auto r = ImageReader::open(t / "img");
    EXPECT_EQ(r.checkpoint().format_version, 6u);
    // 601 unique pages in blocks of 64: 10 blocks, each with its header.
    EXPECT_EQ(r.stats().blocks, 10u);
    auto got = read_back(r, kPid, kStart);
    ASSERT_EQ(got.size(), kPages);
    for (uint64_t i = 0; i < kPages; ++i) ASSERT_EQ(got[kStart + i * kPageSize], want[i]) << i;
    r.verify_all();
  }
  // Block 9's stored bytes begin after 9 blocks and their headers (the ones
  // before it hold 64 pages each; raw or not, a header is 32 bytes).
  std::ifstream idx(t / "img/pages.idx", std::ios::binary);
  uint64_t off = 0;
  idx.seekg(32 + 9 * 16);
  idx.read(reinterpret_cast<char*>(&off), 8);
  {
    std::fstream f(t / "img/pages.bin", std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(static_cast<std::streamoff>(off + 32 + 100));
    f.put('\x5a');
  }
  auto r = ImageReader::open(t / "img");
  std::string msg = error_of([&] { read_back(r, kPid, kStart); });
  EXPECT_NE(msg.find("pages.bin: block 9 "), std::string::npos) << msg;
  EXPECT_NE(msg.find("checksum mismatch"), std::string::npos) << msg;
}

TEST(Layout, DamagedCheckpointFileRefusedOnOpen) {
  TempDir t;
  {
    auto w = ImageWriter::create(t / "img", false);
    add(w, kPid, kStart, text_page(1));
    w.commit(sample_checkpoint());
  }
  const fs::path cp = t / "img/checkpoint.json.lz4";
  {
    std::fstream f(cp, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(static_cast<std::streamoff>(fs::file_size(cp) / 2));
    f.write("X", 1);
  }
  std::string msg = error_of([&] { ImageReader::open(t / "img"); });
  EXPECT_NE(msg.find("checkpoint.json.lz4: checksum"), std::string::npos) << msg;
  fs::resize_file(cp, fs::file_size(cp) - 10);
  msg = error_of([&] { ImageReader::open(t / "img"); });
  EXPECT_NE(msg.find("checkpoint.json.lz4: size is"), std::string::npos) << msg;
}

// Images of version 5 and older hold the checkpoint in manifest.json (and
// page hashes in a plain image's pages.idx): still read.
TEST(Layout, Version5ManifestStillRead) {
  TempDir t;
  Checkpoint c = sample_checkpoint();
  {
    auto w = ImageWriter::create(t / "img", false);
    add(w, kPid, kStart, text_page(7));
    w.commit(c);
  }
  Manifest m = read_manifest(t / "img");
  m.files.erase("checkpoint.json.lz4");
  m.checkpoint.format_version = 5;
  fs::remove(t / "img/checkpoint.json.lz4");
  std::ofstream(t / "img/manifest.json", std::ios::trunc) << to_json(m);
  auto r = ImageReader::open(t / "img");
  EXPECT_EQ(r.checkpoint().format_version, 5u);
  EXPECT_EQ(r.checkpoint().processes.size(), c.processes.size());
  EXPECT_EQ(read_back(r, kPid, kStart)[kStart], text_page(7));
  // Without the checkpoint in it, a version 5 manifest is damaged.
  std::ofstream(t / "img/manifest.json", std::ios::trunc) << manifest_file_json(m);
  std::string msg = error_of([&] { ImageReader::open(t / "img"); });
  EXPECT_NE(msg.find("manifest.json: checkpoint: missing"), std::string::npos) << msg;
}

// ---- commit rules ----

// pages.bin's writer: appends of any size come out in order, the file has
// exactly the bytes appended (the last write is padded for O_DIRECT, then
// the file cut back), whether or not the file system takes O_DIRECT.
TEST(StagedFile, AppendsComeOutExactly) {
  TempDir t;
  // The test's directory (a disk: O_DIRECT) and /dev/shm (tmpfs: buffered
  // or, since Linux 6.6, O_DIRECT taken but served from memory).
  for (const std::string& dir : {t / "", std::string("/dev/shm/")}) {
    if (dir == "/dev/shm/" && ::access(dir.c_str(), W_OK) != 0) continue;
    std::string path = dir + "staged-" + std::to_string(::getpid());
    std::mt19937_64 rng(5);
    std::vector<uint8_t> want;
    {
      snap::ScopedFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
      ASSERT_TRUE(fd);
      StagedFile f(fd.get(), path);
      // ~13 MiB in pieces from 1 byte to 300 KiB: several 4 MiB writes and
      // a tail that is not a multiple of 4096.
      while (want.size() < (13u << 20)) {
        size_t n = rng() % 3 == 0 ? rng() % 64 + 1 : rng() % (300 << 10) + 1;
        std::vector<uint8_t> piece(n);
        for (auto& b : piece) b = static_cast<uint8_t>(rng());
        f.append(piece.data(), n);
        want.insert(want.end(), piece.begin(), piece.end());
      }
      f.finish();
      EXPECT_EQ(f.size(), want.size());
    }
    std::ifstream in(path, std::ios::binary);
    std::vector<uint8_t> got((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    ::unlink(path.c_str());
    ASSERT_EQ(got.size(), want.size()) << dir;
    EXPECT_TRUE(got == want) << dir;
  }
}

TEST(StagedFile, NothingAppendedIsAnEmptyFile) {
  TempDir t;
  std::string path = t / "empty";
  snap::ScopedFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
  ASSERT_TRUE(fd);
  {
    StagedFile f(fd.get(), path);
    f.finish();
  }
  EXPECT_EQ(fs::file_size(path), 0u);
}

TEST(Commit, AbandonedWriterLeavesNothing) {
  TempDir t;
  {
    auto w = ImageWriter::create(t / "img", false);
    EXPECT_TRUE(fs::is_directory(w.temp_dir()));
    EXPECT_EQ(fs::status(w.temp_dir()).permissions(), fs::perms::owner_all);
    for (uint64_t i = 0; i < 300; ++i) add(w, kPid, kStart + i * kPageSize, text_page(i));
  }
  EXPECT_TRUE(t.entries().empty());
}

TEST(Commit, AbandonedWriterKeepsPreviousImage) {
  TempDir t;
  std::mt19937_64 rng(4);
  Page old_page = random_page(rng);
  {
    auto w = ImageWriter::create(t / "img", false);
    add(w, kPid, kStart, old_page);
    w.commit(sample_checkpoint());
  }
  {
    auto w = ImageWriter::create(t / "img", true);
    add(w, kPid, kStart, random_page(rng));
  }
  EXPECT_EQ(t.entries(), std::vector<std::string>{"img"});
  auto r = ImageReader::open(t / "img");
  r.verify_all();
  EXPECT_EQ(read_back(r, kPid, kStart)[kStart], old_page);
}

TEST(Commit, ForceReplacesPreviousImage) {
  TempDir t;
  std::mt19937_64 rng(5);
  Page new_page = random_page(rng);
  for (const Page& p : {random_page(rng), new_page}) {
    auto w = ImageWriter::create(t / "img", true);
    add(w, kPid, kStart, p);
    w.commit(sample_checkpoint());
  }
  EXPECT_EQ(t.entries(), std::vector<std::string>{"img"});
  auto r = ImageReader::open(t / "img");
  EXPECT_EQ(read_back(r, kPid, kStart)[kStart], new_page);
}

TEST(Commit, NonEmptyDirectoryRefused) {
  TempDir t;
  fs::create_directory(t / "data");
  std::ofstream(t / "data/results.csv") << "1,2,3\n";
  std::string msg = error_of([&] { ImageWriter::create(t / "data", false); });
  EXPECT_NE(msg.find("exists and is not empty"), std::string::npos) << msg;
  // Not an image: even --force must not delete it.
  msg = error_of([&] { ImageWriter::create(t / "data", true); });
  EXPECT_NE(msg.find("does not hold a snap image"), std::string::npos) << msg;
  EXPECT_TRUE(fs::exists(t / "data/results.csv"));
  // A previous image is refused without force too.
  {
    auto w = ImageWriter::create(t / "img", false);
    w.commit(sample_checkpoint());
  }
  msg = error_of([&] { ImageWriter::create(t / "img", false); });
  EXPECT_NE(msg.find("exists and is not empty"), std::string::npos) << msg;
  // An empty directory is fine.
  fs::create_directory(t / "empty");
  auto w = ImageWriter::create(t / "empty", false);
  w.commit(sample_checkpoint());
  EXPECT_TRUE(fs::exists(t / "empty/manifest.json"));
}

TEST(Commit, PagesOfUnknownMappingRefused) {
  TempDir t;
  {
    auto w = ImageWriter::create(t / "img", false);
    add(w, 999, kStart, text_page(1));
    std::string msg = error_of([&] { w.commit(sample_checkpoint()); });
    EXPECT_NE(msg.find("pid 999"), std::string::npos) << msg;
  }
  EXPECT_TRUE(t.entries().empty());
}

TEST(Commit, WriteErrorNamesFileAndCleansUp) {
  TempDir t;
  // A file size limit makes write() fail with EFBIG, like a full disk would.
  pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    signal(SIGXFSZ, SIG_IGN);
    struct rlimit rl = {256 << 10, 256 << 10};
    setrlimit(RLIMIT_FSIZE, &rl);
    int rc = 1;
    try {
      auto w = ImageWriter::create(t / "img", false);
      std::mt19937_64 rng(6);
      for (uint64_t i = 0; i < 200; ++i) add(w, kPid, kStart + i * kPageSize, random_page(rng));
      w.commit(sample_checkpoint());
    } catch (const SysError& e) {
      rc = (e.err() == EFBIG && std::string(e.what()).find("pages.bin") != std::string::npos)
               ? 0 : 2;
    } catch (...) {
      rc = 3;
    }
    _exit(rc);
  }
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
  EXPECT_TRUE(t.entries().empty());
}

TEST(Reader, MissingImageIsAClearError) {
  TempDir t;
  fs::create_directory(t / "img");
  std::string msg = error_of([&] { ImageReader::open(t / "img"); });
  EXPECT_NE(msg.find("is not a snap image"), std::string::npos) << msg;
}

}  // namespace
}  // namespace snap::image
