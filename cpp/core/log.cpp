#include "log.hpp"

#include <atomic>
#include <cstdio>
#include <memory>
#include <mutex>

namespace baseplate::log {
namespace {
std::mutex sink_mutex;
std::shared_ptr<sink> current_sink;
std::atomic<int> threshold{static_cast<int>(level::info)};
}  // namespace

void set_sink(sink s) {
  std::lock_guard<std::mutex> lk(sink_mutex);
  current_sink = s ? std::make_shared<sink>(std::move(s)) : nullptr;
}

void set_threshold(level l) { threshold.store(static_cast<int>(l), std::memory_order_relaxed); }

bool enabled(level l) { return static_cast<int>(l) >= threshold.load(std::memory_order_relaxed); }

void write(level l, std::string_view logger, std::string message) {
  if (!enabled(l)) return;
  std::shared_ptr<sink> s;
  {
    std::lock_guard<std::mutex> lk(sink_mutex);
    s = current_sink;
  }
  if (s) {
    (*s)(l, logger, std::move(message));
  } else {
    std::fprintf(stderr, "%d %.*s %s\n", static_cast<int>(l), static_cast<int>(logger.size()), logger.data(),
                 message.c_str());
  }
}

}  // namespace baseplate::log
