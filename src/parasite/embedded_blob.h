// The parasite blob (src/parasite/blob), built at compile time and embedded
// into snap as the bytes of its ELF file. Load it with prepare_blob().
#pragma once

#include <cstdint>
#include <span>

namespace snap::parasite {

std::span<const uint8_t> embedded_blob();

}  // namespace snap::parasite
