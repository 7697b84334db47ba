#include "request_reader.hpp"

#include "../trace.hpp"

#include <boost/beast/core/string.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/field.hpp>

#include <algorithm>
#include <array>
#include <cctype>
#include <cstring>
#include <limits>

namespace baseplate::http {
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
using boost::system::error_code;

namespace {
/// Set by a callback that decided to reject: put() stops, and the reader
/// answers with the status it stored.
const error_code rejected = bhttp::error::bad_field;

std::string_view text(const beast::flat_buffer& in) {
  return {static_cast<const char*>(in.data().data()), in.size()};
}

/// Bytes a Host value may not hold: controls, space, DEL, and the
/// delimiters that would change what the authority means.
constexpr std::array<bool, 256> bad_host_char = [] {
  std::array<bool, 256> t{};
  for (int c = 0; c <= 0x20; ++c) t[c] = true;
  for (unsigned char c : {'\x7f', '/', '@', '\\', '?', '#'}) t[c] = true;
  return t;
}();

/// True when `data` (unconsumed chunk metadata) starts with the last chunk:
/// an optional CRLF (the end of the previous chunk's data), then "0"s.
bool starts_last_chunk(std::string_view data) {
  if (data.substr(0, 2) == "\r\n") data.remove_prefix(2);
  std::size_t zeros = 0;
  while (zeros < data.size() && data[zeros] == '0') ++zeros;
  return zeros > 0 && (zeros == data.size() || !std::isxdigit(static_cast<unsigned char>(data[zeros])));
}
}  // namespace

request_reader::request_reader(const server_options& opts) : opts_(opts) { reset(); }

void request_reader::reset(request* into) {
  parser_.emplace(*this);
  parser_->header_limit(opts_.max_header_size);
  // "No limit" is the largest limit: Beast 1.74 compares a Content-Length
  // against an empty optional as if it were smaller than any value.
  parser_->body_limit(opts_.max_body_size ? opts_.max_body_size : std::numeric_limits<std::uint64_t>::max());
  // Cleared, not replaced: the strings keep their capacity for the next
  // head. Addresses are the connection's, set once.
  head_ = into ? into : &own_;
  auto& h = *head_;
  h.method.clear();
  h.target.clear();
  h.version = 11;
  h.content_length.reset();
  h.chunked = h.expect_continue = false;
  h.trace_id.clear();
  h.span_id.clear();
  fields_ = 0;
  trailers_.clear();
  header_bytes_ = ext_bytes_ = trailer_bytes_ = 0;
  head_done_ = in_trailers_ = in_metadata_ = expect_continue_ = false;
  hosts_ = transfer_encodings_ = content_lengths_ = expects_ = 0;
  traceparent_.clear();
  status_ = 0;
  why_.clear();
}

request_reader::result request_reader::reject(unsigned status, std::string_view why) {
  status_ = status;
  why_ = std::string(why);
  in_metadata_ = false;
  return result::reject;
}

// -------------------------------------------------------------------- head

request_reader::result request_reader::read_head(beast::flat_buffer& in) {
  if (status_) return result::reject;
  // RFC 9112 section 2.2: empty lines before a request line are ignored.
  while (header_bytes_ == 0 && in.size() >= 1 && *static_cast<const char*>(in.data().data()) == '\r') {
    if (in.size() == 1) return result::need_more;  // the LF may follow
    if (static_cast<const char*>(in.data().data())[1] != '\n') break;
    in.consume(2);
  }
  // A bare LF ends no line here (section 2.2 lets a server reject it).
  // Beast finds it only when it sees the whole head in one piece; checked
  // here, the answer does not depend on how the bytes arrived.
  if (header_bytes_ == 0) {
    auto data = text(in);
    data = data.substr(0, data.find("\r\n\r\n"));  // the head, not a body after it
    for (auto lf = data.find('\n'); lf != std::string_view::npos; lf = data.find('\n', lf + 1))
      if (lf == 0 || data[lf - 1] != '\r') return reject(400, "bare LF in the request head");
  }
  if (header_bytes_ == 0 && in.size() > 0) {
    auto* p = static_cast<char*>(in.data().data());
    auto* eol = static_cast<char*>(std::memchr(p, '\n', in.size()));
    std::size_t line = eol ? static_cast<std::size_t>(eol - p) : in.size();
    if (line > 0 && p[line - 1] == '\r') --line;  // the line without its CRLF
    if (opts_.max_request_line && line > opts_.max_request_line) return reject(414, "request line too long");
    // Beast judges the version as soon as its bytes are there; the rewrite
    // below needs the whole line. Waiting for it keeps the answer the same
    // however the line arrives.
    if (!eol) {
      auto cr = std::string_view(p, in.size()).find('\r');
      if (cr != std::string_view::npos && cr + 1 < in.size()) return reject(400, "bare CR in the request line");
      if (in.size() > opts_.max_header_size) return reject(414, "request target too long");
      return result::need_more;
    }
    // RFC 9110 section 2.5: a higher minor version of HTTP/1 is served as
    // the highest we speak, 1.1. Beast refuses versions above 1.1, so a
    // complete request line ending in "HTTP/1.<2-9>" gets its digit
    // rewritten in place.
    if (eol && eol - p >= 10 && eol[-1] == '\r' && eol[-2] > '1' && eol[-2] <= '9' &&
        std::memcmp(eol - 10, " HTTP/1.", 8) == 0)
      eol[-2] = '1';
  }
  error_code ec;
  auto used = parser_->put(in.data(), ec);
  in.consume(used);
  header_bytes_ += used;
  if (status_) return result::reject;
  // Beast takes a header section whole, within its header limit; what is
  // buffered without an end counts against the limit too.
  if (header_bytes_ > opts_.max_header_size ||
      (ec == bhttp::error::need_more && in.size() + header_bytes_ > opts_.max_header_size) ||
      ec == bhttp::error::header_limit) {
    // No end of line yet: the request line itself is too long.
    if (header_bytes_ == 0 && std::memchr(in.data().data(), '\n', in.size()) == nullptr)
      return reject(414, "request target too long");
    return reject(431, "request header section too large");
  }
  if (ec == bhttp::error::need_more) return result::need_more;
  if (ec == bhttp::error::bad_version) {
    // A well-formed version we do not speak (HTTP/2.0 over HTTP/1 framing)
    // is 505; anything else in its place is a bad request.
    auto data = text(in);
    auto line = data.substr(0, data.find('\r'));
    auto space = line.rfind(' ');
    auto version = space == std::string_view::npos ? std::string_view() : line.substr(space + 1);
    bool three_parts = std::count(line.begin(), line.end(), ' ') == 2 && line.find('\n') == std::string_view::npos;
    bool well_formed = three_parts && version.size() == 8 && version.substr(0, 5) == "HTTP/" &&
                       std::isdigit(static_cast<unsigned char>(version[5])) && version[6] == '.' &&
                       std::isdigit(static_cast<unsigned char>(version[7])) && version != "HTTP/1.1" &&
                       version != "HTTP/1.0";
    return reject(well_formed ? 505 : 400, "HTTP version not supported");
  }
  if (ec == bhttp::error::body_limit) return reject(413, "request body too large");
  if (ec) return reject(400, ec.message());
  if (!parser_->is_header_done()) return result::need_more;
  return check_head();
}

void request_reader::grammar::on_request_impl(bhttp::verb, std::string_view method, std::string_view target,
                                              int version, error_code& ec) {
  auto& h = *r_.head_;
  h.headers.reserve(8);  // one allocation for a typical head, no moves as it grows
  h.method.assign(method.data(), method.size());
  h.target.assign(target.data(), target.size());
  h.version = version == 10 ? 10 : 11;
  if (version != 10 && version != 11) {
    r_.reject(505, "HTTP version not supported");
    ec = rejected;
  }
}

void request_reader::grammar::on_field_impl(bhttp::field name, std::string_view name_string,
                                            std::string_view value, error_code& ec) {
  const auto& o = r_.opts_;
  if (r_.in_trailers_) {
    // Trailers: kept apart, within the header section's limits.
    r_.trailer_bytes_ += name_string.size() + value.size() + 4;
    if ((o.max_header_count && r_.trailers_.size() >= o.max_header_count) || r_.trailer_bytes_ > o.max_header_size) {
      r_.reject(431, "trailer section too large");
      ec = rejected;
      return;
    }
    r_.trailers_.emplace_back(std::string(name_string), std::string(value));
    return;
  }
  auto& headers = r_.head_->headers;
  std::size_t at = r_.fields_;
  if (o.max_header_count && at >= o.max_header_count) {
    r_.reject(431, "too many header fields");
    ec = rejected;
    return;
  }
  // Into the previous head's strings where there are some (no allocation
  // for a field no longer than the one it replaces).
  if (at < headers.size()) {
    headers[at].first.assign(name_string.data(), name_string.size());
    headers[at].second.assign(value.data(), value.size());
  } else {
    headers.emplace_back(std::string(name_string), std::string(value));
  }
  ++r_.fields_;
  switch (name) {
    case bhttp::field::host:
      ++r_.hosts_;
      r_.host_at_ = at;
      break;
    case bhttp::field::transfer_encoding:
      ++r_.transfer_encodings_;
      r_.te_at_ = at;
      break;
    case bhttp::field::content_length:
      ++r_.content_lengths_;
      break;
    case bhttp::field::expect:
      if (r_.expects_++ == 0) r_.expect_at_ = at;
      break;
    case bhttp::field::unknown:
      // None of the trace headers is a field Beast knows.
      if (beast::iequals(name_string, "x-trace"))
        r_.head_->trace_id.assign(value.data(), value.size());
      else if (beast::iequals(name_string, "x-span"))
        r_.head_->span_id.assign(value.data(), value.size());
      else if (beast::iequals(name_string, "traceparent"))
        r_.traceparent_.assign(value.data(), value.size());
      break;
    default:
      break;
  }
}

request_reader::result request_reader::check_head() {
  auto& h = *head_;
  // Fields left over from a longer previous head go (rarely: keep-alive
  // clients send the same fields each time).
  if (h.headers.size() > fields_) h.headers.erase(h.headers.begin() + static_cast<std::ptrdiff_t>(fields_), h.headers.end());
  const auto& headers = h.headers;
  // RFC 9112 section 3.2: exactly one Host in HTTP/1.1, a valid authority.
  if (hosts_ > 1 || (hosts_ == 0 && h.version == 11)) return reject(400, "missing or repeated Host header");
  if (hosts_ == 1) {
    bool bad = false;
    for (unsigned char c : headers[host_at_].second) bad |= bad_host_char[c];  // no branch per byte
    if (bad) return reject(400, "invalid Host header");
  }
  // Section 3.2: origin-form, absolute-form with a host, or "*" for OPTIONS.
  std::string_view target = h.target;
  bool origin = !target.empty() && target[0] == '/';
  bool asterisk = target == "*" && h.method == "OPTIONS";
  bool absolute = false;
  for (std::string_view scheme : {"http://", "https://"})
    if (target.size() > scheme.size() && beast::iequals(target.substr(0, scheme.size()), scheme) &&
        target[scheme.size()] != '/' && target.find_first_of(" []%", scheme.size()) == std::string_view::npos)
      absolute = true;
  if (!origin && !asterisk && !absolute) return reject(400, "invalid request target");
  // Section 6.1/6.3: a Transfer-Encoding must end in chunked, and must not
  // come with a Content-Length (request smuggling).
  if (transfer_encodings_ > 0) {
    if (!parser_->chunked()) return reject(400, "Transfer-Encoding without chunked last");
    // Only chunked alone: other codings would reach the app still coded.
    if (transfer_encodings_ != 1 || !beast::iequals(headers[te_at_].second, "chunked"))
      return reject(501, "unsupported transfer coding");
    if (content_lengths_ > 0) return reject(400, "both Transfer-Encoding and Content-Length");
  }
  if (expects_) {
    if (!beast::iequals(headers[expect_at_].second, "100-continue")) return reject(417, "unsupported Expect");
    expect_continue_ = h.version == 11;
  }
  if (!traceparent_.empty()) {
    trace_context tc = resolve_trace(h.trace_id, h.span_id, traceparent_);
    h.trace_id = std::move(tc.trace_id);
    h.span_id = std::move(tc.span_id);
  } else if (h.trace_id.empty()) {
    h.span_id.clear();  // as resolve_trace: a span without a trace is none
  }
  auto length = parser_->content_length();
  h.content_length = length ? std::optional<std::uint64_t>(*length) : std::nullopt;
  h.chunked = parser_->chunked();
  h.expect_continue = expect_continue_;
  head_done_ = true;
  parser_->eager(true);
  return result::head;
}

// -------------------------------------------------------------------- body

request_reader::result request_reader::read_body(beast::flat_buffer& in, char* out, std::size_t cap,
                                                 std::size_t& n) {
  n = 0;
  if (status_) return result::reject;
  if (parser_->is_done()) return result::done;
  out_ = out;
  cap_ = cap;
  n_ = 0;
  error_code ec;
  for (;;) {
    if (in.size() == 0) {
      ec = bhttp::error::need_more;
      break;
    }
    auto used = parser_->put(in.data(), ec);
    in.consume(used);
    if (ec || parser_->is_done() || used == 0) break;
  }
  n = n_;
  out_ = nullptr;
  if (status_) return result::reject;
  if (parser_->is_done()) {
    in_metadata_ = false;
    return result::done;
  }
  if (ec == bhttp::error::need_buffer) {
    in_metadata_ = false;
    return result::body;
  }
  if (ec == bhttp::error::body_limit) return reject(413, "request body too large");
  if (ec && ec != bhttp::error::need_more) return reject(400, ec.message());
  // Waiting for more. What is left unconsumed is chunk metadata (a
  // chunk-size line, or the last chunk and the trailer section), which
  // Beast only takes whole: bound it.
  in_metadata_ = in.size() > 0 && parser_->chunked();
  if (in_metadata_) {
    auto data = text(in);
    bool last = starts_last_chunk(data);
    if (in.size() > opts_.max_header_size)
      return reject(last ? 431 : 400, last ? "trailer section too large" : "chunk-size line too long");
    // A complete chunk-size line that Beast did not take is a quoted
    // extension left open: Beast would wait for its quote across lines.
    if (!last && data.find("\r\n", data.substr(0, 2) == "\r\n" ? 2 : 0) != std::string_view::npos)
      return reject(400, "invalid chunk extension");
  }
  return n > 0 ? result::body : result::need_more;
}

std::size_t request_reader::copy_body(std::string_view body, error_code& ec) {
  std::size_t k = std::min(body.size(), cap_ - n_);
  if (k) std::memcpy(out_ + n_, body.data(), k);
  n_ += k;
  if (k < body.size()) ec = bhttp::error::need_buffer;
  return k;
}

std::size_t request_reader::grammar::on_body_impl(std::string_view body, error_code& ec) {
  return r_.copy_body(body, ec);
}

void request_reader::grammar::on_chunk_header_impl(std::uint64_t size, std::string_view extensions,
                                                   error_code& ec) {
  r_.ext_bytes_ += extensions.size();
  if (r_.ext_bytes_ > r_.opts_.max_header_size) {
    r_.reject(400, "chunk extensions too large");
    ec = rejected;
    return;
  }
  if (size == 0) r_.in_trailers_ = true;
}

std::size_t request_reader::grammar::on_chunk_body_impl(std::uint64_t, std::string_view body, error_code& ec) {
  return r_.copy_body(body, ec);
}

}  // namespace baseplate::http
