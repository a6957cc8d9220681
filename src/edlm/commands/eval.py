"""`edlm eval`: not built yet."""

from edlm.errors import EdlmError


def add_parser(sub, name, help_):
    return sub.add_parser(name, help=help_ + " [not built yet]", description=help_)


def run(args):
    raise EdlmError("`edlm eval` is not built yet in this version")
