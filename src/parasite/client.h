// Host side of the parasite protocol (protocol.h): sends commands over the
// control socket and decodes the replies into the checkpoint's data model.
// It only needs a connected socket, so it works the same whether the blob
// runs in a ptrace'd target or (in tests) in a child that called it directly.
#pragma once

#include <chrono>
#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "base/scoped_fd.h"
#include "image/checkpoint.h"
#include "parasite/protocol.h"

namespace snap::parasite {

const char* command_name(uint16_t cmd);

// Encoding / decoding, exposed for tests.
snap_parasite_cmd make_command(uint16_t cmd, uint32_t seq, uint64_t arg0 = 0, uint64_t arg1 = 0,
                               uint32_t payload_len = 0);
// Throws snap::Error if `reply` does not answer `cmd` (magic, version, echo),
// SysError(-status) if the blob reported a failure.
void check_reply(const snap_parasite_reply& reply, const snap_parasite_cmd& cmd);

struct Itimers {
  snap_parasite_itimers itimers{};  // ITIMER_REAL, VIRTUAL, PROF
  std::vector<snap_parasite_posix_timer> posix;
};

class ParasiteClient {
 public:
  // `sock`: our end of the control connection. Every reply must arrive
  // within `timeout`, else the call throws (the blob may be wedged).
  explicit ParasiteClient(ScopedFd sock,
                          std::chrono::milliseconds timeout = std::chrono::seconds(10));

  std::vector<image::SigAction> get_sigactions();
  // State of the thread running the command loop.
  snap_parasite_thread_state get_thread_state();
  Itimers get_itimers(std::span<const int32_t> posix_timer_ids);
  snap_parasite_misc get_misc();
  // Unread content of the pipe whose read end is `fd` in the target, left
  // in place. Throws if it holds more than `max_bytes` or could not be
  // copied entirely.
  std::vector<uint8_t> peek_pipe(int fd, uint64_t max_bytes = 1 << 20);
  // Ends the command loop; the blob then returns to the thread's context
  // (rt_sigreturn) or traps. The socket stays open until this object dies.
  void fini();

  int fd() const { return sock_.get(); }

 private:
  std::vector<uint8_t> call(uint16_t cmd, uint64_t arg0 = 0, uint64_t arg1 = 0,
                            std::span<const uint8_t> payload = {});
  ScopedFd sock_;
  uint32_t seq_ = 0;
};

// Copies what the parasite reported into the data model.
void apply_thread_state(const snap_parasite_thread_state& s, image::ThreadState& out);

}  // namespace snap::parasite
