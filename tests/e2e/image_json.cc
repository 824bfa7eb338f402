// Test helper: an image's checkpoint as JSON, and back.
//   image-json DIR              prints DIR's checkpoint object (checkpoint.json.lz4)
//   image-json DIR --put FILE   makes FILE (such an object, edited) DIR's
//                               checkpoint, with the manifest's size and
//                               checksum of it updated
// Tests use it to give an image what another machine would have written
// (another CPU, another kernel's vDSO), which this machine cannot make.
#include <unistd.h>

#include <cstdio>
#include <string>

#include "base/error.h"
#include "image/file_io.h"
#include "image/format.h"
#include "image/manifest.h"
#include "image/manifest_file.h"

using namespace snap;
using namespace snap::image;

int main(int argc, char** argv) {
  if (argc != 2 && !(argc == 4 && std::string(argv[2]) == "--put")) {
    std::fprintf(stderr, "usage: image-json DIR [--put FILE]\n");
    return 2;
  }
  const std::string dir = argv[1];
  try {
    Manifest m = read_manifest(dir);
    if (argc == 2) {
      std::fputs(checkpoint_json(m.checkpoint).c_str(), stdout);
      return 0;
    }
    if (!m.files.count(disk::kCheckpointFile)) throw Error("image-json --put: the image keeps its checkpoint in "
                                           "manifest.json (version 5 or older)");
    Checkpoint c = checkpoint_file_from_json(io::read_file(argv[3]), m.checkpoint.format_version);
    std::string frame = compress_checkpoint(c);
    const std::string file = dir + "/" + disk::kCheckpointFile;
    ::unlink(file.c_str());  // write_file makes a new file
    io::write_file(file, frame.data(), frame.size());
    m.files[disk::kCheckpointFile] = io::sum_bytes(frame.data(), frame.size());
    std::string json = manifest_file_json(m);
    ::unlink((dir + "/" + disk::kManifestFile).c_str());
    io::write_file(dir + "/" + disk::kManifestFile, json.data(), json.size());
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "image-json: %s\n", e.what());
    return 1;
  }
}
