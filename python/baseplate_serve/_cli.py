"""The ``baseplate-serve`` command: the command line of baseplate.py."""
from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys

from typing import Any, Callable, List, Optional, Sequence, Tuple

import baseplate_serve

from baseplate_serve import _einhorn, _systemd
from baseplate_serve._config_file import read_config
from baseplate_serve._errors import AppError, ConfigError, InstallError, StartupError
from baseplate_serve._factory import call_app_factory, load_factory
from baseplate_serve._listener import BindEndpoint, Listener, bind_socket, describe, listeners_sharing_port, parse_bind
from baseplate_serve._logging import configure_logging
from baseplate_serve._options import parse_server_options, resolve_dispatch, warn_unknown_options

logger = logging.getLogger("baseplate_serve")

#: Server factory names served by the native core instead of being imported.
BUILTIN_WSGI = ("baseplate.server.wsgi", "baseplate.server.wsgi:make_server")
BUILTIN_THRIFT = ("baseplate.server.thrift", "baseplate.server.thrift:make_server")


class _SdkDirAction(argparse.Action):
    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> None:
        print(os.path.join(os.path.dirname(os.path.abspath(__file__)), "sdk"))
        parser.exit()


def _patch_all() -> None:
    """gevent's ``monkey.patch_all()``, with one scan of the installed
    packages' entry points instead of one per patched module: patch_all
    looks up its plugin hooks (``gevent.plugins.monkey.*``) about 25 times,
    and each lookup reads every installed distribution's metadata, a good
    part of a server's start-up. The same entry points are found."""
    import importlib.metadata as metadata

    from gevent import monkey

    lookup = metadata.entry_points
    every = lookup()

    def entry_points(**params: Any) -> Any:
        return every.select(**params) if params else every

    metadata.entry_points = entry_points  # type: ignore[assignment]
    try:
        monkey.patch_all()
    finally:
        metadata.entry_points = lookup


