// Fds on namespaces (open("/proc/self/ns/net") and the like): their link
// reads "net:[4026531833]", no path leads back to them.
#pragma once

#include <optional>
#include <string>

namespace snap::restore {

// The namespace kind of such a link ("net", "pid", ...), or nullopt when
// `link` is not one.
std::optional<std::string> namespace_kind(const std::string& link);

// Opens the namespace `link` names, through snap's own /proc/self/ns (the
// restored job runs in snap's namespaces but for --isolate's user and pid
// ones). Throws, naming `what`, when snap is in another namespace of that
// kind: the job would see a different one.
int open_namespace(const std::string& link, int flags, const std::string& what);

}  // namespace snap::restore
