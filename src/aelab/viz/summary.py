"""A model's layers as data, for the report's model table."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["layer_table"]


def _shape_of(out: Any) -> Any:
    """Per-sample shape of a module output: a tuple for a tensor, a list for several, else None."""
    import torch

    if isinstance(out, torch.Tensor):
        return tuple(int(d) for d in out.shape[1:])
    if isinstance(out, list | tuple):
        return [_shape_of(o) for o in out]
    return None


def layer_table(model: Any, input_shape: Sequence[int] | None = None) -> list[dict[str, Any]]:
    """List every layer of a model with its output shape and parameter count.

    Runs one forward pass of a dummy batch of 2 (zeros) in eval mode without
    gradients, recording the output of each leaf module (and of any module
    that holds parameters of its own) through forward hooks. The model is left
    as it was: its train/eval flags are restored and the hooks removed.

    Parameters
    ----------
    model : torch.nn.Module
        Any module whose ``forward`` takes one tensor, e.g. an aelab
        ``ConvAutoencoder`` (its forward runs the encoder, decoder and classifier).
    input_shape : sequence of int, optional
        Shape of one input without the batch axis, e.g. ``(1, 32, 32)``.
        Defaults to ``(config.in_channels, config.image_size, config.image_size)``
        for models with such a ``config``.

    Returns
    -------
    list of dict
        In call order, then any modules the forward pass never reached, one
        dict per layer call with keys ``name`` (dotted path, e.g.
        ``"encoder.0.0"``), ``type`` (class name), ``output_shape`` (tuple
        without the batch axis, a list of them for several outputs, None when
        not called) and ``params`` (parameters it owns, each parameter counted
        at its first appearance only, so repeat calls and tied weights show 0). The ``params`` sum to the model's total.
    """
    import torch.nn as nn

    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    shape = _input_shape(model, input_shape)
    tracked = [
        (name, m)
        for name, m in model.named_modules()
        # Leaves, plus any module (the root included) holding parameters directly,
        # so that the rows' params add up to the model's total.
        if (name and not any(True for _ in m.children()))
        or any(True for _ in m.parameters(recurse=False))
    ]
    if not tracked:  # the model is itself a single layer
        tracked = [("", model)]
    rows: list[dict[str, Any]] = []
    seen: set[int] = set()  # modules already listed
    counted: set[int] = set()  # parameters already counted (shared or tied ones count once)

    def row(name: str, mod: Any, out_shape: Any) -> None:
        seen.add(id(mod))
        rows.append({"name": name, "type": type(mod).__name__, "output_shape": out_shape,
                     "params": _own_params(mod, counted)})  # fmt: skip

    def hook_for(name: str) -> Any:
        return lambda mod, args, out: row(name, mod, _shape_of(out))

    _dry_run(model, shape, [(name or type(m).__name__, m) for name, m in tracked], hook_for)
    for name, m in tracked:
        if id(m) not in seen:
            row(name, m, None)
    return rows


def _input_shape(model: Any, input_shape: Sequence[int] | None) -> tuple[int, ...]:
    if input_shape is None:
        cfg = getattr(model, "config", None)
        if cfg is None or not all(hasattr(cfg, a) for a in ("in_channels", "image_size")):
            raise ValueError(
                "input_shape is required for this model, e.g. (3, 64, 64) for one image"
            )
        input_shape = (cfg.in_channels, cfg.image_size, cfg.image_size)
    shape = tuple(input_shape)
    if not shape or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in shape
    ):
        raise ValueError(
            "input_shape must be positive integers without the batch axis, e.g. (1, 32, 32); "
            f"got {input_shape!r}"
        )
    return shape


def _dry_run(
    model: Any, shape: tuple[int, ...], tracked: list[tuple[str, Any]], hook_for: Any
) -> None:
    """One forward pass of a zero batch of 2 in eval mode with hooks; the model is left as it was."""
    import torch

    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    modes = {m: m.training for m in model.modules()}
    handles = [m.register_forward_hook(hook_for(name)) for name, m in tracked]
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros((2, *shape), device=device, dtype=dtype))
    except RuntimeError as e:
        raise ValueError(
            f"the model cannot run an input of shape (2, {', '.join(map(str, shape))}): {e}"
        ) from None
    finally:
        for h in handles:
            h.remove()
        for m, training in modes.items():
            m.training = training


def _own_params(module: Any, counted: set[int]) -> int:
    """Parameters a leaf holds, or a container holds directly (its children list their own).

    Parameters already in ``counted`` are skipped and new ones added to it, so a
    module called twice or a weight tied between layers counts once, as in
    ``model.parameters()``.
    """
    has_children = any(True for _ in module.children())
    total = 0
    for p in module.parameters(recurse=not has_children):
        if id(p) not in counted:
            counted.add(id(p))
            total += p.numel()
    return int(total)
