"""The base of every error driftwarden raises on purpose; the CLI shows them as one line."""


class DriftwardenError(Exception):
    """Something the user can act on: the message says what and, where possible, how."""
