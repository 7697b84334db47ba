#pragma once
/// One request/response between the server and an HTTP app. The app reads
/// the body and writes the response through it, from any thread;
/// completions run on the connection's I/O thread and must not block.
#include <baseplate/http/request.hpp>
#include <baseplate/http/response.hpp>

#include <boost/system/error_code.hpp>

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

namespace baseplate::http {

/// Delivers the next piece of the body; empty with no error = end of body.
using read_handler = std::function<void(boost::system::error_code, std::string_view)>;
/// Reports that a write went out (or why not).
using write_handler = std::function<void(boost::system::error_code)>;

class exchange {
 public:
  virtual ~exchange() = default;

  /// The request head, fixed for the exchange's lifetime.
  virtual const request& req() const = 0;

  /// Reads up to `max` bytes of the body. Bytes already received are handed
  /// over at once; otherwise one read is made (sending "100 Continue" first
  /// when the client asked for it). One read at a time.
  virtual void read_body(std::size_t max, read_handler h) = 0;

  /// Sends a response part. The first part must carry the head. The
  /// handler may be empty when the caller does not wait.
  virtual void write(response_part part, write_handler h) = 0;

  /// Sends `count` bytes of the open file `fd` from `offset` with sendfile(2)
  /// as body bytes (the head must already be written). The fd stays the
  /// caller's and must stay open until the handler runs.
  virtual void send_file(int fd, std::uint64_t offset, std::uint64_t count, write_handler h) = 0;

  /// Gives up on the response: the connection is closed (used when an app
  /// fails after the head went out). Idempotent.
  virtual void abort() = 0;
};

/// What an HTTP app is to the server. handle() is called on an I/O thread,
/// with no Python lock held: it must return quickly (complete the exchange
/// then, or later from any thread).
class handler {
 public:
  virtual ~handler() = default;
  virtual void handle(std::shared_ptr<exchange> ex) = 0;
};

}  // namespace baseplate::http
