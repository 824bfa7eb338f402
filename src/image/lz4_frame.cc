#include "image/lz4_frame.h"

#include <lz4frame.h>

#include <memory>
#include <new>

#include <fmt/core.h>

#include "base/error.h"

namespace snap::image {

std::string lz4_frame(std::string_view bytes, int level) {
  LZ4F_preferences_t prefs{};
  prefs.frameInfo.blockSizeID = LZ4F_max4MB;
  prefs.frameInfo.blockMode = LZ4F_blockLinked;  // later blocks may repeat earlier ones
  prefs.frameInfo.contentSize = bytes.size();
  prefs.compressionLevel = level;
  std::string out(LZ4F_compressFrameBound(bytes.size(), &prefs), '\0');
  size_t n = LZ4F_compressFrame(out.data(), out.size(), bytes.data(), bytes.size(), &prefs);
  if (LZ4F_isError(n)) throw Error(fmt::format("lz4 frame: {}", LZ4F_getErrorName(n)));
  out.resize(n);
  return out;
}

std::string lz4_unframe(const std::string& file, std::string_view frame, uint64_t max_size,
                        const char* damaged) {
  LZ4F_dctx* raw = nullptr;
  if (LZ4F_isError(LZ4F_createDecompressionContext(&raw, LZ4F_VERSION))) throw std::bad_alloc();
  std::unique_ptr<LZ4F_dctx, decltype(&LZ4F_freeDecompressionContext)> dctx(
      raw, &LZ4F_freeDecompressionContext);
  LZ4F_frameInfo_t info{};
  size_t consumed = frame.size();
  size_t r = LZ4F_getFrameInfo(dctx.get(), &info, frame.data(), &consumed);
  if (LZ4F_isError(r))
    throw Error(fmt::format("{}: not an LZ4 frame: {}", file, LZ4F_getErrorName(r)), damaged);
  if (info.contentSize == 0 || info.contentSize > max_size)
    throw Error(fmt::format("{}: the frame gives no plausible size ({})", file, info.contentSize),
                damaged);
  std::string out(static_cast<size_t>(info.contentSize), '\0');
  size_t in_off = consumed, out_off = 0;
  while (in_off < frame.size() && out_off <= out.size()) {
    size_t in_len = frame.size() - in_off, out_len = out.size() - out_off;
    r = LZ4F_decompress(dctx.get(), out.data() + out_off, &out_len, frame.data() + in_off, &in_len,
                        nullptr);
    if (LZ4F_isError(r))
      throw Error(fmt::format("{}: cannot decompress: {}", file, LZ4F_getErrorName(r)), damaged);
    in_off += in_len;
    out_off += out_len;
    if (r == 0) break;  // the frame is complete
    if (in_len == 0 && out_len == 0)
      throw Error(fmt::format("{}: the frame is truncated", file), damaged);
  }
  if (r != 0 || in_off != frame.size() || out_off != out.size())
    throw Error(fmt::format("{}: the frame is truncated or has bytes after its end", file),
                damaged);
  return out;
}

}  // namespace snap::image
