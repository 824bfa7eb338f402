// The parts of dumping a whole tree that run without one: sock_diag
// parsing, peeking socket queues, open file descriptions, shared memory.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/sock_diag.h>
#include <linux/unix_diag.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <dirent.h>

#include <cstring>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "base/error.h"
#include "base/scoped_fd.h"
#include "tracer/memory.h"
#include "tracer/sharing.h"
#include "tracer/sock_diag.h"
#include "tracer/sockets.h"

namespace snap {
namespace {

using Bytes = std::vector<uint8_t>;

// ---- sock_diag replies ----

void put(Bytes& b, const void* p, size_t n) {
  auto* c = static_cast<const uint8_t*>(p);
  b.insert(b.end(), c, c + n);
  while (b.size() % 4) b.push_back(0);
}

void attr(Bytes& b, uint16_t type, const void* data, size_t n) {
  rtattr ra{static_cast<unsigned short>(RTA_LENGTH(n)), type};
  Bytes a;
  put(a, &ra, sizeof ra);
  a.resize(RTA_LENGTH(0));
  put(a, data, n);
  b.insert(b.end(), a.begin(), a.end());
}

Bytes message(uint16_t type, const Bytes& body) {
  nlmsghdr h{};
  h.nlmsg_len = static_cast<uint32_t>(NLMSG_HDRLEN + body.size());
  h.nlmsg_type = type;
  Bytes m;
  put(m, &h, sizeof h);
  m.resize(NLMSG_HDRLEN);
  m.insert(m.end(), body.begin(), body.end());
  while (m.size() % 4) m.push_back(0);
  return m;
}

Bytes unix_socket_msg(uint32_t ino, uint8_t type, uint8_t state, const std::string& name,
                      uint32_t peer, uint32_t rq) {
  unix_diag_msg d{};
  d.udiag_family = AF_UNIX;
  d.udiag_type = type;
  d.udiag_state = state;
  d.udiag_ino = ino;
  Bytes body;
  put(body, &d, sizeof d);
  if (!name.empty()) attr(body, UNIX_DIAG_NAME, name.data(), name.size());
  if (peer) attr(body, UNIX_DIAG_PEER, &peer, sizeof peer);
  unix_diag_rqlen q{rq, 99};
  attr(body, UNIX_DIAG_RQLEN, &q, sizeof q);
  return message(SOCK_DIAG_BY_FAMILY, body);
}

TEST(SockDiag, ParsesNamesPeersAndQueueLengths) {
  Bytes buf = unix_socket_msg(11, SOCK_STREAM, 1, std::string("\0abs\0x", 6), 12, 17);
  Bytes b2 = unix_socket_msg(13, SOCK_DGRAM, 7, std::string("/run/app.sock\0", 14), 0, 5);
  Bytes b3 = unix_socket_msg(14, SOCK_SEQPACKET, 10, "", 0, 0);
  buf.insert(buf.end(), b2.begin(), b2.end());
  buf.insert(buf.end(), b3.begin(), b3.end());
  std::vector<UnixDiag> out;
  EXPECT_FALSE(parse_unix_diag(buf.data(), buf.size(), out));
  ASSERT_EQ(out.size(), 3u);
  EXPECT_EQ(out[0].inode, 11u);
  EXPECT_EQ(out[0].type, SOCK_STREAM);
  EXPECT_EQ(out[0].state, 1);
  EXPECT_EQ(out[0].name, std::string("@abs\0x", 6));
  EXPECT_EQ(out[0].peer_inode, 12u);
  EXPECT_TRUE(out[0].has_rqlen);
  EXPECT_EQ(out[0].rqueue, 17u);
  EXPECT_EQ(out[1].name, "/run/app.sock");
  EXPECT_EQ(out[1].peer_inode, 0u);
  EXPECT_EQ(out[1].rqueue, 5u);
  EXPECT_EQ(out[2].state, 10);
  EXPECT_EQ(out[2].name, "");

  Bytes done = message(NLMSG_DONE, Bytes(4, 0));
  EXPECT_TRUE(parse_unix_diag(done.data(), done.size(), out));
  EXPECT_EQ(out.size(), 3u);
}

TEST(SockDiag, ErrorsAndDamageAreRefused) {
  int32_t err = -EACCES;
  Bytes body;
  put(body, &err, sizeof err);
  Bytes e = message(NLMSG_ERROR, body);
  std::vector<UnixDiag> out;
  try {
    parse_unix_diag(e.data(), e.size(), out);
    FAIL() << "NLMSG_ERROR accepted";
  } catch (const SysError& x) {
    EXPECT_EQ(x.err(), EACCES);
  }
  Bytes m = unix_socket_msg(1, SOCK_STREAM, 1, "", 0, 0);
  m[0] = 0xff;  // nlmsg_len beyond the buffer
  EXPECT_THROW(parse_unix_diag(m.data(), m.size(), out), Error);
  Bytes shortbody = message(SOCK_DIAG_BY_FAMILY, Bytes(4, 0));
  EXPECT_THROW(parse_unix_diag(shortbody.data(), shortbody.size(), out), Error);
}

// An inet_diag answer: sockets by inode with their state and shutdown,
// several per buffer, NLMSG_DONE at the end; errors refused.
TEST(SockDiag, ParsesInetSocketsByInode) {
  auto inet_msg = [](uint32_t ino, uint8_t state, int shut) {
    inet_diag_msg d{};
    d.idiag_family = AF_INET;
    d.idiag_state = state;
    d.idiag_inode = ino;
    Bytes body;
    put(body, &d, sizeof d);
    if (shut >= 0) {
      uint8_t s = static_cast<uint8_t>(shut);
      attr(body, INET_DIAG_SHUTDOWN, &s, 1);
    }
    return message(SOCK_DIAG_BY_FAMILY, body);
  };
  Bytes buf = inet_msg(21, 1, 2);
  Bytes b2 = inet_msg(22, 10, -1);
  buf.insert(buf.end(), b2.begin(), b2.end());
  std::map<uint64_t, InetDiag> out;
  EXPECT_FALSE(parse_inet_diag(buf.data(), buf.size(), out));
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[21].state, 1);
  EXPECT_EQ(out[21].shutdown, 2);
  EXPECT_EQ(out[22].state, 10);
  EXPECT_EQ(out[22].shutdown, 0);
  Bytes done = message(NLMSG_DONE, Bytes(4, 0));
  EXPECT_TRUE(parse_inet_diag(done.data(), done.size(), out));
  int32_t err = -ENOENT;
  Bytes body;
  put(body, &err, sizeof err);
  Bytes e = message(NLMSG_ERROR, body);
  EXPECT_THROW(parse_inet_diag(e.data(), e.size(), out), SysError);
  Bytes shortbody = message(SOCK_DIAG_BY_FAMILY, Bytes(4, 0));
  EXPECT_THROW(parse_inet_diag(shortbody.data(), shortbody.size(), out), Error);
}

uint64_t inode_of(int fd) {
  struct stat st {};
  EXPECT_EQ(::fstat(fd, &st), 0);
  return st.st_ino;
}

// Live TCP sockets on loopback, each asked for by its addresses: a
// listener, and both ends of a connection one of which shut down writing
// (sk_shutdown SEND_SHUTDOWN, 2; the other end, its FIN received,
// RCV_SHUTDOWN, 1).
TEST(SockDiag, FindsTcpSocketsByTheirAddresses) {
  ScopedFd listener(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  ASSERT_TRUE(listener);
  sockaddr_in at{};
  at.sin_family = AF_INET;
  at.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(listener.get(), reinterpret_cast<sockaddr*>(&at), sizeof at), 0);
  ASSERT_EQ(::listen(listener.get(), 4), 0);
  socklen_t len = sizeof at;
  ASSERT_EQ(::getsockname(listener.get(), reinterpret_cast<sockaddr*>(&at), &len), 0);
  ScopedFd client(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  ASSERT_TRUE(client);
  ASSERT_EQ(::connect(client.get(), reinterpret_cast<sockaddr*>(&at), sizeof at), 0);
  ScopedFd server(::accept4(listener.get(), nullptr, nullptr, SOCK_CLOEXEC));
  ASSERT_TRUE(server);
  ASSERT_EQ(::shutdown(client.get(), SHUT_WR), 0);
  char byte;  // the FIN received: the server reads the end of the stream
  for (int i = 0; i < 1000 && ::recv(server.get(), &byte, 1, MSG_PEEK | MSG_DONTWAIT) != 0; i++)
    ::usleep(1000);
  auto names = [](int fd) {
    std::pair<sockaddr_storage, sockaddr_storage> n{};
    socklen_t l = sizeof n.first;
    EXPECT_EQ(::getsockname(fd, reinterpret_cast<sockaddr*>(&n.first), &l), 0);
    l = sizeof n.second;
    EXPECT_EQ(::getpeername(fd, reinterpret_cast<sockaddr*>(&n.second), &l), 0);
    return n;
  };
  InetDiags diags;
  sockaddr_storage listening{};
  std::memcpy(&listening, &at, sizeof at);
  const InetDiag* l = diags.find(AF_INET, IPPROTO_TCP, inode_of(listener.get()), &listening);
  ASSERT_NE(l, nullptr);
  EXPECT_EQ(l->state, 10);  // TCP_LISTEN
  auto [c_local, c_peer] = names(client.get());
  const InetDiag* c = diags.find(AF_INET, IPPROTO_TCP, inode_of(client.get()), &c_local, &c_peer);
  ASSERT_NE(c, nullptr);
  EXPECT_EQ(c->inode, inode_of(client.get()));
  EXPECT_EQ(c->shutdown, 2);
  auto [s_local, s_peer] = names(server.get());
  const InetDiag* s = diags.find(AF_INET, IPPROTO_TCP, inode_of(server.get()), &s_local, &s_peer);
  ASSERT_NE(s, nullptr);
  EXPECT_EQ(s->inode, inode_of(server.get()));
  EXPECT_EQ(s->shutdown, 1);
  // Asked for by the wrong addresses (the client's with the server's
  // inode): found in the dump all the same.
  const InetDiag* w = diags.find(AF_INET, IPPROTO_TCP, inode_of(server.get()), &c_local, &c_peer);
  ASSERT_NE(w, nullptr);
  EXPECT_EQ(w->inode, inode_of(server.get()));
}

TEST(SockDiag, LiveSocketpairPeersPointAtEachOther) {
  int sv[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sv), 0);
  ScopedFd a(sv[0]), b(sv[1]);
  ASSERT_EQ(::send(b.get(), "12345", 5, 0), 5);
  auto all = query_unix_sockets();
  ASSERT_TRUE(all.count(inode_of(a.get())));
  const auto& da = all[inode_of(a.get())];
  EXPECT_EQ(da.type, SOCK_SEQPACKET);
  EXPECT_EQ(da.state, 1);
  EXPECT_EQ(da.peer_inode, inode_of(b.get()));
  EXPECT_EQ(all[inode_of(b.get())].peer_inode, inode_of(a.get()));
  EXPECT_EQ(da.rqueue, 5u);
}

// ---- peeking queues ----

int peek_off(int fd) {
  int v = 0;
  socklen_t len = sizeof v;
  EXPECT_EQ(::getsockopt(fd, SOL_SOCKET, SO_PEEK_OFF, &v, &len), 0);
  return v;
}

std::string read_one(int fd) {
  char buf[256];
  ssize_t n = ::recv(fd, buf, sizeof buf, MSG_DONTWAIT);
  return n < 0 ? "(none)" : std::string(buf, static_cast<size_t>(n));
}

Bytes b(const std::string& s) { return Bytes(s.begin(), s.end()); }

class Peek : public ::testing::TestWithParam<int> {};

TEST_P(Peek, WholeQueueWithoutConsumingIt) {
  const int type = GetParam();
  int sv[2];
  ASSERT_EQ(::socketpair(AF_UNIX, type, 0, sv), 0);
  ScopedFd a(sv[0]), w(sv[1]);
  const std::vector<std::string> msgs = {"first", "second message", std::string("th\0ird", 6)};
  for (const auto& m : msgs) ASSERT_EQ(::send(w.get(), m.data(), m.size(), 0), ssize_t(m.size()));
  EXPECT_EQ(peek_off(a.get()), -1);

  auto q = peek_unix_queue(a.get(), type, "test socket");
  if (type == SOCK_STREAM) {
    EXPECT_EQ(q, (std::vector<Bytes>{b(msgs[0] + msgs[1] + msgs[2])}));
  } else {
    EXPECT_EQ(q, (std::vector<Bytes>{b(msgs[0]), b(msgs[1]), b(msgs[2])}));
  }
  EXPECT_EQ(peek_off(a.get()), -1) << "SO_PEEK_OFF set back";
  // Twice gives the same: nothing was consumed.
  EXPECT_EQ(peek_unix_queue(a.get(), type, "test socket"), q);
  if (type == SOCK_STREAM) {
    EXPECT_EQ(read_one(a.get()), msgs[0] + msgs[1] + msgs[2]);
  } else {
    for (const auto& m : msgs) EXPECT_EQ(read_one(a.get()), m);
  }
  EXPECT_EQ(read_one(a.get()), "(none)");
  EXPECT_TRUE(peek_unix_queue(a.get(), type, "test socket").empty());
}

TEST_P(Peek, KeepsTheJobsOwnPeekOffset) {
  const int type = GetParam();
  int sv[2];
  ASSERT_EQ(::socketpair(AF_UNIX, type, 0, sv), 0);
  ScopedFd a(sv[0]), w(sv[1]);
  ASSERT_EQ(::send(w.get(), "abc", 3, 0), 3);
  int off = 0;
  ASSERT_EQ(::setsockopt(a.get(), SOL_SOCKET, SO_PEEK_OFF, &off, sizeof off), 0);
  auto q = peek_unix_queue(a.get(), type, "test socket");
  EXPECT_EQ(q, std::vector<Bytes>{b("abc")});
  EXPECT_EQ(peek_off(a.get()), 0);
}

INSTANTIATE_TEST_SUITE_P(Types, Peek, ::testing::Values(SOCK_STREAM, SOCK_DGRAM, SOCK_SEQPACKET),
                         [](const auto& info) {
                           return info.param == SOCK_STREAM  ? std::string("Stream")
                                  : info.param == SOCK_DGRAM ? std::string("Dgram")
                                                             : std::string("Seqpacket");
                         });

size_t open_fds() {
  size_t n = 0;
  DIR* d = ::opendir("/proc/self/fd");
  while (auto* e = ::readdir(d)) n += e->d_name[0] != '.';
  ::closedir(d);
  return n;
}

TEST(Peek, ZeroLengthMessageIsRefused) {
  int sv[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_DGRAM, 0, sv), 0);
  ScopedFd a(sv[0]), w(sv[1]);
  ASSERT_EQ(::send(w.get(), "x", 1, 0), 1);
  ASSERT_EQ(::send(w.get(), "", 0, 0), 0);
  try {
    peek_unix_queue(a.get(), SOCK_DGRAM, "pid 1 fd 5");
    FAIL() << "a zero-length message was not noticed";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("pid 1 fd 5"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("zero-length"), std::string::npos) << e.what();
  }
  EXPECT_EQ(peek_off(a.get()), -1);
  EXPECT_EQ(read_one(a.get()), "x");
}

