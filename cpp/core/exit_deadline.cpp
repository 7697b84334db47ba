#include "exit_deadline.hpp"

#include <unistd.h>

#include <condition_variable>
#include <mutex>
#include <optional>
#include <thread>

namespace baseplate::exit_deadline {
namespace {

struct state {
  std::mutex m;
  std::condition_variable cv;
  std::optional<std::chrono::steady_clock::time_point> at;
  std::string line;
  std::function<std::string()> detail;
  bool thread_started = false;
};

// Leaked on purpose: the watcher thread may outlive static destruction.
state& st() {
  static state* s = new state;
  return *s;
}

void write_all(int fd, const std::string& s) {
  const char* p = s.data();
  std::size_t left = s.size();
  while (left) {
    ssize_t n = ::write(fd, p, left);
    if (n < 0) {
      if (errno == EINTR) continue;
      return;
    }
    p += n;
    left -= static_cast<std::size_t>(n);
  }
}

[[noreturn]] void expire(std::string line, const std::function<std::string()>& detail) {
  if (auto pos = line.find("{detail}"); pos != std::string::npos) line.replace(pos, 8, detail ? detail() : "");
  if (line.empty() || line.back() != '\n') line += '\n';
  write_all(2, line);
  // _exit, not exit: atexit handlers and static destructors could block on
  // the very thing that overran (the GIL, a worker, a lock).
  ::_exit(1);
}

void watch() {
  state& s = st();
  std::unique_lock<std::mutex> lk(s.m);
  for (;;) {
    if (!s.at) {
      s.cv.wait(lk);
      continue;
    }
    auto at = *s.at;
    if (s.cv.wait_until(lk, at) == std::cv_status::timeout && s.at && *s.at <= std::chrono::steady_clock::now())
      expire(s.line, s.detail);
  }
}

}  // namespace

void arm(std::chrono::milliseconds after, std::string line, std::function<std::string()> detail) {
  state& s = st();
  std::lock_guard<std::mutex> lk(s.m);
  s.at = std::chrono::steady_clock::now() + after;
  s.line = std::move(line);
  s.detail = std::move(detail);
  if (!s.thread_started) {
    std::thread(watch).detach();
    s.thread_started = true;
  }
  s.cv.notify_all();
}

void disarm() {
  state& s = st();
  std::lock_guard<std::mutex> lk(s.m);
  s.at.reset();
  s.detail = nullptr;
  s.cv.notify_all();
}

bool armed() {
  state& s = st();
  std::lock_guard<std::mutex> lk(s.m);
  return s.at.has_value();
}

}  // namespace baseplate::exit_deadline
