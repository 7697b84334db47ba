#pragma once
/// THeader info headers of the call a native TProcessor is processing on
/// this thread, for the SDK's host_api.
#include "codec.hpp"

namespace baseplate::thrift {

/// Makes `request` readable and `reply` writable by the plugin on this
/// thread for the lifetime of the object.
class scoped_plugin_headers {
 public:
  scoped_plugin_headers(const headers_map& request, headers_map& reply);
  ~scoped_plugin_headers();
  scoped_plugin_headers(const scoped_plugin_headers&) = delete;
  scoped_plugin_headers& operator=(const scoped_plugin_headers&) = delete;
};

const char* plugin_request_header(const char* key);
void plugin_set_reply_header(const char* key, const char* value);

}  // namespace baseplate::thrift
