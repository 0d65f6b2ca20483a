"""One way to rewrite the residual stream at a layer during a forward (steering adds a
direction, a dictionary splice replaces states): layer 0 is block 0's input (a pre-hook),
layer L is block L's output (a forward hook), as everywhere in LayerScope."""

from __future__ import annotations

from collections.abc import Callable


def hidden_of(x):
    """A block's hidden states out of its input or output (a tuple for most architectures)."""
    return x[0] if isinstance(x, tuple) else x


def with_hidden(out, h):
    return (h, *out[1:]) if isinstance(out, tuple) else h


def hook_residual(blocks, layer: int, edit: Callable) -> list:
    """Register ``edit(hidden) -> hidden`` on the residual stream at ``layer``; returns the
    hook handles (remove them to undo)."""

    def pre(_mod, args, kwargs):
        if args:
            return (edit(args[0]), *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": edit(kwargs["hidden_states"])}

    def post(_mod, _args, out):
        return with_hidden(out, edit(hidden_of(out)))

    if layer == 0:
        return [blocks[0].register_forward_pre_hook(pre, with_kwargs=True)]
    return [blocks[layer - 1].register_forward_hook(post)]
