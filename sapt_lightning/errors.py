"""User-facing errors: one clear line at the entry point, no traceback."""


class UserError(Exception):
    """A mistake the user can fix (config, data, paths). Printed as one line."""


class ConfigError(UserError):
    """A config value or combination that cannot work."""


class DataError(UserError):
    """Missing, unreadable or malformed data on disk."""


class TrainingDiverged(UserError):
    """A non-finite loss: training stops; finished tasks stay on disk and the run resumes."""


class Preempted(Exception):
    """SIGTERM or SIGUSR1 (a cluster's notice before preemption): the task's training state is
    saved; the same command resumes it. Exits with 143, the status of a process ended by SIGTERM,
    which requeueing launchers read as preempted."""

    exit_status = 143
