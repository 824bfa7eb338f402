#include "parasite/client.h"

#include <sys/socket.h>
#include <sys/time.h>

#include <cerrno>
#include <csignal>
#include <cstring>
#include <fmt/core.h>

#include "base/error.h"

namespace snap::parasite {
namespace {

void send_all(int fd, const void* buf, size_t n, const char* what) {
  auto* p = static_cast<const uint8_t*>(buf);
  while (n) {
    ssize_t r = ::send(fd, p, n, MSG_NOSIGNAL);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) throw SysError(fmt::format("send to parasite ({})", what), errno,
                              "the parasite has gone away; the target resumes on its own");
    p += r;
    n -= static_cast<size_t>(r);
  }
}

void recv_all(int fd, void* buf, size_t n, const char* what) {
  auto* p = static_cast<uint8_t*>(buf);
  while (n) {
    ssize_t r = ::recv(fd, p, n, 0);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
      throw Error(fmt::format("parasite did not answer {} in time", what),
                  "the target may be stuck; it returns to its own context when snap exits");
    if (r < 0) throw SysError(fmt::format("recv from parasite ({})", what), errno);
    if (r == 0) throw Error(fmt::format("parasite closed the connection during {}", what));
    p += r;
    n -= static_cast<size_t>(r);
  }
}

template <typename T>
T decode(const std::vector<uint8_t>& b, const char* what) {
  if (b.size() != sizeof(T))
    throw Error(fmt::format("parasite {} reply has {} bytes, expected {}", what, b.size(), sizeof(T)));
  T v;
  std::memcpy(&v, b.data(), sizeof(T));
  return v;
}

}  // namespace

const char* command_name(uint16_t cmd) {
  switch (cmd) {
    case SNAP_PARASITE_CMD_GET_SIGACTIONS: return "GET_SIGACTIONS";
    case SNAP_PARASITE_CMD_GET_THREAD_STATE: return "GET_THREAD_STATE";
    case SNAP_PARASITE_CMD_GET_ITIMERS: return "GET_ITIMERS";
    case SNAP_PARASITE_CMD_GET_MISC: return "GET_MISC";
    case SNAP_PARASITE_CMD_PEEK_PIPE: return "PEEK_PIPE";
    case SNAP_PARASITE_CMD_FINI: return "FINI";
    default: return "unknown command";
  }
}

snap_parasite_cmd make_command(uint16_t cmd, uint32_t seq, uint64_t arg0, uint64_t arg1,
                               uint32_t payload_len) {
  snap_parasite_cmd c{};
  c.magic = SNAP_PARASITE_MAGIC;
  c.version = SNAP_PARASITE_VERSION;
  c.cmd = cmd;
  c.seq = seq;
  c.payload_len = payload_len;
  c.arg[0] = arg0;
  c.arg[1] = arg1;
  return c;
}

void check_reply(const snap_parasite_reply& r, const snap_parasite_cmd& c) {
  const char* what = command_name(c.cmd);
  if (r.magic != SNAP_PARASITE_MAGIC)
    throw Error(fmt::format("parasite reply to {}: bad magic {:#x}", what, r.magic));
  if (r.version != SNAP_PARASITE_VERSION)
    throw Error(fmt::format("parasite reply to {}: protocol version {}, expected {}", what, r.version,
                            SNAP_PARASITE_VERSION),
                "the embedded parasite does not match this snap; rebuild");
  if (r.cmd != c.cmd || r.seq != c.seq)
    throw Error(fmt::format("parasite reply out of step: got cmd {} seq {}, expected {} seq {}", r.cmd,
                            r.seq, c.cmd, c.seq));
  if (r.status < 0) throw SysError(fmt::format("parasite {}", what), -r.status);
  if (r.status > 0) throw Error(fmt::format("parasite reply to {}: bad status {}", what, r.status));
}

