"""The backbone seam: which network an experiment meta-learns.

Every learner runs a network through one interface, :class:`MetaBackbone`: parameters
and buffers by name, a forward pass as a function of them and of the inner step (for
the per-step norm state), the default adapted tensors and the head. Two implementations:

- ``"conv"``: the reference network (:class:`metasuite.learner.models.Backbone`), pure
  functions over a parameter dict, with its fast CPU and vmap paths;
- any ``nn.Module`` (:class:`metasuite.learner.backbones.module.ModuleBackbone`) through
  ``torch.func.functional_call``: the built-in ``"resnet12"`` and a user's own factory
  ``"package.module:callable"``.

A user factory is called as ``factory(input_shape, num_classes, **backbone_kwargs)``
with ``input_shape`` the experiment's ``(channels, height, width)`` and ``num_classes``
its number of ways, and returns an ``nn.Module`` mapping a float batch ``[n, C, H, W]``
to logits ``[n, num_classes]``. It runs under the experiment's seed (``train_seed``), so
its random initialisation is reproducible. Text experiments (``modality: "text"``) call
it as ``factory((max_length,), num_classes, vocab_size=V, pad_token_id=P,
**backbone_kwargs)`` and feed it int64 token ids ``[n, L]`` padded with ``P``; the
built-in text networks are ``"text_conv"`` and ``"hf"`` (:mod:`.text`). What differs
between modalities (input shape, extra factory arguments, the probe batch) comes from
:func:`metasuite.data.modality.input_spec`.
"""

from __future__ import annotations

import contextlib
import difflib
import importlib
from collections.abc import Callable
from typing import Any, Protocol

import torch
from torch import nn

from metasuite.config import ExperimentConfig, thaw_json
from metasuite.data.modality import input_spec
from metasuite.errors import ConfigError, UserError
from metasuite.learner.backbones.module import ModuleBackbone
from metasuite.learner.backbones.resnet12 import resnet12
from metasuite.learner.backbones.text import hf_encoder, text_conv
from metasuite.learner.models import Backbone, Params, StatsRecord


class MetaBackbone(Protocol):
    """What the learners ask of a network (both implementations provide it)."""

    name: str
    per_step_stats: bool
    supports_fast_backends: bool
    thread_safe: bool
    normalises_with_running_stats: bool

    @property
    def head_names(self) -> tuple[str, ...]: ...

    def parameter_names(self) -> tuple[str, ...]: ...

    def adaptable_parameter_names(self, include_norm: bool) -> tuple[str, ...]: ...

    def init_params(self, generator: torch.Generator) -> Params: ...

    def init_buffers(self) -> Params: ...

    def forward(
        self, params: Params, x: Any, step: int, stats: StatsRecord | None = None
    ) -> torch.Tensor: ...

    def features(
        self, params: Params, x: Any, step: int, stats: StatsRecord | None = None
    ) -> torch.Tensor: ...

    def update_running_stats(self, buffers: Params, records: list[StatsRecord]) -> None: ...

    def mode(self, training: bool) -> contextlib.AbstractContextManager[None]: ...

    def task_randomness(self, task_id: int) -> contextlib.AbstractContextManager[Any]: ...

    def to(self, device: torch.device) -> MetaBackbone: ...

    def describe(self) -> dict[str, Any]: ...


Factory = Callable[..., nn.Module]

BUILT_IN: dict[str, Factory] = {"resnet12": resnet12, "text_conv": text_conv, "hf": hf_encoder}
"""Named nn.Module factories (beside "conv", the reference network)."""

CONV_ONLY_REFUSED = {
    "batch_norm_mode": ("running", 'the reference network is transductive; use "transductive"'),
    "activation_checkpointing": (True, "the reference network has its own fast paths"),
}


