// Pseudo-terminals. At dump time: which fds are the two sides of a pty
// whose master a process of the job holds, the pty's settings, the session
// it is the controlling terminal of, and the data queued in it both ways.
// Putting such data back into a pty is here too: the dump puts back what
// it read when the job keeps running, and restore fills the new pty.
#pragma once

#include <cstdint>
#include <string>

#include "image/checkpoint.h"

namespace snap::proc {

// The longest queue snap can put back into a pty, each way: what the
// line discipline holds (N_TTY_BUF_SIZE - 1).
constexpr size_t kMaxPtyQueue = 4095;

// Fills ckpt.ptys and FileDesc::pty for every pty whose master an fd of
// ckpt.processes holds (host pids, all stopped), and for hung-up slaves.
// Reads the queued data and puts it back (the job keeps running, or the
// dump may still fail: --kill kills only after a complete image). Throws
// Error naming pid, fd and pty when the pty cannot come back as it is:
// more data queued than a restore can put back, a session it controls
// whose leader is not dumped.
void collect_ptys(image::Checkpoint& ckpt);

// Gives the pty of `master` (and `slave`, an fd of its other side) the
// queued data, termios, window size and packet mode of `t`: t.input
// waiting to be read from the slave, with its line boundaries in
// canonical mode, and t.output waiting to be read from the master. Throws
// Error naming `what`.
void refill_pty(int master, int slave, const image::Pty& t, const std::string& what);

// TIOCGPTPEER: a new open file description of the slave of `master`.
// -1 and errno on failure.
int open_pty_peer(int master, int flags);

}  // namespace snap::proc