ParasiteClient::ParasiteClient(ScopedFd sock, std::chrono::milliseconds timeout)
    : sock_(std::move(sock)) {
  timeval tv{};
  tv.tv_sec = static_cast<time_t>(timeout.count() / 1000);
  tv.tv_usec = static_cast<suseconds_t>((timeout.count() % 1000) * 1000);
  // Not a socket (a test may use a pipe pair): no timeout then.
  (void)::setsockopt(sock_.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
}

std::vector<uint8_t> ParasiteClient::call(uint16_t cmd, uint64_t arg0, uint64_t arg1,
                                          std::span<const uint8_t> payload) {
  const char* what = command_name(cmd);
  if (payload.size() > SNAP_PARASITE_MAX_CMD_PAYLOAD)
    throw Error(fmt::format("parasite {}: {}-byte payload exceeds the protocol's {}", what,
                            payload.size(), SNAP_PARASITE_MAX_CMD_PAYLOAD));
  auto c = make_command(cmd, ++seq_, arg0, arg1, static_cast<uint32_t>(payload.size()));
  send_all(sock_.get(), &c, sizeof(c), what);
  if (!payload.empty()) send_all(sock_.get(), payload.data(), payload.size(), what);
  snap_parasite_reply r{};
  recv_all(sock_.get(), &r, sizeof(r), what);
  check_reply(r, c);
  if (r.payload_len > (uint64_t{64} << 20))
    throw Error(fmt::format("parasite reply to {} announces {} bytes", what, r.payload_len));
  std::vector<uint8_t> out(r.payload_len);
  if (!out.empty()) recv_all(sock_.get(), out.data(), out.size(), what);
  return out;
}

std::vector<image::SigAction> ParasiteClient::get_sigactions() {
  auto all = decode<snap_parasite_sigactions>(call(SNAP_PARASITE_CMD_GET_SIGACTIONS), "GET_SIGACTIONS");
  std::vector<image::SigAction> out;
  for (unsigned i = 0; i < SNAP_PARASITE_NSIG; i++) {
    const auto& a = all.act[i];
    int sig = static_cast<int>(i + 1);
    if (sig == SIGKILL || sig == SIGSTOP) continue;
    if (a.status < 0) throw SysError(fmt::format("parasite: rt_sigaction({})", sig), -a.status);
    out.push_back(image::SigAction{sig, a.handler, a.flags, a.restorer, a.mask});
  }
  return out;
}

snap_parasite_thread_state ParasiteClient::get_thread_state() {
  return decode<snap_parasite_thread_state>(call(SNAP_PARASITE_CMD_GET_THREAD_STATE),
                                            "GET_THREAD_STATE");
}

Itimers ParasiteClient::get_itimers(std::span<const int32_t> ids) {
  if (ids.size() > SNAP_PARASITE_MAX_TIMERS)
    throw Error(fmt::format("{} POSIX timers; the parasite handles at most {} per call", ids.size(),
                            SNAP_PARASITE_MAX_TIMERS));
  auto b = call(SNAP_PARASITE_CMD_GET_ITIMERS, 0, 0,
                {reinterpret_cast<const uint8_t*>(ids.data()), ids.size_bytes()});
  Itimers out;
  if (b.size() != sizeof(out.itimers) + ids.size() * sizeof(snap_parasite_posix_timer))
    throw Error(fmt::format("parasite GET_ITIMERS reply has {} bytes for {} timers", b.size(), ids.size()));
  std::memcpy(&out.itimers, b.data(), sizeof(out.itimers));
  if (out.itimers.n_posix != ids.size()) throw Error("parasite GET_ITIMERS reply: wrong timer count");
  out.posix.resize(ids.size());
  if (!ids.empty())
    std::memcpy(out.posix.data(), b.data() + sizeof(out.itimers),
                out.posix.size() * sizeof(snap_parasite_posix_timer));
  return out;
}

snap_parasite_misc ParasiteClient::get_misc() {
  return decode<snap_parasite_misc>(call(SNAP_PARASITE_CMD_GET_MISC), "GET_MISC");
}

std::vector<uint8_t> ParasiteClient::peek_pipe(int fd, uint64_t max_bytes) {
  auto b = call(SNAP_PARASITE_CMD_PEEK_PIPE, static_cast<uint64_t>(fd), max_bytes);
  snap_parasite_pipe_peek pk{};
  if (b.size() < sizeof(pk)) throw Error("parasite PEEK_PIPE reply too short");
  std::memcpy(&pk, b.data(), sizeof(pk));
  if (pk.copied != b.size() - sizeof(pk)) throw Error("parasite PEEK_PIPE reply: length mismatch");
  if (pk.copied < pk.available)
    throw Error(fmt::format("pipe fd {} holds {} unread bytes; only {} could be copied", fd, pk.available,
                            pk.copied),
                "a pipe larger than the peek limit or than pipe-max-size cannot be dumped");
  return {b.begin() + sizeof(pk), b.end()};
}

void ParasiteClient::fini() { call(SNAP_PARASITE_CMD_FINI); }

void apply_thread_state(const snap_parasite_thread_state& s, image::ThreadState& out) {
  if (s.sigaltstack_status == 0)
    out.sigaltstack = std::array<uint64_t, 3>{s.ss_sp, static_cast<uint64_t>(static_cast<uint32_t>(s.ss_flags)),
                                              s.ss_size};
  if (s.tid_address_status == 0) out.clear_child_tid = s.clear_child_tid;
  if (s.comm_status == 0) out.comm.assign(s.comm, strnlen(s.comm, sizeof s.comm));
}

}  // namespace snap::parasite
