#include "base/cpus.h"

#include <sched.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <memory>

namespace snap {

unsigned usable_cpus() {
  // A mask large enough for any machine this runs on (CPU_SETSIZE is 1024).
  for (size_t ncpus = CPU_SETSIZE; ncpus <= (1u << 16); ncpus *= 4) {
    size_t size = CPU_ALLOC_SIZE(ncpus);
    std::unique_ptr<cpu_set_t, void (*)(cpu_set_t*)> set(CPU_ALLOC(ncpus), [](cpu_set_t* s) { CPU_FREE(s); });
    if (!set) break;
    CPU_ZERO_S(size, set.get());
    if (::sched_getaffinity(0, size, set.get()) == 0) {
      int n = CPU_COUNT_S(size, set.get());
      return n > 0 ? static_cast<unsigned>(n) : 1;
    }
    if (errno != EINVAL) break;
  }
  long n = ::sysconf(_SC_NPROCESSORS_ONLN);
  return n > 0 ? static_cast<unsigned>(n) : 1;
}

}  // namespace snap
