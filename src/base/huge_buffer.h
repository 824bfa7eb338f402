// Large buffers snap reuses while it streams memory (read batches, block
// buffers, write staging), backed by transparent huge pages where the kernel
// gives them (THP "always" or "madvise").
//
// Huge pages matter twice here. A buffer touched for the first time costs a
// page fault per page, and on virtual machines a fault is expensive: one per
// 2 MiB instead of 512. And an O_DIRECT write from a buffer of 4 KiB pages
// is split into requests of at most max_segments pages (often 1 MiB), while
// from huge pages each 2 MiB is one segment: measured on this project's
// virtual disk, a 1 GiB O_DIRECT write plus fsync took 0.62 s from huge
// pages against 1.5-1.9 s from small ones.
#pragma once

#include <cstddef>
#include <cstdint>

namespace snap {

// Whether this kernel gives a HugeBuffer huge pages (transparent huge pages
// "always" or "madvise"; not "never", nor a kernel without them).
bool huge_pages_available();

class HugeBuffer {
 public:
  HugeBuffer() = default;
  // At least `size` bytes, 2 MiB-aligned, not touched yet. Throws
  // std::bad_alloc when the address space is refused.
  explicit HugeBuffer(size_t size);
  ~HugeBuffer();
  HugeBuffer(HugeBuffer&& o) noexcept;
  HugeBuffer& operator=(HugeBuffer&& o) noexcept;
  HugeBuffer(const HugeBuffer&) = delete;
  HugeBuffer& operator=(const HugeBuffer&) = delete;

  uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  explicit operator bool() const { return data_ != nullptr; }

 private:
  uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace snap
