"""The one exception type the CLI turns into a one-line message and a non-zero exit.

Anything a user can cause (bad spec, bad pargs, missing file, bad URL, full disk) is raised
as a LegatoError whose text names the culprit; anything else is a bug and keeps its traceback.
"""


class LegatoError(Exception):
    """A problem with the user's input or environment, explained in one line."""
