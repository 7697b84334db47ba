#include "http/response_head.hpp"

#include <gtest/gtest.h>

using namespace baseplate::http;

TEST(response_head, serialises_status_line_and_headers_in_order) {
  response_head h{404, "", {{"Content-Type", "text/plain"}, {"X-A", "1"}}};
  std::string out;
  append_head(out, 11, h);
  EXPECT_EQ(out, "HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nX-A: 1\r\n");
}

TEST(response_head, keeps_a_custom_reason_and_http10) {
  response_head h{299, "Fine", {}};
  std::string out;
  append_head(out, 10, h);
  EXPECT_EQ(out, "HTTP/1.0 299 Fine\r\n");
}

TEST(response_head, finds_content_length_and_transfer_encoding) {
  framing f;
  EXPECT_FALSE(inspect({200, "", {{"content-length", "12"}, {"Transfer-Encoding", "gzip"}}}, f));
  ASSERT_TRUE(f.content_length);
  EXPECT_EQ(*f.content_length, 12u);
  EXPECT_TRUE(f.app_transfer_encoding);
}

TEST(response_head, refuses_header_injection_and_bad_names) {
  framing f;
  EXPECT_TRUE(inspect({200, "", {{"X-A", "1\r\nSet-Cookie: x"}}}, f));
  EXPECT_TRUE(inspect({200, "", {{"Bad Name", "1"}}}, f));
  EXPECT_TRUE(inspect({200, "", {{"", "1"}}}, f));
  EXPECT_TRUE(inspect({200, "OK\r\n", {}}, f));
  EXPECT_TRUE(inspect({42, "", {}}, f));
}

TEST(response_head, refuses_bad_or_conflicting_content_length) {
  framing f;
  EXPECT_TRUE(inspect({200, "", {{"Content-Length", "12x"}}}, f));
  framing g;
  EXPECT_TRUE(inspect({200, "", {{"Content-Length", "1"}, {"Content-Length", "2"}}}, g));
  framing h;
  EXPECT_TRUE(inspect({200, "", {{"Content-Length", ""}}}, h));
}

TEST(response_head, knows_statuses_without_body) {
  EXPECT_TRUE(status_has_no_body(100));
  EXPECT_TRUE(status_has_no_body(204));
  EXPECT_TRUE(status_has_no_body(304));
  EXPECT_FALSE(status_has_no_body(200));
  EXPECT_EQ(reason_phrase(200), "OK");
}
