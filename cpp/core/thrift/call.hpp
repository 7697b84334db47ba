#pragma once
/// One Thrift call between the core and an app: the request message as
/// the client's protocol encoded it, and the way back for the reply.
#include "codec.hpp"

#include <memory>
#include <string>
#include <string_view>

namespace baseplate::thrift {

class call {
 public:
  virtual ~call() = default;
  /// The protocol-encoded request message (THeader framing removed).
  virtual std::string_view payload() const = 0;
  /// THeader info headers of the request (empty for other client types).
  virtual const headers_map& headers() const = 0;
  /// T_BINARY_PROTOCOL (0) or T_COMPACT_PROTOCOL (2).
  virtual int protocol_id() const = 0;
  virtual client_type type() const = 0;
  /// The client, "host:port" (for log lines).
  virtual const std::string& peer() const = 0;
  /// Sends the reply (protocol-encoded, same protocol as the request) with
  /// THeader info headers. An empty payload sends nothing (oneway calls).
  /// `zlib`: compress a THeader reply even if the request was not
  /// (a compressed request always gets a compressed reply).
  /// Any thread; once per call.
  virtual void reply(std::string payload, headers_map headers, bool zlib = false) = 0;
  /// Gives up: the connection is closed. Any thread.
  virtual void fail() = 0;
};

/// What a Thrift app is to the core. Called on an I/O thread: must return
/// quickly and reply later (from any thread).
class handler {
 public:
  virtual ~handler() = default;
  virtual void handle(std::shared_ptr<call> c) = 0;
};

}  // namespace baseplate::thrift
