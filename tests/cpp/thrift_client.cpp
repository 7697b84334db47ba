// A C++ Thrift client of the echo example (examples/thrift_echo/echo.thrift),
// built with libthrift and the code that `thrift --gen cpp` makes at build
// time (see thrift_client/CMakeLists.txt).
//
//   thrift_client HOST PORT KIND
//
// KIND: framed_binary, buffered_binary, framed_compact, header (THeader with
// the binary protocol inside) or header_compact. Calls echo("from c++") and
// prints the result; the THeader kinds also send the info header
// Trace: from-c++ and print the reply's Echo-Trace header. No zlib transform:
// libthrift 0.17's THeaderTransport zlib is broken. Exit 0 on success.
#include "Echo.h"

#include <thrift/protocol/TBinaryProtocol.h>
#include <thrift/protocol/TCompactProtocol.h>
#include <thrift/protocol/THeaderProtocol.h>
#include <thrift/transport/TBufferTransports.h>
#include <thrift/transport/TSocket.h>

#include <cstdlib>
#include <iostream>
#include <memory>
#include <string>

using apache::thrift::protocol::TBinaryProtocol;
using apache::thrift::protocol::TCompactProtocol;
using apache::thrift::protocol::THeaderProtocol;
using apache::thrift::protocol::TProtocol;
using apache::thrift::transport::TBufferedTransport;
using apache::thrift::transport::TFramedTransport;
using apache::thrift::transport::TSocket;
using apache::thrift::transport::TTransport;

namespace {

int usage() {
  std::cerr << "usage: thrift_client HOST PORT framed_binary|buffered_binary|framed_compact|header|header_compact\n";
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 4) return usage();
  const std::string host = argv[1];
  const int port = std::atoi(argv[2]);
  const std::string kind = argv[3];
  if (port <= 0 || port > 65535) return usage();

  try {
    auto socket = std::make_shared<TSocket>(host, port);
    socket->setConnTimeout(10000);
    socket->setRecvTimeout(10000);
    socket->setSendTimeout(10000);

    std::shared_ptr<TTransport> transport;
    std::shared_ptr<TProtocol> protocol;
    std::shared_ptr<THeaderProtocol> header;
    if (kind == "framed_binary") {
      transport = std::make_shared<TFramedTransport>(socket);
      protocol = std::make_shared<TBinaryProtocol>(transport);
    } else if (kind == "buffered_binary") {
      transport = std::make_shared<TBufferedTransport>(socket);
      protocol = std::make_shared<TBinaryProtocol>(transport);
    } else if (kind == "framed_compact") {
      transport = std::make_shared<TFramedTransport>(socket);
      protocol = std::make_shared<TCompactProtocol>(transport);
    } else if (kind == "header" || kind == "header_compact") {
      header = std::make_shared<THeaderProtocol>(
          socket, kind == "header" ? apache::thrift::protocol::T_BINARY_PROTOCOL
                                   : apache::thrift::protocol::T_COMPACT_PROTOCOL);
      header->setHeader("Trace", "from-c++");
      transport = header->getTransport();
      protocol = header;
    } else {
      return usage();
    }

    transport->open();
    echo::EchoClient client(protocol);
    std::string result;
    client.echo(result, "from c++");
    std::cout << result << std::endl;
    if (header) {
      const auto& replied = header->getHeaders();
      auto it = replied.find("Echo-Trace");
      std::cout << "Echo-Trace: " << (it == replied.end() ? std::string("(none)") : it->second) << std::endl;
      if (it == replied.end() || it->second != "from-c++") {
        std::cerr << "the reply lacks the Echo-Trace header\n";
        transport->close();
        return 1;
      }
    }
    transport->close();
    return result == "from c++" ? 0 : 1;
  } catch (const std::exception& e) {
    std::cerr << "thrift_client " << kind << ": " << e.what() << "\n";
    return 1;
  }
}
