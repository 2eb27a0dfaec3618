"""Errors a user can act on, and the wrapper that locates a bug.

The CLI prints an ``OnnxcError`` as one line and exits with status 2; anything else is a bug
in onnxc (status 3) and gets a traceback only with ``--debug``.
"""


class OnnxcError(Exception):
    """A problem with the user's input or request, described in one line."""


class ModelLoadError(OnnxcError):
    """The model file cannot be read: missing, corrupt, truncated, not ONNX, bad external data."""


class InvalidModelError(OnnxcError):
    """The model was read but is not a valid ONNX graph, or ONNX Runtime cannot run it."""


class PipelineError(OnnxcError):
    """A pipeline string, recipe or pass option is wrong."""


class PassFailedError(OnnxcError):
    """A pass raised, or broke the model's numbers; the message names the pass."""


class FeatureNotImplementedError(OnnxcError):
    """The request is valid but onnxc does not implement it yet."""




def first_line(error: BaseException) -> str:
    """The first line of an exception's message, or its type's name when it has none: how every
    error from a library is reported in one line."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


class PassCrashedError(Exception):
    """A pass raised something other than an ``OnnxcError``: a bug in that pass, not bad input.

    Deliberately not an ``OnnxcError``: the CLI reports it as an internal error (exit 3), naming
    the pass; the original exception is its ``__cause__``.
    """

    def __init__(self, pass_name: str, error: BaseException):
        text = str(error).strip()
        detail = f"{type(error).__name__}: {text.splitlines()[0]}" if text else type(error).__name__
        super().__init__(f"in pass {pass_name!r}: {detail}")
        self.pass_name = pass_name