TEST(Peek, PassedFdsAreRefusedAndNotLeaked) {
  for (int type : {SOCK_STREAM, SOCK_DGRAM}) {
    int sv[2];
    ASSERT_EQ(::socketpair(AF_UNIX, type, 0, sv), 0);
    ScopedFd a(sv[0]), w(sv[1]);
    int passed = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    char data = 'z';
    iovec iov{&data, 1};
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    std::memcpy(CMSG_DATA(c), &passed, sizeof passed);
    ASSERT_EQ(::sendmsg(w.get(), &msg, 0), 1);
    ::close(passed);
    size_t before = open_fds();
    EXPECT_THROW(peek_unix_queue(a.get(), type, "test socket"), Error);
    EXPECT_EQ(open_fds(), before) << "the peeked fd was closed again";
    EXPECT_EQ(peek_off(a.get()), -1);
  }
}

// ---- open file descriptions ----

image::FileDesc fd_entry(int fd, image::FdType type, uint64_t inode) {
  image::FileDesc f;
  f.fd = fd;
  f.type = type;
  f.inode = inode;
  return f;
}

TEST(FileIds, SharedDescriptionsGetOneId) {
  std::vector<image::Process> procs(2);
  procs[0].pid = 10;
  procs[1].pid = 11;
  using T = image::FdType;
  procs[0].fds = {fd_entry(0, T::Tty, 5), fd_entry(1, T::Regular, 7), fd_entry(2, T::Regular, 7),
                  fd_entry(3, T::Pipe, 9)};
  procs[1].fds = {fd_entry(0, T::Tty, 5), fd_entry(1, T::Regular, 7), fd_entry(4, T::Pipe, 9)};
  // 10:0 = 11:0 (inherited tty); 10:1 = 11:1 (inherited file), 10:2 its
  // own open of the same file; the pipe fds are two ends (different).
  // A stand-in for kcmp's order: each fd's description as a number.
  std::map<std::pair<pid_t, int>, int> desc = {{{10, 0}, 1}, {{11, 0}, 1}, {{10, 1}, 2},
                                               {{11, 1}, 2}, {{10, 2}, 3}, {{10, 3}, 4},
                                               {{11, 4}, 5}};
  int calls = 0;
  assign_file_ids(procs, [&](pid_t p1, int f1, pid_t p2, int f2) {
    calls++;
    return desc.at({p1, f1}) - desc.at({p2, f2});
  });
  auto ids = [](const image::Process& p) {
    std::vector<uint64_t> v;
    for (const auto& f : p.fds) v.push_back(f.file_id);
    return v;
  };
  EXPECT_EQ(ids(procs[0]), (std::vector<uint64_t>{1, 2, 3, 4}));
  EXPECT_EQ(ids(procs[1]), (std::vector<uint64_t>{1, 2, 5}));
  // Only fds of the same type and inode are compared, a few times each:
  // never a tty with a file or a pipe.
  EXPECT_LE(calls, 12);
}

