// A network lock for TCP connections whose job is killed after a dump
// (snap dump --kill --tcp-established) while their peer, outside the image,
// lives on. A socket closed in repair mode vanishes without a FIN or RST,
// but the next segment its peer sends (a retransmission, a window probe,
// new data) finds no socket, the kernel answers with a reset and the peer's
// end of the connection is gone before the job is restored. The lock is an
// nf_tables table with an input rule per connection that drops what the
// peer sends to it; the dump takes it before the job dies and records its
// name in the image; the restore removes it once the connections exist
// again. It needs CAP_NET_ADMIN, as TCP repair mode does, and libnftables
// (loaded when first needed: snap runs without it where no lock is asked).
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "image/checkpoint.h"

namespace snap::netlock {

class NetworkLock {
 public:
  NetworkLock() = default;
  // Table `name` (letters, digits, '_'), with a rule dropping every packet
  // the peer of each of `connections` sends to it. Throws Error (with
  // nf_tables' own words) when the table cannot be made.
  static NetworkLock take(const std::string& name,
                          const std::vector<const image::InetSocket*>& connections);
  // Removes the table, unless kept.
  ~NetworkLock();
  NetworkLock(NetworkLock&& o) noexcept : name_(std::exchange(o.name_, {})) {}
  NetworkLock& operator=(NetworkLock&& o) noexcept;
  NetworkLock(const NetworkLock&) = delete;
  NetworkLock& operator=(const NetworkLock&) = delete;

  // Leaves the table in place for the restore (the job is killed).
  void keep() { name_.clear(); }
  bool held() const { return !name_.empty(); }
  const std::string& name() const { return name_; }

 private:
  void drop() noexcept;  // removes the table now, if held (a failure is a warning)
  std::string name_;
};

// The nf_tables rule text that drops what the peer of `s` sends to it.
std::string drop_rule(const image::InetSocket& s);

// Removes table `name` if it is there (a restore on another machine finds
// none). Throws Error when it is there and cannot be removed.
void release(const std::string& name);

}  // namespace snap::netlock
