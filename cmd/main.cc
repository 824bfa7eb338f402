// snap: transparent checkpoint/restore for Linux process trees.
// This file dispatches to the subcommands and is the one place where errors
// reach the user.
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>

#include "base/error.h"
#include "base/heap.h"
#include "base/log.h"
#include "cmd/command.h"

namespace snap::cmd {

const std::vector<Command>& all_commands() {
  static const std::vector<Command> commands = {kCheck,      kDump,  kInfo,       kRestore,
                                                kRun,        kSlurm, kCheckpoint, kWatch};
  return commands;
}

cxxopts::ParseResult parse_or_usage(const Command& c, int argc, char** argv) {
  try {
    auto opts = c.options();
    return opts.parse(argc, argv);
  } catch (const cxxopts::exceptions::exception& e) {
    throw UsageError(e.what());
  }
}

namespace {

const Command* find_command(const std::string& name) {
  for (const auto& c : all_commands())
    if (name == c.name) return &c;
  return nullptr;
}

void print_overview(FILE* out) {
  std::fprintf(out,
               "snap %s: checkpoint and restore running Linux processes\n\n"
               "Usage: snap COMMAND [OPTIONS]\n\nCommands:\n",
               SNAP_VERSION);
  for (const auto& c : all_commands()) std::fprintf(out, "  %-10s %s\n", c.name, c.summary);
  std::fprintf(out, "  %-10s %s\n", "help", "show help for a command: snap help COMMAND");
  std::fprintf(out,
               "\nExit codes: 0 success, 1 the operation failed (the message says why),\n"
               "2 bad command line.\n");
}

int run_help(int argc, char** argv) {
  if (argc < 3) {
    print_overview(stdout);
    return kExitOk;
  }
  const Command* c = find_command(argv[2]);
  if (!c) throw UsageError(std::string("unknown command '") + argv[2] + "'");
  std::fputs(c->options().help().c_str(), stdout);
  return kExitOk;
}

std::vector<std::string> g_after_dashes;

int dispatch(int argc, char** argv) {
  if (argc < 2) {
    print_overview(stderr);
    return kExitUsage;
  }
  std::string name = argv[1];
  if (name == "--version" || name == "version") {
    std::printf("snap %s\n", SNAP_VERSION);
    return kExitOk;
  }
  if (name == "--help" || name == "-h" || name == "help") return run_help(argc, argv);
  const Command* c = find_command(name);
  if (!c) throw UsageError("unknown command '" + name + "'");
  // cxxopts sees "snap-NAME ARGS..." up to a bare "--".
  int nopts = argc;
  for (int i = 2; i < argc; i++)
    if (std::string_view(argv[i]) == "--") {
      nopts = i;
      g_after_dashes.assign(argv + i + 1, argv + argc);
      break;
    }
  auto args = parse_or_usage(*c, nopts - 1, argv + 1);
  if (args.count("help")) {
    std::fputs(c->options().help().c_str(), stdout);
    return kExitOk;
  }
  if (args.count("verbose")) g_verbosity = static_cast<int>(args.count("verbose"));
  return c->run(args);
}

}  // namespace

const std::vector<std::string>& words_after_dashes() { return g_after_dashes; }

uint64_t parse_size(const std::string& option, const std::string& text) {
  size_t used = 0;
  unsigned long long n = 0;
  try {
    n = std::stoull(text, &used);
  } catch (const std::exception&) {
    throw UsageError(option + ": not a size: " + text);
  }
  std::string unit = text.substr(used);
  int shift = 0;
  if (unit == "" || unit == "B" || unit == "b") shift = 0;
  else if (unit == "k" || unit == "K" || unit == "KiB") shift = 10;
  else if (unit == "m" || unit == "M" || unit == "MiB") shift = 20;
  else if (unit == "g" || unit == "G" || unit == "GiB") shift = 30;
  else if (unit == "t" || unit == "T" || unit == "TiB") shift = 40;
  else throw UsageError(option + ": unknown unit in " + text + " (use k, M, G or T)");
  if (shift && n > (~0ull >> shift)) throw UsageError(option + ": too large: " + text);
  return static_cast<uint64_t>(n) << shift;
}

std::vector<std::string> absolute_paths(const std::string& option,
                                        const std::vector<std::string>& paths) {
  std::vector<std::string> out;
  for (const auto& p : paths) {
    if (p.empty()) throw UsageError(option + ": an empty path");
    std::string a = std::filesystem::absolute(p).lexically_normal().string();
    while (a.size() > 1 && a.back() == '/') a.pop_back();
    out.push_back(a);
  }
  return out;
}

image::Compression parse_compression(const std::string& text) {
  if (text == "auto") return image::Compression::kAuto;
  if (text == "always") return image::Compression::kAlways;
  throw UsageError("--compress: '" + text + "': use auto or always");
}

}  // namespace snap::cmd

int main(int argc, char** argv) {
  using namespace snap;
  keep_freed_heap_mapped();
  std::string sub = argc > 1 ? argv[1] : "";
  std::string prefix = sub.empty() || sub[0] == '-' ? "snap" : "snap " + sub;
  try {
    return cmd::dispatch(argc, argv);
  } catch (const cmd::UsageError& e) {
    std::fprintf(stderr, "%s: %s\n", prefix.c_str(), e.what());
    std::fprintf(stderr, "Try 'snap help%s' for usage.\n",
                 cmd::find_command(sub) ? (" " + sub).c_str() : "");
    return cmd::kExitUsage;
  } catch (const Error& e) {
    std::fprintf(stderr, "%s: error: %s\n", prefix.c_str(), e.what());
    if (!e.hint().empty()) std::fprintf(stderr, "  hint: %s\n", e.hint().c_str());
    return cmd::kExitFailure;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s: internal error: %s\n", prefix.c_str(), e.what());
    return cmd::kExitFailure;
  }
}
