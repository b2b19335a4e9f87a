"""The method registry: every ``method.name``, registered once with what it needs.

A :class:`MethodSpec` says what kind of method a name is (``meta``: a
:class:`~mia_core.meta.learner.MetaLearner` driven by an inner-loop update rule; ``mwt``;
``continual``), which parameters its inner loop adapts (``context`` or ``weights``), which
sub-sections of the ``method`` config it owns (each validated only when the method is
chosen) and how its update rule is built. Everything that used to test method names reads
it: the choices of ``method.name`` and the sub-section checks of
:class:`~mia_core.config.schema_method.MethodConfig`, :func:`mia_core.builders.build_learner`
and the task registry of the pipelines (``pipelines/tasks/registry.py``).

The module imports neither torch nor the rest of the config (the schema imports it), so a
rule builder is handed the :mod:`mia_core.adapt` package as its ``adapt`` argument.

Adding an update rule (a new meta-learning method) is one entry at the bottom of this
module, next to the rule class in ``mia_core/adapt/`` (exported by its ``__init__``)::

    def _my_rule(method, shapes, groups, adapt):
        return adapt.MyRule(shapes, groups, method.inner_lr, method.my.width)

    register(MethodSpec("my", META, adapts=CONTEXT, sections=("my",), rule=_my_rule))

``sections=("my",)`` names a sub-section field ``my: MyConfig`` of ``MethodConfig`` (a
``_MethodSection``), needed only when the rule has keys of its own; the config then
accepts ``method.name: my``, checks ``method.my`` when it is chosen, builds the learner and
trains it with the meta-learning task, with no other change.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from mia_core.config.errors import ConfigError

META, MWT, CONTINUAL = "meta", "mwt", "continual"
KINDS = (META, MWT, CONTINUAL)
CONTEXT, WEIGHTS = "context", "weights"

Shapes = Mapping[str, tuple[int, ...]]
RuleBuilder = Callable[[Any, Shapes, Mapping[str, str], ModuleType], Any]


@dataclass(frozen=True)
class MethodSpec:
    """One registered ``method.name``.

    Attributes:
        name: the ``method.name`` value.
        kind: one of ``KINDS``: ``meta`` (built by :func:`mia_core.builders.build_learner`,
            trained by the meta-learning task), ``mwt`` or ``continual`` (their own learner,
            inner loop and task).
        adapts: ``meta`` methods only: ``context`` (CAVIA family: per-signal context
            vectors) or ``weights`` (MAML semantics: every INR weight, or only the heads
            with ``method.head_ridge > 0``); ``None`` for the other kinds.
        sections: sub-sections of the ``method`` config the method owns: checked only
            when it is chosen.
        rule: ``meta`` methods only: ``rule(method, shapes, groups, adapt)`` -> the
            inner-loop update rule (``adapt`` is the :mod:`mia_core.adapt` package).
        built_by: where a learner of another kind is built (named in the error of
            :func:`mia_core.builders.build_learner`).
    """

    name: str
    kind: str
    adapts: str | None = None
    sections: tuple[str, ...] = ()
    rule: RuleBuilder | None = None
    built_by: str = "mia_core.builders.build_learner"

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(
                f"method {self.name!r}: kind must be one of {KINDS}, not {self.kind!r}"
            )
        is_meta = self.kind == META
        if is_meta != (self.adapts in (CONTEXT, WEIGHTS)) or is_meta != (self.rule is not None):
            raise ValueError(
                f"method {self.name!r}: a {META} method (only) needs adapts ({CONTEXT} or "
                f"{WEIGHTS}) and a rule; got kind {self.kind!r}, adapts {self.adapts!r}"
            )

    @property
    def meta_learner(self) -> bool:
        """A :class:`~mia_core.meta.learner.MetaLearner` with an update rule."""
        return self.kind == META

    @property
    def continual(self) -> bool:
        """A meta-continual method (``mia_core.mcl``)."""
        return self.kind == CONTINUAL

    @property
    def adapts_weights(self) -> bool:
        """Its inner loop adapts INR weights (MAML semantics), not contexts."""
        return self.adapts == WEIGHTS


_METHODS: dict[str, MethodSpec] = {}


def register(spec: MethodSpec) -> MethodSpec:
    """Add ``spec`` (a name registered twice is an error); entries live in this module."""
    if spec.name in _METHODS:
        raise ValueError(f"method {spec.name!r} is already registered")
    _METHODS[spec.name] = spec
    return spec


def method_names(kind: str | None = None) -> tuple[str, ...]:
    """Registered names in registration order, all or those of one ``kind``."""
    return tuple(n for n, s in _METHODS.items() if kind is None or s.kind == kind)


def get_method(name: str) -> MethodSpec:
    """The spec of ``method.name`` ``name``.

    Raises:
        ConfigError: ``name`` is not registered (one line listing the registered names).
    """
    try:
        return _METHODS[name]
    except KeyError:
        raise ConfigError(
            f"method.name={name!r} is not a registered method; registered: {', '.join(_METHODS)}"
        ) from None


def find_method(name: str) -> MethodSpec | None:
    """The spec of ``name``, or ``None`` when it is not registered."""
    return _METHODS.get(name)


def names_where(test: Callable[[MethodSpec], bool]) -> str:
    """``"a or b"``: the registered names whose spec passes ``test`` (for messages)."""
    return " or ".join(n for n, s in _METHODS.items() if test(s))


# --- update rules --------------------------------------------------------------------------


def _sgd(method: Any, shapes: Shapes, groups: Mapping[str, str], adapt: ModuleType) -> Any:
    return adapt.SGD(shapes, groups, method.inner_lr)


def _weight_rule(method: Any, shapes: Shapes, groups: Mapping[str, str], adapt: ModuleType) -> Any:
    """SGD at ``inner_lr``, or MetaSGD rates per weight (and step) by ``weight_rates``."""
    if method.weight_rates == "fixed":
        return adapt.SGD(shapes, groups, method.inner_lr)
    steps = method.inner_steps if method.weight_rates == "param_step" else 0
    return adapt.MetaSGD(shapes, groups, method.inner_lr, tuple(method.metasgd_clamp), steps)


def _metasgd(method: Any, shapes: Shapes, groups: Mapping[str, str], adapt: ModuleType) -> Any:
    return adapt.MetaSGD(shapes, groups, method.inner_lr, tuple(method.metasgd_clamp))


def _gap(method: Any, shapes: Shapes, groups: Mapping[str, str], adapt: ModuleType) -> Any:
    return adapt.GAP(shapes, groups, method.inner_lr, method.gap_variant)


def _alfa(method: Any, shapes: Shapes, groups: Mapping[str, str], adapt: ModuleType) -> Any:
    return adapt.ALFA(shapes, groups, method.inner_lr, method.alfa_hidden)


def _sft(method: Any, shapes: Shapes, groups: Mapping[str, str], adapt: ModuleType) -> Any:
    s = method.sft
    return adapt.StateFusionTransformer(
        shapes,
        groups,
        dim=s.dim,
        heads=s.heads,
        mlp_dim=s.mlp_dim,
        usft_layers=s.usft_layers,
        msft_layers=s.msft_layers,
        use_usft=s.use_usft,
        use_msft=s.use_msft,
        use_fusion=s.use_fusion,
        state_params=s.state_params,
        state_grads=s.state_grads,
        state_scaling=s.state_scaling,
        eta_init=s.eta_init,
        lr=method.inner_lr,
        residual_sgd=s.residual_sgd,
        support_state=getattr(s, "support_state", "none"),
    )


# --- the registered methods (this order is the order of the method.name choices) -----------

register(MethodSpec("cavia", META, adapts=CONTEXT, rule=_sgd))
register(MethodSpec("metasgd", META, adapts=CONTEXT, rule=_metasgd))
register(MethodSpec("gap", META, adapts=CONTEXT, rule=_gap))
register(MethodSpec("alfa", META, adapts=CONTEXT, rule=_alfa))
register(MethodSpec("mia", META, adapts=CONTEXT, sections=("sft",), rule=_sft))
register(MethodSpec("maml", META, adapts=WEIGHTS, rule=_weight_rule))
register(MethodSpec("meta_inr", META, adapts=WEIGHTS, rule=_weight_rule))
register(
    MethodSpec(
        "mwt", MWT, sections=("mwt",), built_by="pipelines/tasks/mwt.py (mia_core.mwt.build_mwt)"
    )
)
_CONTINUAL_BUILDER = "ray_jobs/continual.py (mia_core.mcl.build.build_sequence_learner)"
for _name in ("mcl_nf", "maml_cl", "oml", "er", "mer", "ewc"):
    register(MethodSpec(_name, CONTINUAL, sections=("mcl",), built_by=_CONTINUAL_BUILDER))
