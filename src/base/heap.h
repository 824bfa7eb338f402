// How snap's own heap behaves: freed memory stays mapped.
#pragma once

#include <cstddef>

namespace snap {

// On some machines (virtual ones with shadow page tables above all) a page
// fault on fresh memory costs ~10 us, and the lists a dump builds while the
// job is stopped (20,000 mappings: some MiB) came from fresh mmaps each
// time, glibc's default for blocks over 128 KiB: ~20 ms of the freeze was
// page faults. With this, blocks up to 32 MiB come from the heap, and up to
// 128 MiB freed at its top stays mapped for the next ones. And the heap's
// first 60 MiB are advised to transparent huge pages (where the kernel's
// THP mode is "always" or "madvise"): one fault per 2 MiB instead of 512,
// for what snap builds when it starts (a restore's parsed image: 20,000
// mappings, 3.5 MB of text, opened in ~32 ms against ~85). Called once, at
// the start of snap.
void keep_freed_heap_mapped();

// Touches `bytes` of heap, from snap and from the kernel, and frees them
// again, so that what is allocated next (up to that much) finds its pages
// already there, for snap's own writes and for the kernel's (system calls
// that fill buffers).
void warm_heap(size_t bytes);

}  // namespace snap
