#include <gtest/gtest.h>
#include "parasite/blob_loader.h"
#include "parasite/embedded_blob.h"
TEST(P, Load) { auto b = snap::parasite::prepare_blob(snap::parasite::embedded_blob(), snap::remote_addr(0x100000)); EXPECT_GT(b.size(), 0u); }
