// A page of memory in a process being restored, for system call arguments
// (structs, paths), mapped through a RemoteSyscalls scope and unmapped when
// the RemotePage goes away.
#pragma once

#include <sys/mman.h>
#include <sys/syscall.h>

#include <cstdint>

#include "tracer/remote.h"
#include "tracer/task.h"

namespace snap::restore {

class RemotePage {
 public:
  static constexpr uint64_t kSize = 4096;
  explicit RemotePage(RemoteSyscalls& rs) : rs_(rs) {
    addr_ = static_cast<uint64_t>(rs.checked("mmap of an argument page", SYS_mmap, 0, kSize,
                                             PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                                             static_cast<uint64_t>(-1), 0));
  }
  ~RemotePage() { rs_.syscall(SYS_munmap, addr_, kSize); }
  RemotePage(const RemotePage&) = delete;
  RemotePage& operator=(const RemotePage&) = delete;

  // Copies v to `offset` in the page; returns its remote address.
  template <typename T>
  uint64_t put(const T& v, uint64_t offset = 0) {
    static_assert(sizeof(T) <= kSize);
    write_remote(rs_.task().tid(), remote_addr(addr_ + offset), &v, sizeof v);
    return addr_ + offset;
  }
  template <typename T>
  T get(uint64_t offset) {
    T v;
    read_remote(rs_.task().tid(), remote_addr(addr_ + offset), &v, sizeof v);
    return v;
  }
  uint64_t addr() const { return addr_; }

 private:
  RemoteSyscalls& rs_;
  uint64_t addr_ = 0;
};

}  // namespace snap::restore
