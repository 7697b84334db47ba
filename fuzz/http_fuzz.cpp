// libFuzzer target: arbitrary bytes through the real HTTP request reader and
// response writer of cpp/core/http (request_reader.cpp, response_writer.cpp,
// the objects the connection uses; nothing of them is copied here).
//
// Request side: the input is one connection's bytes, fed to a
// request_reader as the connection feeds it (head, then the body in
// pieces, then the next pipelined request), with small limits so that every
// rejection is reachable. Every input runs twice: all bytes at once, and in
// small reads whose size comes from the input. Both runs must reach the
// same requests, bodies, trailers and answer: a parser whose result depends
// on how TCP split the bytes is a smuggling vector. The limits must hold:
// no body over max_body_size, no more fields or trailers than allowed, and
// no more bytes buffered than the limits allow.
//
// Response side: fuzzed heads and parts through a response_writer. What it
// frames must be one well-formed head (CRLF lines, no other CR, LF or NUL),
// with at most one framing, which the bytes after it honour; no body for
// HEAD, 1xx, 204 and 304; a Date unless the app sent its own; and
// "Connection: close" whenever the writer decided at the head to close.
#include "http/request_reader.hpp"
#include "http/response_writer.hpp"

#include <fuzzer/FuzzedDataProvider.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

namespace beast = boost::beast;
using namespace baseplate;
using namespace baseplate::http;
using result = request_reader::result;

namespace {

[[noreturn]] void fail(const char* what) {
  std::fprintf(stderr, "invariant violated: %s\n", what);
  std::abort();
}

/// Small limits, so that a fuzz input (16 KiB at most) reaches every one.
server_options fuzz_options() {
  server_options o;
  o.max_header_size = 2048;
  o.max_request_line = 512;
  o.max_header_count = 16;
  o.max_body_size = 4096;
  return o;
}

struct parsed_request {
  std::string method, target;
  unsigned version = 0;
  std::vector<std::pair<std::string, std::string>> fields, trailers;
  std::string body;
  bool operator==(const parsed_request& o) const {
    return method == o.method && target == o.target && version == o.version && fields == o.fields &&
           trailers == o.trailers && body == o.body;
  }
};

struct outcome {
  std::vector<parsed_request> requests;
  /// 0: ran out of input (waiting for more bytes), 200: the last request
  /// was complete and the connection would close, else the rejection.
  unsigned final_status = 0;
  /// A run still waiting for bytes (0) matches any answer: the connection
  /// would end it by a deadline, and no request differs. Two rejections
  /// match too: which of two faults the reader sees first may depend on
  /// how much of the head it has (a bare LF after a bad version), and
  /// either way the connection answers an error and closes.
  bool operator==(const outcome& o) const {
    return requests == o.requests && (final_status == o.final_status || final_status == 0 || o.final_status == 0 ||
                                      (final_status >= 400 && o.final_status >= 400));
  }
};

/// Appends the next read of `step` bytes (0: all) to `buf`; false at the end.
class feed {
 public:
  feed(const std::uint8_t* data, std::size_t size, std::size_t step) : data_(data), size_(size), step_(step) {}
  bool read(beast::flat_buffer& buf) {
    if (pos_ >= size_) return false;
    std::size_t n = step_ > 0 ? std::min(size_ - pos_, step_) : size_ - pos_;
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

outcome run_connection(const std::uint8_t* data, std::size_t size, std::size_t step) {
  static const server_options opts = fuzz_options();
  outcome out;
  feed in(data, size, step);
  beast::flat_buffer buffer;
  request_reader reader(opts);
  for (int n = 0; n < 64; ++n) {
    result r;
    while ((r = reader.read_head(buffer)) == result::need_more) {
      // Unconsumed head bytes stay within the header limit (plus one read).
      if (buffer.size() > opts.max_header_size + (step ? step : size)) fail("head buffered past max_header_size");
      if (!in.read(buffer)) return out;
    }
    if (r == result::reject) {
      out.final_status = reader.status();
      if (out.final_status < 400 || out.final_status > 505) fail("rejection with a non-error status");
      return out;
    }
    const request& h = reader.head();
    parsed_request p{h.method, h.target, h.version, h.headers, {}, {}};
    if (h.version != 10 && h.version != 11) fail("a version other than 1.0 or 1.1 passed");
    if (h.chunked && h.content_length) fail("chunked and a Content-Length at once");
    if (h.headers.size() > opts.max_header_count) fail("more header fields than max_header_count");
    for (char c : p.method)
      if (c <= ' ' || c == 0x7f) fail("control character or space in a parsed method");
    for (char c : p.target)
      if (static_cast<unsigned char>(c) <= ' ' || c == 0x7f) fail("control character or space in a parsed target");
    for (auto& [name, value] : p.fields) {
      if (check_field_name(name)) fail("parsed header name is not a token");
      if (check_field_value(value)) fail("control character in a parsed header value");
    }
    bool keep_alive = reader.keep_alive();
    while (!reader.done()) {
      char piece[512];
      std::size_t got = 0;
      r = reader.read_body(buffer, piece, sizeof piece, got);
      p.body.append(piece, got);
      if (r == result::reject) {
        out.final_status = reader.status();
        return out;
      }
      if (r == result::need_more) {
        if (buffer.size() > opts.max_header_size + (step ? step : size)) fail("chunk metadata buffered past its limit");
        if (!in.read(buffer)) return out;
      }
    }
    if (p.body.size() > opts.max_body_size) fail("a body over max_body_size was delivered");
    if (h.content_length && p.body.size() != *h.content_length) fail("body size differs from its Content-Length");
    p.trailers = reader.trailers();
    if (p.trailers.size() > opts.max_header_count) fail("more trailers than max_header_count");
    out.requests.push_back(std::move(p));
    if (!keep_alive) {
      out.final_status = 200;
      return out;
    }
    reader.reset();
  }
  return out;
}

bool no_body_status(unsigned status, bool head_request) {
  return head_request || status < 200 || status == 204 || status == 304;
}

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) == std::tolower(static_cast<unsigned char>(y));
         });
}

