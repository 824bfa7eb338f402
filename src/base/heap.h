// How snap's own heap behaves: freed memory stays mapped.
#pragma once

#include <cstddef>

namespace snap {

// On some machines (virtual ones with shadow page tables above all) a page
// fault on fresh memory costs ~10 us, and the lists a dump builds while the
// job is stopped (20,000 mappings: some MiB) came from fresh mmaps each
// time, glibc's default for blocks over 128 KiB: ~20 ms of the freeze was
// page faults. With this, blocks up to 32 MiB come from the heap, and up to
// 64 MiB freed at its top stays mapped for the next ones. Called once, at
// the start of snap.
void keep_freed_heap_mapped();

// For a command that builds much at once (restore: a parsed image of
// 20,000 mappings is 3.5 MB of text and more in lists): the heap's next 60
// MiB advised to transparent huge pages (where the kernel's THP mode is
// "always" or "madvise"), one fault per 2 MiB instead of 512 (opening such
// an image here: ~104 -> ~40 ms). Their memory is then held in 2 MiB pieces,
// so release_free_heap() gives back what is free once the work is done.
void advise_heap_huge_pages();

// Gives the heap's free memory back to the kernel (malloc_trim), for a
// process that stays around after its work (snap restore waits for the job).
void release_free_heap();

// Touches `bytes` of heap, from snap and from the kernel, and frees them
// again, so that what is allocated next (up to that much) finds its pages
// already there, for snap's own writes and for the kernel's (system calls
// that fill buffers).
void warm_heap(size_t bytes);

}  // namespace snap
