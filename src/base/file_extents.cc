#include "base/file_extents.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>

namespace snap {

void for_each_data_range(int fd, uint64_t from, uint64_t to,
                         const std::function<uint64_t(uint64_t, uint64_t)>& fn) {
  uint64_t next = from;
  while (next < to) {
    off_t data = ::lseek(fd, static_cast<off_t>(next), SEEK_DATA);
    if (data < 0 && errno == ENXIO) break;  // a hole to the end
    off_t hole = data < 0 ? -1 : ::lseek(fd, data, SEEK_HOLE);
    if (data < 0 || hole < 0) {  // no SEEK_DATA here: all of it is data
      data = static_cast<off_t>(next);
      hole = static_cast<off_t>(to);
    }
    if (static_cast<uint64_t>(data) >= to) break;
    next = fn(static_cast<uint64_t>(data), std::min<uint64_t>(static_cast<uint64_t>(hole), to));
  }
}

uint64_t data_page_bytes(int fd, uint64_t from, uint64_t to) {
  constexpr uint64_t kPage = 4096;
  uint64_t total = 0;
  for_each_data_range(fd, from, to, [&](uint64_t data, uint64_t end) {
    total += ((end + kPage - 1) & ~(kPage - 1)) - (data & ~(kPage - 1));
    return end;
  });
  return total;
}

}  // namespace snap
