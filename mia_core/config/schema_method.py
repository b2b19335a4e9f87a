"""The ``method`` section of the config: meta-learning method, inner loop, its sub-sections.

Sub-sections: ``sft`` (MIA's State Fusion Transformer), ``pruning``, ``mwt`` (weight
classification) and ``mcl`` (meta-continual learning). Re-exported by
:mod:`mia_core.config.schema`; validation as described in :mod:`~mia_core.config.schema_fields`,
except that a method's own sub-section (``sft``, ``mwt``, ``mcl``: a :class:`_MethodSection`)
is checked only when that method is chosen. The method names, their kinds and the
sub-sections each owns come from the registry, :mod:`mia_core.config.methods`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mia_core.config.methods import CONTINUAL, find_method, method_names, names_where
from mia_core.config.schema_fields import (
    Problems,
    _choice,
    _divisible_problems,
    _field_problems,
    _interval_problems,
    _list,
    _num,
    _Validated,
)

METHOD_NAMES = method_names()
CONTINUAL_METHOD_NAMES = method_names(CONTINUAL)
MCL_TASK_KINDS = ("spatial", "temporal", "segments")
MCL_EVAL_OPTIMIZERS = ("sgd", "adam")
GAP_VARIANTS = ("exact", "approx")
WEIGHT_RATES = ("fixed", "param", "param_step")
META_GRADIENTS = ("maml", "reptile")
SUPPORT_STATES = ("none", "log_count", "density")


class _MethodSection(_Validated):
    """A sub-section one method owns: :class:`MethodConfig` checks it when that method is chosen.

    Constructing it checks nothing; :meth:`problems` gives what ``_Validated`` would raise.
    """

    def __post_init__(self) -> None:
        """Deferred to :meth:`MethodConfig._extra_problems` (the owner may not be chosen)."""

    def problems(self) -> Problems:
        """Field (choices, bounds) and cross-field problems of the section."""
        yield from _field_problems(self)
        yield from self._extra_problems()


@dataclass
class SFTConfig(_MethodSection):
    """State Fusion Transformer used by the MIA method.

    Attributes:
        dim: Token width (must be divisible by ``heads``).
        heads: Attention heads.
        mlp_dim: Hidden width of the transformer MLP blocks.
        usft_layers: Layers of the unimodal (per-modality) SFT.
        msft_layers: Layers of the multimodal (cross-modality) SFT.
        use_usft: Enable the unimodal SFT.
        use_msft: Enable the multimodal SFT.
        use_fusion: Fuse unimodal and multimodal updates.
        state_params: Feed current parameters as state tokens.
        state_grads: Feed inner-loop gradients as state tokens.
        state_scaling: Scale gradients by the learned ``exp(eta_m)`` per modality.
        eta_init: Initial log gradient scale ``eta_m``.
        return_attention: Return attention maps (analysis only; slower).
        residual_sgd: Add ``inner_lr * g`` to the predicted update and zero-initialise
            the predictor's last layer, so an untrained SFT equals CAVIA.
        support_state: One of ``SUPPORT_STATES``: ``none`` (default, the paper's SFT),
            ``log_count`` or ``density``: a learned embedding of each signal's
            ``log(1 + n)`` or ``n / P`` (``n`` support points, ``P`` valid points) is
            added to every state token of its modality, so the update can depend on how
            much the signal shows (docs/low_support.md).
    """

    dim: int = _num(192, ge=1)
    heads: int = _num(3, ge=1)
    mlp_dim: int = _num(192, ge=1)
    usft_layers: int = _num(1, ge=0)
    msft_layers: int = _num(1, ge=0)
    use_usft: bool = True
    use_msft: bool = True
    use_fusion: bool = True
    state_params: bool = True
    state_grads: bool = True
    state_scaling: bool = True
    eta_init: float = 0.0
    return_attention: bool = False
    residual_sgd: bool = True
    support_state: str = _choice("none", SUPPORT_STATES)

    def _extra_problems(self) -> Problems:
        yield from _divisible_problems(self, "dim", "heads")


@dataclass
class PruningConfig(_Validated):
    """Context/state pruning during adaptation.

    Attributes:
        enabled: Turn pruning on.
        keep_ratio: Fraction of entries kept, in (0, 1].
        bootstrap_steps: Extra inner steps producing a bootstrapped target (0 = off).
        bootstrap_weight: Weight of the bootstrap loss term (>= 0).
    """

    enabled: bool = False
    keep_ratio: float = _num(0.25, gt=0.0, le=1.0)
    bootstrap_steps: int = _num(0, ge=0)
    bootstrap_weight: float = _num(0.0, ge=0.0)


@dataclass
class MWTConfig(_MethodSection):
    """MWT: end-to-end classification of meta-learned SIREN weights (``method.name: mwt``).

    The SIREN is ``model.width`` x ``model.depth`` with ``model.omega0``; it is fitted in
    ``method.inner_steps`` SGD steps (second order unless ``method.first_order``).

    Attributes:
        layout: SIREN layout, ``project`` or ``official`` (the MWT code: ``omega_0`` in the
            first layer only, zero biases, a shared non-adapted head times a learned
            scale; see :mod:`mia_core.mwt.siren`).
        w_cls: Weight of the classification gradient on the SIREN initialisation and
            learning rates (0 = the WT baseline: SIREN trained on reconstruction only;
            0.01 = the paper and official code).
        sample_fraction: Fraction ``s`` of the pixels used per inner step in training.
        lr_init: ``[low, high]`` of the uniform initial per-step per-parameter rates.
        alpha_lr: Outer (AdamW) learning rate of the inner learning rates.
        input_scale: ``lambda`` in ``lambda (phi - theta + beta)``.
        input_norm: ``scale`` (use ``input_scale``) or ``layernorm``.
        cls_dim: Transformer token width.
        cls_depth: Transformer blocks.
        cls_heads: Attention heads (``cls_dim`` divisible by it).
        cls_mlp_dim: Hidden width of the blocks' MLPs.
        layerscale_init: Initial LayerScale value.
        flip: Random horizontal flips.
        shift: Maximal random shift, fraction of the image size.
        rotate: Maximal random rotation in degrees.
        scale: ``[low, high]`` random zoom range.
        crop_pad: Random crop after reflect padding by this many pixels (official: 4).
        signed: Fit images mapped to ``[-1, 1]`` (official) instead of ``[0, 1]``.
        eval_subsample: Evaluation fits on ``sample_fraction`` of the pixels, as the
            official code; otherwise on all of them.
        decay_siren: Apply ``run.weight_decay`` to the SIREN and the learning rates too
            (official: 1e-4 on every group); otherwise only to the classifier.
        label_key: Store array holding the integer labels.
        pixel_baseline: Also fit a logistic regression on raw pixels (train split) and
            report its test accuracy next to MWT's.
    """

    layout: str = _choice("project", ("project", "official"))
    w_cls: float = _num(0.01, ge=0.0)
    sample_fraction: float = _num(1.0, gt=0.0, le=1.0)
    lr_init: list[float] = _list(0.1, 1.0)
    alpha_lr: float = _num(1e-2, gt=0.0)
    input_scale: float = _num(500.0, gt=0.0)
    input_norm: str = _choice("scale", ("scale", "layernorm"))
    cls_dim: int = _num(64, ge=1)
    cls_depth: int = _num(4, ge=1)
    cls_heads: int = _num(2, ge=1)
    cls_mlp_dim: int = _num(128, ge=1)
    layerscale_init: float = _num(0.1, gt=0.0)
    flip: bool = False
    shift: float = _num(0.0, ge=0.0, le=0.5)
    rotate: float = _num(0.0, ge=0.0, le=180.0)
    scale: list[float] = _list(1.0, 1.0)
    crop_pad: int = _num(0, ge=0)
    signed: bool = False
    eval_subsample: bool = False
    decay_siren: bool = False
    label_key: str = "labels"
    pixel_baseline: bool = True

    def _extra_problems(self) -> Problems:
        yield from _interval_problems("lr_init", self.lr_init, 0.0, float("inf"), False)
        yield from _interval_problems("scale", self.scale, 0.0, float("inf"), True)
        yield from _divisible_problems(self, "cls_dim", "cls_heads")


@dataclass
class MCLConfig(_MethodSection):
    """Meta-continual learning (``method.name`` in ``CONTINUAL_METHOD_NAMES``).

    Attributes:
        tasks: One of ``MCL_TASK_KINDS``: ``spatial`` (strips of each signal along grid
            ``axis``), ``temporal`` (``num_tasks`` consecutive time steps, one per task)
            or ``segments`` (1-D signals cut along their axis).
        num_tasks: Tasks per sequence ``T``.
        axis: Grid axis cut by ``spatial`` tasks.
        module_width: Hidden width of each MCL-NF module (0 = ``model.width``).
        eval_budgets: Test-time steps per task evaluated (PSNR after each budget).
        eval_optimizer: One of ``MCL_EVAL_OPTIMIZERS`` for test-time optimisation.
        eval_lr: Test-time step size (0 = ``method.inner_lr``).
        eval_signals: Test sequences evaluated (0 = all of the test split).
        oml_layers: Layers adapted in the inner loop by ``oml`` (1 = output layer).
        replay_points: Points kept per past task by ``er`` and ``mer``.
        mer_beta: Reptile rate of ``mer`` (Meta-Experience Replay): each step updates on
            the current task and on each past task's points in turn, then keeps only
            this fraction of the move (1 = sequential replay without pull-back).
        ewc_lambda: Penalty weight of ``ewc``.
        fisher_per_task: The outer (meta) loss's FIM weights use one Fisher per task,
            from that task's points only (Algorithm 1 initialises ``F_i`` per task; for
            MCL-NF it is each module's own head); ``False``: one Fisher pooled over every
            task's points. The inner loop's Fisher always restarts at each task.
        encode_steps: Steps per new time step in continual encoding.
        encode_batch: Time steps encoded together (batched) in continual encoding.
    """

    tasks: str = _choice("spatial", MCL_TASK_KINDS)
    num_tasks: int = _num(4, ge=1)
    axis: int = _num(1, ge=0)
    module_width: int = _num(0, ge=0)
    eval_budgets: list[int] = _list(1, 2, 4, 8, 16, 32)
    eval_optimizer: str = _choice("sgd", MCL_EVAL_OPTIMIZERS)
    eval_lr: float = _num(0.0, ge=0.0)
    eval_signals: int = _num(0, ge=0)
    oml_layers: int = _num(1, ge=1)
    replay_points: int = _num(64, ge=1)
    mer_beta: float = _num(0.5, gt=0.0, le=1.0)
    ewc_lambda: float = _num(100.0, ge=0.0)
    fisher_per_task: bool = False
    encode_steps: int = _num(32, ge=1)
    encode_batch: int = _num(8, ge=1)

    def _extra_problems(self) -> Problems:
        if not self.eval_budgets or not all(
            isinstance(b, int) and not isinstance(b, bool) and b >= 1 for b in self.eval_budgets
        ):
            got = self.eval_budgets
            yield "eval_budgets", f"must be a non-empty list of ints >= 1, got {got!r}"


@dataclass
class MethodConfig(_Validated):
    """Meta-learning method and its inner loop.

    Attributes:
        name: One of ``METHOD_NAMES``, the registered methods (:mod:`mia_core.config.methods`:
            cavia, metasgd, gap, alfa, mia, maml, meta_inr, mwt and the continual ones;
            ``meta_inr`` is MAML on field stores, Meta-INR; ``mwt`` classifies
            meta-learned SIREN weights and runs its own job, ``pipelines/tasks/mwt.py``).
        inner_steps: Inner-loop adaptation steps (>= 0).
        inner_lr: Inner-loop learning rate (initial value when learned), > 0.
        first_order: Drop second-order terms of the meta-gradient.
        metasgd_clamp: ``[min, max]`` clamp of learned MetaSGD learning rates, min >= 0.
        weight_rates: Inner rates of weight adaptation (``maml``, ``meta_inr``): ``fixed``
            (SGD at ``inner_lr``), ``param`` (a meta-learned rate per weight, MetaSGD) or
            ``param_step`` (one per weight and inner step, ``inner_steps x |theta|``, as
            Meta-SGD with per-step rates; steps past ``inner_steps`` reuse the last).
        meta_gradient: ``maml`` (the query loss differentiated through the inner loop) or
            ``reptile`` (Nichol et al., 2018; the official Meta-INR's algorithm): the
            inner loop runs without a graph and each meta-weight moves along
            ``theta - mean_b phi_b``, how far the inner loop took it on average; the
            query sets are only scored. Weight adaptation (``maml``, ``meta_inr``) with
            ``weight_rates: fixed`` only: Reptile gives no gradient to learned rates.
        head_ridge: Closed-form head (``maml``, ``meta_inr``; 0 = off): only each INR's
            last linear layer adapts, solved in closed form as a ridge regression of the
            support values on the network's last features (after ``inner_steps`` rule steps
            on the head, usually 0), with ridge ``head_ridge`` times the mean feature
            energy. The trunk is meta-learned through the solve (``meta_gradient: maml``),
            a code holds only the heads, and encoding costs one solve per signal.
        inner_points: Points drawn at random (with replacement, one draw shared by the
            batch) from the support sets at every inner step, as the encoder's
            ``points_per_step`` does; 0 (default) uses every support point. Dense random
            draws from the full grid instead of a fixed subsample: no lattice to alias
            between.
        gap_variant: One of ``GAP_VARIANTS`` (exact, approx).
        alfa_hidden: Hidden width of the ALFA hyper-network.
        uncertainty_weighting: Weight per-modality losses by learned uncertainty.
        sft: State Fusion Transformer settings (MIA; checked when ``name: mia``).
        pruning: Pruning settings.
        mwt: MWT classification settings (checked when ``name: mwt``).
        fim_lambda: FIM loss weight ``lambda`` (MCL-NF paper): per-point weights
            ``1 + lambda g^T F^-1 g / D`` in the inner and outer losses; 0 = plain MSE.
        fim_decay: EMA factor of the FIM loss's running diagonal Fisher.
        fim_normalise: Divide ``g^T F^-1 g`` by ``D`` (weights average ``1 + lambda``);
            ``False``: the paper's ``w = 1 + lambda g^T F^-1 g`` (``mia_core/mcl/fim.py``).
        prior_pull: Initial (or fixed) strength ``lambda`` of a pull toward the
            meta-initialisation in the inner loss, ``lambda / (1 + n / prior_pull_n0)``
            times the mean squared distance of the adapted tensors, ``n`` the signal's
            support points (a MAP prior that matters at 2 points and vanishes at 2,000;
            ``mia_core/meta/prior.py``, docs/low_support.md); 0 = off.
        prior_pull_n0: Support count at which the pull has halved, > 0.
        prior_pull_learned: Meta-learn ``log lambda`` and ``log n0`` per modality
            (starting at ``prior_pull`` and ``prior_pull_n0``); needs ``prior_pull > 0``.
        mcl: Meta-continual learning settings (checked for a continual ``name``).
    """

    name: str = _choice("cavia", METHOD_NAMES)
    inner_steps: int = _num(3, ge=0)
    inner_lr: float = _num(1.0, gt=0.0)
    first_order: bool = False
    metasgd_clamp: list[float] = _list(0.0, 10.0)
    weight_rates: str = _choice("fixed", WEIGHT_RATES)
    meta_gradient: str = _choice("maml", META_GRADIENTS)
    inner_points: int = _num(0, ge=0)
    head_ridge: float = _num(0.0, ge=0.0)
    gap_variant: str = _choice("exact", GAP_VARIANTS)
    alfa_hidden: int = _num(32, ge=1)
    uncertainty_weighting: bool = False
    sft: SFTConfig = field(default_factory=SFTConfig)
    pruning: PruningConfig = field(default_factory=PruningConfig)
    mwt: MWTConfig = field(default_factory=MWTConfig)
    fim_lambda: float = _num(0.0, ge=0.0)
    fim_decay: float = _num(0.9, ge=0.0, le=1.0)
    fim_normalise: bool = True
    prior_pull: float = _num(0.0, ge=0.0)
    prior_pull_n0: float = _num(10.0, gt=0.0)
    prior_pull_learned: bool = False
    mcl: MCLConfig = field(default_factory=MCLConfig)

    def _extra_problems(self) -> Problems:
        spec = find_method(self.name)  # None: the field check reports the unknown name
        for section in spec.sections if spec else ():
            yield from ((f"{section}.{k}", msg) for k, msg in getattr(self, section).problems())
        yield from _interval_problems("metasgd_clamp", self.metasgd_clamp, 0.0, float("inf"), False)
        weights = spec is not None and spec.adapts_weights
        needs = names_where(lambda s: s.adapts_weights)
        if self.meta_gradient == "reptile" and (not weights or self.weight_rates != "fixed"):
            yield (
                "meta_gradient",
                (
                    f"reptile adapts INR weights at fixed rates: it needs name {needs} "
                    f"and weight_rates fixed, not name {self.name!r} with weight_rates "
                    f"{self.weight_rates!r} (Reptile gives learned rates no gradient)"
                ),
            )
        if self.head_ridge > 0 and (not weights or self.meta_gradient != "maml"):
            yield (
                "head_ridge",
                (
                    "a closed-form head adapts INR weights and is meta-learned through its solve: "
                    f"it needs name {needs} and meta_gradient maml, not {self.name!r} "
                    f"with {self.meta_gradient!r}"
                ),
            )
        if self.weight_rates != "fixed" and not weights:
            yield (
                "weight_rates",
                (
                    f"learned weight rates need name {needs} (weight adaptation), not "
                    f"{self.name!r}; context methods learn rates with name: metasgd"
                ),
            )
        yield from self._low_support_problems()

    def _low_support_problems(self) -> Problems:
        """Where ``sft.support_state`` and ``prior_pull`` act (docs/low_support.md)."""
        spec = find_method(self.name)
        if self.sft.support_state != "none" and not (spec and "sft" in spec.sections):
            yield (
                "sft.support_state",
                f"feeds MIA's SFT: it needs name {names_where(lambda s: 'sft' in s.sections)}, "
                f"not {self.name!r}; set it to none",
            )
        if self.sft.support_state != "none" and self.fim_lambda > 0:
            yield "sft.support_state", "is not supported with fim_lambda > 0; set one of them off"
        if self.prior_pull_learned and self.prior_pull <= 0:
            yield "prior_pull_learned", "needs prior_pull > 0 (its initial strength)"
        if self.prior_pull <= 0:
            return
        other = ""
        if spec is not None and not spec.meta_learner:
            other = f"name {self.name!r} (it runs its own inner loop)"
        elif self.head_ridge > 0:
            other = "head_ridge > 0 (the ridge is the closed-form head's prior)"
        elif self.fim_lambda > 0:
            other = "fim_lambda > 0 (the FIM learner has its own inner loss)"
        if other:
            yield "prior_pull", f"acts on MetaLearner's inner steps, not with {other}; set it to 0"
        if self.prior_pull_learned and self.meta_gradient == "reptile":
            yield "prior_pull_learned", "Reptile gives a learned strength no gradient; set it false"
