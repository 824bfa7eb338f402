#include "tracer/net_lock.h"

#include <dlfcn.h>
#include <fmt/core.h>

#include <memory>
#include <type_traits>

#include "base/error.h"
#include "base/log.h"
#include "tracer/tcp_repair.h"

namespace snap::netlock {

namespace {

// libnftables.so.1's entry points snap uses (its stable interface, as
// <nftables/libnftables.h> declares them).
struct nft_ctx;
struct Nft {
  nft_ctx* (*ctx_new)(uint32_t flags) = nullptr;
  void (*ctx_free)(nft_ctx*) = nullptr;
  int (*buffer_error)(nft_ctx*) = nullptr;
  const char* (*error_buffer)(nft_ctx*) = nullptr;
  int (*run)(nft_ctx*, const char* commands) = nullptr;
  std::string missing;  // why it could not be loaded, empty when it was
};

const Nft& nft() {
  static const Nft lib = [] {
    Nft n;
    void* h = ::dlopen("libnftables.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!h) {
      const char* e = ::dlerror();
      n.missing = e ? e : "libnftables.so.1 not found";
      return n;
    }
    auto sym = [&](auto& fn, const char* name) {
      fn = reinterpret_cast<std::remove_reference_t<decltype(fn)>>(::dlsym(h, name));
      if (!fn && n.missing.empty()) n.missing = fmt::format("libnftables.so.1 has no {}", name);
    };
    sym(n.ctx_new, "nft_ctx_new");
    sym(n.ctx_free, "nft_ctx_free");
    sym(n.buffer_error, "nft_ctx_buffer_error");
    sym(n.error_buffer, "nft_ctx_get_error_buffer");
    sym(n.run, "nft_run_cmd_from_buffer");
    return n;
  }();
  return lib;
}

// Runs nft commands; "" when they succeeded, else nf_tables' error text.
std::string run(const std::string& commands) {
  const Nft& n = nft();
  if (!n.missing.empty())
    throw Error(fmt::format("nf_tables: {}", n.missing),
                "install libnftables (Debian: libnftables1, part of nftables)");
  std::unique_ptr<nft_ctx, void (*)(nft_ctx*)> ctx(n.ctx_new(0), n.ctx_free);
  if (!ctx) throw Error("nf_tables: nft_ctx_new failed");
  n.buffer_error(ctx.get());
  if (n.run(ctx.get(), commands.c_str()) == 0) return {};
  std::string err = n.error_buffer(ctx.get()) ? n.error_buffer(ctx.get()) : "";
  // Its message quotes the command and underlines it: the first line says it.
  if (auto nl = err.find('\n'); nl != std::string::npos) err.resize(nl);
  return err.empty() ? "failed" : err;
}

}  // namespace

std::string drop_rule(const image::InetSocket& s) {
  const std::string peer = unmapped_address(s.peer), local = unmapped_address(s.local);
  const char* ip = peer.find(':') == std::string::npos ? "ip" : "ip6";
  return fmt::format("{0} saddr {1} {0} daddr {2} tcp sport {3} tcp dport {4} drop", ip, peer,
                     local, s.peer_port, s.local_port);
}

NetworkLock NetworkLock::take(const std::string& name,
                              const std::vector<const image::InetSocket*>& connections) {
  NetworkLock lock;
  if (connections.empty()) return lock;
  // One batch: the kernel applies all of it or nothing. Priority -150
  // (mangle's): before the filter chains a firewall may have (0), which
  // could accept the packets first.
  std::string cmds = fmt::format("add table inet {0}\n"
                                 "add chain inet {0} peers {{ type filter hook input priority -150; "
                                 "policy accept; }}\n",
                                 name);
  for (const auto* s : connections) cmds += fmt::format("add rule inet {} peers {}\n", name, drop_rule(*s));
  if (std::string err = run(cmds); !err.empty())
    throw Error(fmt::format("cannot block what the peers of the job's {} TCP connection(s) send "
                            "while it is down (nf_tables table {}: {})",
                            connections.size(), name, err),
                "without that, a peer that sends before the restore resets its connection; the "
                "job runs on: dump it without --kill, or once those connections are closed");
  lock.name_ = name;
  vlog("network lock {}: what the peers of {} TCP connection(s) send is dropped until the restore",
       name, connections.size());
  return lock;
}

NetworkLock& NetworkLock::operator=(NetworkLock&& o) noexcept {
  if (this != &o) {
    drop();
    name_ = std::exchange(o.name_, {});
  }
  return *this;
}

NetworkLock::~NetworkLock() { drop(); }

void NetworkLock::drop() noexcept {
  if (name_.empty()) return;
  try {
    release(std::exchange(name_, {}));
  } catch (const std::exception& e) {
    warn("{}", e.what());
  }
}

void release(const std::string& name) {
  if (!nft().missing.empty()) {  // then snap took no lock on this machine either
    warn("network lock {} not looked for: nf_tables: {}", name, nft().missing);
    return;
  }
  std::string err = run(fmt::format("delete table inet {}\n", name));
  if (err.empty()) {
    vlog("network lock {} removed", name);
    return;
  }
  if (err.find("No such file or directory") != std::string::npos) return;  // not on this machine
  throw Error(fmt::format("cannot remove network lock {} (nf_tables: {}): the TCP connections' "
                          "peers are still not heard",
                          name, err),
              fmt::format("remove it as root: nft delete table inet {}", name));
}

}  // namespace snap::netlock
