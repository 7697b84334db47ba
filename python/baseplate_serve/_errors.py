"""The errors that end the command before it serves, and their exit codes."""


class StartupError(Exception):
    """Stops the command with one clear line on stderr."""

    exit_status = 2


class ConfigError(StartupError):
    """The config file or the command line names something wrong (exit 2)."""

    exit_status = 2

    @classmethod
    def at(cls, filename: str, section: str, key: str, message: str) -> "ConfigError":
        """An error about one key of one section of a config file."""
        return cls(f"{filename}: [{section}] {key}: {message}")


class AppError(StartupError):
    """The app's own code failed while loading (exit 1, traceback logged)."""

    exit_status = 1


class InstallError(StartupError):
    """The installation is broken: the native core or a library it needs
    cannot be loaded (exit 1)."""

    exit_status = 1


class ServerError(StartupError):
    """A custom server's own code failed: its ``start()``, ``serve_forever()``
    or ``stop()`` raised, or ``serve_forever()`` returned unasked (exit 1,
    traceback logged), so that a supervisor restarts the process."""

    exit_status = 1
