"""Errors a user can act on.

The CLI prints an ``OnnxcError`` as one line and exits with status 2; anything else is a bug
in onnxc and gets a traceback only with ``--debug``.
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