def build_backbone(cfg: ExperimentConfig) -> MetaBackbone:
    """The network ``cfg.backbone`` names, checked on a probe batch before any training
    (a factory that fails, returns no module or logits of the wrong shape, or breaks
    second order is a one-line ConfigError here, before anything is written)."""
    if cfg.backbone == "conv":
        if cfg.modality != "image":
            raise ConfigError(
                f'backbone "conv" reads images but modality is {cfg.modality!r}; use "text_conv", '
                '"hf" or a "package.module:callable" factory'
            )
        for key, (bad, why) in CONV_ONLY_REFUSED.items():
            if getattr(cfg, key) == bad:
                raise ConfigError(f'{key} is {bad!r} but backbone is "conv": {why}')
        if cfg.head not in (None, "linear"):
            raise ConfigError(
                f'head: the "conv" backbone\'s classifier is "linear", got {cfg.head!r}'
            )
        if cfg.backbone_kwargs:
            raise ConfigError(
                'backbone_kwargs: the "conv" backbone is shaped by cnn_num_filters, num_stages, '
                "norm_layer, max_pooling and conv_padding; leave backbone_kwargs empty"
            )
        return Backbone.from_config(cfg)
    module = _build_module(cfg, resolve_factory(cfg.backbone))
    per_step = cfg.per_step_bn_statistics
    net = ModuleBackbone(
        module=module,
        name=cfg.backbone,
        kwargs=thaw_json(cfg.backbone_kwargs),
        head=find_head(module, cfg),
        num_norm_steps=cfg.number_of_training_steps_per_iter,
        per_step_stats=per_step,
        per_step_affine=per_step and not cfg.enable_inner_loop_optimizable_bn_params,
        running_at_eval=cfg.batch_norm_mode == "running",
        checkpointing=cfg.activation_checkpointing,
        seed=cfg.train_seed,
    )
    probe(net, cfg)
    return net


def resolve_factory(name: str) -> Factory:
    """A built-in name, or ``package.module:callable`` imported from ``sys.path``."""
    if name in BUILT_IN:
        return BUILT_IN[name]
    if ":" not in name:
        close = difflib.get_close_matches(name, ["conv", *BUILT_IN], n=2, cutoff=0.5)
        hint = f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""
        raise ConfigError(
            f'backbone must be "conv", {", ".join(repr(b) for b in BUILT_IN)} or '
            f'"package.module:callable"; got {name!r}{hint}'
        )
    module_name, _, attr = name.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(
            f"backbone {name!r}: cannot import {module_name!r} ({exc}); put the folder "
            "holding it on PYTHONPATH"
        ) from None
    except Exception as exc:  # the user's module failed while importing
        raise ConfigError(
            f"backbone {name!r}: importing {module_name!r} raised {type(exc).__name__}: {exc}"
        ) from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise ConfigError(f"backbone {name!r}: {module_name!r} has no callable {attr!r}")
    return factory


def _build_module(cfg: ExperimentConfig, factory: Factory) -> nn.Module:
    """Call the factory under the experiment's seed (the global generator forked, so
    nothing else's randomness moves)."""
    spec = input_spec(cfg)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.train_seed)
        try:
            module = factory(
                spec.shape, cfg.num_classes_per_set, **spec.factory_kwargs, **cfg.backbone_kwargs
            )
        except UserError:
            raise
        except TypeError as exc:
            raise ConfigError(
                f"backbone {cfg.backbone!r}: calling it with input_shape, num_classes and "
                f"backbone_kwargs {dict(cfg.backbone_kwargs)} failed: {exc}"
            ) from None
        except Exception as exc:
            raise ConfigError(
                f"backbone {cfg.backbone!r}: the factory raised {type(exc).__name__}: {exc}"
            ) from None
    if not isinstance(module, nn.Module):
        raise ConfigError(
            f"backbone {cfg.backbone!r}: the factory returned {type(module).__name__}, "
            "expected a torch.nn.Module"
        )
    if not any(True for _ in module.parameters()):
        raise ConfigError(f"backbone {cfg.backbone!r}: the module has no parameters to learn")
    return module


