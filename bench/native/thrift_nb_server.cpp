// thrift_nb_server: Apache Thrift's own C++ TNonblockingServer as a Thrift peer.
//
//   thrift_nb_server PORT
//
// Serves the Echo service of examples/thrift_echo/echo.thrift (echo() returns
// its argument; the other methods are trivial) on 127.0.0.1:PORT with
// TNonblockingServer: ONE libevent I/O thread and no thread manager, so the
// handler runs on the I/O thread; TFramedTransport + TBinaryProtocol (the
// server's defaults). Needs libthriftnb (pkg-config thrift-nb) and libevent-dev.
// Prints `listening on 127.0.0.1:PORT` once accepting; exits 0 on SIGTERM/SIGINT
// (a thread waits for the signal and calls server->stop()).
#include "Echo.h"

#include <thrift/TProcessor.h>
#include <thrift/server/TNonblockingServer.h>
#include <thrift/transport/TNonblockingServerSocket.h>

#include <pthread.h>
#include <signal.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <iostream>
#include <map>
#include <memory>
#include <string>
#include <thread>

using apache::thrift::server::TNonblockingServer;
using apache::thrift::server::TServerEventHandler;
using apache::thrift::transport::TNonblockingServerSocket;

namespace {

std::atomic<bool> signalled{false};  // set once the signal came
std::atomic<bool> finished{false};   // set once serve() returned

class echo_handler : public echo::EchoIf {
 public:
  void echo(std::string& result, const std::string& message) override { result = message; }
  void fail_declared(const std::string& message) override {
    echo::EchoError err;
    err.message = message;
    throw err;
  }
  void fail_undeclared(const std::string& message) override { throw std::runtime_error(message); }
  void remember(const std::string& message) override { remembered_ = message; }
  void recall(std::string& result) override { result = remembered_; }
  void request_headers(std::map<std::string, std::string>& result) override { result.clear(); }

 private:
  std::string remembered_;  // only the one I/O thread touches it
};

// preServe() runs once the server socket is listening.
class announce : public TServerEventHandler {
 public:
  explicit announce(int port) : port_(port) {}
  void preServe() override {
    std::printf("listening on 127.0.0.1:%d\n", port_);
    std::fflush(stdout);
  }

 private:
  int port_;
};

}  // namespace

int main(int argc, char** argv) {
  const int port = argc == 2 ? std::atoi(argv[1]) : 0;
  if (port <= 0 || port > 65535) {
    std::cerr << "usage: thrift_nb_server PORT\n";
    return 2;
  }
  // Block the signals in every thread; one thread takes them with sigwait().
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  auto processor = std::make_shared<echo::EchoProcessor>(std::make_shared<echo_handler>());
  auto socket = std::make_shared<TNonblockingServerSocket>("127.0.0.1", port);
  auto server = std::make_shared<TNonblockingServer>(processor, socket);
  server->setNumIOThreads(1);
  server->setServerEventHandler(std::make_shared<announce>(port));

  std::thread waiter([&] {
    int sig = 0;
    sigwait(&signals, &sig);
    signalled = true;
    // stop() only reaches an event loop that runs already: repeat it until serve() returns.
    while (!finished) {
      server->stop();
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  });
  try {
    server->serve();  // returns after stop()
  } catch (const std::exception& e) {
    std::cerr << "thrift_nb_server: " << e.what() << "\n";
    std::_Exit(1);  // the waiter thread is still blocked in sigwait()
  }
  finished = true;
  // serve() returned by itself (not normally reached): wake the waiter.
  if (!signalled) pthread_kill(waiter.native_handle(), SIGTERM);
  waiter.join();
  return 0;
}