/// Decodes a chunked body; false when it is not well-formed.
bool dechunk(std::string_view in, std::string& out) {
  for (;;) {
    auto eol = in.find("\r\n");
    if (eol == std::string_view::npos || eol == 0) return false;
    std::size_t n = 0;
    for (char c : in.substr(0, eol)) {
      if (!std::isxdigit(static_cast<unsigned char>(c))) return false;
      n = n * 16 + static_cast<std::size_t>(std::isdigit(static_cast<unsigned char>(c)) ? c - '0' : (c | 0x20) - 'a' + 10);
    }
    in.remove_prefix(eol + 2);
    if (n == 0) return in == "\r\n";
    if (in.size() < n + 2 || in.substr(n, 2) != "\r\n") return false;
    out.append(in.substr(0, n));
    in.remove_prefix(n + 2);
  }
}

void check_response(const std::uint8_t* data, std::size_t size) {
  FuzzedDataProvider fdp(data, size);
  unsigned version = fdp.ConsumeBool() ? 10 : 11;
  bool head_request = fdp.ConsumeBool();
  bool keep_alive = fdp.ConsumeBool();
  bool close_after = fdp.ConsumeBool();
  response_head head;
  head.status = fdp.ConsumeIntegralInRange<unsigned>(0, 1100);
  if (fdp.ConsumeBool()) head.reason = fdp.ConsumeRandomLengthString(32);
  unsigned n = fdp.ConsumeIntegralInRange<unsigned>(0, 8);
  for (unsigned i = 0; i < n && fdp.remaining_bytes() > 0; ++i) {
    static const char* names[] = {"Content-Length", "Transfer-Encoding", "content-length", "Connection", "Date"};
    int k = fdp.ConsumeIntegralInRange<int>(0, 6);
    std::string name = k < 5 ? names[k] : fdp.ConsumeRandomLengthString(16);
    head.headers.emplace_back(std::move(name), fdp.ConsumeRandomLengthString(24));
  }
  response_writer w;
  w.begin(version, head_request, keep_alive);
  std::string wire, expected_body;
  unsigned parts = fdp.ConsumeIntegralInRange<unsigned>(1, 4);
  for (unsigned i = 0; i < parts; ++i) {
    response_part p;
    if (i == 0) p.head = head;
    p.body = fdp.ConsumeRandomLengthString(40);
    p.last = i + 1 == parts;
    auto r = w.frame(p, close_after);
    if (r == response_writer::outcome::refused) fail("a first part with a head was refused");
    wire.append(w.head());
    if (i == 0) {
      // The head is the first part's framing up to the blank line.
      auto end = wire.find("\r\n\r\n");
      if (end == std::string::npos) fail("no end of head");
      std::string_view h(wire.data(), end + 2);
      std::size_t lines = 0, dates = 0, lengths = 0, encodings = 0, closes = 0;
      std::optional<std::uint64_t> length;
      for (std::size_t at = 0; at < h.size();) {
        auto eol = h.find("\r\n", at);
        auto line = h.substr(at, eol - at);
        for (char c : line)
          if (c == '\r' || c == '\n' || c == '\0') fail("CR, LF or NUL inside a head line");
        if (lines++ > 0) {
          auto colon = line.find(':');
          if (colon == std::string_view::npos) fail("a header line without a colon");
          auto name = line.substr(0, colon);
          auto value = line.substr(colon + 2);
          if (check_field_name(name)) fail("an invalid header name went out");
          if (iequals(name, "date")) ++dates;
          if (iequals(name, "content-length")) {
            ++lengths;
            length = std::strtoull(std::string(value).c_str(), nullptr, 10);
          }
          if (iequals(name, "transfer-encoding")) ++encodings;
          if (iequals(name, "connection")) closes += value == "close";
        }
        at = eol + 2;
      }
      std::size_t app_dates = 0;
      for (auto& [name, value] : head.headers) app_dates += iequals(name, "date");
      if (r == response_writer::outcome::ok && dates != std::max<std::size_t>(1, app_dates))
        fail("a Date added beside the app's, or none at all");
      if (r == response_writer::outcome::replaced && dates != 1) fail("not exactly one Date on a stock reply");
      if (encodings > 1 || (encodings && lengths)) fail("two framings in one response");
      if (r == response_writer::outcome::replaced && wire.compare(9, 3, "500") != 0)
        fail("a replaced head is not a 500");
      // The writer may decide to close later (a body that breaks its
      // Content-Length), never to keep alive what the head closed.
      if (closes > 0 && w.keep_alive()) fail("Connection: close on a connection kept alive");
      if (closes == 0 && !w.keep_alive() && r == response_writer::outcome::ok && w.body().size() == p.data().size() &&
          !(p.last && lengths && *length != p.data().size() && !no_body_status(head.status, head_request)))
        fail("a close not announced in the head");
      expected_body.clear();
      wire.erase(0, end + 4);
      // What follows the head: remember the framing to check at the end.
      if (encodings) expected_body = "chunked";
      else if (lengths) expected_body = "length:" + std::to_string(*length);
    }
    wire.append(w.body());
    wire.append(w.tail());
    if (r == response_writer::outcome::replaced) break;
  }
  if (!w.finished()) fail("the last part did not finish the response");
  bool no_body = head_request || head.status < 200 || head.status == 204 || head.status == 304;
  if (w.status() == 500 && wire == "Internal Server Error\n") return;  // the stock reply
  if (no_body && !wire.empty()) fail("body bytes on a response that has none");
  if (expected_body == "chunked") {
    std::string body;
    if (!dechunk(wire, body)) fail("malformed chunked body");
  } else if (expected_body.rfind("length:", 0) == 0 && !no_body) {
    auto declared = std::strtoull(expected_body.c_str() + 7, nullptr, 10);
    if (wire.size() > declared) fail("more body bytes than the Content-Length");
    if (wire.size() < declared && w.keep_alive()) fail("a short body on a kept-alive connection");
  } else if (!no_body && w.keep_alive()) {
    fail("a body without framing on a kept-alive connection");
  }
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
  check_response(data, size);
  return 0;
}
