#pragma once
/// The descriptor of an io_context's reactor (Asio's epoll instance), for a
/// host event loop that must notice when the io_context has work: an epoll
/// descriptor is readable while any descriptor registered in it is ready,
/// and Asio registers in it everything that makes work (sockets, its timer
/// descriptor for steady_timer deadlines, its interrupter for handlers
/// posted from outside the loop).
namespace baseplate {

/// Returns the epoll descriptor of the reactor that `probe` (a descriptor
/// registered with an io_context, e.g. a posix::stream_descriptor) is
/// registered with; it is owned by that io_context: never close it. Throws
/// std::runtime_error when it cannot be found.
///
/// Asio keeps that descriptor private (epoll_reactor::epoll_fd_, Boost
/// 1.74) and offers no accessor. Rather than reach into that member (which
/// ties the code to one Boost's private layout), this asks the kernel:
/// the caller registers a probe descriptor with the reactor through Asio's
/// public API, and this looks in /proc/self/fd for the epoll instance whose interest
/// list (/proc/self/fdinfo, "tfd:" lines) holds the probe. That can only
/// be the reactor's, whatever else in the process uses epoll (gevent's own
/// loop does), and a failure is loud, never a wrong descriptor.
int reactor_descriptor(int probe);

}  // namespace baseplate
