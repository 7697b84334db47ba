// The main() the two reference HTTP servers share (raw_asio_server,
// beast_server): one io_context on one thread, an acceptor on
// 127.0.0.1:PORT with TCP_NODELAY on accepted sockets, SIGINT/SIGTERM to
// stop, and "listening on 127.0.0.1:PORT" once accepting. `Session` is
// constructed from the accepted socket, held by a shared_ptr, and started
// with read().
#pragma once

#include <boost/asio.hpp>

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <iostream>
#include <memory>

namespace bench {

template <class Session>
void accept_loop(boost::asio::ip::tcp::acceptor& acceptor) {
  acceptor.async_accept([&acceptor](boost::system::error_code ec, boost::asio::ip::tcp::socket socket) {
    if (ec == boost::asio::error::operation_aborted) return;
    if (!ec) {
      socket.set_option(boost::asio::ip::tcp::no_delay(true), ec);
      std::make_shared<Session>(std::move(socket))->read();
    }
    accept_loop<Session>(acceptor);
  });
}

template <class Session>
int serve_main(int argc, char** argv, const char* name) {
  namespace asio = boost::asio;
  using asio::ip::tcp;
  const int port = argc == 2 ? std::atoi(argv[1]) : 0;
  if (port <= 0 || port > 65535) {
    std::cerr << "usage: " << name << " PORT\n";
    return 2;
  }
  asio::io_context ioc(1);
  tcp::acceptor acceptor(ioc);
  try {
    acceptor = tcp::acceptor(ioc, tcp::endpoint(asio::ip::make_address("127.0.0.1"), static_cast<unsigned short>(port)));
  } catch (const std::exception& e) {
    std::cerr << name << ": cannot listen on 127.0.0.1:" << port << ": " << e.what() << "\n";
    return 1;
  }
  asio::signal_set signals(ioc, SIGINT, SIGTERM);
  signals.async_wait([&](boost::system::error_code, int) { ioc.stop(); });
  accept_loop<Session>(acceptor);
  std::printf("listening on 127.0.0.1:%d\n", port);
  std::fflush(stdout);
  ioc.run();
  return 0;
}

}  // namespace bench
