"""The one exception type for mistakes a user can make.

Anything raised as a GroveError is reported by the CLI as a single line (what is wrong and what to
do); every other exception is a bug in grove and keeps its traceback.
"""


class GroveError(Exception):
    """A user-facing error: bad recipe, missing or corrupt file, unusable data, diverged run."""


def did_you_mean(name: str, choices) -> str:
    """' (did you mean 'x'?)' for the closest choice, or '' when nothing is close."""
    import difflib

    close = difflib.get_close_matches(str(name), [str(c) for c in choices], n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""
