#include "image/manifest_file.h"

#include <lz4frame.h>

#include <memory>

#include <fmt/core.h>

#include "base/error.h"
#include "image/file_io.h"
#include "image/format.h"

namespace snap::image {

namespace {

constexpr const char* kDamaged = "the image is damaged or incomplete";
// More than any checkpoint's JSON (a few hundred bytes per fd or mapping):
// a frame claiming more is damaged, not allocated for.
constexpr uint64_t kMaxCheckpointText = uint64_t{1} << 32;

std::string decompress(const std::string& file, const std::string& frame) {
  LZ4F_dctx* raw = nullptr;
  if (LZ4F_isError(LZ4F_createDecompressionContext(&raw, LZ4F_VERSION))) throw std::bad_alloc();
  std::unique_ptr<LZ4F_dctx, decltype(&LZ4F_freeDecompressionContext)> dctx(
      raw, &LZ4F_freeDecompressionContext);
  LZ4F_frameInfo_t info{};
  size_t consumed = frame.size();
  size_t r = LZ4F_getFrameInfo(dctx.get(), &info, frame.data(), &consumed);
  if (LZ4F_isError(r))
    throw Error(fmt::format("{}: not an LZ4 frame: {}", file, LZ4F_getErrorName(r)), kDamaged);
  if (info.contentSize == 0 || info.contentSize > kMaxCheckpointText)
    throw Error(fmt::format("{}: the frame gives no plausible size ({})", file, info.contentSize),
                kDamaged);
  std::string out(static_cast<size_t>(info.contentSize), '\0');
  size_t in_off = consumed, out_off = 0;
  while (in_off < frame.size() && out_off <= out.size()) {
    size_t in_len = frame.size() - in_off, out_len = out.size() - out_off;
    r = LZ4F_decompress(dctx.get(), out.data() + out_off, &out_len, frame.data() + in_off, &in_len,
                        nullptr);
    if (LZ4F_isError(r))
      throw Error(fmt::format("{}: cannot decompress: {}", file, LZ4F_getErrorName(r)), kDamaged);
    in_off += in_len;
    out_off += out_len;
    if (r == 0) break;  // the frame is complete
    if (in_len == 0 && out_len == 0)
      throw Error(fmt::format("{}: the frame is truncated", file), kDamaged);
  }
  if (r != 0 || in_off != frame.size() || out_off != out.size())
    throw Error(fmt::format("{}: the frame is truncated or has bytes after its end", file),
                kDamaged);
  return out;
}

}  // namespace

Manifest read_manifest(const std::string& dir, bool checkpoint) {
  Manifest m = manifest_from_json(io::read_file(dir + "/" + disk::kManifestFile));
  if (!checkpoint || !m.checkpoint_in_file) return m;
  const std::string file = dir + "/" + disk::kCheckpointFile;
  std::string frame = io::read_checked(file, m.files.at(disk::kCheckpointFile));
  m.checkpoint = checkpoint_file_from_json(decompress(file, frame), m.checkpoint.format_version);
  m.checkpoint_in_file = false;
  return m;
}

std::string compress_checkpoint(const Checkpoint& c) {
  std::string text = checkpoint_json(c);
  LZ4F_preferences_t prefs{};
  prefs.frameInfo.blockSizeID = LZ4F_max4MB;
  prefs.frameInfo.blockMode = LZ4F_blockLinked;  // JSON repeats itself across blocks
  prefs.frameInfo.contentSize = text.size();
  std::string out(LZ4F_compressFrameBound(text.size(), &prefs), '\0');
  size_t n = LZ4F_compressFrame(out.data(), out.size(), text.data(), text.size(), &prefs);
  if (LZ4F_isError(n))
    throw Error(fmt::format("compressing the checkpoint: {}", LZ4F_getErrorName(n)));
  out.resize(n);
  return out;
}

}  // namespace snap::image
