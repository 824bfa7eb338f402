#pragma once

#include <cstdint>

namespace snap::image {

// Page store accounting, the same for the writer (so far) and the reader.
struct ImageStats {
  uint64_t pages = 0;            // pages recorded, all mappings of all processes
                                 // (and files' contents in the page store)
  uint64_t file_pages = 0;       // of those, files' contents
  uint64_t zero_pages = 0;       // recorded as zero, no data stored
  uint64_t unique_pages = 0;     // stored in pages.bin
  uint64_t duplicate_pages = 0;  // non-zero pages equal to an already stored page
  uint64_t blocks = 0;           // blocks written to pages.bin
  uint64_t raw_blocks = 0;       // of which stored uncompressed
  uint64_t raw_bytes = 0;        // pages * kPageSize: the memory the image covers
  uint64_t stored_bytes = 0;     // size of pages.bin (a series checkpoint: of all
                                 // the packs it refers to)
  // Checkpoint series (0 for a plain image):
  uint64_t earlier_pages = 0;     // pages referring to pages stored by earlier checkpoints
  uint64_t unchanged_pages = 0;   // of those, given as unchanged (add_unchanged)
  uint64_t new_stored_bytes = 0;  // what this image / checkpoint stored itself (its new
                                  // pack: data + index; a plain image: = stored_bytes)
};

}  // namespace snap::image
