#pragma once
/// What an HTTP app answers: a status line and headers, then body pieces.
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace baseplate::http {

/// Status and headers of a response, in the order they go on the wire.
struct response_head {
  /// The status code (100-999).
  unsigned status = 200;
  /// Reason phrase; empty = the standard one for `status`.
  std::string reason;
  /// Header fields; the server adds Content-Length, Transfer-Encoding and
  /// Connection as the framing requires when the app did not set them.
  std::vector<std::pair<std::string, std::string>> headers;
};

/// One piece of a response: the head (first piece only), body bytes, and
/// whether it is the last piece. A first piece that is also the last gets
/// a Content-Length; otherwise the body is chunked (HTTP/1.1) or
/// close-delimited (HTTP/1.0) unless the app set a Content-Length.
struct response_part {
  /// Set on the first piece only.
  std::optional<response_head> head;
  /// Body bytes of this piece (dropped for HEAD requests).
  std::string body;
  /// True on the final piece.
  bool last = false;
};

}  // namespace baseplate::http
