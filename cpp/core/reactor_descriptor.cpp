#include "reactor_descriptor.hpp"

#include <dirent.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <stdexcept>
#include <string>
#include <system_error>

namespace baseplate {
namespace {

bool is_epoll(int fd) {
  char path[64], target[64];
  std::snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
  ssize_t n = ::readlink(path, target, sizeof target - 1);
  if (n <= 0) return false;
  target[n] = '\0';
  return std::strcmp(target, "anon_inode:[eventpoll]") == 0;
}

/// Whether `probe` is in the interest list of epoll instance `epfd`.
bool watches(int epfd, int probe) {
  std::ifstream info("/proc/self/fdinfo/" + std::to_string(epfd));
  std::string line;
  while (std::getline(info, line)) {
    int tfd = -1;
    if (std::sscanf(line.c_str(), "tfd: %d", &tfd) == 1 && tfd == probe) return true;
  }
  return false;
}

}  // namespace

int reactor_descriptor(int probe_fd) {
  int found = -1;
  if (DIR* dir = ::opendir("/proc/self/fd")) {
    while (dirent* e = ::readdir(dir)) {
      char* end = nullptr;
      long fd = std::strtol(e->d_name, &end, 10);
      if (end == e->d_name || *end != '\0') continue;
      if (static_cast<int>(fd) == ::dirfd(dir)) continue;
      if (is_epoll(static_cast<int>(fd)) && watches(static_cast<int>(fd), probe_fd)) {
        found = static_cast<int>(fd);
        break;
      }
    }
    ::closedir(dir);
  }
  if (found < 0)
    throw std::runtime_error(
        "io_threads = 0: cannot find the I/O loop's epoll descriptor (is /proc mounted?)");
  return found;
}

}  // namespace baseplate
