// The data of a sparse file: its stretches between holes (SEEK_DATA and
// SEEK_HOLE), the one way every part of snap that reads, counts, compares
// or zeroes a file's data walks it.
#pragma once

#include <cstdint>
#include <functional>

namespace snap {

// Calls fn(start, end) for each stretch of data of the file open on `fd`
// within [from, to), in order (SEEK_DATA and SEEK_HOLE: holes skipped; all
// of it one stretch where the file system cannot tell holes). fn returns the
// offset to look on from (at least `end`; `to` or more stops).
void for_each_data_range(int fd, uint64_t from, uint64_t to,
                         const std::function<uint64_t(uint64_t start, uint64_t end)>& fn);

// The bytes of the whole pages that hold the data of the file open on
// `fd` within [from, to): what reading that data a page at a time reads.
uint64_t data_page_bytes(int fd, uint64_t from, uint64_t to);

}  // namespace snap
