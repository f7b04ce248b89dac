"""The one exception type that the command line turns into a one-line message."""


class CellmixerError(Exception):
    """A problem with the user's input: a file, an option or a model folder.

    The message names what is wrong and what to do about it. The command line prints it on one
    line and exits with status 2, without a traceback.
    """
