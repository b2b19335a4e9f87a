"""Typed experiment configuration: one dataclass per section, validated on construction.

Enumerated string fields carry their allowed values in ``field(metadata={"choices": ...})``
and numeric fields their bounds (``gt``/``ge``/``le``); cross-field rules live in each
class's ``_extra_problems``. Every construction (including ``dataclasses.replace``) runs
the checks and raises :class:`ConfigError` listing all problems of that section.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mia_core.config.schema_fields import (
    Problems,
    _choice,
    _divisible_problems,
    _field_problems,
    _interval_problems,
    _is_number,
    _list,
    _name_problems,
    _num,
    _Validated,
)
from mia_core.config.schema_method import (
    CONTINUAL_METHOD_NAMES,
    GAP_VARIANTS,
    MCL_EVAL_OPTIMIZERS,
    MCL_TASK_KINDS,
    METHOD_NAMES,
    MCLConfig,
    MethodConfig,
    MWTConfig,
    PruningConfig,
    SFTConfig,
)

MODEL_FAMILIES = ("siren", "relu_ff", "functa", "composers")
FUNCTA_MODULATIONS = ("scale", "shift", "scale_shift")
FUNCTA_BACKBONES = ("siren", "relu")
FUNCTA_LATENT_MAPS = ("linear", "conv")
INR_LAYOUTS = ("legacy", "paper")
LR_SCHEDULES = ("constant", "cosine")
DEVICES = ("auto", "cpu", "cuda")
MATMUL_PRECISIONS = ("highest", "high", "medium")
PLACEMENT_STRATEGIES = ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD")
SYNTHETIC_VARIANTS = ("paper", "shared")
PATCH_COORDS = ("local", "global")
RESIDUAL_BASES = ("none", "eof", "mv_eof")
EVAL_PROTOCOLS = ("paper", "joint")

__all__ = [
    "CONTINUAL_METHOD_NAMES",
    "DEVICES",
    "EVAL_PROTOCOLS",
    "FUNCTA_BACKBONES",
    "FUNCTA_LATENT_MAPS",
    "FUNCTA_MODULATIONS",
    "GAP_VARIANTS",
    "INR_LAYOUTS",
    "LR_SCHEDULES",
    "MATMUL_PRECISIONS",
    "MCL_EVAL_OPTIMIZERS",
    "MCL_TASK_KINDS",
    "METHOD_NAMES",
    "MODEL_FAMILIES",
    "PLACEMENT_STRATEGIES",
    "SYNTHETIC_VARIANTS",
    "Config",
    "DataConfig",
    "MCLConfig",
    "MWTConfig",
    "MethodConfig",
    "ModelConfig",
    "Problems",
    "PruningConfig",
    "RunConfig",
    "SFTConfig",
    "_Validated",
    "_choice",
    "_divisible_problems",
    "_field_problems",
    "_interval_problems",
    "_is_number",
    "_list",
    "_num",
]


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
        noise_std: Synthetic noise std (>= 0): the per-modality jitter of the shared
            parameters (``paper``) or additive observation noise on ``y`` (``shared``).
        synthetic_variant: One of ``SYNTHETIC_VARIANTS``: ``paper`` (MTNP ranges,
            parameters jittered per modality, scale ``a_m``) or ``shared`` (the earlier
            generator: exactly shared parameters plus observation noise).
        support_ratio: ``[min, max]`` fraction of points given as support, in (0, 1].
        support_ratio_per_modality: Per-modality overrides of ``support_ratio``; keys must
            be listed in ``modalities``.
        val_fraction: Fraction of the training functions held out for validation
            (model selection); the test functions are never used for selection.
        psnr_range: Peak-to-peak value range used by PSNR.
        spatial_stride: Keep every ``lambda_s``-th grid point per axis (meta-pretraining).
        query_points: Meta-training scores the outer loss on this many valid points per
            signal and modality, drawn uniformly at random each episode (an unbiased
            estimate of the full query loss; the speed lever on large fields); 0 scores
            every point. Validation and evaluation always score every point.
        support_points: Meta-training adapts on at most this many of the drawn support
            points per signal and modality (a uniform subset; the ratio is drawn as
            configured, so only supports larger than this shrink); 0: no cap.
            Validation and evaluation always adapt on the full support.
        prefetch: Training episodes built ahead of the step on a background thread and
            copied to the device without blocking (pinned memory on CUDA); 0 builds each
            episode in the step, as before.
        time_stride: Keep every ``lambda_t``-th signal (time step) of the store.
        patch: Cut every grid signal (time step) into patches of this shape, one entry per
            grid axis (e.g. ``[32, 32]`` for lat/lon, ``[16, 16, 16]`` for volumes); each
            patch is a signal and ``run.batch_size`` counts patches. Empty (the default)
            keeps whole signals. The rank is checked against the store's grid when the
            store is opened (see ``pipelines.data.stores.patches``).
        patch_coords: The coordinates a patch's points get: ``local`` (default: every
            patch on the same ``[-1, 1]^d`` frame, so one network serves any grid size and
            the sine frequencies span a patch) or ``global`` (the points' coordinates in
            the whole grid's ``[-1, 1]^d`` domain).
        residual_base: One of ``RESIDUAL_BASES``: ``none`` (default), or a classical
            reconstruction from each signal's support set that the INR learns the residual
            of: ``eof`` (EOFs per variable) or ``mv_eof`` (joint EOFs of all variables),
            fitted on the train split with ``k`` chosen on validation
            (``pipelines.data.episode_base``). Needs whole grids (no ``patch``) on a
            store with shared coordinates.
        seed: Seed of the dataset generator.
    """

    name: str = "synthetic1d"
    store: str = ""
    endpoint_url: str = ""
    spatial_stride: int = _num(1, ge=1)
    query_points: int = _num(0, ge=0)
    support_points: int = _num(0, ge=0)
    time_stride: int = _num(1, ge=1)
    patch: list[int] = field(default_factory=list)
    patch_coords: str = _choice("local", PATCH_COORDS)
    residual_base: str = _choice("none", RESIDUAL_BASES)
    prefetch: int = _num(2, ge=0)
    modalities: list[str] = _list("sine", "gaussian", "tanh", "relu")
    num_functions: int = _num(1000, ge=2)
    num_train: int = _num(900, ge=1)
    num_points: int = _num(200, ge=1)
    x_range: list[float] = _list(-5.0, 5.0)
    noise_std: float = _num(0.02, ge=0.0)
    synthetic_variant: str = _choice("paper", SYNTHETIC_VARIANTS)
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
        if not all(isinstance(p, int) and not isinstance(p, bool) and p >= 1 for p in self.patch):
            yield "patch", f"entries must be positive ints (one per grid axis), got {self.patch!r}"
        if _is_number(self.val_fraction) and _is_number(self.num_train):
            if self.num_train - int(self.num_train * self.val_fraction) < 1:
                yield "val_fraction", "leaves no training functions"
        if self.residual_base != "none" and self.patch:
            yield "residual_base", "needs whole grids: set patch to []"
        for modality, ratio in self.support_ratio_per_modality.items():
            key = f"support_ratio_per_modality.{modality}"
            if modality not in self.modalities:
                yield key, f"unknown modality; expected one of {self.modalities}"
            yield from _interval_problems(key, ratio, 0.0, 1.0, True)


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
        functa_backbone: One of ``FUNCTA_BACKBONES``: ``siren`` (sine layers) or ``relu``
            (MIA App. B: the ReLU MLP shared with Composers, Fourier features from
            ``ff_sigma``/``ff_features``).
        functa_latent_map: One of ``FUNCTA_LATENT_MAPS``: ``linear`` (per-point linear map
            of the interpolated latent) or ``conv`` (official MIA code: LayerNorm + a
            kernel-3 convolution over the latent grid before interpolation; needs
            ``functa_grid``).
        functa_layout: One of ``INR_LAYOUTS``: ``legacy`` (``depth`` activation layers plus
            the head) or ``paper`` (``depth`` counts the head: 5 = 3 modulated layers).
        composers_layout: One of ``INR_LAYOUTS``: ``legacy`` (``depth`` ReLU layers plus
            the head, a bias on the composed layer) or ``paper`` (App. B: ``depth``
            linear layers including the head, no bias on the composed layer).
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
    functa_backbone: str = _choice("siren", FUNCTA_BACKBONES)
    functa_latent_map: str = _choice("linear", FUNCTA_LATENT_MAPS)
    functa_layout: str = _choice("legacy", INR_LAYOUTS)
    composers_layout: str = _choice("legacy", INR_LAYOUTS)

    def _extra_problems(self) -> Problems:
        if not all(_is_number(g) and g >= 1 for g in self.functa_grid):
            yield "functa_grid", f"entries must be positive ints, got {self.functa_grid!r}"
        if self.family == "functa" and self.functa_latent_map == "conv" and not self.functa_grid:
            yield "functa_latent_map", "conv needs a latent grid (set model.functa_grid)"


