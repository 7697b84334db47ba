#include "trace.hpp"

#include <gtest/gtest.h>

using baseplate::resolve_trace;

namespace {
constexpr const char* w3c = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
}

TEST(trace, traceparent_wins_over_baseplate_headers_as_in_baseplate_py) {
  auto tc = resolve_trace("1234", "77", w3c);
  EXPECT_EQ(tc.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
  EXPECT_EQ(tc.span_id, "00f067aa0ba902b7");
}

TEST(trace, baseplate_headers_without_a_valid_traceparent) {
  auto tc = resolve_trace("1234", "77", "");
  EXPECT_EQ(tc.trace_id, "1234");
  EXPECT_EQ(tc.span_id, "77");
  tc = resolve_trace("1234", "77", "garbage");
  EXPECT_EQ(tc.trace_id, "1234");
  tc = resolve_trace("1234", "77", "00-00000000000000000000000000000000-00f067aa0ba902b7-01");
  EXPECT_EQ(tc.trace_id, "1234");
}

TEST(trace, none) {
  auto tc = resolve_trace("", "77", "garbage");
  EXPECT_TRUE(tc.trace_id.empty());
  EXPECT_TRUE(tc.span_id.empty());
}
