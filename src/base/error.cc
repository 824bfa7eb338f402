#include "base/error.h"

#include <cstring>

namespace snap {

SysError::SysError(const std::string& call, int err, std::string hint)
    : Error(call + ": " + std::strerror(err), std::move(hint)), err_(err) {}

long check_sys(long rc, const std::string& call) {
  if (rc < 0) throw SysError(call, errno);
  return rc;
}

}  // namespace snap
