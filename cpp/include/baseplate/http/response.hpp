#pragma once
/// What an HTTP app answers: a status line and headers, then body pieces.
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace baseplate::http {

/// Status and headers of a response, in the order they go on the wire.
struct response_head {
  /// The status code (100-999).
  unsigned status = 200;
  /// Reason phrase as sent; unset = the standard one for `status` (empty
  /// for a code that has none). An empty phrase stays empty.
  std::optional<std::string> reason;
  /// Header fields. The server frames the body itself: it keeps an app's
  /// Content-Length, drops an app's Transfer-Encoding and Connection
  /// (honouring "Connection: close"), and adds Content-Length,
  /// Transfer-Encoding, Connection and Date as the response needs.
  std::vector<std::pair<std::string, std::string>> headers;
  /// Set by a sender that already checked the reason phrase and every
  /// header name and value (the WSGI bridge does, in start_response, so the
  /// app sees the error): the server does not scan them a second time.
  bool fields_checked = false;
};

/// One piece of a response: the head (first piece only), body bytes, and
/// whether it is the last piece. A first piece that is also the last gets
/// a Content-Length; otherwise the body is chunked (HTTP/1.1) or
/// close-delimited (HTTP/1.0) unless the app set a Content-Length.
struct response_part {
  /// Set on the first piece only.
  std::optional<response_head> head;
  /// Body bytes of this piece, owned by the part (dropped for HEAD requests).
  std::string body;
  /// Body bytes the sender keeps alive until the write's handler has run,
  /// used instead of `body` when set (data() != nullptr): the bytes are
  /// written from where they are, never copied. Needs a write handler.
  std::string_view body_ref;
  /// True on the final piece.
  bool last = false;

  /// The body bytes to send: body_ref when set, else body.
  std::string_view data() const { return body_ref.data() ? body_ref : std::string_view(body); }
};

}  // namespace baseplate::http
