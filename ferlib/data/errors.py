"""The exceptions readers raise when a user pointed at the wrong thing (or at nothing)."""


class DatasetFormatError(ValueError):
    """A dataset file is not in the expected format. The message names the file, the line/row and the fix."""

    def __init__(self, message: str, path=None, line: int | None = None, fix: str | None = None):
        where = ""
        if path is not None:
            where = f"{path}" + (f", line {line}" if line is not None else "") + ": "
        text = where + message + (f" Fix: {fix}" if fix else "")
        super().__init__(text)
        self.path, self.line, self.fix = path, line, fix


class EmptySplitError(DatasetFormatError):
    """A split has no usable image (or fewer than a run needs); the message carries the skip report."""


class DataNotFoundError(FileNotFoundError):
    """A real dataset was asked for but is not on disk: the message says where to put it."""
