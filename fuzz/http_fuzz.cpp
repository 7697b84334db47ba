// libFuzzer target: arbitrary bytes through the HTTP request path of
// cpp/core/http/connection.cpp, and the response head checks and
// serialiser of cpp/core/http/response_head.hpp.
//
// The request side repeats what the connection does, step for step:
// - a request_parser<buffer_body> per request, with header_limit and
//   body_limit set from the server options (the defaults, and a small body
//   limit so that 413 is reachable);
// - put() until the header is done (431 / 413 / 400 on error);
// - then the checks of connection::on_header(): HTTP version, exactly one
//   Host in HTTP/1.1, Transfer-Encoding ending in chunked and never with a
//   Content-Length, Expect;
// - then eager(true) and the body read into a caller buffer in pieces, as
//   connection::parse_body() does (need_buffer / need_more handling);
// - then the next pipelined request on what is left of the buffer.
//
// Every input is run twice: all bytes at once, and in small reads whose
// size comes from the input. Both runs must reach the same outcome (the
// same requests with the same bodies and the same final status): a parser
// whose result depends on how TCP split the bytes is a smuggling vector.
//
// The response side feeds fuzzed statuses, reasons, names and values to
// inspect(); whatever inspect() accepts is serialised with append_head()
// and must be a well-formed head: one CRLF per line, no other CR, LF or
// NUL, token header names, and the Content-Length framing inspect()
// reported.
#include "http/response_head.hpp"

#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/buffer_body.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/field.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/string_body.hpp>

#include <fuzzer/FuzzedDataProvider.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>
#include <vector>

namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
using boost::system::error_code;

namespace {

// Defaults of cpp/core/options.hpp, except the body limit: the default
// (1 GiB) is never reached by a fuzz input; 4 KiB is.
constexpr std::uint32_t max_header_size = 64 * 1024;
constexpr std::uint64_t max_body_size = 4 * 1024;
constexpr std::size_t read_chunk = 64 * 1024;

[[noreturn]] void fail(const char* what) {
  std::fprintf(stderr, "invariant violated: %s\n", what);
  std::abort();
}

struct parsed_request {
  std::string method, target;
  unsigned version = 0;
  std::vector<std::pair<std::string, std::string>> fields;
  std::string body;
  bool operator==(const parsed_request& o) const {
    return method == o.method && target == o.target && version == o.version && fields == o.fields &&
           body == o.body;
  }
};

struct outcome {
  std::vector<parsed_request> requests;
  /// 0: ran out of input (waiting for more bytes), else the status the
  /// connection answers last (200 = the last request was complete and the
  /// connection closed after it).
  unsigned final_status = 0;
  /// Same requests, and the same answer when both runs reached one. A run
  /// still waiting for bytes (0) matches any answer: Beast answers some
  /// malformed heads (a bare LF) only when the line arrives in one read,
  /// and otherwise waits for CRLFCRLF; the connection then times out. That
  /// changes no request, so it is not counted here.
  bool operator==(const outcome& o) const {
    return requests == o.requests && (final_status == o.final_status || final_status == 0 || o.final_status == 0);
  }
};

/// The bytes a client sends, handed over in reads of `step` bytes (0: all
/// at once), into the connection's flat_buffer.
class feed {
 public:
  feed(const std::uint8_t* data, std::size_t size, std::size_t step) : data_(data), size_(size), step_(step) {}
  /// Appends the next read to `buf`; false at the end of the input.
  bool read(beast::flat_buffer& buf) {
    if (pos_ >= size_) return false;
    std::size_t n = size_ - pos_;
    if (step_ > 0) n = std::min(n, step_);
    n = std::min(n, read_chunk);
    auto mb = buf.prepare(n);
    std::memcpy(mb.data(), data_ + pos_, n);
    buf.commit(n);
    pos_ += n;
    return true;
  }

