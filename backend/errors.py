"""Errors a user can cause. Their message is shown as-is, in the page and the CLI."""


class LayerScopeError(Exception):
    """A user-caused problem (bad input, missing model, budget exceeded).

    The message is one readable sentence; callers show it without a traceback.
    """
