"""One exception type for refusals of bad input, so the node can skip and warn."""


class InputError(ValueError):
    """A message or file the node cannot use; the text says why, for the user."""
