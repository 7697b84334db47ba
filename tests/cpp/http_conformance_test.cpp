// The HTTP/1.1 rules of the core, as a table run against the real
// request_reader and response_writer (the objects the connection uses).
// Every request case runs twice: all bytes at once, and one byte at a time
// (both must give the same outcome: a parser whose result depends on how
// TCP split the bytes is a smuggling vector).
#include "http/request_reader.hpp"
#include "http/response_writer.hpp"

#include <gtest/gtest.h>

#include <functional>
#include <optional>
#include <regex>
#include <string>
#include <vector>

namespace {
using namespace baseplate;
using namespace baseplate::http;
using result = request_reader::result;

struct parsed {
  request head;
  std::string body;
  std::vector<std::pair<std::string, std::string>> trailers;
  bool keep_alive = true;
  bool expect_continue = false;
};

struct outcome {
  std::vector<parsed> requests;
  /// 0: ran out of input waiting for more; 200: every request complete; else the reject status.
  unsigned status = 0;
  bool in_metadata = false;
};

/// Feeds `input` to a reader as the connection does, `step` bytes per read
/// (0 = all at once), through as many pipelined requests as it holds.
outcome run(const server_options& opts, const std::string& input, std::size_t step) {
  outcome out;
  request_reader reader(opts);
  boost::beast::flat_buffer buf;
  std::size_t fed = 0;
  auto feed = [&]() -> bool {
    if (fed == input.size()) return false;
    std::size_t n = step == 0 ? input.size() - fed : std::min(step, input.size() - fed);
    auto b = buf.prepare(n);
    std::memcpy(b.data(), input.data() + fed, n);
    buf.commit(n);
    fed += n;
    return true;
  };
  feed();
  for (;;) {
    // Head.
    result r;
    while ((r = reader.read_head(buf)) == result::need_more)
      if (!feed()) return out;
    if (r == result::reject) {
      out.status = reader.status();
      return out;
    }
    parsed p;
    p.head = reader.head();
    p.keep_alive = reader.keep_alive();
    p.expect_continue = reader.expect_continue();
    // Body, in pieces of at most 7 bytes so the body callbacks run out of room.
    while (!reader.done()) {
      char piece[7];
      std::size_t n = 0;
      r = reader.read_body(buf, piece, sizeof piece, n);
      p.body.append(piece, n);
      if (r == result::reject) {
        out.status = reader.status();
        return out;
      }
      if (r == result::need_more) {
        out.in_metadata = reader.in_metadata();
        if (!feed()) {
          out.requests.push_back(std::move(p));
          return out;
        }
      }
    }
    p.trailers = reader.trailers();
    bool again = p.keep_alive;
    out.requests.push_back(std::move(p));
    if (!again || (buf.size() == 0 && fed == input.size())) {
      out.status = 200;
      return out;
    }
    reader.reset();
  }
}

struct request_case {
  std::string name;
  std::string input;
  /// The outcome's status (0 = waiting for more bytes, 200 = complete).
  unsigned status;
  /// Complete requests expected (only checked when status is 200).
  std::size_t count = 1;
  std::function<void(const outcome&)> check = nullptr;
  std::function<void(server_options&)> tune = nullptr;
};

std::ostream& operator<<(std::ostream& os, const request_case& c) { return os << c.name; }

std::string get(const std::string& target = "/", const std::string& extra = "", const std::string& version = "HTTP/1.1") {
  return "GET " + target + " " + version + "\r\nHost: example.com\r\n" + extra + "\r\n";
}
std::string post_chunked(const std::string& body_and_trailers, const std::string& extra = "") {
  return "POST /up HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n" + extra + "\r\n" + body_and_trailers;
}
std::string post_length(const std::string& body, const std::string& extra = "") {
  return "POST /up HTTP/1.1\r\nHost: h\r\nContent-Length: " + std::to_string(body.size()) + "\r\n" + extra + "\r\n" +
         body;
}
std::string header(std::size_t i) { return "X-H" + std::to_string(i) + ": v\r\n"; }
std::string headers(std::size_t n) {
  std::string s;
  for (std::size_t i = 0; i < n; ++i) s += header(i);
  return s;
}

std::function<void(const outcome&)> body_is(std::string body) {
  return [body](const outcome& o) { EXPECT_EQ(o.requests.at(0).body, body); };
}
std::function<void(const outcome&)> head_is(std::string method, std::string target, unsigned version) {
  return [=](const outcome& o) {
    EXPECT_EQ(o.requests.at(0).head.method, method);
    EXPECT_EQ(o.requests.at(0).head.target, target);
    EXPECT_EQ(o.requests.at(0).head.version, version);
  };
}
std::function<void(const outcome&)> has_header(std::string name, std::string value) {
  return [=](const outcome& o) {
    bool found = false;
    for (auto& [n, v] : o.requests.at(0).head.headers) found = found || (n == name && v == value);
    EXPECT_TRUE(found) << name << ": " << value;
  };
}
/// Trailers are kept apart: the head has exactly the fields sent before the body.
std::function<void(const outcome&)> trailers_apart(std::size_t head_fields, std::size_t trailers) {
  return [=](const outcome& o) {
    EXPECT_EQ(o.requests.at(0).head.headers.size(), head_fields);
    EXPECT_EQ(o.requests.at(0).trailers.size(), trailers);
  };
}

std::vector<request_case> request_cases() {
  std::vector<request_case> c;
  // --- request line: methods, targets, versions
  for (std::string m : {"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "PURGE", "M-SEARCH"})
    c.push_back({"method_" + std::regex_replace(m, std::regex("-"), "_"),
                 m + " /x HTTP/1.1\r\nHost: h\r\n\r\n", 200, 1, head_is(m, "/x", 11)});
  c.push_back({"method_lower_case_token", "get / HTTP/1.1\r\nHost: h\r\n\r\n", 200, 1, head_is("get", "/", 11)});
  c.push_back({"method_with_bad_char", "GE(T / HTTP/1.1\r\nHost: h\r\n\r\n", 400});
  c.push_back({"method_empty", " / HTTP/1.1\r\nHost: h\r\n\r\n", 400});
  c.push_back({"target_origin_query", get("/a/b?c=d&e"), 200, 1, head_is("GET", "/a/b?c=d&e", 11)});
  c.push_back({"target_percent", get("/a%20b"), 200, 1, head_is("GET", "/a%20b", 11)});
  c.push_back({"target_absolute_http", get("http://example.com/x"), 200, 1, head_is("GET", "http://example.com/x", 11)});
  c.push_back({"target_absolute_https", get("https://example.com/"), 200});
  c.push_back({"target_absolute_no_host", get("http:///x"), 400});
  c.push_back({"target_absolute_other_scheme", get("ftp://example.com/"), 400});
  c.push_back({"target_asterisk_options", "OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n", 200});
  c.push_back({"target_asterisk_get", get("*"), 400});
  c.push_back({"target_relative", get("x/y"), 400});
  c.push_back({"target_empty", "GET  HTTP/1.1\r\nHost: h\r\n\r\n", 400});
  c.push_back({"target_with_space", "GET /a b HTTP/1.1\r\nHost: h\r\n\r\n", 400});
  c.push_back({"target_with_ctl", std::string("GET /a\x01 HTTP/1.1\r\nHost: h\r\n\r\n"), 400});
  c.push_back({"version_10", get("/", "", "HTTP/1.0"), 200, 1, head_is("GET", "/", 10)});
  c.push_back({"version_11", get("/"), 200, 1, head_is("GET", "/", 11)});
  for (char minor : {'2', '5', '9'})
    c.push_back({std::string("version_1") + minor + "_served_as_11", get("/", "", std::string("HTTP/1.") + minor), 200, 1,
                 head_is("GET", "/", 11)});
  c.push_back({"version_20", get("/", "", "HTTP/2.0"), 505});
  c.push_back({"version_30", get("/", "", "HTTP/3.0"), 505});
  c.push_back({"version_09", get("/", "", "HTTP/0.9"), 505});
  c.push_back({"version_lower_case", get("/", "", "http/1.1"), 400});
  c.push_back({"version_missing_minor", get("/", "", "HTTP/1"), 400});
  c.push_back({"version_two_digits", get("/", "", "HTTP/1.10"), 400});
  c.push_back({"version_garbage", get("/", "", "HTCPCP/1.0"), 400});
  c.push_back({"request_line_two_parts", "GET /\r\nHost: h\r\n\r\n", 400});
  c.push_back({"request_line_bare_cr", "GET / HTTP/1.1\rHost: h\r\r", 400});
  c.push_back({"request_line_bare_lf", "GET / HTTP/1.1\nHost: h\n\n", 400});
  c.push_back({"leading_crlfs_ignored", "\r\n\r\n" + get("/"), 200});
  c.push_back({"request_line_at_limit", get("/" + std::string(8 * 1024 - 15, 'a')), 200});
  c.push_back({"request_line_over_limit", get("/" + std::string(8 * 1024, 'a')), 414});
  c.push_back({"request_line_endless", "GET /" + std::string(70 * 1024, 'a'), 414});
  c.push_back({"request_line_limit_off", get("/" + std::string(20 * 1024, 'a')), 200, 1, nullptr,
               [](server_options& o) { o.max_request_line = 0; }});
  c.push_back({"request_line_tuned_limit", get("/" + std::string(100, 'a')), 414, 1, nullptr,
               [](server_options& o) { o.max_request_line = 64; }});
  // --- header fields
  c.push_back({"header_kept_in_order", get("/", "A: 1\r\nB: 2\r\n"), 200, 1, [](const outcome& o) {
                 auto& h = o.requests.at(0).head.headers;
                 ASSERT_EQ(h.size(), 3u);
                 EXPECT_EQ(h[1].first, "A");
                 EXPECT_EQ(h[2].first, "B");
               }});
  c.push_back({"header_name_case_kept", get("/", "x-MiXeD: v\r\n"), 200, 1, has_header("x-MiXeD", "v")});
  c.push_back({"header_value_trimmed", get("/", "A:   spaced   \r\n"), 200, 1, has_header("A", "spaced")});
  c.push_back({"header_value_empty", get("/", "A:\r\n"), 200, 1, has_header("A", "")});
  c.push_back({"header_value_obs_text", get("/", "A: caf\xc3\xa9\r\n"), 200, 1, has_header("A", "caf\xc3\xa9")});
  c.push_back({"header_value_tab", get("/", "A: a\tb\r\n"), 200, 1, has_header("A", "a\tb")});
  c.push_back({"header_repeated_kept", get("/", "A: 1\r\nA: 2\r\n"), 200, 1, [](const outcome& o) {
                 EXPECT_EQ(o.requests.at(0).head.headers.size(), 3u);
               }});
  c.push_back({"header_space_before_colon", get("/", "A : 1\r\n"), 400});
  c.push_back({"header_no_colon", get("/", "A 1\r\n"), 400});
  c.push_back({"header_empty_name", get("/", ": 1\r\n"), 400});
  c.push_back({"header_bad_name_char", get("/", "A(b): 1\r\n"), 400});
  c.push_back({"header_nul_in_value", get("/", std::string("A: x\0y\r\n", 8)), 400});
  c.push_back({"header_cr_in_value", get("/", "A: x\ry\r\n"), 400});
  // RFC 9112 section 5.2: obs-fold is replaced by a space.
  c.push_back({"header_obs_fold", get("/", "A: x\r\n y\r\n"), 200, 1, has_header("A", "x y")});
  c.push_back({"header_leading_whitespace_line", "GET / HTTP/1.1\r\n Host: h\r\n\r\n", 400});
  c.push_back({"header_section_at_limit", get("/", "A: " + std::string(60 * 1024, 'x') + "\r\n"), 200});
  c.push_back({"header_section_over_limit", get("/", "A: " + std::string(65 * 1024, 'x') + "\r\n"), 431});
  c.push_back({"header_section_endless", get("/", "A: ") + std::string(70 * 1024, 'x'), 431});
  c.push_back({"header_section_tuned_limit", get("/", "A: " + std::string(600, 'x') + "\r\n"), 431, 1, nullptr,
               [](server_options& o) { o.max_header_size = 512; }});
  c.push_back({"header_count_at_limit", get("/", headers(99)), 200});
  c.push_back({"header_count_over_limit", get("/", headers(100)), 431});
  c.push_back({"header_count_tuned", get("/", headers(10)), 431, 1, nullptr,
               [](server_options& o) { o.max_header_count = 5; }});
  c.push_back({"header_count_unlimited", get("/", headers(500)), 200, 1, nullptr,
               [](server_options& o) { o.max_header_count = 0; }});
  // --- Host
  c.push_back({"host_missing_11", "GET / HTTP/1.1\r\n\r\n", 400});
  c.push_back({"host_missing_10", "GET / HTTP/1.0\r\n\r\n", 200});
  c.push_back({"host_repeated", get("/", "Host: other\r\n"), 400});
  c.push_back({"host_empty", "GET / HTTP/1.1\r\nHost:\r\n\r\n", 200});
  c.push_back({"host_with_port", "GET / HTTP/1.1\r\nHost: h:8080\r\n\r\n", 200});
  c.push_back({"host_ipv6", "GET / HTTP/1.1\r\nHost: [::1]:80\r\n\r\n", 200});
  for (auto [n, bad] : std::vector<std::pair<std::string, std::string>>{
           {"space", "a b"}, {"slash", "a/b"}, {"at", "u@h"}, {"backslash", "a\\b"}, {"question", "a?b"},
           {"hash", "a#b"}, {"del", "a\x7f"}})
    c.push_back({"host_invalid_" + n, "GET / HTTP/1.1\r\nHost: " + bad + "\r\n\r\n", 400});
  // --- Content-Length bodies
  c.push_back({"body_length", post_length("hello world"), 200, 1, body_is("hello world")});
  c.push_back({"body_length_zero", post_length(""), 200, 1, body_is("")});
  c.push_back({"body_length_large", post_length(std::string(100000, 'b')), 200, 1, body_is(std::string(100000, 'b'))});
  c.push_back({"body_length_incomplete", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\nabc", 0});
  c.push_back({"body_length_invalid", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1x\r\n\r\n", 400});
  c.push_back({"body_length_negative", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: -1\r\n\r\n", 400});
  c.push_back({"body_length_conflicting", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", 400});
  c.push_back({"body_length_list", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1, 2\r\n\r\nab", 400});
  c.push_back({"body_length_overflow", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 99999999999999999999999\r\n\r\n", 400});
  c.push_back({"body_length_over_limit", post_length(std::string(5000, 'b')), 413, 1, nullptr,
               [](server_options& o) { o.max_body_size = 4096; }});
  c.push_back({"body_length_at_limit", post_length(std::string(4096, 'b')), 200, 1, nullptr,
               [](server_options& o) { o.max_body_size = 4096; }});
  c.push_back({"body_limit_off", post_length(std::string(5000, 'b')), 200, 1, nullptr,
               [](server_options& o) { o.max_body_size = 0; }});
  c.push_back({"get_with_body", get("/", "Content-Length: 3\r\n") + "abc", 200, 1, body_is("abc")});
  // --- chunked bodies
  c.push_back({"chunked_one", post_chunked("5\r\nhello\r\n0\r\n\r\n"), 200, 1, body_is("hello")});
  c.push_back({"chunked_many", post_chunked("1\r\na\r\n2\r\nbc\r\n3\r\ndef\r\n0\r\n\r\n"), 200, 1, body_is("abcdef")});
  c.push_back({"chunked_hex_upper", post_chunked("A\r\n0123456789\r\n0\r\n\r\n"), 200, 1, body_is("0123456789")});
  c.push_back({"chunked_hex_lower", post_chunked("a\r\n0123456789\r\n0\r\n\r\n"), 200, 1, body_is("0123456789")});
  c.push_back({"chunked_leading_zeros", post_chunked("0005\r\nhello\r\n000\r\n\r\n"), 200, 1, body_is("hello")});
  c.push_back({"chunked_empty", post_chunked("0\r\n\r\n"), 200, 1, body_is("")});
  c.push_back({"chunked_te_case", "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: Chunked\r\n\r\n0\r\n\r\n", 200});
  c.push_back({"chunked_bad_hex", post_chunked("g\r\nx\r\n0\r\n\r\n"), 400});
  c.push_back({"chunked_size_overflow", post_chunked("fffffffffffffffffffff\r\nx\r\n0\r\n\r\n"), 400});
  c.push_back({"chunked_missing_crlf_after_data", post_chunked("3\r\nabcX\r\n0\r\n\r\n"), 400});
  c.push_back({"chunked_negative", post_chunked("-1\r\nx\r\n0\r\n\r\n"), 400});
  c.push_back({"chunked_size_with_space", post_chunked("5 \r\nhello\r\n0\r\n\r\n"), 400});
  c.push_back({"chunked_incomplete", post_chunked("5\r\nhel"), 0});
  c.push_back({"chunked_no_last_chunk", post_chunked("5\r\nhello\r\n"), 0});
  c.push_back({"chunked_over_body_limit", post_chunked("1001\r\n" + std::string(0x1001, 'x') + "\r\n0\r\n\r\n"), 413,
               1, nullptr, [](server_options& o) { o.max_body_size = 4096; }});
  c.push_back({"chunked_sum_over_body_limit",
               post_chunked("800\r\n" + std::string(0x800, 'x') + "\r\n800\r\n" + std::string(0x800, 'x') +
                            "\r\n1\r\nx\r\n0\r\n\r\n"),
               413, 1, nullptr, [](server_options& o) { o.max_body_size = 4096; }});
  c.push_back({"chunked_te_gzip_then_chunked",
               "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 501});
  c.push_back({"chunked_te_chunked_then_gzip",
               "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", 400});
  c.push_back({"chunked_te_twice", "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400});
  c.push_back({"chunked_with_content_length",
               "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n", 400});
  c.push_back({"te_identity", "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: identity\r\n\r\n", 400});
  // --- chunk extensions: bounded per line and per message
  c.push_back({"ext_token", post_chunked("5;name\r\nhello\r\n0\r\n\r\n"), 200, 1, body_is("hello")});
  c.push_back({"ext_value", post_chunked("5;name=value\r\nhello\r\n0\r\n\r\n"), 200, 1, body_is("hello")});
  c.push_back({"ext_quoted", post_chunked("5;n=\"a b;c\"\r\nhello\r\n0\r\n\r\n"), 200, 1, body_is("hello")});
  c.push_back({"ext_many", post_chunked("5;a=1;b=2;c\r\nhello\r\n0\r\n\r\n"), 200, 1, body_is("hello")});
  c.push_back({"ext_on_last_chunk", post_chunked("5\r\nhello\r\n0;end\r\n\r\n"), 200, 1, body_is("hello")});
  c.push_back({"ext_bad_char", post_chunked("5;a(b\r\nhello\r\n0\r\n\r\n"), 400});
  c.push_back({"ext_endless", post_chunked("1;a=" + std::string(70 * 1024, 'x')), 400});
  c.push_back({"ext_endless_last_chunk", post_chunked("0;a=" + std::string(70 * 1024, 'x')), 431});
  c.push_back({"ext_unclosed_quote_across_crlf",
               post_chunked("3;a=\"x" + [] {
                 std::string s;
                 for (int i = 0; i < 9000; ++i) s += "xxxxxx\r\n";
                 return s;
               }()),
               400});
  c.push_back({"ext_unclosed_quote", post_chunked("3;a=\"xyz\r\nabc\r\n0\r\n\r\n"), 400});
  c.push_back({"ext_line_at_limit", post_chunked("1;a=" + std::string(1000, 'x') + "\r\nz\r\n0\r\n\r\n"), 200, 1,
               body_is("z")});
  c.push_back({"ext_total_over_limit_across_chunks",
               post_chunked([] {
                 std::string s;
                 for (int i = 0; i < 40; ++i) s += "1;a=" + std::string(2000, 'x') + "\r\nz\r\n";
                 return s + "0\r\n\r\n";
               }()),
               400, 1, nullptr, [](server_options& o) { o.max_header_size = 64 * 1024; }});
  c.push_back({"ext_tuned_limit", post_chunked("1;a=" + std::string(600, 'x') + "\r\nz\r\n0\r\n\r\n"), 400, 1, nullptr,
               [](server_options& o) { o.max_header_size = 512; }});
  // --- trailers: kept apart, bounded
  c.push_back({"trailer_one", post_chunked("5\r\nhello\r\n0\r\nX-Checksum: 1\r\n\r\n"), 200, 1,
               [](const outcome& o) {
                 ASSERT_EQ(o.requests.at(0).trailers.size(), 1u);
                 EXPECT_EQ(o.requests.at(0).trailers[0].first, "X-Checksum");
                 EXPECT_EQ(o.requests.at(0).trailers[0].second, "1");
                 EXPECT_EQ(o.requests.at(0).body, "hello");
               }});
  for (auto [n, spoof] : std::vector<std::pair<std::string, std::string>>{
           {"authorization", "Authorization: Bearer evil"}, {"host", "Host: evil.example"},
           {"x_forwarded_for", "X-Forwarded-For: 6.6.6.6"}, {"content_type", "Content-Type: text/evil"},
           {"cookie", "Cookie: session=evil"}, {"x_trace", "X-Trace: 666"}})
    c.push_back({"trailer_spoof_" + n, post_chunked("1\r\na\r\n0\r\n" + spoof + "\r\n\r\n"), 200, 1,
                 [](const outcome& o) {
                   EXPECT_EQ(o.requests.at(0).head.headers.size(), 2u);  // Host, Transfer-Encoding
                   EXPECT_EQ(o.requests.at(0).head.trace_id, "");
                   EXPECT_EQ(o.requests.at(0).trailers.size(), 1u);
                 }});
  c.push_back({"trailer_many_fields_ok", post_chunked("0\r\n" + headers(50) + "\r\n"), 200, 1, trailers_apart(2, 50)});
  c.push_back({"trailer_count_over_limit", post_chunked("0\r\n" + headers(101) + "\r\n"), 431});
  c.push_back({"trailer_section_over_limit", post_chunked("0\r\nA: " + std::string(65 * 1024, 'x') + "\r\n\r\n"), 431});
  c.push_back({"trailer_section_endless", post_chunked("0\r\n" + headers(8000)), 431});
  c.push_back({"trailer_endless_small_fields", post_chunked("1\r\na\r\n0\r\n" + headers(8000)), 431});
  c.push_back({"trailer_bad_field", post_chunked("0\r\nbad field\r\n\r\n"), 400});
  c.push_back({"trailer_incomplete", post_chunked("0\r\nA: 1\r\n"), 0});
  // --- Expect
  c.push_back({"expect_100_continue", post_length("abc", "Expect: 100-continue\r\n"), 200, 1,
               [](const outcome& o) { EXPECT_TRUE(o.requests.at(0).expect_continue); }});
  c.push_back({"expect_100_continue_case", post_length("abc", "Expect: 100-Continue\r\n"), 200, 1,
               [](const outcome& o) { EXPECT_TRUE(o.requests.at(0).expect_continue); }});
  c.push_back({"expect_100_continue_http10",
               "POST / HTTP/1.0\r\nContent-Length: 1\r\nExpect: 100-continue\r\n\r\na", 200, 1,
               [](const outcome& o) { EXPECT_FALSE(o.requests.at(0).expect_continue); }});
  c.push_back({"expect_other", post_length("abc", "Expect: something\r\n"), 417});
  // --- keep-alive and pipelining
  c.push_back({"pipelined_two", get("/a") + get("/b"), 200, 2, [](const outcome& o) {
                 EXPECT_EQ(o.requests.at(1).head.target, "/b");
               }});
  c.push_back({"pipelined_three_with_bodies", post_length("x") + post_chunked("1\r\ny\r\n0\r\n\r\n") + get("/c"), 200,
               3, [](const outcome& o) {
                 EXPECT_EQ(o.requests.at(0).body, "x");
                 EXPECT_EQ(o.requests.at(1).body, "y");
                 EXPECT_EQ(o.requests.at(2).head.target, "/c");
               }});
  c.push_back({"connection_close_stops_pipeline", get("/a", "Connection: close\r\n") + get("/b"), 200, 1,
               [](const outcome& o) { EXPECT_FALSE(o.requests.at(0).keep_alive); }});
  c.push_back({"http10_closes_by_default", get("/", "", "HTTP/1.0") + get("/b"), 200, 1,
               [](const outcome& o) { EXPECT_FALSE(o.requests.at(0).keep_alive); }});
  c.push_back({"http10_keep_alive", get("/", "Connection: keep-alive\r\n", "HTTP/1.0") + get("/b"), 200, 2});
  c.push_back({"http11_keep_alive_default", get("/") + get("/b"), 200, 2,
               [](const outcome& o) { EXPECT_TRUE(o.requests.at(0).keep_alive); }});
  c.push_back({"pipelined_second_bad", get("/a") + "BAD\r\n\r\n", 400});
  c.push_back({"smuggle_cl_then_te", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400});
  // --- trace headers
  c.push_back({"trace_x_trace", get("/", "X-Trace: 123\r\nX-Span: 456\r\n"), 200, 1, [](const outcome& o) {
                 EXPECT_EQ(o.requests.at(0).head.trace_id, "123");
                 EXPECT_EQ(o.requests.at(0).head.span_id, "456");
               }});
  c.push_back({"trace_traceparent",
               get("/", "traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\n"), 200, 1,
               [](const outcome& o) { EXPECT_EQ(o.requests.at(0).head.trace_id, "0af7651916cd43dd8448eb211c80319c"); }});
  // A valid traceparent wins, as with baseplate.py's propagators (trace.hpp).
  c.push_back({"trace_traceparent_wins", get("/", "traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\nX-Trace: 7\r\n"),
               200, 1, [](const outcome& o) { EXPECT_EQ(o.requests.at(0).head.trace_id, "0af7651916cd43dd8448eb211c80319c"); }});
  c.push_back({"trace_x_trace_without_valid_traceparent", get("/", "traceparent: nonsense\r\nX-Trace: 7\r\n"),
               200, 1, [](const outcome& o) { EXPECT_EQ(o.requests.at(0).head.trace_id, "7"); }});
  c.push_back({"trace_bad_traceparent", get("/", "traceparent: nonsense\r\n"), 200, 1,
               [](const outcome& o) { EXPECT_EQ(o.requests.at(0).head.trace_id, ""); }});
  // --- framing facts the app sees
  c.push_back({"head_reports_length", post_length("abc"), 200, 1, [](const outcome& o) {
                 EXPECT_EQ(o.requests.at(0).head.content_length, std::optional<std::uint64_t>(3));
                 EXPECT_FALSE(o.requests.at(0).head.chunked);
               }});
  c.push_back({"head_reports_chunked", post_chunked("0\r\n\r\n"), 200, 1, [](const outcome& o) {
                 EXPECT_TRUE(o.requests.at(0).head.chunked);
                 EXPECT_FALSE(o.requests.at(0).head.content_length);
               }});
  c.push_back({"empty_input_waits", "", 0});
  c.push_back({"partial_head_waits", "GET / HTTP/1.1\r\nHost: h\r\n", 0});
  return c;
}

class request_rules : public ::testing::TestWithParam<request_case> {};

TEST_P(request_rules, whole_and_byte_by_byte) {
  const auto& tc = GetParam();
  server_options opts;
  if (tc.tune) tc.tune(opts);
  for (std::size_t step : {std::size_t(0), std::size_t(1)}) {
    // Byte by byte through megabytes is slow and proves nothing more.
    if (step == 1 && tc.input.size() > 300 * 1024) continue;
    SCOPED_TRACE(step == 0 ? "all at once" : "one byte per read");
    auto o = run(opts, tc.input, step);
    EXPECT_EQ(o.status, tc.status);
    if (tc.status == 200) {
      EXPECT_EQ(o.requests.size(), tc.count);
    }
    if (tc.check && (tc.status == 200 || !o.requests.empty())) tc.check(o);
  }
}

INSTANTIATE_TEST_SUITE_P(http, request_rules, ::testing::ValuesIn(request_cases()),
                         [](const ::testing::TestParamInfo<request_case>& info) { return info.param.name; });

TEST(request_reader, waits_for_chunk_metadata_are_reported) {
  server_options opts;
  auto o = run(opts, post_chunked("5;ext=abc"), 0);
  EXPECT_EQ(o.status, 0u);
  EXPECT_TRUE(o.in_metadata);
  o = run(opts, post_chunked("5\r\nhel"), 0);
  EXPECT_FALSE(o.in_metadata);
  o = run(opts, post_chunked("5\r\nhello\r\n0\r\nA: 1\r\n"), 0);
  EXPECT_TRUE(o.in_metadata);
}

TEST(request_reader, reused_storage_holds_only_the_new_head) {
  // The connection parses each request into storage it reuses (strings
  // keep their capacity): nothing of the previous head may survive, and
  // the addresses the connection set once stay.
  server_options opts;
  request_reader reader(opts);
  request slot;
  slot.remote_host = "10.0.0.1";
  slot.remote_port = 4242;
  auto parse = [&](const std::string& text) {
    boost::beast::flat_buffer buf;
    auto b = buf.prepare(text.size());
    std::memcpy(b.data(), text.data(), text.size());
    buf.commit(text.size());
    return reader.read_head(buf);
  };
  reader.reset(&slot);
  ASSERT_EQ(parse("POST /first?q=1 HTTP/1.1\r\nHost: a.example\r\nX-Trace: 123\r\nX-Span: 456\r\n"
                  "X-Long: " + std::string(64, 'v') + "\r\nContent-Length: 0\r\nExpect: 100-continue\r\n\r\n"),
            result::head);
  EXPECT_EQ(&reader.head(), &slot);
  EXPECT_EQ(slot.headers.size(), 6u);
  EXPECT_EQ(slot.trace_id, "123");
  EXPECT_TRUE(slot.expect_continue);
  reader.reset(&slot);
  ASSERT_EQ(parse("GET /b HTTP/1.0\r\nX-Other: 1\r\n\r\n"), result::head);
  EXPECT_EQ(slot.method, "GET");
  EXPECT_EQ(slot.target, "/b");
  EXPECT_EQ(slot.version, 10u);
  ASSERT_EQ(slot.headers.size(), 1u);
  EXPECT_EQ(slot.headers[0], (std::pair<std::string, std::string>{"X-Other", "1"}));
  EXPECT_EQ(slot.trace_id, "");
  EXPECT_EQ(slot.span_id, "");
  EXPECT_FALSE(slot.content_length.has_value());
  EXPECT_FALSE(slot.expect_continue);
  EXPECT_EQ(slot.remote_host, "10.0.0.1");
  EXPECT_EQ(slot.remote_port, 4242u);
  // A span without a trace is none, as resolve_trace has it.
  reader.reset(&slot);
  ASSERT_EQ(parse("GET / HTTP/1.1\r\nHost: h\r\nX-Span: 9\r\n\r\n"), result::head);
  EXPECT_EQ(slot.span_id, "");
}

// ------------------------------------------------------------------ responses

struct response_case {
  std::string name;
  unsigned version = 11;
  bool head_request = false;
  bool keep_alive = true;
  std::vector<response_part> parts;
  /// The bytes on the wire, with the Date header's value as "<date>".
  std::string wire;
  bool keep_alive_after = true;
  bool close_after = false;
  response_writer::outcome first = response_writer::outcome::ok;
};

std::ostream& operator<<(std::ostream& os, const response_case& c) { return os << c.name; }

response_part part(std::optional<response_head> head, std::string body, bool last) {
  response_part p;
  p.head = std::move(head);
  p.body = std::move(body);
  p.last = last;
  return p;
}
response_head head(unsigned status, std::vector<std::pair<std::string, std::string>> h = {},
                   std::optional<std::string> reason = std::nullopt) {
  return response_head{status, std::move(reason), std::move(h)};
}

std::vector<response_case> response_cases() {
  std::vector<response_case> c;
  const std::string date = "Date: <date>\r\n";
  c.push_back({"whole_body_gets_length", 11, false, true, {part(head(200), "hi", true)},
               "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n" + date + "\r\nhi"});
  c.push_back({"empty_whole_body", 11, false, true, {part(head(200), "", true)},
               "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n" + date + "\r\n"});
  c.push_back({"streamed_body_is_chunked", 11, false, true,
               {part(head(200), "ab", false), part(std::nullopt, "cde", false), part(std::nullopt, "", true)},
               "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n" + date + "\r\n2\r\nab\r\n3\r\ncde\r\n0\r\n\r\n"});
  c.push_back({"streamed_http10_until_close", 10, false, true,
               {part(head(200), "ab", false), part(std::nullopt, "c", true)},
               "HTTP/1.0 200 OK\r\n" + date + "Connection: close\r\n\r\nabc", false});
  c.push_back({"http10_keep_alive_announced", 10, false, true, {part(head(200), "x", true)},
               "HTTP/1.0 200 OK\r\nContent-Length: 1\r\n" + date + "Connection: keep-alive\r\n\r\nx"});
  c.push_back({"http10_close", 10, false, false, {part(head(200), "x", true)},
               "HTTP/1.0 200 OK\r\nContent-Length: 1\r\n" + date + "Connection: close\r\n\r\nx", false});
  c.push_back({"app_length_kept", 11, false, true,
               {part(head(200, {{"Content-Length", "3"}}), "ab", false), part(std::nullopt, "c", true)},
               "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n" + date + "\r\nabc"});
  c.push_back({"app_length_excess_dropped", 11, false, true,
               {part(head(200, {{"Content-Length", "2"}}), "abcd", true)},
               "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n" + date + "\r\nab", false});
  c.push_back({"app_length_short_closes", 11, false, true,
               {part(head(200, {{"Content-Length", "5"}}), "ab", true)},
               "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n" + date + "\r\nab", false});
  c.push_back({"app_transfer_encoding_dropped_whole", 11, false, true,
               {part(head(200, {{"Transfer-Encoding", "chunked"}}), "raw", true)},
               "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n" + date + "\r\nraw"});
  c.push_back({"app_transfer_encoding_dropped_streamed", 11, false, true,
               {part(head(200, {{"Transfer-Encoding", "chunked"}}), "raw", false), part(std::nullopt, "", true)},
               "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n" + date + "\r\n3\r\nraw\r\n0\r\n\r\n"});
  c.push_back({"app_both_framings_length_wins", 11, false, true,
               {part(head(200, {{"Content-Length", "3"}, {"Transfer-Encoding", "chunked"}}), "abc", false),
                part(std::nullopt, "", true)},
               "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n" + date + "\r\nabc"});
  c.push_back({"app_transfer_encoding_gzip_dropped", 11, false, true,
               {part(head(200, {{"transfer-encoding", "gzip"}}), "z", true)},
               "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n" + date + "\r\nz"});
  c.push_back({"app_connection_close_obeyed", 11, false, true,
               {part(head(200, {{"Connection", "close"}}), "x", true)},
               "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n" + date + "Connection: close\r\n\r\nx", false});
  c.push_back({"app_connection_close_in_list", 11, false, true,
               {part(head(200, {{"connection", "Upgrade, CLOSE"}}), "x", true)},
               "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n" + date + "Connection: close\r\n\r\nx", false});
  c.push_back({"app_connection_keep_alive_dropped", 11, false, true,
               {part(head(200, {{"Connection", "keep-alive"}}), "x", true)},
               "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n" + date + "\r\nx"});
  c.push_back({"app_date_kept", 11, false, true,
               {part(head(200, {{"Date", "Tue, 01 Jan 2030 00:00:00 GMT"}}), "", true)},
               "HTTP/1.1 200 OK\r\nDate: Tue, 01 Jan 2030 00:00:00 GMT\r\nContent-Length: 0\r\n\r\n"});
  c.push_back({"custom_reason_kept", 11, false, true, {part(head(299, {}, "Fine"), "", true)},
               "HTTP/1.1 299 Fine\r\nContent-Length: 0\r\n" + date + "\r\n"});
  c.push_back({"empty_reason_stays_empty", 11, false, true, {part(head(299, {}, ""), "", true)},
               "HTTP/1.1 299 \r\nContent-Length: 0\r\n" + date + "\r\n"});
  c.push_back({"unknown_status_standard_reason_empty", 11, false, true, {part(head(299), "", true)},
               "HTTP/1.1 299 \r\nContent-Length: 0\r\n" + date + "\r\n"});
  c.push_back({"standard_reason", 11, false, true, {part(head(404), "", true)},
               "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n" + date + "\r\n"});
  c.push_back({"headers_in_order", 11, false, true, {part(head(200, {{"B", "2"}, {"A", "1"}}), "", true)},
               "HTTP/1.1 200 OK\r\nB: 2\r\nA: 1\r\nContent-Length: 0\r\n" + date + "\r\n"});
  c.push_back({"head_whole_body_length_described", 11, true, true, {part(head(200), "hello", true)},
               "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n" + date + "\r\n"});
  c.push_back({"head_empty_body_claims_no_length", 11, true, true, {part(head(200), "", true)},
               "HTTP/1.1 200 OK\r\n" + date + "\r\n"});
  c.push_back({"head_streamed_claims_no_length", 11, true, true,
               {part(head(200), "abc", false), part(std::nullopt, "", true)}, "HTTP/1.1 200 OK\r\n" + date + "\r\n"});
  c.push_back({"head_app_length_kept", 11, true, true,
               {part(head(200, {{"Content-Length", "42"}}), "", true)},
               "HTTP/1.1 200 OK\r\nContent-Length: 42\r\n" + date + "\r\n"});
  c.push_back({"no_content_no_body_no_length", 11, false, true,
               {part(head(204, {{"Content-Length", "3"}}), "abc", true)}, "HTTP/1.1 204 No Content\r\n" + date + "\r\n"});
  c.push_back({"not_modified_keeps_length", 11, false, true,
               {part(head(304, {{"Content-Length", "3"}}), "abc", true)},
               "HTTP/1.1 304 Not Modified\r\nContent-Length: 3\r\n" + date + "\r\n"});
  c.push_back({"close_after_announced", 11, false, true, {part(head(200), "x", true)},
               "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n" + date + "Connection: close\r\n\r\nx", false, true});
  c.push_back({"request_close_announced", 11, false, false, {part(head(200), "x", true)},
               "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n" + date + "Connection: close\r\n\r\nx", false});
  const std::string internal = "HTTP/1.1 500 Internal Server Error\r\nContent-Type: text/plain\r\nContent-Length: 22\r\n" +
                               date + "Connection: close\r\n\r\nInternal Server Error\n";
  for (auto [n, h] : std::vector<std::pair<std::string, response_head>>{
           {"invalid_status_low", head(99)},
           {"invalid_status_interim", head(101)},
           {"invalid_status_high", head(1000)},
           {"invalid_header_name", head(200, {{"Bad Name", "1"}})},
           {"empty_header_name", head(200, {{"", "1"}})},
           {"header_injection", head(200, {{"X", "1\r\nSet-Cookie: evil"}})},
           {"nul_in_value", head(200, {{"X", std::string("a\0b", 3)}})},
           {"reason_injection", head(200, {}, "OK\r\nX: y")},
           {"bad_content_length", head(200, {{"Content-Length", "12x"}})},
           {"empty_content_length", head(200, {{"Content-Length", ""}})},
           {"conflicting_content_length", head(200, {{"Content-Length", "1"}, {"Content-Length", "2"}})}})
    c.push_back({"replaced_" + n, 11, false, true, {part(h, "body", true)}, internal, false, false,
                 response_writer::outcome::replaced});
  c.push_back({"same_content_length_twice_ok", 11, false, true,
               {part(head(200, {{"Content-Length", "1"}, {"content-length", "1"}}), "x", true)},
               "HTTP/1.1 200 OK\r\nContent-Length: 1\r\ncontent-length: 1\r\n" + date + "\r\nx"});
  c.push_back({"body_ref_sent_in_place", 11, false, true,
               {[] {
                 static const std::string bytes = "referenced";
                 response_part p = part(head(200), "", true);
                 p.body_ref = bytes;
                 return p;
               }()},
               "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n" + date + "\r\nreferenced"});
  c.push_back({"body_before_head_refused", 11, false, true, {part(std::nullopt, "x", true)}, "", true, false,
               response_writer::outcome::refused});
  return c;
}

class response_rules : public ::testing::TestWithParam<response_case> {};

TEST_P(response_rules, frames_as_the_rfc_says) {
  const auto& tc = GetParam();
  response_writer w;
  w.begin(tc.version, tc.head_request, tc.keep_alive);
  std::string wire;
  bool first = true;
  for (const auto& p : tc.parts) {
    auto r = w.frame(p, tc.close_after);
    if (first) {
      EXPECT_EQ(r, tc.first);
    }
    first = false;
    if (r == response_writer::outcome::refused) break;
    wire.append(w.head());
    wire.append(w.body());
    wire.append(w.tail());
  }
  wire = std::regex_replace(wire, std::regex("Date: [A-Z][a-z]{2}, \\d{2} [A-Z][a-z]{2} \\d{4} \\d{2}:\\d{2}:\\d{2} GMT"),
                            "Date: <date>");
  if (tc.parts.size() == 1 && tc.parts[0].head && tc.parts[0].head->headers.size() == 1 &&
      tc.parts[0].head->headers[0].first == "Date")
    wire = std::regex_replace(wire, std::regex("Date: <date>"), "Date: Tue, 01 Jan 2030 00:00:00 GMT");
  EXPECT_EQ(wire, tc.wire);
  if (tc.first != response_writer::outcome::refused) {
    EXPECT_EQ(w.keep_alive(), tc.keep_alive_after);
  }
}

INSTANTIATE_TEST_SUITE_P(http, response_rules, ::testing::ValuesIn(response_cases()),
                         [](const ::testing::TestParamInfo<response_case>& info) { return info.param.name; });

TEST(response_writer, second_head_refused) {
  response_writer w;
  w.begin(11, false, true);
  EXPECT_EQ(w.frame(part(head(200), "a", false)), response_writer::outcome::ok);
  EXPECT_EQ(w.frame(part(head(200), "b", true)), response_writer::outcome::refused);
}

TEST(response_writer, write_after_last_refused) {
  response_writer w;
  w.begin(11, false, true);
  EXPECT_EQ(w.frame(part(head(200), "a", true)), response_writer::outcome::ok);
  EXPECT_EQ(w.frame(part(std::nullopt, "b", true)), response_writer::outcome::refused);
}

TEST(response_writer, date_is_an_imf_fixdate_formatted_once_a_second) {
  auto d = http_date();
  EXPECT_TRUE(std::regex_match(std::string(d), std::regex("[A-Z][a-z]{2}, \\d{2} [A-Z][a-z]{2} \\d{4} \\d{2}:\\d{2}:\\d{2} GMT")))
      << d;
  EXPECT_EQ(http_date().data(), d.data());  // the same buffer: no formatting per call
}

TEST(response_writer, sendfile_allowance_follows_the_framing) {
  response_writer w;
  w.begin(11, false, true);
  w.frame(part(head(200, {{"Content-Length", "10"}}), "", false));
  EXPECT_EQ(w.file_allowance(100), std::optional<std::uint64_t>(10));
  w.account(4);
  EXPECT_EQ(w.file_allowance(100), std::optional<std::uint64_t>(6));
  response_writer chunked;
  chunked.begin(11, false, true);
  chunked.frame(part(head(200), "", false));
  EXPECT_FALSE(chunked.file_allowance(5));
  response_writer head_only;
  head_only.begin(11, true, true);
  head_only.frame(part(head(200, {{"Content-Length", "10"}}), "", false));
  EXPECT_EQ(head_only.file_allowance(5), std::optional<std::uint64_t>(0));
}

TEST(response_writer, stock_replies_close) {
  for (unsigned s : {400u, 413u, 414u, 431u, 500u, 501u, 503u, 505u}) {
    response_writer w;
    w.begin(11, false, true);
    EXPECT_EQ(w.frame(response_writer::stock_reply(s)), response_writer::outcome::ok);
    EXPECT_FALSE(w.keep_alive());
    EXPECT_NE(std::string(w.head()).find(" " + std::to_string(s) + " "), std::string::npos);
  }
}

TEST(field_checks, names_and_values) {
  EXPECT_FALSE(check_field_name("X-Good_1.2~"));
  EXPECT_TRUE(check_field_name("Bad:Name"));
  EXPECT_TRUE(check_field_name(""));
  EXPECT_FALSE(check_field_value("visible \t and obs-text \xff"));
  EXPECT_TRUE(check_field_value("a\nb"));
  EXPECT_TRUE(check_field_value(std::string("a\0b", 3)));
  EXPECT_TRUE(check_field_value("a\x7f"));
}

}  // namespace