TEST(FileIds, DifferentOffsetsAreNeverCompared) {
  // 100 opens of one file, each at its own offset, and a dup of the first
  // with only O_CLOEXEC different: the offsets alone tell them apart, so
  // kcmp is asked only about the pair at the same offset.
  std::vector<image::Process> procs(1);
  procs[0].pid = 10;
  for (int i = 0; i < 100; i++) {
    auto f = fd_entry(i, image::FdType::Regular, 7);
    f.pos = static_cast<uint64_t>(i) * 512;
    f.flags = O_RDWR;
    procs[0].fds.push_back(f);
  }
  auto dup = fd_entry(100, image::FdType::Regular, 7);
  dup.flags = O_RDWR | O_CLOEXEC;
  procs[0].fds.push_back(dup);
  int calls = 0;
  assign_file_ids(procs, [&](pid_t, int f1, pid_t, int f2) {
    calls++;
    auto desc = [](int fd) { return fd == 100 ? 0 : fd; };
    return desc(f1) - desc(f2);
  });
  EXPECT_LE(calls, 2);
  EXPECT_EQ(procs[0].fds[0].file_id, procs[0].fds[100].file_id);
  EXPECT_NE(procs[0].fds[0].file_id, procs[0].fds[1].file_id);
  EXPECT_EQ(procs[0].fds[99].file_id, 100u);
}

