#include "options.hpp"

#include <gtest/gtest.h>

#include <set>
#include <string>

using namespace baseplate;

TEST(options, defaults_of_the_struct_are_the_table_defaults) {
  server_options o;
  // baseplate.py 2.7's stop_timeout (wsgi.py, thrift.py).
  EXPECT_EQ(o.stop_timeout, std::chrono::seconds(10));
  EXPECT_EQ(find_option("stop_timeout")->default_value, 10'000);
  EXPECT_EQ(o.io_threads, 1u);
  EXPECT_EQ(o.max_body_size, 1024ull * 1024 * 1024);
  EXPECT_FALSE(o.access_log);
  // baseplate.py 2.7's drain time (load_app_and_run_server): a Python-side option.
  ASSERT_NE(find_option("drain_time"), nullptr);
  EXPECT_EQ(find_option("drain_time")->user, option_user::python);
  EXPECT_EQ(find_option("drain_time")->default_value, 5'000);
}

TEST(options, every_row_has_a_unique_key_a_doc_and_its_default_in_range) {
  std::set<std::string> keys;
  for (const auto& row : server_option_table) {
    SCOPED_TRACE(row.key);
    EXPECT_TRUE(keys.insert(row.key).second);
    EXPECT_STRNE(row.doc, "");
    if (row.kind == option_kind::choice || row.kind == option_kind::text) {
      EXPECT_STRNE(row.default_text, "");
      continue;
    }
    EXPECT_LE(row.min, row.default_value);
    EXPECT_LE(row.default_value, row.max);
    // A zero meaning is documented exactly when 0 is allowed and special.
    if (*row.zero) {
      EXPECT_EQ(row.min, 0);
    }
  }
}

TEST(options, set_option_sets_each_core_member_in_the_tables_unit) {
  server_options o;
  set_option(o, "stop_timeout", 2500);
  EXPECT_EQ(o.stop_timeout, std::chrono::milliseconds(2500));
  set_option(o, "io_threads", 4);
  EXPECT_EQ(o.io_threads, 4u);
  set_option(o, "body_preread", 0);
  EXPECT_EQ(o.body_preread, 0u);
  set_option(o, "access_log", 1);
  EXPECT_TRUE(o.access_log);
  set_option(o, "max_body_size", 1024ll * 1024 * 1024 * 1024);
  EXPECT_EQ(o.max_body_size, 1024ull * 1024 * 1024 * 1024);
}

TEST(options, set_option_refuses_unknown_python_side_and_out_of_range) {
  server_options o;
  EXPECT_THROW(set_option(o, "io_thread", 1), std::invalid_argument);
  EXPECT_THROW(set_option(o, "stop_timeout_ms", 1), std::invalid_argument);
  EXPECT_THROW(set_option(o, "python_threads", 4), std::invalid_argument);
  EXPECT_THROW(set_option(o, "drain_time", 0), std::invalid_argument);
  EXPECT_THROW(set_option(o, "io_threads", 100000), std::out_of_range);
  EXPECT_THROW(set_option(o, "io_threads", 257), std::out_of_range);
  EXPECT_THROW(set_option(o, "stop_timeout", -1), std::out_of_range);
  EXPECT_EQ(o.io_threads, 1u);
}
