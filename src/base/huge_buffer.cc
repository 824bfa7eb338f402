#include "base/huge_buffer.h"

#include <sys/mman.h>

#include <fstream>
#include <new>
#include <string>
#include <utility>

namespace snap {

namespace {
constexpr size_t kHuge = size_t{2} << 20;
}

bool huge_pages_available() {
  static const bool available = [] {
    std::ifstream in("/sys/kernel/mm/transparent_hugepage/enabled");
    std::string text;
    std::getline(in, text);
    return text.find("[always]") != std::string::npos ||
           text.find("[madvise]") != std::string::npos;
  }();
  return available;
}

HugeBuffer::HugeBuffer(size_t size) {
  size_ = (size + kHuge - 1) / kHuge * kHuge;
  // Over-allocate by one huge page and trim to 2 MiB alignment.
  void* p = ::mmap(nullptr, size_ + kHuge, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) throw std::bad_alloc();
  auto start = reinterpret_cast<uintptr_t>(p);
  uintptr_t aligned = (start + kHuge - 1) / kHuge * kHuge;
  if (aligned > start) ::munmap(p, aligned - start);
  uintptr_t end = start + size_ + kHuge, aligned_end = aligned + size_;
  if (end > aligned_end) ::munmap(reinterpret_cast<void*>(aligned_end), end - aligned_end);
  data_ = reinterpret_cast<uint8_t*>(aligned);
  // Not fatal: without THP the buffer is made of small pages.
  ::madvise(data_, size_, MADV_HUGEPAGE);
}

HugeBuffer::~HugeBuffer() {
  if (data_) ::munmap(data_, size_);
}

HugeBuffer::HugeBuffer(HugeBuffer&& o) noexcept
    : data_(std::exchange(o.data_, nullptr)), size_(std::exchange(o.size_, 0)) {}

HugeBuffer& HugeBuffer::operator=(HugeBuffer&& o) noexcept {
  if (this != &o) {
    if (data_) ::munmap(data_, size_);
    data_ = std::exchange(o.data_, nullptr);
    size_ = std::exchange(o.size_, 0);
  }
  return *this;
}

}  // namespace snap
