"""Typed experiment configuration: one dataclass per section, validated on construction.

Enumerated string fields carry their allowed values in ``field(metadata={"choices": ...})``
and numeric fields their bounds (``gt``/``ge``/``le``); cross-field rules live in each
class's ``_extra_problems``. Every construction (including ``dataclasses.replace``) runs
the checks and raises :class:`ConfigError` listing all problems of that section.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from typing import Any

from mia_core.config.errors import ConfigError

MODEL_FAMILIES = ("siren", "relu_ff", "functa", "composers")
FUNCTA_MODULATIONS = ("scale", "shift", "scale_shift")
METHOD_NAMES = ("cavia", "metasgd", "gap", "alfa", "mia", "maml", "meta_inr", "mwt")
CONTINUAL_METHOD_NAMES = ("mcl_nf", "maml_cl", "oml", "er", "ewc")
METHOD_NAMES = METHOD_NAMES + CONTINUAL_METHOD_NAMES
MCL_TASK_KINDS = ("spatial", "temporal", "segments")
MCL_EVAL_OPTIMIZERS = ("sgd", "adam")
GAP_VARIANTS = ("exact", "approx")
LR_SCHEDULES = ("constant", "cosine")
DEVICES = ("auto", "cpu", "cuda")
MATMUL_PRECISIONS = ("highest", "high", "medium")
PLACEMENT_STRATEGIES = ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD")

Problems = Iterator[tuple[str, str]]


def _choice(default: str, choices: tuple[str, ...]) -> Any:
    return field(default=default, metadata={"choices": choices})


def _num(default: float, **bounds: float) -> Any:
    return field(default=default, metadata=bounds)


def _list(*default: Any) -> Any:
    return field(default_factory=lambda: list(default))


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _field_problems(obj: Any) -> Problems:
    for f in fields(obj):
        value, meta = getattr(obj, f.name), f.metadata
        if "choices" in meta and value not in meta["choices"]:
            yield f.name, f"must be one of {list(meta['choices'])}, got {value!r}"
        if not _is_number(value):
            continue
        if "gt" in meta and not value > meta["gt"]:
            yield f.name, f"must be > {meta['gt']}, got {value!r}"
        if "ge" in meta and not value >= meta["ge"]:
            yield f.name, f"must be >= {meta['ge']}, got {value!r}"
        if "le" in meta and not value <= meta["le"]:
            yield f.name, f"must be <= {meta['le']}, got {value!r}"


def _interval_problems(name: str, value: Any, low: float, high: float, open_low: bool) -> Problems:
    """Check ``value`` is ``[min, max]`` with min <= max inside (low, high] or [low, high]."""
    if not (isinstance(value, list) and len(value) == 2 and all(map(_is_number, value))):
        yield name, f"must be a [min, max] pair of numbers, got {value!r}"
        return
    lo, hi = value
    lo_ok = lo > low if open_low else lo >= low
    if not (lo_ok and hi <= high and lo <= hi):
        bracket = "(" if open_low else "["
        yield name, f"must satisfy min <= max within {bracket}{low}, {high}], got {value!r}"


class _Validated:
    """Mixin running field-metadata and cross-field checks after ``__init__``."""

    def __post_init__(self) -> None:
        problems = [*_field_problems(self), *self._extra_problems()]
        if problems:
            detail = "; ".join(f"{key}: {msg}" for key, msg in problems)
            raise ConfigError(f"{type(self).__name__}: {detail}", problems)

    def _extra_problems(self) -> Problems:
        return iter(())


@dataclass
class DataConfig(_Validated):
    """The signal store to train on and how episodes are drawn from it.

    Attributes:
        name: Dataset label (``synthetic1d`` builds the synthetic benchmark store).
        store: URL of a signal or field store (local path or ``s3://``); empty builds the
            synthetic benchmark store under ``run.out_dir/data`` from the fields below.
        endpoint_url: S3-compatible endpoint (credentials come from the environment,
            never from configs).
        modalities: Function families sampled (e.g. sine, gaussian, tanh, relu).
        num_functions: Total functions generated; the first ``num_train`` train, rest test.
        num_train: Functions used for meta-training (must be < ``num_functions``).
        num_points: Points sampled per function on ``x_range``.
        x_range: ``[low, high]`` input domain.
        noise_std: Std of additive Gaussian observation noise (>= 0).
        support_ratio: ``[min, max]`` fraction of points given as support, in (0, 1].
        support_ratio_per_modality: Per-modality overrides of ``support_ratio``; keys must
            be listed in ``modalities``.
        val_fraction: Fraction of the training functions held out for validation
            (model selection); the test functions are never used for selection.
        psnr_range: Peak-to-peak value range used by PSNR.
        spatial_stride: Keep every ``lambda_s``-th grid point per axis (meta-pretraining).
        time_stride: Keep every ``lambda_t``-th signal (time step) of the store.
        seed: Seed of the dataset generator.
    """

    name: str = "synthetic1d"
    store: str = ""
    endpoint_url: str = ""
    spatial_stride: int = _num(1, ge=1)
    time_stride: int = _num(1, ge=1)
    modalities: list[str] = _list("sine", "gaussian", "tanh", "relu")
    num_functions: int = _num(1000, ge=2)
    num_train: int = _num(900, ge=1)
    num_points: int = _num(200, ge=1)
    x_range: list[float] = _list(-5.0, 5.0)
    noise_std: float = _num(0.02, ge=0.0)
    support_ratio: list[float] = _list(0.01, 0.1)
    support_ratio_per_modality: dict[str, list[float]] = field(default_factory=dict)
    val_fraction: float = _num(0.1, ge=0.0, le=0.5)
    psnr_range: float = _num(1.0, gt=0.0)
    seed: int = _num(0, ge=0)

    def _extra_problems(self) -> Problems:
        if _is_number(self.num_train) and _is_number(self.num_functions):
            if self.num_train >= self.num_functions:
                yield "num_train", f"must be < num_functions ({self.num_functions})"
        if not self.modalities or len(set(self.modalities)) != len(self.modalities):
            yield "modalities", f"must be a non-empty list without duplicates: {self.modalities}"
        x = self.x_range
        if not (len(x) == 2 and all(map(_is_number, x)) and x[0] < x[1]):
            yield "x_range", f"must be [low, high] with low < high, got {x!r}"
        yield from _interval_problems("support_ratio", self.support_ratio, 0.0, 1.0, True)
        if _is_number(self.val_fraction) and _is_number(self.num_train):
            if self.num_train - int(self.num_train * self.val_fraction) < 1:
                yield "val_fraction", "leaves no training functions"
        for modality, ratio in self.support_ratio_per_modality.items():
            key = f"support_ratio_per_modality.{modality}"
            if modality not in self.modalities:
                yield key, f"unknown modality; expected one of {self.modalities}"
            yield from _interval_problems(key, ratio, 0.0, 1.0, True)


@dataclass
class SFTConfig(_Validated):
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

    def _extra_problems(self) -> Problems:
        if _is_number(self.dim) and _is_number(self.heads) and self.heads > 0:
            if self.dim % self.heads:
                yield "heads", f"dim ({self.dim}) must be divisible by heads ({self.heads})"


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
class ModelConfig(_Validated):
    """Implicit neural representation family and its size.

    Attributes:
        family: One of ``MODEL_FAMILIES`` (siren, relu_ff, functa, composers).
        width: Hidden width of the INR MLP.
        depth: Number of layers of the INR MLP.
        omega0: SIREN frequency factor (> 0).
        ff_sigma: Std of random Fourier features (0 = no Fourier features).
        ff_features: Number of Fourier features.
        context_tokens: Context tokens ``S`` (Composers: the rank; 0 = no context, MAML).
        context_dim: Width of each context token / latent.
        context_init_std: Std of the normal initial context (0 = zeros, as in CAVIA).
        functa_modulation: One of ``FUNCTA_MODULATIONS`` (scale, shift, scale_shift).
        functa_grid: Spatial latent grid shape; empty means a single latent vector.
    """

    family: str = _choice("composers", MODEL_FAMILIES)
    width: int = _num(128, ge=1)
    depth: int = _num(5, ge=1)
    omega0: float = _num(30.0, gt=0.0)
    ff_sigma: float = _num(0.0, ge=0.0)
    ff_features: int = _num(64, ge=1)
    context_tokens: int = _num(8, ge=0)
    context_dim: int = _num(128, ge=1)
    context_init_std: float = _num(0.0, ge=0.0)
    functa_modulation: str = _choice("scale", FUNCTA_MODULATIONS)
    functa_grid: list[int] = field(default_factory=list)

    def _extra_problems(self) -> Problems:
        if not all(_is_number(g) and g >= 1 for g in self.functa_grid):
            yield "functa_grid", f"entries must be positive ints, got {self.functa_grid!r}"


@dataclass
class MWTConfig(_Validated):
    """MWT: end-to-end classification of meta-learned SIREN weights (``method.name: mwt``).

    The SIREN is ``model.width`` x ``model.depth`` with ``model.omega0``; it is fitted in
    ``method.inner_steps`` SGD steps (second order unless ``method.first_order``).

    Attributes:
        w_cls: Weight of the classification gradient on the SIREN initialisation and
            learning rates (0 = the WT baseline: SIREN trained on reconstruction only).
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
        label_key: Store array holding the integer labels.
        pixel_baseline: Also fit a logistic regression on raw pixels (train split) and
            report its test accuracy next to MWT's.
    """

    w_cls: float = _num(1.0, ge=0.0)
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
    label_key: str = "labels"
    pixel_baseline: bool = True

    def _extra_problems(self) -> Problems:
        yield from _interval_problems("lr_init", self.lr_init, 0.0, float("inf"), False)
        yield from _interval_problems("scale", self.scale, 0.0, float("inf"), True)
        if _is_number(self.cls_dim) and _is_number(self.cls_heads) and self.cls_heads > 0:
            if self.cls_dim % self.cls_heads:
                yield "cls_heads", f"cls_dim ({self.cls_dim}) must be divisible by it"


@dataclass
class MCLConfig(_Validated):
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
        replay_points: Points kept per past task by ``er``.
        ewc_lambda: Penalty weight of ``ewc``.
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
    ewc_lambda: float = _num(100.0, ge=0.0)
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
        name: One of ``METHOD_NAMES`` (cavia, metasgd, gap, alfa, mia, maml, meta_inr,
            mwt; ``meta_inr`` is MAML on field stores, Meta-INR; ``mwt`` classifies
            meta-learned SIREN weights and runs its own job, ``pipelines/tasks/mwt.py``).
        inner_steps: Inner-loop adaptation steps (>= 0).
        inner_lr: Inner-loop learning rate (initial value when learned), > 0.
        first_order: Drop second-order terms of the meta-gradient.
        metasgd_clamp: ``[min, max]`` clamp of learned MetaSGD learning rates, min >= 0.
        gap_variant: One of ``GAP_VARIANTS`` (exact, approx).
        alfa_hidden: Hidden width of the ALFA hyper-network.
        uncertainty_weighting: Weight per-modality losses by learned uncertainty.
        sft: State Fusion Transformer settings (MIA).
        pruning: Pruning settings.
        mwt: MWT classification settings (``name: mwt``).
        fim_lambda: FIM loss weight ``lambda`` (MCL-NF paper): per-point weights
            ``1 + lambda g^T F^-1 g / D`` in the inner and outer losses; 0 = plain MSE.
        fim_decay: EMA factor of the FIM loss's running diagonal Fisher.
        mcl: Meta-continual learning settings.
    """

    name: str = _choice("cavia", METHOD_NAMES)
    inner_steps: int = _num(3, ge=0)
    inner_lr: float = _num(1.0, gt=0.0)
    first_order: bool = False
    metasgd_clamp: list[float] = _list(0.0, 10.0)
    gap_variant: str = _choice("exact", GAP_VARIANTS)
    alfa_hidden: int = _num(32, ge=1)
    uncertainty_weighting: bool = False
    sft: SFTConfig = field(default_factory=SFTConfig)
    pruning: PruningConfig = field(default_factory=PruningConfig)
    mwt: MWTConfig = field(default_factory=MWTConfig)
    fim_lambda: float = _num(0.0, ge=0.0)
    fim_decay: float = _num(0.9, ge=0.0, le=1.0)
    mcl: MCLConfig = field(default_factory=MCLConfig)

    def _extra_problems(self) -> Problems:
        yield from _interval_problems("metasgd_clamp", self.metasgd_clamp, 0.0, float("inf"), False)


@dataclass
class RunConfig(_Validated):
    """Outer loop, logging, evaluation and runtime settings.

    Attributes:
        name: Run name (used for output folders and tracking).
        seed: Global seed for model init and episode sampling.
        steps: Outer (meta) optimisation steps.
        batch_size: Functions per meta-batch.
        outer_lr: Outer optimiser learning rate (> 0).
        weight_decay: Outer optimiser weight decay (>= 0).
        grad_clip: Max global norm of the meta-gradient (0 disables clipping).
        lr_schedule: One of ``LR_SCHEDULES`` (constant, cosine).
        warmup_steps: Linear warm-up steps of the outer learning rate.
        log_every: Log training metrics every N steps.
        eval_every: Evaluate on held-out functions every N steps.
        eval_repeats: Support-set resamplings averaged per evaluation (bootstrap).
        eval_bins: Support-ratio ranges ``[R_min, R_max]``; the final test evaluation
            reports every metric per bin (MIA Table 1 uses these three).
        eval_batch_size: Signals per evaluation batch.
        checkpoint_every: Save a checkpoint every N steps (and at the end).
        num_workers: Ray Train workers (data-parallel meta-gradients).
        cpus_per_worker: CPUs reserved per worker (fractions allowed).
        use_gpu: one GPU per worker, NCCL backend.
        amp: autocast to bfloat16/float16 on GPU for the forward passes.
        max_failures: worker-group restarts from the last checkpoint before giving up.
        tracking_uri: MLflow tracking URI; empty = ``MLFLOW_TRACKING_URI`` or a sqlite
            store ``run.out_dir/mlflow.db``.
        experiment: MLflow experiment name.
        fault_injection_step: testing aid: raise once in worker 0 at this step (0 = off;
            a marker file in the run directory makes it fire only once).
        device: One of ``DEVICES`` (auto, cpu, cuda).
        matmul_precision: ``torch.set_float32_matmul_precision`` value.
        out_dir: Root directory for run outputs.
        placement_strategy: One of ``PLACEMENT_STRATEGIES``: how Ray places the training
            workers' placement group (``SPREAD``/``STRICT_SPREAD`` put workers on different
            nodes, e.g. one per GPU machine; ``PACK`` fills a node first).
        read_cpus: CPUs reserved per Ray Data read task (fractions allowed). Below 1 lets
            reads run beside the training workers on nodes with a single CPU.
        storage_path: Ray Train's storage for checkpoints and run state: a path every
            node sees (NFS/EFS) or an ``s3://`` URI (endpoint from ``data.endpoint_url``
            or ``AWS_ENDPOINT_URL``); empty = ``<out_dir>/ray_results``. A job submitted
            again with the same ``name`` resumes from it.
        keep_checkpoints: checkpoints Ray keeps, ranked by validation score (the latest
            one is always kept as well).
    """

    name: str = "default"
    seed: int = _num(0, ge=0)
    steps: int = _num(200, ge=1)
    batch_size: int = _num(64, ge=1)
    outer_lr: float = _num(1e-4, gt=0.0)
    weight_decay: float = _num(0.0, ge=0.0)
    grad_clip: float = _num(1.0, ge=0.0)
    lr_schedule: str = _choice("constant", LR_SCHEDULES)
    warmup_steps: int = _num(0, ge=0)
    log_every: int = _num(20, ge=1)
    eval_every: int = _num(100, ge=1)
    eval_repeats: int = _num(2, ge=1)
    eval_bins: list[list[float]] = field(
        default_factory=lambda: [[0.01, 0.02], [0.02, 0.05], [0.05, 0.1]]
    )
    eval_batch_size: int = _num(100, ge=1)
    checkpoint_every: int = _num(100, ge=1)
    num_workers: int = _num(1, ge=1)
    cpus_per_worker: float = _num(1.0, gt=0.0)
    use_gpu: bool = False
    amp: bool = False
    max_failures: int = _num(1, ge=0)
    tracking_uri: str = ""
    experiment: str = "mia-inr"
    fault_injection_step: int = _num(0, ge=0)
    device: str = _choice("auto", DEVICES)
    matmul_precision: str = _choice("medium", MATMUL_PRECISIONS)
    out_dir: str = "runs"
    placement_strategy: str = _choice("PACK", PLACEMENT_STRATEGIES)
    read_cpus: float = _num(1.0, gt=0.0)
    storage_path: str = ""
    keep_checkpoints: int = _num(1, ge=1)

    def _extra_problems(self) -> Problems:
        for i, interval in enumerate(self.eval_bins):
            yield from _interval_problems(f"eval_bins[{i}]", interval, 0.0, 1.0, True)


@dataclass
class Config:
    """A complete experiment: data, model, method and run sections.

    Attributes:
        data: Dataset settings.
        model: INR family settings.
        method: Meta-learning method settings.
        run: Outer loop / runtime settings.
    """

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    run: RunConfig = field(default_factory=RunConfig)
