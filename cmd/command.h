// The snap subcommands. Each lives in its own file (cmd/NAME.cc) and is
// listed once in cmd/main.cc.
#pragma once

#include <cstdint>
#include <cxxopts.hpp>
#include <string>
#include <vector>

#include "base/error.h"
#include "image/image_writer.h"

namespace snap::cmd {

// Exit codes scripts can rely on (also in README.md).
enum ExitCode : int {
  kExitOk = 0,
  kExitFailure = 1,  // the operation failed; the message says why
  kExitUsage = 2,    // bad command line
};

// A bad command line: printed with a pointer to `snap help CMD`, exit 2.
class UsageError : public Error {
 public:
  using Error::Error;
};

struct Command {
  const char* name;
  const char* summary;
  // Builds the option parser; used both to parse and for `snap help NAME`.
  cxxopts::Options (*options)();
  int (*run)(const cxxopts::ParseResult& args);
};

const std::vector<Command>& all_commands();

// What followed a bare "--" on the command line (snap run's program and its
// arguments), word for word; cxxopts never sees it.
const std::vector<std::string>& words_after_dashes();

// A size as options take it: "64M", "1G", "512k", "4096" (bytes). Throws
// UsageError naming `option`.
uint64_t parse_size(const std::string& option, const std::string& text);

// Paths given to `option` (--with-files), absolute (against the current
// directory) and without a trailing slash. Throws UsageError on an empty one.
std::vector<std::string> absolute_paths(const std::string& option,
                                        const std::vector<std::string>& paths);

// --compress: "auto" or "always" (image::Compression). Throws UsageError.
image::Compression parse_compression(const std::string& text);

// Parses argv for `c`, turning cxxopts errors into UsageError.
cxxopts::ParseResult parse_or_usage(const Command& c, int argc, char** argv);

// Declared by each cmd/NAME.cc.
extern const Command kCheck;
extern const Command kCheckpoint;
extern const Command kDump;
extern const Command kInfo;
extern const Command kRestore;
extern const Command kRun;
extern const Command kSlurm;
extern const Command kWatch;

}  // namespace snap::cmd
