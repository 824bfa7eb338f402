// Checkpoint series (FORMAT.md, "Checkpoint series"): shared packs, pages
// given as unchanged, collection of old checkpoints, `latest` and its
// fallback, crash safety.
#include <signal.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <set>
#include <thread>

#include <fmt/core.h>
#include <gtest/gtest.h>

#include "tests/unit/temp_dir.h"
#include "tests/unit/v6_layout.h"

#include "base/error.h"
#include "image/checkpoint.h"
#include "image/image_reader.h"
#include "image/image_writer.h"
#include "image/series.h"

namespace snap::image {
namespace {

namespace fs = std::filesystem;
using Page = std::vector<uint8_t>;

using test_support::TempDir;

constexpr pid_t kPid = 100;
constexpr uint64_t kStart = 0x7f0000000000;

// One process; its memory is the mappings [start, end) given.
Checkpoint checkpoint_with(std::vector<std::pair<uint64_t, uint64_t>> maps,
                           std::string changed_by = "content-hash") {
  Checkpoint c;
  c.snap_version = "0.1.0";
  c.created = "2024-01-02T03:04:05Z";
  c.hostname = "node17";
  c.kernel_release = "6.1.0";
  c.changed_pages_by = std::move(changed_by);
  Process p;
  p.pid = kPid;
  p.ppid = 1;
  p.pgid = p.sid = kPid;
  p.comm = "solver";
  ThreadState t;
  t.tid = kPid;
  p.threads.push_back(t);
  for (auto [s, e] : maps) {
    Mapping m;
    m.start = s;
    m.end = e;
    m.prot = 3;
    p.mappings.push_back(m);
  }
  c.processes.push_back(p);
  return c;
}

Checkpoint checkpoint_of(uint64_t npages) {
  return checkpoint_with({{kStart, kStart + npages * kPageSize}});
}

// Incompressible and distinct per seed.
Page random_page(uint64_t seed) {
  std::mt19937_64 rng(seed * 0x9e3779b97f4a7c15ull + 1);
  Page p(kPageSize);
  for (size_t i = 0; i < kPageSize; i += 8) {
    uint64_t v = rng();
    std::memcpy(&p[i], &v, 8);
  }
  return p;
}

// Every page of every mapping of the image, by address; zero pages empty.
std::map<uint64_t, Page> read_back(ImageReader& r) {
  std::map<uint64_t, Page> out;
  for (const auto& p : r.checkpoint().processes)
    for (const auto& m : p.mappings)
      r.for_each_run(p.pid, m.start, [&](const PageRun& run) {
        for (size_t i = 0; i < run.npages; ++i)
          out[run.addr + i * kPageSize] =
              run.zero() ? Page{} : Page(run.data + i * kPageSize, run.data + (i + 1) * kPageSize);
      });
  return out;
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

uint64_t file_size(const std::string& path) { return fs::file_size(path); }

// Content model: page i of checkpoint n was last changed at change_of(n, i).
using ChangedFn = std::function<bool(uint64_t n, uint64_t i)>;
uint64_t change_of(uint64_t n, uint64_t i, const ChangedFn& changed) {
  while (n > 1 && !changed(n, i)) --n;
  return n;
}
Page content(uint64_t n, uint64_t i, const ChangedFn& changed) {
  return random_page(i * 100003 + change_of(n, i, changed));
}

// Writes the next checkpoint of the series at `ckpt` whose pages are
// content(n, i); unchanged pages are given as such when `use_unchanged`.
ImageStats write_next(const std::string& ckpt, uint64_t npages, const ChangedFn& changed,
                      bool use_unchanged, unsigned keep = 2) {
  auto w = ImageWriter::create_in_series(ckpt, {keep});
  uint64_t n = w.series_number();
  if (use_unchanged && n > 1 && w.base_number() != n - 1)
    throw std::runtime_error(fmt::format("checkpoint {}: base is not {}", n, n - 1));
  for (uint64_t i = 0; i < npages; ++i) {
    uint64_t addr = kStart + i * kPageSize;
    if (use_unchanged && n > 1 && !changed(n, i)) {
      w.add_unchanged(kPid, kStart, addr, 1);
    } else {
      Page p = content(n, i, changed);
      w.add_pages(kPid, kStart, addr, p.data(), 1);
    }
  }
  w.commit(checkpoint_of(npages));
  return w.stats();
}

void expect_content(ImageReader& r, uint64_t npages, const ChangedFn& changed) {
  ASSERT_TRUE(r.checkpoint().series_number);
  uint64_t n = *r.checkpoint().series_number;
  auto got = read_back(r);
  ASSERT_EQ(got.size(), npages);
  for (uint64_t i = 0; i < npages; ++i)
    ASSERT_EQ(got[kStart + i * kPageSize], content(n, i, changed))
        << "checkpoint " << n << " page " << i;
}

bool one_percent(uint64_t n, uint64_t i) { return (i + n) % 100 == 0; }

// ---- tests ----

TEST(Series, SecondCheckpointStoresOnlyChangedPages) {
  TempDir t;
  const std::string ckpt = t / "ckpt";
  constexpr uint64_t kPages = 1000;
  auto s1 = write_next(ckpt, kPages, one_percent, false);
  EXPECT_EQ(s1.unique_pages, kPages);
  EXPECT_EQ(s1.earlier_pages, 0u);

  // 2nd: every page given with its data; only the 10 changed ones are new.
  auto s2 = write_next(ckpt, kPages, one_percent, false);
  EXPECT_EQ(s2.pages, kPages);
  EXPECT_EQ(s2.unique_pages, 10u);
  EXPECT_EQ(s2.earlier_pages, kPages - 10);
  // Random pages are stored raw: one block of 10 pages, nothing else.
  EXPECT_EQ(file_size(ckpt + "/packs/2.pack"), 10 * kPageSize);
  EXPECT_EQ(s2.stored_bytes, 10 * kPageSize);
  EXPECT_EQ(s2.new_stored_bytes, file_size(ckpt + "/packs/2.pack") +
                                     file_size(ckpt + "/packs/2.idx"));

  // 3rd: unchanged pages given as such, without data.
  auto s3 = write_next(ckpt, kPages, one_percent, true);
  EXPECT_EQ(s3.unique_pages, 10u);
  EXPECT_EQ(s3.unchanged_pages, kPages - 10);
  EXPECT_EQ(file_size(ckpt + "/packs/3.pack"), 10 * kPageSize);

  EXPECT_EQ(series_latest(ckpt), 3u);
  for (uint64_t n : {1, 2, 3}) {
    if (n == 1) continue;  // collected (keep 2)
    auto r = ImageReader::open(fmt::format("{}/{}", ckpt, n));
    expect_content(r, kPages, one_percent);
    r.verify_all();
  }
  auto r = ImageReader::open(ckpt);
  EXPECT_EQ(r.checkpoint().series_number, 3u);
  EXPECT_EQ(r.checkpoint().changed_pages_by, "content-hash");
  EXPECT_EQ(r.stats().earlier_pages, kPages - 10);
  expect_content(r, kPages, one_percent);
}

TEST(Series, UnchangedPagesFoundByAddressAcrossSplitMappings) {
  TempDir t;
  const std::string ckpt = t / "ckpt";
  const uint64_t mid = kStart + 50 * kPageSize, end = kStart + 100 * kPageSize;
  {
    auto w = ImageWriter::create_in_series(ckpt);
    std::string e = error_of([&] { w.add_unchanged(kPid, kStart, kStart, 1); });
    EXPECT_NE(e.find("no previous checkpoint"), std::string::npos) << e;
    for (uint64_t i = 0; i < 100; ++i) {
      Page p = i % 7 == 0 ? Page(kPageSize, 0) : random_page(i);
      w.add_pages(kPid, kStart, kStart + i * kPageSize, p.data(), 1);
    }
    w.commit(checkpoint_with({{kStart, end}}));
  }
  {
    // The mapping was split in two; the second half is reported unchanged.
    auto w = ImageWriter::create_in_series(ckpt);
    EXPECT_EQ(w.series_number(), 2u);
    for (uint64_t i = 0; i < 50; ++i) {
      Page p = random_page(1000 + i);
      w.add_pages(kPid, kStart, kStart + i * kPageSize, p.data(), 1);
    }
    w.add_unchanged(kPid, mid, mid, 50);
    std::string e = error_of([&] { w.add_unchanged(kPid + 1, mid, mid, 1); });
    EXPECT_NE(e.find("pid 101 has no page"), std::string::npos) << e;
    e = error_of([&] { w.add_unchanged(kPid, mid, end, 1); });
    EXPECT_NE(e.find("has no page at"), std::string::npos) << e;
    w.commit(checkpoint_with({{kStart, mid}, {mid, end}}, "uffd-wp"));
    EXPECT_EQ(w.stats().unchanged_pages, 50u - 7u);  // 7 of them were zero pages
  }
  auto r = ImageReader::open(ckpt);
  EXPECT_EQ(r.checkpoint().changed_pages_by, "uffd-wp");
  auto got = read_back(r);
  ASSERT_EQ(got.size(), 100u);
  for (uint64_t i = 0; i < 100; ++i) {
    Page want = i < 50 ? random_page(1000 + i) : i % 7 == 0 ? Page{} : random_page(i);
    EXPECT_EQ(got[kStart + i * kPageSize], want) << i;
  }
  r.verify_all();
}

// A file kept with each checkpoint (dump --with-files) that has not changed
// since the checkpoint before keeps its pages there, under another id: the
// new checkpoint refers to them (add_earlier), a hole of the file stays a
// hole, and the base's manifest (with the file's recorded ctime) is what
// the dump compares the file with.
TEST(Series, FilePagesReferToTheBaseUnderAnotherId) {
  TempDir t;
  const std::string ckpt = t / "ckpt";
  const Page a = random_page(1), c = random_page(3), mem = random_page(9);
  GhostFile file;
  file.kind = GhostFile::Kind::File;
  file.path = "/scratch/job/restart.bin";
  file.size = 3 * kPageSize;  // its middle page a hole
  file.data_in_pages = true;
  file.put_back = true;
  file.ctime_ns = 1'700'000'000'123'456'789;
  {
    auto w = ImageWriter::create_in_series(ckpt);
    EXPECT_EQ(w.base_checkpoint(), nullptr);
    std::string e = error_of([&] { w.add_earlier(kFilePagesPid, 0, 0, 0, 1); });
    EXPECT_NE(e.find("no previous checkpoint"), std::string::npos) << e;
    w.add_pages(kPid, kStart, kStart, mem.data(), 1);
    file.id = 2;
    const uint64_t s = file_pages_start(2);
    w.add_pages(kFilePagesPid, s, s, a.data(), 1);
    w.add_pages(kFilePagesPid, s, s + 2 * kPageSize, c.data(), 1);
    Checkpoint cp = checkpoint_of(1);
    cp.temp_files = {file};
    w.commit(cp);
  }
  {
    auto w = ImageWriter::create_in_series(ckpt);
    ASSERT_NE(w.base_checkpoint(), nullptr);
    ASSERT_EQ(w.base_checkpoint()->temp_files.size(), 1u);
    EXPECT_EQ(w.base_checkpoint()->temp_files[0].ctime_ns, file.ctime_ns);
    EXPECT_EQ(w.base_checkpoint()->temp_files[0].id, 2u);
    w.add_unchanged(kPid, kStart, kStart, 1);
    file.id = 5;  // another file came before it this time
    const uint64_t s = file_pages_start(5);
    w.add_earlier(kFilePagesPid, s, s, file_pages_start(2), 3);
    Checkpoint cp = checkpoint_of(1);
    cp.temp_files = {file};
    w.commit(cp);
    EXPECT_EQ(w.stats().unique_pages, 0u);
    EXPECT_EQ(w.stats().unchanged_pages, 3u);  // the memory page and the file's two
  }
  auto r = ImageReader::open(ckpt);
  EXPECT_EQ(r.checkpoint().temp_files.at(0).ctime_ns, file.ctime_ns);
  std::map<uint64_t, Page> got;
  const uint64_t s = file_pages_start(5);
  r.for_each_run(kFilePagesPid, s, [&](const PageRun& run) {
    for (size_t i = 0; i < run.npages; ++i)
      got[run.addr + i * kPageSize] =
          run.zero() ? Page{} : Page(run.data + i * kPageSize, run.data + (i + 1) * kPageSize);
  });
  EXPECT_EQ(got[s], a);
  EXPECT_EQ(got[s + 2 * kPageSize], c);
  EXPECT_TRUE(got[s + kPageSize].empty());  // the hole: zero or not stored
  EXPECT_EQ(read_back(r).at(kStart), mem);
  r.verify_all();
}

TEST(Series, KeepTwoCollectsOnlyWhatNobodyUses) {
  TempDir t;
  const std::string ckpt = t / "ckpt";
  constexpr uint64_t kPages = 200;
  // Checkpoint 2 changes every page, 3 and 4 one percent of them.
  ChangedFn changed = [](uint64_t n, uint64_t i) { return n == 2 || one_percent(n, i); };
  write_next(ckpt, kPages, changed, true);
  write_next(ckpt, kPages, changed, true);
  EXPECT_TRUE(fs::exists(ckpt + "/1"));
  EXPECT_TRUE(fs::exists(ckpt + "/packs/1.pack"));
  write_next(ckpt, kPages, changed, true);
  // 1 is gone, and its pack with it: 2 and 3 use none of its pages.
  EXPECT_FALSE(fs::exists(ckpt + "/1"));
  EXPECT_FALSE(fs::exists(ckpt + "/packs/1.pack"));
  EXPECT_FALSE(fs::exists(ckpt + "/packs/1.idx"));
  write_next(ckpt, kPages, changed, true);
  // 2 is gone, but its pack holds most pages of 3 and 4: it stays.
  EXPECT_FALSE(fs::exists(ckpt + "/2"));
  EXPECT_TRUE(fs::exists(ckpt + "/packs/2.pack"));
  EXPECT_EQ(series_numbers(ckpt), (std::vector<uint64_t>{3, 4}));
  for (uint64_t n : {3, 4}) {
    auto r = ImageReader::open(fmt::format("{}/{}", ckpt, n));
    expect_content(r, kPages, changed);
    r.verify_all();
  }
  for (const auto& e : fs::directory_iterator(ckpt))
    EXPECT_EQ(e.path().filename().string().find(".tmp-"), std::string::npos) << e.path();

  auto list = list_series(ckpt);
  ASSERT_EQ(list.size(), 2u);
  EXPECT_EQ(list[0].number, 3u);
  EXPECT_FALSE(list[0].latest);
  EXPECT_TRUE(list[1].latest);
  EXPECT_TRUE(list[1].complete);
  EXPECT_EQ(list[1].pages, kPages);
  EXPECT_EQ(list[1].earlier_pages, kPages - 2);
  EXPECT_EQ(list[1].changed_pages_by, "content-hash");
  EXPECT_EQ(list[1].new_bytes,
            file_size(ckpt + "/packs/4.pack") + file_size(ckpt + "/packs/4.idx"));
  EXPECT_GT(list[1].referenced_bytes, list[1].new_bytes);
}

TEST(Series, DamagedNewestFallsBackWithWarning) {
  TempDir t;
  const std::string ckpt = t / "ckpt";
  constexpr uint64_t kPages = 100;
  for (int i = 0; i < 3; ++i) write_next(ckpt, kPages, one_percent, true, 3);

  // A flipped byte in the newest pagemap.
  {
    std::fstream f(ckpt + "/3/pagemap.bin.lz4", std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(20);
    f.put('\x5a');
  }
  testing::internal::CaptureStderr();
  auto r = ImageReader::open(ckpt);
  std::string err = testing::internal::GetCapturedStderr();
  EXPECT_EQ(r.checkpoint().series_number, 2u);
  EXPECT_NE(err.find("warning: checkpoint " + ckpt + "/3 is incomplete or damaged"),
            std::string::npos)
      << err;
  expect_content(r, kPages, one_percent);

  // Also without its pack: still 2.
  fs::remove(ckpt + "/packs/3.pack");
  testing::internal::CaptureStderr();
  EXPECT_EQ(ImageReader::open(ckpt).checkpoint().series_number, 2u);
  testing::internal::GetCapturedStderr();

  auto list = list_series(ckpt);
  ASSERT_EQ(list.size(), 3u);
  EXPECT_TRUE(list[0].complete && list[1].complete);
  EXPECT_FALSE(list[2].complete);
  EXPECT_TRUE(list[2].latest);
  EXPECT_NE(list[2].problem.find("3.pack"), std::string::npos) << list[2].problem;

  // Nothing good at all: a clear error.
  fs::remove(ckpt + "/1/manifest.json");
  fs::remove(ckpt + "/2/pagemap.bin.lz4");
  testing::internal::CaptureStderr();
  std::string e = error_of([&] { ImageReader::open(ckpt); });
  testing::internal::GetCapturedStderr();
  EXPECT_NE(e.find("holds no complete checkpoint"), std::string::npos) << e;
}

// A series begun by a snap of format version 6 (a header before each block
// of its pack, pagemap.bin uncompressed) goes on: the next checkpoint finds
// the old pack's pages by hash, stores its own in the layout of today, and
// both read back exactly (one image, two layouts).
TEST(Series, OldLayoutPackAndNewOneInOneCheckpoint) {
  TempDir t;
  const std::string ckpt = t / "ckpt";
  constexpr uint64_t kPages = 300;  // random: one raw block of 300 pages, five in version 6
  write_next(ckpt, kPages, one_percent, false);
  test_support::manifest_to_v6(
      ckpt + "/1",
      {{"1", test_support::pack_to_v6(ckpt + "/packs/1.pack", ckpt + "/packs/1.idx")}});
  EXPECT_EQ(file_size(ckpt + "/packs/1.pack"), kPages * kPageSize + 5 * 32);
  {
    auto r = ImageReader::open(ckpt);
    EXPECT_EQ(r.checkpoint().format_version, 6u);
    expect_content(r, kPages, one_percent);
    r.verify_all();
  }
  auto s2 = write_next(ckpt, kPages, one_percent, false);
  EXPECT_EQ(s2.earlier_pages, kPages - 3);  // found in the version 6 pack by hash
  EXPECT_EQ(s2.unique_pages, 3u);
  auto r = ImageReader::open(ckpt);
  EXPECT_EQ(r.checkpoint().series_number, 2u);
  EXPECT_EQ(r.checkpoint().format_version, kFormatVersion);
  expect_content(r, kPages, one_percent);
  r.verify_all();
}

TEST(Series, PlainImagesAndSingleCheckpointsStillRead) {
  TempDir t;
  {
    auto w = ImageWriter::create(t / "img", false);
    for (uint64_t i = 0; i < 10; ++i) {
      Page p = random_page(i % 5);
      w.add_pages(kPid, kStart, kStart + i * kPageSize, p.data(), 1);
    }
    w.commit(checkpoint_of(10));
  }
  EXPECT_TRUE(fs::exists(t / "img/pages.bin"));
  auto r = ImageReader::open(t / "img");
  EXPECT_FALSE(r.in_series());
  EXPECT_FALSE(r.checkpoint().series_number);
  EXPECT_EQ(r.stats().unique_pages, 5u);
  EXPECT_EQ(r.stats().duplicate_pages, 5u);
  auto got = read_back(r);
  for (uint64_t i = 0; i < 10; ++i) EXPECT_EQ(got[kStart + i * kPageSize], random_page(i % 5));
  r.verify_all();
  EXPECT_FALSE(is_series_dir(t / "img"));
  EXPECT_NE(error_of([&] { list_series(t / "img"); }).find("is not a checkpoint series"),
            std::string::npos);

  // A checkpoint of a series opened by its own path.
  write_next(t / "ckpt", 10, one_percent, false);
  auto c = ImageReader::open(t / "ckpt/1/");
  EXPECT_TRUE(c.in_series());
  EXPECT_EQ(c.checkpoint().series_number, 1u);
}

TEST(Series, SecondWriterRefused) {
  TempDir t;
  auto w = ImageWriter::create_in_series(t / "ckpt");
  std::string e = error_of([&] { ImageWriter::create_in_series(t / "ckpt"); });
  EXPECT_NE(e.find("lock"), std::string::npos) << e;
}

// A write error (a full disk; here a file size limit) in the 3rd checkpoint
// leaves latest and the previous checkpoints intact, and the next writer
// cleans up after it.
TEST(Series, WriteErrorLeavesLatestAndPreviousIntact) {
  TempDir t;
  const std::string ckpt = t / "ckpt";
  constexpr uint64_t kPages = 64;
  write_next(ckpt, kPages, one_percent, true);
  write_next(ckpt, kPages, one_percent, true);
  pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    signal(SIGXFSZ, SIG_IGN);
    struct rlimit rl = {64 << 10, 64 << 10};
    setrlimit(RLIMIT_FSIZE, &rl);
    int rc = 1;
    try {
      write_next(ckpt, 300, [](uint64_t, uint64_t) { return true; }, false);
    } catch (const SysError& e) {
      rc = e.err() == EFBIG && std::string(e.what()).find("3.pack") != std::string::npos ? 0 : 2;
    } catch (...) {
      rc = 3;
    }
    _exit(rc);
  }
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
  EXPECT_EQ(series_latest(ckpt), 2u);
  EXPECT_EQ(series_numbers(ckpt), (std::vector<uint64_t>{1, 2}));
  EXPECT_FALSE(fs::exists(ckpt + "/packs/3.pack"));
  for (uint64_t n : {1, 2}) {
    auto r = ImageReader::open(fmt::format("{}/{}", ckpt, n));
    expect_content(r, kPages, one_percent);
    r.verify_all();
  }
  auto r = ImageReader::open(ckpt);
  EXPECT_EQ(r.checkpoint().series_number, 2u);
  write_next(ckpt, kPages, one_percent, true);
  EXPECT_EQ(series_latest(ckpt), 3u);
}

// SIGKILL a writer at random instants, in the middle of writing, committing
// or collecting: `latest` always opens, without falling back, and reads back
// exactly the pages of the checkpoint it names.
TEST(Series, KilledWriterNeverBreaksLatest) {
  TempDir t;
  const std::string ckpt = t / "ckpt";
  constexpr uint64_t kPages = 300;
  ChangedFn changed = [](uint64_t n, uint64_t i) { return (i + n) % 8 == 0; };
  write_next(ckpt, kPages, changed, true);
  std::mt19937_64 rng(testing::UnitTest::GetInstance()->random_seed());
  constexpr int kKills = 25;
  uint64_t last = 1;
  int advanced = 0;
  for (int k = 0; k < kKills; ++k) {
    pid_t child = fork();
    ASSERT_GE(child, 0);
    if (child == 0) {
      try {
        for (;;) write_next(ckpt, kPages, changed, (rng() & 1) != 0);  // until killed
      } catch (const std::exception& e) {
        std::fprintf(stderr, "writer: %s\n", e.what());
      }
      _exit(2);
    }
    // Mostly within a checkpoint's first 60 ms; every fifth writer gets up
    // to 400 ms, so that some checkpoints complete on a busy machine too.
    std::this_thread::sleep_for(std::chrono::microseconds(rng() % (k % 5 == 4 ? 400000 : 60000)));
    ASSERT_EQ(::kill(child, SIGKILL), 0);
    int status = 0;
    ASSERT_EQ(waitpid(child, &status, 0), child);
    ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL)
        << "writer failed, status " << status;

    testing::internal::CaptureStderr();
    auto r = ImageReader::open(ckpt);
    std::string err = testing::internal::GetCapturedStderr();
    EXPECT_EQ(err, "") << "after kill " << k;
    ASSERT_TRUE(r.checkpoint().series_number);
    uint64_t n = *r.checkpoint().series_number;
    EXPECT_EQ(series_latest(ckpt), n);
    EXPECT_GE(n, last);
    advanced += n > last;
    last = n;
    expect_content(r, kPages, changed);
    r.verify_all();
  }
  EXPECT_GT(advanced, 0);
  // The next writer removes what the killed ones left.
  write_next(ckpt, kPages, changed, true);
  for (const auto& e : fs::directory_iterator(ckpt))
    EXPECT_EQ(e.path().filename().string().find(".tmp-"), std::string::npos) << e.path();
  auto numbers = series_numbers(ckpt);
  EXPECT_EQ(numbers.size(), 2u);
  std::set<std::string> packs;
  for (const auto& e : fs::directory_iterator(ckpt + "/packs"))
    packs.insert(e.path().stem().string());
  for (const auto& p : packs) EXPECT_LE(std::stoull(p), numbers.back()) << p;
  auto r = ImageReader::open(ckpt);
  expect_content(r, kPages, changed);
}

}  // namespace
}  // namespace snap::image
