// Many writes into another process with few system calls: ranges gather in
// iovec arrays (IOV_MAX a side, consecutive ranges merged on either side)
// and go with one process_vm_writev. Use one writer per thread.
#pragma once

#include <sys/types.h>
#include <sys/uio.h>

#include <cstddef>
#include <cstdint>
#include <vector>

#include "base/remote_ptr.h"

namespace snap::restore {

class RemoteWriter {
 public:
  explicit RemoteWriter(pid_t pid);
  RemoteWriter(const RemoteWriter&) = delete;
  RemoteWriter& operator=(const RemoteWriter&) = delete;

  // Queues n bytes at src (which must stay valid until flush()) for
  // address dst of the process.
  void add(const void* src, remote_addr dst, size_t n);
  // Writes everything queued. What process_vm_writev leaves unwritten (it
  // stops at a page it cannot write) goes through write_remote(), which
  // falls back to /proc/PID/mem and throws SysError naming pid and address.
  void flush();
  uint64_t written() const { return written_; }

 private:
  void finish_short_write(size_t done);

  pid_t pid_;
  std::vector<iovec> local_, remote_;
  size_t queued_ = 0;
  uint64_t written_ = 0;
};

}  // namespace snap::restore
