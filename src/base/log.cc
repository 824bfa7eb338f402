#include "base/log.h"

namespace snap {

// Set from -v by cmd/main.cc; lives here so that libraries and tests that
// log link without the command-line front end.
int g_verbosity = 0;

}  // namespace snap
