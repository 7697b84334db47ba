#pragma once
/// What the core tells an app about one HTTP request: its head. The body is
/// read through the exchange, so an upload of any size is never held whole.
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace baseplate::http {

struct request {
  /// Method as sent (Beast validates it as a token).
  std::string method;
  /// Request target as sent: path and query, still percent-encoded.
  std::string target;
  /// 10 for HTTP/1.0, 11 for HTTP/1.1.
  unsigned version = 11;
  /// Header fields in arrival order, names as sent.
  std::vector<std::pair<std::string, std::string>> headers;
  /// Content-Length when the request declared one.
  std::optional<std::uint64_t> content_length;
  /// True when the body is sent with chunked transfer coding.
  bool chunked = false;
  /// True when the client waits for "100 Continue" before sending the body.
  bool expect_continue = false;
  /// Peer and local addresses; empty host for UNIX sockets.
  std::string remote_host;
  std::uint16_t remote_port = 0;
  std::string local_host;
  std::uint16_t local_port = 0;
  /// From X-Trace / X-Span, else W3C traceparent; empty when absent.
  std::string trace_id;
  std::string span_id;

  bool has_body() const { return chunked || (content_length && *content_length > 0); }
  bool is_head() const { return method == "HEAD"; }
};

}  // namespace baseplate::http
