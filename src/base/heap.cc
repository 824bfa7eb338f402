#include "base/heap.h"

#include <malloc.h>

#include <cstdlib>
#include <unistd.h>

namespace snap {

void keep_freed_heap_mapped() {
  ::mallopt(M_MMAP_THRESHOLD, 32 << 20);  // glibc's largest
  ::mallopt(M_TRIM_THRESHOLD, 64 << 20);
  ::mallopt(M_TOP_PAD, 4 << 20);
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
  std::free(const_cast<char*>(p));
}

}  // namespace snap