class _VersionAction(argparse.Action):
    """--version, with the version looked up only when asked for (it costs
    start-up an importlib.metadata import)."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> None:
        print(f"baseplate-serve {baseplate_serve.__version__}")
        parser.exit()


def _bind_arg(text: str) -> BindEndpoint:
    try:
        return parse_bind(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="baseplate-serve",
        description="Serve the app described by config_file.",
    )
    parser.add_argument("--debug", action="store_true", default=False, help="enable extra-verbose debug logging")
    parser.add_argument(
        "--reload", action="store_true", default=False, help="restart the server when code changes (development only)"
    )
    parser.add_argument(
        "--app-name", default="main", metavar="NAME", help="name of app to load from config_file (default: main)"
    )
    parser.add_argument(
        "--server-name",
        default="main",
        metavar="NAME",
        help="name of server to load from config_file (default: main)",
    )
    parser.add_argument(
        "--bind",
        type=_bind_arg,
        default=parse_bind("localhost:9090"),
        metavar="ENDPOINT",
        help="endpoint to bind to: host:port, [v6]:port or a UNIX socket path (default: localhost:9090;"
        " ignored under Einhorn)",
    )
    parser.add_argument("--version", action=_VersionAction, help="show program's version number and exit")
    parser.add_argument(
        "--sdk-dir",
        action=_SdkDirAction,
        help="print the directory of the C++ SDK for native apps (for CMake: -DBaseplateServe_DIR=...) and exit",
    )
    parser.add_argument("config_file", help="path to a configuration file")
    return parser.parse_args(argv)


def native_app_spec(factory: str) -> Optional[Tuple[str, str]]:
    """``(library path, factory name)`` when ``factory`` names a native app
    (``libmyapp.so:make_app``, or a path to one), else None."""
    module, sep, name = factory.strip().partition(":")
    module = module.strip()
    if not (module.endswith(".so") or ".so." in os.path.basename(module)):
        return None
    # A library next to the config's users is found like a Python module:
    # from the current directory. dlopen() alone would not look there.
    path = os.path.abspath(module) if ("/" in module or os.path.exists(module)) else module
    return path, (name.strip() if sep else "make_app")


def _make_app(cfg: Any) -> Any:
    factory = load_factory(cfg.app["factory"], "make_app", filename=cfg.filename, section=cfg.app_section)
    return call_app_factory(factory, cfg.app, filename=cfg.filename, section=cfg.app_section)


def _check_app(cfg: Any, app: Any, protocol: str) -> None:
    if protocol == "thrift":
        ok, what = callable(getattr(app, "process", None)), "a Thrift TProcessor (an object with process())"
    else:
        ok, what = callable(app), "a WSGI callable"
    if not ok:
        raise AppError(
            f"{cfg.filename}: [{cfg.app_section}] factory: the app factory returned {type(app).__name__}, not {what}"
        )


def make_listener(bind: BindEndpoint) -> Listener:
    """The listener: Einhorn's, else systemd's, else bound to ``--bind``."""
    inherited = _einhorn.get_listener()
    if inherited is not None:
        logger.info("Einhorn worker: serving on the inherited listener (--bind ignored)")
        return inherited
    inherited = _systemd.get_listener()
    if inherited is not None:
        logger.info("systemd socket activation: serving on the inherited listener (--bind ignored)")
        return inherited
    listener = bind_socket(bind)
    if listeners_sharing_port(listener):
        # baseplate.py binds with SO_REUSEPORT too and says nothing; a port
        # shared by mistake splits the traffic silently, so say it.
        logger.warning(
            "--bind %s: another socket already listens on %s; the kernel now spreads new connections"
            " between them (SO_REUSEPORT, as baseplate.py binds). Stop the other server if that is not meant.",
            bind.text,
            describe(listener),
        )
    return Listener(listener)


def _take_listener(args: argparse.Namespace, watched: Sequence[str]) -> Tuple[socket.socket, Optional[Callable[[], None]]]:
    """The socket to serve on and what to call once serving; with
    ``--reload``, the watcher started (``watched``: files besides the loaded
    modules)."""
    listener = make_listener(args.bind)
    sock = listener.sock
    if args.reload:
        from baseplate_serve._reloader import start_reload_watcher

        sock = start_reload_watcher(watched, listener)
    return sock, listener.on_ready


class _StartupInterrupted(SystemExit):
    """A stop signal before serving began (while the app factory loads, say).
    A SystemExit: an app's ``except Exception`` does not swallow it, and the
    gevent hub, if the signal arrives while it runs, hands it on to the main
    greenlet instead of printing it."""

    def __init__(self, signum: int) -> None:
        super().__init__(0)
        self.signum = signum


def _raise_interrupted(signum: int, frame: Any) -> None:
    raise _StartupInterrupted(signum)


def _handle_stop_signals_during_startup() -> None:
    """SIGINT, SIGTERM, SIGUSR2 and SIGHUP before serving stop the start-up
    with one log line and exit 0, as they do while serving: no
    KeyboardInterrupt traceback, no silent death by SIGTERM or SIGHUP. The
    serving loop installs its own handlers afterwards."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR2, signal.SIGHUP):
        signal.signal(sig, _raise_interrupted)


def _wake_the_hub_on_signals() -> None:
    """Makes every signal with a Python handler wake the gevent hub.

    A Python handler runs only when the main thread runs bytecode. The hub
    checks for one before it blocks in epoll_wait, and a signal is noticed
    there only if it interrupts that wait: one that lands between the check
    and the wait, or that the kernel hands to another thread (the app's
    pools and monitors), leaves the hub asleep until its next timer or I/O,
    a minute for a factory in ``time.sleep(60)``. The interpreter's own
    wakeup fd closes the gap: its C handler, on whichever thread, writes a
    byte to a pipe the hub watches, and the watcher's callback is bytecode
    that runs the handler. The watcher does not keep the hub's loop alive.
    Once the native core serves, it owns the stop signals and the pipe
    stays quiet; a custom factory's server keeps the Python handlers and
    gets the same prompt wake-up."""
    import gevent

    read_fd, write_fd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)

    def drain() -> None:
        try:
            while os.read(read_fd, 512):
                pass
        except BlockingIOError:
            pass

    watcher = gevent.get_hub().loop.io(read_fd, 1)
    watcher.ref = False
    watcher.start(drain)
    _HUB_SIGNAL_WATCHERS.append(watcher)


# The hub's signal watcher, kept for the life of the process.
_HUB_SIGNAL_WATCHERS: List[Any] = []


def _native_server_class() -> Any:
    """NativeServer, or one error line when the native core does not load
    (a library it links missing, a broken or missing extension)."""
    try:
        from baseplate_serve._native import NativeServer
    except ImportError as exc:
        raise _core_load_error(exc) from None
    return NativeServer