@dataclass
class RunConfig(_Validated):
    """Outer loop, logging, evaluation and runtime settings.

    Attributes:
        name: Run name: the folder ``<out_dir>/<name>`` and the MLflow run name. A name,
            not a path: 1 to 100 characters, no slash or backslash, control characters
            or leading ``.``.
        seed: Global seed for model init and episode sampling.
        steps: Outer (meta) optimisation steps. 0 trains nothing: the initialisation
            (seeded by ``seed``) is validated, kept as the best and last checkpoint and
            reported, e.g. the continual baselines that learn from a random init.
        batch_size: Functions per meta-batch.
        outer_lr: Outer optimiser learning rate (> 0).
        weight_decay: Outer optimiser weight decay (>= 0).
        grad_clip: Max global norm of the meta-gradient (0 disables clipping).
        grad_clip_groups: Clip each optimiser parameter group (a task's
            ``param_groups``) to ``grad_clip`` on its own, as the MWT code does, instead of
            all parameters together; the logged ``grad_norm`` stays the global norm.
        lr_schedule: One of ``LR_SCHEDULES`` (constant, cosine).
        warmup_steps: Linear warm-up steps of the outer learning rate.
        log_every: Log training metrics every N steps.
        eval_every: Evaluate on held-out functions every N steps.
        eval_repeats: Support-set resamplings averaged per evaluation (bootstrap).
        eval_bins: Support-ratio ranges ``[R_min, R_max]``; the final test evaluation
            reports every metric per bin (MIA Table 1 uses these three).
        eval_protocol: One of ``EVAL_PROTOCOLS``: ``paper`` draws every modality's ratio
            over the union of ``eval_bins`` and bins each signal by its realised ratio;
            ``joint`` gives all modalities each bin's range in turn.
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
        log_model: log the validation-selected checkpoint as an MLflow pyfunc model
            (``pipelines/reports/mlflow_model.py``) when the run is evaluated.
        registered_model: register that model under this name (``<run.name>`` is
            replaced by the run's name); empty: log it without registering.
        system_metrics: MLflow system metrics (CPU, memory, GPU) of training runs.
        fault_injection_step: testing aid: fail once in worker 0 at this step (0 = off;
            a marker file in the run directory makes it fire only once).
        fault_injection_kind: ``raise`` (an exception) or ``kill`` (the worker process
            kills itself with SIGKILL, as the OOM killer or a lost node would).
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
        snapshot_steps: steps whose full state is also kept as
            ``<run_dir>/checkpoints/step_<N>.pt`` (budget curves from one run; on Ray
            the run directory must be visible to rank 0).
    """

    name: str = "default"
    seed: int = _num(0, ge=0)
    steps: int = _num(200, ge=0)
    batch_size: int = _num(64, ge=1)
    outer_lr: float = _num(1e-4, gt=0.0)
    weight_decay: float = _num(0.0, ge=0.0)
    grad_clip: float = _num(1.0, ge=0.0)
    grad_clip_groups: bool = False
    lr_schedule: str = _choice("constant", LR_SCHEDULES)
    warmup_steps: int = _num(0, ge=0)
    log_every: int = _num(20, ge=1)
    eval_every: int = _num(100, ge=1)
    eval_repeats: int = _num(2, ge=1)
    eval_bins: list[list[float]] = field(
        default_factory=lambda: [[0.01, 0.02], [0.02, 0.05], [0.05, 0.1]]
    )
    eval_protocol: str = _choice("paper", EVAL_PROTOCOLS)
    eval_batch_size: int = _num(100, ge=1)
    checkpoint_every: int = _num(100, ge=1)
    num_workers: int = _num(1, ge=1)
    cpus_per_worker: float = _num(1.0, gt=0.0)
    use_gpu: bool = False
    amp: bool = False
    max_failures: int = _num(1, ge=0)
    tracking_uri: str = ""
    experiment: str = "mia-inr"
    log_model: bool = True
    registered_model: str = "mia-inr-<run.name>"
    system_metrics: bool = True
    fault_injection_step: int = _num(0, ge=0)
    fault_injection_kind: str = _choice("raise", ("raise", "kill"))
    device: str = _choice("auto", DEVICES)
    matmul_precision: str = _choice("medium", MATMUL_PRECISIONS)
    out_dir: str = "runs"
    placement_strategy: str = _choice("PACK", PLACEMENT_STRATEGIES)
    read_cpus: float = _num(1.0, gt=0.0)
    storage_path: str = ""
    keep_checkpoints: int = _num(1, ge=1)
    snapshot_steps: list[int] = field(default_factory=list)

    def _extra_problems(self) -> Problems:
        yield from _name_problems("name", self.name)
        for i, interval in enumerate(self.eval_bins):
            yield from _interval_problems(f"eval_bins[{i}]", interval, 0.0, 1.0, True)


@dataclass
class Config(_Validated):
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

    def _extra_problems(self) -> Problems:
        """Rules across sections."""
        if self.method.sft.support_state == "density" and self.data.query_points > 0:
            yield (
                "method.sft.support_state",
                "density divides by the query set's valid points, which data.query_points "
                "subsamples in training: set data.query_points=0 or use log_count",
            )
