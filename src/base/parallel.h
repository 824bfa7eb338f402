// A loop whose iterations run on a few threads.
#pragma once

#include <cstddef>
#include <functional>

namespace snap {

// Calls fn(i) for every i in [0, n), iteration i on thread i % threads (the
// caller's own thread is one of them). An exception stops every thread at
// its next iteration; the one thrown by the lowest i is rethrown here.
void parallel_for(size_t n, unsigned threads, const std::function<void(size_t)>& fn);

}  // namespace snap
