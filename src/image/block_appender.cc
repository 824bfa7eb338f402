#include "image/block_appender.h"

#include <new>
#include <utility>

#include "image/format.h"

namespace snap::image {

namespace {

std::unique_ptr<XXH3_state_t, decltype(&XXH3_freeState)> new_state() {
  std::unique_ptr<XXH3_state_t, decltype(&XXH3_freeState)> st(XXH3_createState(),
                                                              &XXH3_freeState);
  if (!st) throw std::bad_alloc();
  XXH3_64bits_reset(st.get());
  return st;
}

}  // namespace

BlockAppender::BlockAppender(int fd, std::string path)
    : stage_(fd, std::move(path)), file_sum_(new_state()) {}

void BlockAppender::append(const Pack::Block& e, const uint8_t* stored) {
  const bool raw = e.flags & disk::kBlockRaw;
  if (raw_open_ && (!raw || blocks_.back().npages + e.npages > disk::kRawBlockPages))
    raw_open_ = false;
  const uint64_t off = stage_.size();
  stage_.append(stored, e.stored_len);
  XXH3_64bits_update(file_sum_.get(), stored, e.stored_len);
  if (!raw) {
    Pack::Block b = e;
    b.offset = off;
    blocks_.push_back(b);
    return;
  }
  if (!raw_open_) {
    blocks_.push_back({off, 0, 0, 0, disk::kBlockRaw | disk::kBlockPageSums});
    raw_open_ = true;
  }
  // Summed page by page (pack.h: a page written over in place later changes
  // the sum by its own terms), each page by its place in the joined block.
  Pack::Block& b = blocks_.back();
  for (uint32_t i = 0; i < e.npages; ++i)
    b.checksum += page_sum(stored + size_t{i} * kPageSize, b.npages + i);
  b.stored_len += e.stored_len;
  b.npages += e.npages;
}

io::FileSum BlockAppender::finish() {
  raw_open_ = false;
  stage_.finish();
  return {stage_.size(), XXH3_64bits_digest(file_sum_.get())};
}

}  // namespace snap::image
