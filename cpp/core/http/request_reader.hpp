#pragma once
/// Every rule about what a client may send, in one pure object: bytes in,
/// a request head, body bytes, trailers (kept apart) or a rejection with
/// its status out. No sockets and no clocks: the connection does the I/O
/// and the deadlines, the fuzzer and the conformance test feed it bytes.
///
/// Beast's basic_parser does the HTTP/1.1 grammar; this class implements
/// its callbacks, so the head goes straight into an http::request (one
/// copy, no Beast field container), trailers never reach the head, and the
/// limits below apply to the whole message:
/// - request line: max_request_line (414);
/// - header section: max_header_size bytes (431, 414 for a request line
///   without end) and max_header_count fields (431);
/// - body: max_body_size (413);
/// - chunked bodies: each chunk-size line with its extensions, and the last
///   chunk with the trailer section, must fit in max_header_size (400 for a
///   chunk line, 431 for trailers); chunk extensions of one message add up
///   to max_header_size at most (400); trailer fields count against
///   max_header_count (431).
/// What a client sends slowly is the connection's business: in_metadata()
/// says when the reader waits for a chunk line or trailers, so the
/// connection can hold that wait to header_timeout.
#include "../options.hpp"

#include <baseplate/http/request.hpp>

#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/basic_parser.hpp>

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace baseplate::http {

class request_reader {
 public:
  enum class result {
    need_more,  ///< read more bytes into the buffer and call again
    head,       ///< the request head is complete and valid: head()
    body,       ///< body bytes were copied out (possibly 0 with progress)
    done,       ///< the message is complete (trailers() holds any trailers)
    reject,     ///< answer status() and close; why() says what was wrong
  };

  explicit request_reader(const server_options& opts);
  request_reader(const request_reader&) = delete;
  request_reader& operator=(const request_reader&) = delete;

  /// Starts the next message on the same connection. The head is parsed
  /// into `into` when given (the connection's per-request storage, reused
  /// across keep-alive requests: its strings keep their capacity, and its
  /// addresses, set once per connection, are left alone), else into the
  /// reader's own.
  void reset(request* into = nullptr);

  /// Parses the head from `in` (consuming what it used). Returns need_more,
  /// head or reject.
  result read_head(boost::beast::flat_buffer& in);

  /// After head: copies up to `cap` body bytes from `in` to `out`, sets `n`.
  /// Returns body (n bytes, maybe 0 when only framing was consumed),
  /// need_more, done (the message ended, n may be > 0) or reject.
  result read_body(boost::beast::flat_buffer& in, char* out, std::size_t cap, std::size_t& n);

  /// The request head; valid after read_head() returned head.
  request& head() { return *head_; }
  /// Trailer fields of a chunked body, in arrival order; never merged into
  /// the head (RFC 9110 section 6.5.1).
  const std::vector<std::pair<std::string, std::string>>& trailers() const { return trailers_; }

  /// The status to answer after reject, and why.
  unsigned status() const { return status_; }
  std::string_view why() const { return why_; }

  /// True once the head was read (read_head returned head).
  bool head_done() const { return head_done_; }
  /// True once the whole message (body and trailers) was read.
  bool done() const { return parser_->is_done(); }
  /// Whether the connection may carry another request after this one, as
  /// the request says (HTTP/1.1 without "close", HTTP/1.0 with keep-alive).
  bool keep_alive() const { return parser_->keep_alive(); }
  /// HTTP/1.1 request with "Expect: 100-continue".
  bool expect_continue() const { return expect_continue_; }
  /// True while a chunk-size line or the trailer section is partly received.
  bool in_metadata() const { return in_metadata_; }

 private:
  /// Beast's grammar, with its callbacks sent to the reader. Re-made for
  /// each message (basic_parser cannot be reset); it allocates nothing.
  class grammar final : public boost::beast::http::basic_parser<true> {
   public:
    explicit grammar(request_reader& r) : r_(r) {}

   private:
    void on_request_impl(boost::beast::http::verb, std::string_view method, std::string_view target, int version,
                         boost::system::error_code& ec) override;
    void on_response_impl(int, std::string_view, int, boost::system::error_code&) override {}
    void on_field_impl(boost::beast::http::field name, std::string_view name_string, std::string_view value,
                       boost::system::error_code& ec) override;
    void on_header_impl(boost::system::error_code&) override {}
    void on_body_init_impl(const boost::optional<std::uint64_t>&, boost::system::error_code&) override {}
    std::size_t on_body_impl(std::string_view body, boost::system::error_code& ec) override;
    void on_chunk_header_impl(std::uint64_t size, std::string_view extensions,
                              boost::system::error_code& ec) override;
    std::size_t on_chunk_body_impl(std::uint64_t remain, std::string_view body,
                                   boost::system::error_code& ec) override;
    void on_finish_impl(boost::system::error_code&) override {}

    request_reader& r_;
  };

  result reject(unsigned status, std::string_view why);
  result check_head();
  std::size_t copy_body(std::string_view body, boost::system::error_code& ec);

  const server_options& opts_;
  std::optional<grammar> parser_;
  request own_;             ///< the head's storage when reset() was given none
  request* head_ = &own_;
  std::size_t fields_ = 0;  ///< header fields of this head so far (head_->headers may hold more, reused)
  std::vector<std::pair<std::string, std::string>> trailers_;
  std::size_t header_bytes_ = 0;  ///< bytes of the header section consumed so far
  std::size_t ext_bytes_ = 0;     ///< chunk-extension bytes of this message
  std::size_t trailer_bytes_ = 0; ///< trailer section bytes so far
  bool head_done_ = false;
  bool in_trailers_ = false;  ///< the last chunk was seen
  bool in_metadata_ = false;
  bool expect_continue_ = false;
  // Field checks, counted as the fields arrive (one pass over them).
  std::size_t hosts_ = 0, transfer_encodings_ = 0, content_lengths_ = 0, expects_ = 0;
  std::size_t host_at_ = 0, te_at_ = 0, expect_at_ = 0;  ///< indexes into head_.headers
  std::string traceparent_;
  // Where the body callbacks copy to.
  char* out_ = nullptr;
  std::size_t cap_ = 0, n_ = 0;
  // A rejection decided inside a callback (status_ != 0).
  unsigned status_ = 0;
  std::string why_;
};

}  // namespace baseplate::http
