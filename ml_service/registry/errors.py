"""Registry errors, importable without loading MLflow (so steps that never touch the registry start fast)."""


class RegistryError(RuntimeError):
    """A registry operation was refused or failed; the message says which model and why."""