def _core_load_error(exc: ImportError) -> InstallError:
    return InstallError(
        f"cannot load the native core (baseplate_serve._core): {exc}; reinstall baseplate-serve"
        " (pip install --force-reinstall baseplate-serve) or install the missing library"
    )


def _log_startup(cfg: Any, server_factory: str, dispatch: str, listener: socket.socket) -> None:
    """One line that says what serves what, and how."""
    logger.info(
        "baseplate-serve %s: config %s, server %s ([%s]), app %s ([%s]), dispatch %s, listener %s",
        baseplate_serve.__version__,
        os.path.abspath(cfg.filename),
        server_factory,
        cfg.server_section,
        cfg.app["factory"].strip(),
        cfg.app_section,
        dispatch,
        describe(listener),
    )


class _UnixSocketFile:
    """Removes the UNIX socket file this process bound once it stops (a
    clean stop leaves nothing behind), unless another server has bound a
    new socket at that path meanwhile."""

    def __init__(self, listener: socket.socket, bind: BindEndpoint) -> None:
        self._path: Optional[str] = None
        self._inode = 0
        # Only a socket bound here to --bind: Einhorn's and systemd's belong to them.
        if listener.family == socket.AF_UNIX and bind.family == socket.AF_UNIX and listener.getsockname() == bind.text:
            try:
                self._inode = os.stat(bind.text).st_ino
                self._path = bind.text
            except OSError:
                pass

    def remove(self) -> None:
        if self._path is None:
            return
        try:
            if os.stat(self._path).st_ino == self._inode:
                os.unlink(self._path)
        except OSError:
            pass


def install_shim() -> None:
    """The ``baseplate.config`` import hook (see ``_baseplate_serve_shim``):
    the .pth file installs it at interpreter start; this covers ``python -S``
    and source trees on PYTHONPATH. It does nothing when baseplate.py is
    importable."""
    try:
        import _baseplate_serve_shim
    except ImportError:  # pragma: no cover (installed beside this package)
        return
    _baseplate_serve_shim.install()


def _baseplate_py_hooks() -> Any:
    """baseplate.py's start-up hooks when baseplate.py >= 2 is importable
    (``_baseplate_py``), else None and nothing of it imported."""
    from baseplate_serve import _baseplate_py

    version = _baseplate_py.detect()
    return _baseplate_py.BaseplatePy(version) if version else None


