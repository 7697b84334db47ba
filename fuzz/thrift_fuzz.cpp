// libFuzzer target: arbitrary bytes through the Thrift framing code of
// cpp/core/thrift/codec.cpp, as cpp/core/thrift/connection.cpp drives it:
// find_message() on the connection's buffer; when a message is complete,
// codec::decode() on it (a malformed one throws and the connection is
// closed); then the payload, headers, protocol and method name the call
// hands the app, and codec::encode() of a reply (the request's own payload
// echoed, with its headers, with and without zlib); then the next message
// on the same connection.
//
// Invariants beyond "no crash, no sanitizer report": find_message() never
// reports a message larger than the buffer or over max_frame_size, and a
// reply encode() produced decodes again to the same payload and headers
// with a fresh codec.
#include "thrift/codec.hpp"

#include <thrift/Thrift.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

namespace {

// Small, so that "over max_frame_size" (also after inflating) is reachable.
constexpr std::size_t max_frame = 64 * 1024;

[[noreturn]] void fail(const char* what) {
  std::fprintf(stderr, "invariant violated: %s\n", what);
  std::abort();
}

/// A reply is read back by a client; here by the server's own decoder,
/// which accepts every framing it writes.
void check_round_trip(const std::string& reply, baseplate::thrift::client_type type) {
  using baseplate::thrift::message_bounds;
  auto b = baseplate::thrift::find_message(reinterpret_cast<const std::uint8_t*>(reply.data()), reply.size(),
                                           16 * 1024 * 1024);
  if (b.status != message_bounds::complete || b.size != reply.size()) fail("encode() wrote an unreadable reply");
  (void)type;
}

}  // namespace

/// FUZZ_LAST_INPUT=PATH: each input is written there before it runs, for
/// crashes that leave libFuzzer no stack to write its own artifact with.
static void save_input(const std::uint8_t* data, std::size_t size) {
  static const char* path = std::getenv("FUZZ_LAST_INPUT");
  if (!path) return;
  if (FILE* f = std::fopen(path, "wb")) {
    std::fwrite(data, 1, size, f);
    std::fclose(f);
  }
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using baseplate::thrift::message_bounds;
  save_input(data, size);
  // The connection's buffer: find_message() looks at what has arrived.
  std::vector<std::uint8_t> buffer(data, data + size);
  baseplate::thrift::codec codec(max_frame);
  std::size_t pos = 0;
  for (int calls = 0; calls < 16 && pos < buffer.size(); ++calls) {
    std::uint8_t* start = buffer.data() + pos;
    std::size_t avail = buffer.size() - pos;
    auto bounds = baseplate::thrift::find_message(start, avail, max_frame);
    if (bounds.status == message_bounds::invalid) {
      if (bounds.error.empty()) fail("invalid without a reason");
      return 0;  // connection closed with a WARNING
    }
    if (bounds.status == message_bounds::need_more) return 0;
    if (bounds.size == 0 || bounds.size > avail) fail("complete message larger than the buffer");
    if (bounds.size > max_frame + 4) fail("complete message over max_frame_size");
    // decode() works on the connection's buffer in place: give it exactly
    // the message, in its own allocation, so ASan sees any over-read.
    std::vector<std::uint8_t> message(start, start + bounds.size);
    try {
      codec.decode(message.data(), message.size());
    } catch (const apache::thrift::TException&) {
      return 0;  // connection closed with a WARNING
    } catch (const std::exception&) {
      return 0;
    }
    std::string payload(codec.payload());
    auto headers = codec.headers();
    (void)codec.protocol_id();
    auto type = codec.type();
    (void)codec.method_name();
    if (!payload.empty()) {
      bool zlib = (calls & 1) != 0;
      std::string reply;
      try {
        reply = codec.encode(payload, headers, zlib);
      } catch (const apache::thrift::TException&) {
        return 0;  // "could not encode a Thrift reply": connection closed
      }
      check_round_trip(reply, type);
      // A fresh codec reads the reply back: same payload, same headers.
      baseplate::thrift::codec reader(16 * 1024 * 1024);
      std::vector<std::uint8_t> copy(reply.begin(), reply.end());
      try {
        reader.decode(copy.data(), copy.size());
      } catch (const apache::thrift::TException& e) {
        std::fprintf(stderr, "reply does not decode: %s\n", e.what());
        fail("encode() wrote a reply decode() rejects");
      }
      if (reader.payload() != payload) fail("reply payload differs after a round trip");
      if (reader.type() != type) fail("reply framing differs from the request's");
      if (type == baseplate::thrift::client_type::header && reader.headers() != headers)
        fail("reply headers differ after a round trip");
    }
    pos += bounds.size;
  }
  return 0;
}
