#include "processor_handler.hpp"

#include "../log.hpp"
#include "codec.hpp"
#include "native_app_headers.hpp"

#include <thrift/TProcessor.h>
#include <thrift/protocol/TBinaryProtocol.h>
#include <thrift/protocol/TCompactProtocol.h>
#include <thrift/protocol/TProtocolException.h>
#include <thrift/protocol/TProtocolTypes.h>
#include <thrift/transport/TBufferTransports.h>
#include <thrift/transport/TTransportException.h>

namespace baseplate::thrift {
namespace at = apache::thrift;

namespace {
thread_local const headers_map* request_headers = nullptr;
thread_local headers_map* reply_headers = nullptr;
}  // namespace

scoped_native_app_headers::scoped_native_app_headers(const headers_map& request, headers_map& reply) {
  request_headers = &request;
  reply_headers = &reply;
}
scoped_native_app_headers::~scoped_native_app_headers() {
  request_headers = nullptr;
  reply_headers = nullptr;
}

const char* native_app_request_header(const char* key) {
  if (!request_headers || !key) return nullptr;
  auto it = request_headers->find(key);
  return it == request_headers->end() ? nullptr : it->second.c_str();
}

void native_app_set_reply_header(const char* key, const char* value) {
  if (reply_headers && key && value) (*reply_headers)[key] = value;
}

processor_handler::processor_handler(std::shared_ptr<at::TProcessor> processor, std::string name)
    : processor_(std::move(processor)), name_(std::move(name)) {}

void processor_handler::fail_call(call& c, const std::string& what) {
  // What a generated processor lets escape besides protocol errors is the
  // app's own failure: the caller gets a TApplicationException (oneway
  // calls get nothing), the server keeps serving.
  std::string reply;
  try {
    reply = exception_reply(c.payload(), c.protocol_id(), "Internal error");
  } catch (const std::exception&) {
    c.fail();
    return;
  }
  log::write(log::level::error, "baseplate_serve.thrift", name_ + " failed: " + what);
  c.reply(std::move(reply), {});
}

void processor_handler::handle(std::shared_ptr<call> c) {
  auto payload = c->payload();
  // OBSERVE: the buffer reads the payload in place and never writes it.
  auto in = std::make_shared<at::transport::TMemoryBuffer>(
      reinterpret_cast<std::uint8_t*>(const_cast<char*>(payload.data())), static_cast<std::uint32_t>(payload.size()));
  auto out = std::make_shared<at::transport::TMemoryBuffer>();
  std::shared_ptr<at::protocol::TProtocol> iprot, oprot;
  // No string or container of the request can be longer than the request.
  auto limit = static_cast<std::int32_t>(payload.size());
  if (c->protocol_id() == at::protocol::T_COMPACT_PROTOCOL) {
    iprot = std::make_shared<at::protocol::TCompactProtocol>(in, limit, limit);
    oprot = std::make_shared<at::protocol::TCompactProtocol>(out);
  } else {
    iprot = std::make_shared<at::protocol::TBinaryProtocol>(in, limit, limit, false, true);
    oprot = std::make_shared<at::protocol::TBinaryProtocol>(out);
  }
  headers_map reply;
  try {
    scoped_native_app_headers scope(c->headers(), reply);
    // Generated processors answer app exceptions and unknown methods
    // themselves; what escapes broke the protocol.
    processor_->process(iprot, oprot, nullptr);
  } catch (const at::protocol::TProtocolException& e) {
    log::write(log::level::warning, "baseplate_serve.thrift",
               "closing Thrift connection from " + c->peer() + ": undecodable request (" + e.what() + ")");
    c->fail();
    return;
  } catch (const at::transport::TTransportException& e) {
    log::write(log::level::warning, "baseplate_serve.thrift",
               "closing Thrift connection from " + c->peer() + ": undecodable request (" + e.what() + ")");
    c->fail();
    return;
  } catch (const std::exception& e) {
    return fail_call(*c, e.what());
  } catch (...) {
    return fail_call(*c, "a non-standard exception");
  }
  c->reply(out->getBufferAsString(), std::move(reply));
}

}  // namespace baseplate::thrift
