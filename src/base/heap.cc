#include "base/heap.h"

#include <malloc.h>
#include <sys/mman.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <fcntl.h>
#include <unistd.h>

#include "base/scoped_fd.h"

namespace snap {

void keep_freed_heap_mapped() {
  ::mallopt(M_MMAP_THRESHOLD, 32 << 20);  // glibc's largest
  ::mallopt(M_TRIM_THRESHOLD, 64 << 20);
  ::mallopt(M_TOP_PAD, 4 << 20);
}

void advise_heap_huge_pages() {
  ::mallopt(M_TRIM_THRESHOLD, 128 << 20);  // above what is advised: it stays
  // The heap grown by 60 MiB (in blocks below the mmap threshold: from the
  // heap, not mapped apart), its whole 2 MiB pieces advised, and freed
  // again: it stays mapped (within the trim threshold) and later blocks come
  // from it. Nothing is touched here; where the advice is refused nothing
  // changes.
  constexpr size_t kHuge = 2 << 20, kBlock = 30 << 20;
  void* a = std::malloc(kBlock);
  void* b = a ? std::malloc(kBlock) : nullptr;
  if (a && b) {
    const auto lo_at = std::min(reinterpret_cast<uintptr_t>(a), reinterpret_cast<uintptr_t>(b));
    const auto hi_at = std::max(reinterpret_cast<uintptr_t>(a), reinterpret_cast<uintptr_t>(b)) + kBlock;
    const uintptr_t lo = (lo_at + kHuge - 1) & ~(kHuge - 1), hi = hi_at & ~(kHuge - 1);
    if (lo < hi && hi_at - lo_at <= 2 * kBlock + 4096)  // side by side in the heap, not apart
      ::madvise(reinterpret_cast<void*>(lo), hi - lo, MADV_HUGEPAGE);
  }
  std::free(b);
  std::free(a);
}

void release_free_heap() {
  ::mallopt(M_TRIM_THRESHOLD, 64 << 20);
  ::malloc_trim(0);
}

void warm_heap(size_t bytes) {
  if (bytes == 0) return;
  // A byte written to each page through a volatile pointer: a memset of
  // memory freed right after may be dropped, or malloc+memset made calloc,
  // which knows fresh heap is zero and touches nothing.
  auto* volatile p = static_cast<volatile char*>(std::malloc(bytes));
  if (!p) return;
  const long page = ::sysconf(_SC_PAGESIZE);
  for (size_t off = 0; off < bytes; off += static_cast<size_t>(page > 0 ? page : 4096)) p[off] = 0;
  // And once by the kernel (zeros read from /dev/zero): on this project's
  // machine the kernel's first write into a page of snap's memory costs
  // ~5 us more than its later ones, even after snap wrote the page itself,
  // and while the job is stopped the kernel writes into such memory
  // (ptrace's XSAVE areas, /proc texts): measured, 256 threads' registers
  // and state 4.3 -> 3.1 ms, /proc/PID/maps of 20,000 mappings 6.5 -> 4.8.
  if (ScopedFd zero{::open("/dev/zero", O_RDONLY | O_CLOEXEC)}) {
    for (size_t done = 0; done < bytes;) {
      ssize_t n = ::read(zero.get(), const_cast<char*>(p) + done, bytes - done);
      if (n <= 0) break;
      done += static_cast<size_t>(n);
    }
  }
  std::free(const_cast<char*>(p));
}

}  // namespace snap
