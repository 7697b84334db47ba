#pragma once
/// Every rule about what the server sends, in one pure object: a response
/// part in, the bytes to write out (head, body, chunk framing). No sockets:
/// the connection writes what it gets, the fuzzer and the conformance test
/// read it.
///
/// The writer alone decides the framing:
/// - HEAD, 1xx, 204 and 304 get no body. A HEAD reply keeps the app's
///   Content-Length, or gets the length of a whole body the app produced;
///   an empty or streamed HEAD reply claims no length at all.
/// - Else the app's Content-Length, or one computed for a body given whole
///   (one part, last), or chunked (HTTP/1.1), or close-delimited (HTTP/1.0).
/// - The app's Transfer-Encoding is dropped (the server frames), and so is
///   its Connection header; "Connection: close" from the app closes the
///   connection after the response (no later pipelined request is read).
///   1xx and 204 replies carry no Content-Length.
/// - Date is added (formatted once a second per thread) unless the app set
///   one; the app's reason phrase is kept as given, an empty one included.
#include <baseplate/http/response.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace baseplate::http {

/// Returns an error text if a name is not an RFC 9110 token.
std::optional<std::string> check_field_name(std::string_view name);
/// Returns an error text if a value holds CR, LF, NUL or another control
/// character (header injection).
std::optional<std::string> check_field_value(std::string_view value);

/// The standard reason phrase of a status code, empty when it has none.
std::string_view reason_phrase(unsigned status);

/// True for statuses that never carry a body (1xx, 204, 304).
inline bool status_has_no_body(unsigned status) { return status < 200 || status == 204 || status == 304; }

/// The current time as an IMF-fixdate (RFC 9110 section 5.6.7), formatted
/// at most once a second on each thread.
std::string_view http_date();

class response_writer {
 public:
  /// What frame() made of a part.
  enum class outcome {
    ok,        ///< send head(), body(), tail()
    replaced,  ///< the app's head was invalid (why()): a 500 is sent instead and the connection closes
    refused,   ///< a second head, or body bytes before any head (why()): close the connection
  };

  /// Starts the response to a request. `keep_alive`: what the request allows.
  void begin(unsigned version, bool head_request, bool keep_alive);

  /// Frames one part. `close_after`: the connection cannot carry another
  /// request after this response (the server stops, or the request body
  /// was not read whole): announced in the head. The returned views stay
  /// valid until the next call; body() refers to the part's bytes.
  outcome frame(const response_part& part, bool close_after = false);

  std::string_view head() const { return head_; }
  std::string_view body() const { return body_; }
  std::string_view tail() const { return tail_; }
  std::string_view why() const { return why_; }

  /// For sendfile: how many of `count` file bytes may go out as body bytes
  /// now (0 for a reply without a body); account() records what was sent.
  std::optional<std::uint64_t> file_allowance(std::uint64_t count) const;
  void account(std::uint64_t sent);

  bool head_sent() const { return head_sent_; }
  /// The last part was framed.
  bool finished() const { return finished_; }
  /// The connection may read another request after this response.
  bool keep_alive() const { return keep_alive_; }
  unsigned status() const { return status_; }
  /// Body bytes framed so far (access log).
  std::uint64_t body_bytes() const { return body_bytes_; }

  /// The server's own reply for `status` (400, 413, 500, 503, ...): plain
  /// text, its reason phrase as body, and the connection closed after it.
  static response_part stock_reply(unsigned status);

 private:
  enum class body_mode { none, length, chunked, until_close };

  outcome frame_head(const response_head& head, const response_part& part, bool close_after);

  unsigned version_ = 11;
  bool head_request_ = false;
  bool keep_alive_ = true;
  bool head_sent_ = false;
  bool finished_ = false;
  body_mode mode_ = body_mode::none;
  std::uint64_t remaining_ = 0;  ///< bytes still owed under Content-Length
  unsigned status_ = 0;
  std::uint64_t body_bytes_ = 0;
  std::string head_;  ///< status line and headers, or a chunk-size line
  std::string tail_;  ///< chunk end and the last chunk
  std::string_view body_;
  std::string why_;
};

}  // namespace baseplate::http
