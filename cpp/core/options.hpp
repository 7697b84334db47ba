#pragma once
/// The core's tuning options. The Python package parses them from
/// `[server:NAME]` (see docs/configuration.md); defaults live here once.
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>

namespace baseplate {

struct server_options {
  /// Threads that run the network I/O (each owns an io_context).
  unsigned io_threads = 1;
  /// Simultaneous client connections; 0 = unlimited (baseplate.py's default).
  std::size_t max_concurrency = 0;
  /// How long a graceful stop waits for in-flight requests; 0 = stop at once.
  std::chrono::milliseconds stop_timeout{0};
  /// Time allowed to receive a whole request header section.
  std::chrono::milliseconds header_timeout{10'000};
  /// Time a keep-alive connection may sit idle between requests.
  std::chrono::milliseconds keepalive_timeout{60'000};
  /// Time one read of a request body, or one write of a response, may take.
  std::chrono::milliseconds io_timeout{60'000};
  /// Largest request header section (request line included), bytes.
  std::uint32_t max_header_size = 64 * 1024;
  /// Longest request line (method, target, version), bytes; 0 = only
  /// max_header_size applies. Over it: 414.
  std::size_t max_request_line = 8 * 1024;
  /// Most header fields in one request; 0 = unlimited. Over it: 431.
  std::size_t max_header_count = 100;
  /// Most requests (HTTP) and calls (Thrift) handed to the app and not yet
  /// answered, queued or running, across all connections; 0 = unlimited.
  /// Over it: 503, or a TApplicationException.
  std::size_t max_pending_requests = 1024;
  /// The count max_pending_requests bounds, shared by the connections of
  /// one server (copies of these options share it).
  std::shared_ptr<std::atomic<std::size_t>> pending_requests = std::make_shared<std::atomic<std::size_t>>(0);
  /// Largest request body, bytes; 0 = unlimited.
  std::uint64_t max_body_size = 1024ull * 1024 * 1024;
  /// Bodies up to this size are read before the app is called, so the app
  /// never waits for the network for small uploads.
  std::size_t body_preread = 64 * 1024;
  /// One INFO line per request on logger baseplate_serve.access.
  bool access_log = false;
  /// Largest Thrift message (frame), bytes.
  std::size_t max_frame_size = 16 * 1024 * 1024;
};

}  // namespace baseplate