 private:
  const std::uint8_t* data_;
  std::size_t size_, step_, pos_ = 0;
};

bool iequals(beast::string_view a, beast::string_view b) { return beast::iequals(a, b); }

/// connection::parse_body(): reads body bytes into `pending` until it holds
/// `want` bytes, the body is done, or the buffer is empty.
void parse_body(bhttp::request_parser<bhttp::buffer_body>& parser, beast::flat_buffer& buffer, std::string& pending,
                std::size_t want, error_code& ec) {
  while (pending.size() < want && !parser.is_done() && buffer.size() > 0) {
    std::size_t old = pending.size();
    std::size_t space = want - old;
    pending.resize(old + space);
    auto& body = parser.get().body();
    body.data = &pending[old];
    body.size = space;
    auto used = parser.put(buffer.data(), ec);
    buffer.consume(used);
    pending.resize(old + space - body.size);
    body.data = nullptr;
    body.size = 0;
    if (ec == bhttp::error::need_buffer) {
      ec = {};
      continue;
    }
    if (ec == bhttp::error::need_more) {
      ec = {};
      break;
    }
    if (ec) return;
  }
}

/// One connection's worth of requests, as cpp/core/http/connection.cpp
/// handles them (the app reads every body whole, 64 KiB at a time).
outcome run_connection(const std::uint8_t* data, std::size_t size, std::size_t step) {
  outcome out;
  feed in(data, size, step);
  beast::flat_buffer buffer;
  for (int requests = 0; requests < 64; ++requests) {
    // read_request()
    bhttp::request_parser<bhttp::buffer_body> parser;
    parser.header_limit(max_header_size);
    parser.body_limit(max_body_size);
    // parse_header(), repeated on every read
    for (;;) {
      error_code ec;
      std::size_t used = buffer.size() > 0 ? parser.put(buffer.data(), ec) : 0;
      if (buffer.size() == 0) ec = bhttp::error::need_more;
      buffer.consume(used);
      if (ec == bhttp::error::need_more) {
        if (!in.read(buffer)) return out;  // the client stopped in the header
        continue;
      }
      if (ec == bhttp::error::header_limit) {
        out.final_status = 431;
        return out;
      }
      if (ec == bhttp::error::body_limit) {
        out.final_status = 413;
        return out;
      }
      if (ec) {
        out.final_status = 400;
        return out;
      }
      if (parser.is_header_done()) break;
    }
    // on_header()
    auto& msg = parser.get();
    if (msg.version() != 10 && msg.version() != 11) {
      out.final_status = 505;
      return out;
    }
    unsigned version = msg.version() == 10 ? 10 : 11;
    auto hosts = msg.count(bhttp::field::host);
    if (hosts > 1 || (hosts == 0 && version == 11)) {
      out.final_status = 400;
      return out;
    }
    if (msg.count(bhttp::field::transfer_encoding) > 0) {
      if (!parser.chunked() || msg.count(bhttp::field::content_length) > 0) {
        out.final_status = 400;
        return out;
      }
    }
    auto expect = msg.find(bhttp::field::expect);
    if (expect != msg.end() && !iequals(expect->value(), "100-continue")) {
      out.final_status = 417;
      return out;
    }
    // Framing the parser reports must agree with the headers.
    if (parser.chunked() && parser.content_length()) fail("chunked and a Content-Length at once");
    if (parser.content_length() && *parser.content_length() > max_body_size && !parser.is_done())
      fail("a Content-Length over body_limit passed the header");

    parsed_request r;
    r.method = std::string(msg.method_string());
    r.target = std::string(msg.target());
    r.version = version;
    for (auto& f : msg) r.fields.emplace_back(std::string(f.name_string()), std::string(f.value()));
    for (char c : r.method)
      if (c <= ' ' || c == 0x7f) fail("control character or space in a parsed method");
    for (char c : r.target)
      if (static_cast<unsigned char>(c) <= ' ' || c == 0x7f) fail("control character or space in a parsed target");
    for (auto& [n, v] : r.fields) {
      if (auto e = baseplate::http::check_field_name(n)) fail("parsed header name is not a token");
      if (auto e = baseplate::http::check_field_value(v)) fail("CR, LF or NUL in a parsed header value");
    }
    bool keep_alive = parser.keep_alive();

    // The app reads the body (connection::app_read / fill_body).
    parser.eager(true);
    std::string pending;
    while (!parser.is_done()) {
      error_code ec;
      parse_body(parser, buffer, pending, pending.size() + read_chunk, ec);
      if (ec == bhttp::error::body_limit) {
        out.final_status = 413;
        return out;
      }
      if (ec) {
        out.final_status = 400;
        return out;
      }
      if (parser.is_done()) break;
      // fill_body(): not done, so read more (what is buffered may be a
      // partial chunk header the parser cannot use yet).
      if (!in.read(buffer)) return out;  // the client stopped in the body
    }
    if (pending.size() > max_body_size) fail("a body over body_limit was delivered");
    if (parser.content_length() && !parser.chunked() && pending.size() != *parser.content_length())
      fail("body size differs from its Content-Length");
    r.body = std::move(pending);
    out.requests.push_back(std::move(r));
    // finish_request(): the next pipelined request, or close.
    if (!keep_alive) {
      out.final_status = 200;
      return out;
    }
  }
  return out;
}

/// The response head side: inspect() and append_head().
void check_response_head(const std::uint8_t* data, std::size_t size) {
  FuzzedDataProvider fdp(data, size);
  baseplate::http::response_head head;
  head.status = fdp.ConsumeIntegralInRange<unsigned>(0, 1100);
  if (fdp.ConsumeBool()) head.reason = fdp.ConsumeRandomLengthString(64);
  unsigned n = fdp.ConsumeIntegralInRange<unsigned>(0, 12);
  for (unsigned i = 0; i < n && fdp.remaining_bytes() > 0; ++i) {
    std::string name;
    switch (fdp.ConsumeIntegralInRange<int>(0, 4)) {
      case 0: name = "Content-Length"; break;
      case 1: name = "Transfer-Encoding"; break;
      case 2: name = "content-length"; break;
      default: name = fdp.ConsumeRandomLengthString(32);
    }
    std::string value = fdp.ConsumeRandomLengthString(64);
    head.headers.emplace_back(std::move(name), std::move(value));
  }
  baseplate::http::framing f;
  auto err = baseplate::http::inspect(head, f);
  if (err) return;
  if (head.status < 100 || head.status > 999) fail("inspect() accepted a status outside 100-999");
  std::string out;
  unsigned version = fdp.ConsumeBool() ? 10 : 11;
  baseplate::http::append_head(out, version, head);
  // One status line and one line per header, each ending in CRLF, with no
  // other CR, LF or NUL anywhere.
  std::size_t lines = 0;
  for (std::size_t i = 0; i < out.size(); ++i) {
    char c = out[i];
    if (c == '\0') fail("NUL in a serialised head");
    if (c == '\r') {
      if (i + 1 >= out.size() || out[i + 1] != '\n') fail("bare CR in a serialised head");
      ++lines;
      ++i;
    } else if (c == '\n') {
      fail("bare LF in a serialised head");
    }
  }
  if (lines != 1 + head.headers.size()) fail("header injection: line count differs from header count");
  if (out.compare(0, 9, version == 10 ? "HTTP/1.0 " : "HTTP/1.1 ") != 0) fail("bad status line prefix");
  char code[4];
  std::snprintf(code, sizeof code, "%03u", head.status);
  if (out.compare(9, 3, code) != 0) fail("status code not serialised as given");
  // The framing inspect() reported is the app's (last) Content-Length.
  std::optional<std::uint64_t> cl;
  for (auto& [name, value] : head.headers) {
    if (baseplate::http::check_field_name(name)) fail("inspect() accepted an invalid header name");
    if (name.size() == 14 && iequals(name, "content-length")) cl = std::strtoull(value.c_str(), nullptr, 10);
  }
  if (cl != f.content_length) fail("framing Content-Length differs from the header");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  outcome whole = run_connection(data, size, 0);
  // Small reads: 1 to 16 bytes, from the input itself.
  std::size_t step = size > 0 ? 1 + (data[size / 2] % 16) : 1;
  outcome split = run_connection(data, size, step);
  if (!(whole == split)) {
    std::fprintf(stderr, "all at once: %zu requests, then %u; in reads of %zu bytes: %zu requests, then %u\n",
                 whole.requests.size(), whole.final_status, step, split.requests.size(), split.final_status);
    fail("the outcome depends on how the bytes were split into reads");
  }
  check_response_head(data, size);
  return 0;
}
