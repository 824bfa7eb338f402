// Whole files of an image as one LZ4 frame each (checkpoint.json.lz4,
// pagemap.bin.lz4: `lz4 -dc` shows them). Internal to src/image.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace snap::image {

// `bytes` as one LZ4 frame with its content size, blocks linked (later
// blocks refer to earlier ones). `level`: 0 for lz4's fast mode, 3..12 for
// its high-compression one (slower, smaller).
std::string lz4_frame(std::string_view bytes, int level = 0);

// The content of a frame lz4_frame() made, read from `file` (named in
// errors). Throws snap::Error with the hint `damaged` when it is not one,
// is truncated, has bytes after its end, or claims more than `max_size`.
std::string lz4_unframe(const std::string& file, std::string_view frame, uint64_t max_size,
                        const char* damaged);

}  // namespace snap::image
