"""One exception type for bad input: the CLI prints its message as one line and exits with 2."""


class EdlmError(Exception):
    """A user-facing error. The message must say what is wrong AND how to fix it."""