def find_head(module: nn.Module, cfg: ExperimentConfig) -> str:
    """The classifier: ``cfg.head``, else the last ``nn.Linear`` with one output per way."""
    if cfg.head is not None:
        try:
            head = module.get_submodule(cfg.head)
        except AttributeError:
            raise ConfigError(
                f"head: the module of backbone {cfg.backbone!r} has no submodule {cfg.head!r}"
            ) from None
        if not any(True for _ in head.parameters(recurse=False)):
            raise ConfigError(f"head: {cfg.head!r} has no parameters of its own to adapt")
        return cfg.head
    linears = [
        n
        for n, m in module.named_modules()
        if isinstance(m, nn.Linear) and m.out_features == cfg.num_classes_per_set
    ]
    if not linears:
        if cfg.meta_learner == "anil":
            raise ConfigError(
                f"head: backbone {cfg.backbone!r} has no nn.Linear with "
                f"{cfg.num_classes_per_set} outputs; name its classifier module in 'head'"
            )
        return ""  # nothing needs the head
    return linears[-1]


def probe(net: ModuleBackbone, cfg: ExperimentConfig) -> None:
    """Run one inner step (and its second-order backward when the config trains with
    second order) on a small random batch, so a module that cannot be meta-learned is
    refused at start-up with one line, not a traceback minutes later."""
    ways = cfg.num_classes_per_set
    generator = torch.Generator().manual_seed(0)
    x = input_spec(cfg).probe(ways, generator)  # one example per class
    y = torch.arange(ways)
    params = {k: v.requires_grad_() for k, v in net.init_params().items()}
    adapted = list(net.adaptable_parameter_names(cfg.enable_inner_loop_optimizable_bn_params))
    second = cfg.second_order  # first_order_to_second_order_epoch: second order later
    with torch.random.fork_rng(devices=[]), net.mode(training=True):
        try:
            logits = net.forward(params, x, 0)
        except Exception as exc:
            raise ConfigError(
                f"backbone {cfg.backbone!r}: the module's forward failed on a batch of shape "
                f"{list(x.shape)}: {type(exc).__name__}: {exc}"
            ) from None
        if not isinstance(logits, torch.Tensor) or tuple(logits.shape) != (len(x), ways):
            got = list(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
            raise ConfigError(
                f"backbone {cfg.backbone!r}: the module must return logits [{len(x)}, {ways}] "
                f"for {len(x)} images of a {ways}-way task, got {got}"
            )
        if adapted:
            _check_meta_gradient(net, cfg, params, adapted, x, y, second_order=False)
            if second:
                _check_meta_gradient(net, cfg, params, adapted, x, y, second_order=True)


def _check_meta_gradient(
    net: ModuleBackbone,
    cfg: ExperimentConfig,
    params: Params,
    adapted: list[str],
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    second_order: bool,
) -> None:
    """What a meta-step asks of the module's autograd: an inner step, a query pass whose
    graph is kept while another pass runs (the next task), then the meta-gradient."""
    ce = nn.functional.cross_entropy
    try:
        loss = ce(net.forward(params, x, 0), y)
        grads = torch.autograd.grad(loss, [params[n] for n in adapted], create_graph=second_order)
        stepped = params | {n: params[n] - 0.1 * g for n, g in zip(adapted, grads, strict=True)}
        query = ce(net.forward(stepped, x, 1), y)
        net.forward(params, x, 0)  # the next task's first pass
        torch.autograd.grad(query, list(params.values()), allow_unused=True)
    except RuntimeError as exc:
        text = str(exc)
        if second_order:  # the first-order check passed: this is the double backward
            raise ConfigError(
                f"backbone {cfg.backbone!r}: the module cannot be differentiated twice "
                f"({text.splitlines()[0][:120]}); use operations with a double backward "
                "(no in-place ones) or set second_order: false"
            ) from None
        if "inplace" in text:
            raise ConfigError(
                f"backbone {cfg.backbone!r}: an in-place operation in the module breaks its "
                "gradient (it changes a tensor a backward pass still needs); use out-of-place "
                "operations"
            ) from None
        raise


__all__ = [
    "BUILT_IN",
    "MetaBackbone",
    "ModuleBackbone",
    "build_backbone",
    "find_head",
    "probe",
    "resolve_factory",
]
