#pragma once
/// THeader info headers of the call a native TProcessor is processing on
/// this thread, for the SDK's host_api.
#include "codec.hpp"

namespace baseplate::thrift {

/// Makes `request` readable and `reply` writable by the native app on this
/// thread for the lifetime of the object.
class scoped_native_app_headers {
 public:
  scoped_native_app_headers(const headers_map& request, headers_map& reply);
  ~scoped_native_app_headers();
  scoped_native_app_headers(const scoped_native_app_headers&) = delete;
  scoped_native_app_headers& operator=(const scoped_native_app_headers&) = delete;
};

const char* native_app_request_header(const char* key);
void native_app_set_reply_header(const char* key, const char* value);

}  // namespace baseplate::thrift
