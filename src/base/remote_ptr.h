// An address in another process's address space. It cannot be dereferenced
// here; it can only be offset, compared and handed to the calls that reach
// into the other process (process_vm_readv, ptrace, remote syscalls).
#pragma once

#include <compare>
#include <cstddef>
#include <cstdint>
#include <functional>

namespace snap {

template <typename T>
class remote_ptr {
 public:
  constexpr remote_ptr() = default;
  constexpr explicit remote_ptr(uint64_t addr) : addr_(addr) {}
  template <typename U>
  constexpr remote_ptr(remote_ptr<U> o) requires std::is_void_v<T>
      : addr_(o.as_int()) {}

  constexpr uint64_t as_int() const { return addr_; }
  constexpr bool is_null() const { return addr_ == 0; }
  constexpr explicit operator bool() const { return addr_ != 0; }

  // Pointer arithmetic in units of T (bytes for void).
  constexpr remote_ptr operator+(int64_t n) const { return remote_ptr(addr_ + n * step()); }
  constexpr remote_ptr operator-(int64_t n) const { return remote_ptr(addr_ - n * step()); }
  template <typename U>
  constexpr remote_ptr<U> cast() const { return remote_ptr<U>(addr_); }

  constexpr auto operator<=>(const remote_ptr&) const = default;

 private:
  static constexpr int64_t step() {
    if constexpr (std::is_void_v<T>) return 1;
    else return sizeof(T);
  }
  uint64_t addr_ = 0;
};

using remote_addr = remote_ptr<void>;

// A half-open range [start, end) of another process's address space.
struct RemoteRange {
  remote_addr start;
  remote_addr end;
  uint64_t size() const { return end.as_int() - start.as_int(); }
  bool contains(remote_addr a) const { return start <= a && a < end; }
  bool overlaps(const RemoteRange& o) const { return start < o.end && o.start < end; }
};

}  // namespace snap