TEST(FileIds, KcmpOnThisProcess) {
  ScopedFd f1(::open("/proc/self/exe", O_RDONLY | O_CLOEXEC));
  ScopedFd f2(::dup(f1.get()));
  ScopedFd f3(::open("/proc/self/exe", O_RDONLY | O_CLOEXEC));
  EXPECT_TRUE(same_open_file(::getpid(), f1.get(), ::getpid(), f2.get()));
  EXPECT_FALSE(same_open_file(::getpid(), f1.get(), ::getpid(), f3.get()));
  EXPECT_THROW(same_open_file(::getpid(), f1.get(), ::getpid(), 999999), SysError);
}

// ---- shared memory read once ----

TEST(SharedMemory, EachPageOfAnObjectOnce) {
  image::Mapping a;
  a.kind = image::MappingKind::SharedAnon;
  a.dev = 1;
  a.inode = 77;
  a.start = 0x10000;
  a.end = 0x18000;  // object pages 0..7
  image::Mapping b = a;
  b.start = 0x50000;
  b.end = 0x54000;
  b.pgoff = 4 * 4096;  // object pages 4..7
  image::Mapping other = a;
  other.inode = 78;
  SharedMemoryPages shared;
  std::vector<uint64_t> pa = {0x10000, 0x15000};          // pages 0, 5
  std::vector<uint64_t> pb = {0x50000, 0x51000, 0x53000};  // pages 4, 5, 7
  std::vector<uint64_t> po = {0x10000};
  shared.claim(a, pa);
  shared.claim(b, pb);
  shared.claim(other, po);
  EXPECT_EQ(pa, (std::vector<uint64_t>{0x10000, 0x15000}));
  EXPECT_EQ(pb, (std::vector<uint64_t>{0x50000, 0x53000})) << "page 5 came from a";
  EXPECT_EQ(po, (std::vector<uint64_t>{0x10000})) << "another object";
  std::vector<uint64_t> again = {0x10000};
  shared.claim(a, again);
  EXPECT_TRUE(again.empty());
  image::Mapping priv = a;
  priv.kind = image::MappingKind::Anonymous;
  std::vector<uint64_t> pp = {0x10000};
  shared.claim(priv, pp);
  EXPECT_EQ(pp.size(), 1u) << "private memory is not shared";
}

}  // namespace
}  // namespace snap