def run(args: argparse.Namespace) -> None:
    """Loads the config and the app, binds, and serves until stopped."""
    _handle_stop_signals_during_startup()
    sys.path.insert(0, os.getcwd())
    install_shim()
    cfg = read_config(args.config_file, args.server_name, args.app_name)
    configure_logging(cfg.filename, cfg.has_logging_options, args.debug)

    server_factory = cfg.server["factory"].strip()
    builtin = "wsgi" if server_factory in BUILTIN_WSGI else "thrift" if server_factory in BUILTIN_THRIFT else None
    handler = cfg.server.get("handler", "").strip()
    if builtin:
        # Every value checked before the app is imported; a custom factory's
        # other options are its own, so only ours are named unknown.
        try:
            parse_server_options(cfg.server, cfg.filename, cfg.server_section)
        except ImportError as exc:  # the options table is the native core's
            raise _core_load_error(exc) from None
        warn_unknown_options(cfg.server, cfg.server_inherited, cfg.server_section)
    native = native_app_spec(cfg.app["factory"])
    if native:
        if not builtin:
            raise ConfigError.at(
                cfg.filename,
                cfg.app_section,
                "factory",
                f"a native app needs [{cfg.server_section}] factory = baseplate.server.wsgi or baseplate.server.thrift",
            )
        _serve_native(args, cfg, builtin, native)
        return
    # A custom factory too: baseplate.py monkey-patches before every app, and
    # its servers are gevent servers (see _custom).
    dispatch = resolve_dispatch(cfg.server, cfg.filename, cfg.server_section)
    if builtin == "wsgi" and handler:
        # The native HTTP core has no place for a pywsgi handler class.
        from baseplate_serve import _pywsgi

        _pywsgi.prepare(cfg)
        _wake_the_hub_on_signals()
    elif dispatch == "gevent":
        # Before the app is imported, as baseplate.py does: its clients,
        # pools and sleeps must cooperate with the hub.
        _patch_all()
        _wake_the_hub_on_signals()
    # The native core before the app: a broken install is one error line
    # before the app's import time is spent.
    native_server = _native_server_class() if builtin and not handler else None
    baseplate_py = _baseplate_py_hooks()
    if baseplate_py is not None:
        baseplate_py.before_app(cfg.app, dispatch)
    if builtin == "thrift":
        try:
            import baseplate_serve._thrift  # noqa: F401  (fails early without the thrift package)
        except ImportError as exc:
            raise ConfigError.at(
                cfg.filename, cfg.server_section, "factory", f"baseplate.server.thrift needs the thrift package: {exc}"
            ) from None
    app = _make_app(cfg)
    if builtin:
        _check_app(cfg, app, builtin)
    else:
        # Any other factory is called as baseplate.py calls it.
        make_server = load_factory(server_factory, "make_server", filename=cfg.filename, section=cfg.server_section)
    listener, on_ready = _take_listener(args, [cfg.filename])
    socket_file = _UnixSocketFile(listener, args.bind)

    try:
        if builtin == "wsgi" and handler:
            if baseplate_py is not None:
                baseplate_py.after_app(cfg.server, app, None)
            _log_startup(cfg, server_factory, f"gevent (pywsgi, handler {handler})", listener)
            options = parse_server_options(cfg.server, cfg.filename, cfg.server_section)
            _pywsgi.serve(
                cfg,
                listener,
                app,
                on_ready,
                drain_time=options.drain_time,
                stop_timeout=options.stop_timeout,
            )
        elif builtin:
            # Before the server takes the listener over.
            _log_startup(cfg, server_factory, dispatch or "threads", listener)
            server = native_server(
                cfg.server,
                listener,
                app,
                protocol=builtin,
                dispatch=dispatch or "threads",
                filename=cfg.filename,
                section=cfg.server_section,
            )
            if baseplate_py is not None:
                baseplate_py.after_app(cfg.server, app, lambda: server._core.stats()["open_connections"])
            server.serve_forever(on_ready)
        else:
            from baseplate_serve._custom import run_custom_server

            try:
                options = parse_server_options(
                    cfg.server, cfg.filename, cfg.server_section, only=("drain_time", "stop_timeout")
                )
            except ImportError as exc:  # the options table is the native core's
                raise _core_load_error(exc) from None
            custom = make_server(cfg.server, listener, app)  # baseplate.py's factories start their runtime monitor
            if baseplate_py is not None:
                baseplate_py.after_app(cfg.server, app, None)
            _log_startup(cfg, server_factory, f"{dispatch} (the server factory's own server)", listener)
            run_custom_server(
                custom,
                listener,
                on_ready,
                drain_time=options.drain_time,
                stop_timeout=options.stop_timeout,
                dispatch=dispatch,
            )
    finally:
        socket_file.remove()


def _serve_native(args: argparse.Namespace, cfg: Any, protocol: str, native: Tuple[str, str]) -> None:
    """A native app: no monkey-patching and no Python on the request path."""
    native_server = _native_server_class()
    listener, on_ready = _take_listener(args, [cfg.filename, native[0]])
    socket_file = _UnixSocketFile(listener, args.bind)
    try:
        _log_startup(cfg, f"{cfg.server['factory'].strip()}", "threads (native app)", listener)
        native_server(
            cfg.server,
            listener,
            None,
            protocol=protocol,
            dispatch="threads",
            filename=cfg.filename,
            section=cfg.server_section,
            native=(native[0], native[1], cfg.app, cfg.app_section),
        ).serve_forever(on_ready)
    finally:
        socket_file.remove()


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Entry point of ``baseplate-serve`` and ``python -m baseplate_serve``."""
    from baseplate_serve._reloader import close_stragglers

    close_stragglers()  # when re-executed by --reload
    args = parse_args(argv)
    try:
        run(args)
    except _StartupInterrupted as exc:
        message = f"Received {signal.Signals(exc.signum).name} while starting: stopped before serving"
        if logging.getLogger().handlers:
            logger.info("%s", message)
        else:
            print(f"baseplate-serve: {message}", file=sys.stderr)
        sys.exit(0)
    except StartupError as exc:
        if isinstance(exc, AppError) and exc.__cause__ is not None:
            logging.getLogger("baseplate_serve").error("%s", exc, exc_info=exc.__cause__)
            if not logging.getLogger().handlers:
                import traceback

                traceback.print_exception(type(exc.__cause__), exc.__cause__, exc.__cause__.__traceback__)
        print(f"baseplate-serve: error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_status)
