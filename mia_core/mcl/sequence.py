"""Meta-continual learning over task sequences: MCL-NF and its baselines, one loop.

A batch of signals is learned task by task from a :class:`~mia_core.mcl.tasks.TaskStream`
(no going back); after each task the learner holds either a new module (MCL-NF) or the
updated single network (baselines). The same code runs meta-training (differentiable,
``meta=True``: MAML over the whole task sequence, the outer loss is the final model's
loss on every task) and test-time optimisation (``meta=False``: detached steps with a
step budget per task).

Methods (``CONTINUAL_METHODS``: the registry's continual kind), same inner steps and rates:

* ``mcl_nf``: a new module per task, initialised from the shared meta-learned init;
  earlier modules are never touched again, so earlier tasks cannot be forgotten.
* ``maml_cl``: one network (meta-learned init) trained on the tasks in turn.
* ``oml``: OML-style; only the last ``oml_layers`` layers adapt in the inner loop, the
  rest is meta-learned in the outer loop only.
* ``er``: ``maml_cl`` plus a replay buffer of ``replay_points`` points per past task
  whose loss is added to every later step (the only method that keeps past data).
* ``mer``: ER's buffer as Meta-Experience Replay (sequential updates on the current and
  the stored tasks, then a Reptile pull-back by ``mer_beta``; :mod:`mia_core.mcl.mer`).
* ``ewc``: ``maml_cl`` plus ``ewc_lambda / 2 * sum F (theta - theta*)^2`` with the
  per-signal diagonal empirical Fisher accumulated at the end of each task.

``fim_lambda > 0`` weights every point of the inner and outer losses with the FIM loss
(:mod:`mia_core.mcl.fim`) for any of the methods.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from mia_core.adapt import SGD, Adam
from mia_core.config.schema_method import CONTINUAL_METHOD_NAMES as CONTINUAL_METHODS
from mia_core.inr.base import INR
from mia_core.mcl.fim import fim_weights, update_fisher, weighted_mse
from mia_core.mcl.mer import mer_step, replay_losses
from mia_core.mcl.modular import ModularINR
from mia_core.mcl.tasks import Task, TaskSequence, TaskStream
from mia_core.meta.metrics import psnr

Params = dict[str, Tensor]


@dataclass
class ContinualSpec:
    """Method settings (see the module docstring).

    Attributes:
        method: one of ``CONTINUAL_METHODS``.
        inner_steps: steps per task during meta-training.
        inner_lr: SGD rate of the inner loop.
        first_order: detach inner gradients during meta-training.
        fim_lambda: FIM loss ``lambda`` (0 = plain MSE).
        fim_decay: EMA factor of the running Fisher.
        oml_layers: layers adapted by ``oml`` (1 = the output layer).
        replay_points: points stored per past task by ``er`` and ``mer``.
        ewc_lambda: EWC penalty weight.
        fim_normalise: FIM weights divided by ``D`` (``False``: the paper's form).
        fisher_per_task: the outer loss's Fisher per task (else pooled over tasks).
        mer_beta: ``mer``'s Reptile rate (1 = sequential replay without pull-back).
    """

    method: str = "mcl_nf"
    inner_steps: int = 2
    inner_lr: float = 1e-2
    first_order: bool = False
    fim_lambda: float = 0.0
    fim_decay: float = 0.9
    oml_layers: int = 1
    replay_points: int = 64
    ewc_lambda: float = 100.0
    fim_normalise: bool = True
    fisher_per_task: bool = False
    mer_beta: float = 0.5

    def __post_init__(self) -> None:
        if self.method not in CONTINUAL_METHODS:
            raise ValueError(f"method must be one of {CONTINUAL_METHODS}, got {self.method!r}")


@dataclass
class ContinualState:
    """What a learner holds while it walks a sequence.

    Attributes:
        modular: the modules (``mcl_nf``), else ``None``.
        params: the single network's adapted tensors (baselines), else ``None``.
        buffer: ``er``'s and ``mer``'s stored ``(coords (1, R, d), values (B, R, C), mask (B, R))``.
        ewc_fisher: accumulated per-signal diagonal Fisher by tensor name (``ewc``).
        ewc_anchor: parameters at the end of the previous task (``ewc``).
        tasks_done: indices of the tasks learned so far.
    """

    modular: ModularINR | None = None
    params: Params | None = None
    buffer: list[tuple[Tensor, Tensor, Tensor]] = field(default_factory=list)
    ewc_fisher: Params = field(default_factory=dict)
    ewc_anchor: Params = field(default_factory=dict)
    tasks_done: list[int] = field(default_factory=list)


class SequenceLearner(nn.Module):
    """The meta-parameters (an INR's weights) plus the continual inner loop.

    Args:
        inr: context-free INR; for ``mcl_nf`` it takes module coordinates
            (``partition.module_dim``), for the baselines full signal coordinates.
        spec: method settings.
    """

    def __init__(self, inr: INR, spec: ContinualSpec) -> None:
        super().__init__()
        if inr.context_init is not None:
            raise ValueError("continual methods adapt INR weights; build the INR without context")
        self.inr, self.spec = inr, spec
        names = inr.weight_names()
        self.adapted = names[-2 * spec.oml_layers :] if spec.method == "oml" else names
        self.generator = torch.Generator().manual_seed(0)

    @property
    def modular(self) -> bool:
        """Whether this learner grows one module per task."""
        return self.spec.method == "mcl_nf"

    def start(self, seq: TaskSequence, meta: bool) -> ContinualState:
        """Fresh state for a batch of sequences."""
        if self.modular:
            return ContinualState(modular=ModularINR(self.inr, seq.partition, seq.batch_size))
        return ContinualState(params=self._init_params(seq.batch_size, detach=not meta))

    def _init_params(self, batch: int, detach: bool) -> Params:
        weights = self.inr.weights()
        out = {}
        for n in self.adapted:
            w = weights[n].unsqueeze(0).expand(batch, *weights[n].shape)
            out[n] = w.detach().clone().requires_grad_(True) if detach else w
        return out

    def _task_loss(self, st: ContinualState, params: Params, task: Task, x: Tensor, fisher):
        pred, feats = self.inr(x, None, params, True)
        weights = None
        if self.spec.fim_lambda > 0:
            fisher = update_fisher(
                fisher, task.values - pred, feats, task.mask, self.spec.fim_decay
            )
            weights = self._fim(task.values - pred, feats, fisher)
        loss = weighted_mse(pred, task.values, task.mask, weights).sum()
        if self.spec.method == "er" and st.buffer:
            bx = torch.cat([b[0] for b in st.buffer], 1)
            by = torch.cat([b[1] for b in st.buffer], 1)
            bm = torch.cat([b[2] for b in st.buffer], 1)
            loss = loss + weighted_mse(self.inr(bx, None, params), by, bm, None).sum()
        if self.spec.method == "ewc" and st.ewc_fisher:
            pen = sum(
                (st.ewc_fisher[n] * (params[n] - st.ewc_anchor[n]).square()).sum()
                for n in st.ewc_fisher
            )
            loss = loss + 0.5 * self.spec.ewc_lambda * pen
        return loss, fisher

    def learn_task(
        self,
        st: ContinualState,
        task: Task,
        steps: int,
        meta: bool,
        lr: float | None = None,
        optimizer: str = "sgd",
    ) -> ContinualState:
        """Learn one task from the state left by the previous ones.

        Args:
            st: the state (updated in place and returned).
            task: the next task of the stream.
            steps: optimisation steps on this task.
            meta: keep the graph to the meta-parameters (meta-training).
            lr: step size (default ``inner_lr``).
            optimizer: ``sgd`` or ``adam`` (:class:`~mia_core.adapt.Adam`, one state per
                signal, fresh for every task; test-time only, meta-training uses SGD).
        """
        lr = self.spec.inner_lr if lr is None else lr
        create_graph = meta and not self.spec.first_order
        if self.modular:
            params, x = st.modular.new_module(detach=not meta), task.coords
        else:
            params, x = st.params, task.signal_coords
        keys = self.adapted
        adapted = {n: params[n] for n in keys}
        rule_cls = Adam if optimizer == "adam" and not meta else SGD
        rule = rule_cls.for_params(adapted, lr=lr)
        fisher, rule_state = None, rule.init_state(adapted)
        for k in range(steps):
            if self.spec.method == "mer":
                adapted, rule_state, fisher = self._mer_step(
                    st, params, adapted, task, (rule, rule_state, k), fisher, meta
                )
            else:
                loss, fisher = self._task_loss(st, params, task, x, fisher)
                grads = torch.autograd.grad(loss, list(adapted.values()), create_graph=create_graph)
                adapted, rule_state, _ = rule(
                    adapted, dict(zip(keys, grads, strict=True)), rule_state, k
                )
            if not meta:
                adapted = {n: p.detach().requires_grad_(True) for n, p in adapted.items()}
            params = {**params, **adapted}
        if self.modular:
            st.modular.add_module(params)
        else:
            st.params = params
            if self.spec.method in ("er", "mer"):
                st.buffer.append(self._replay_sample(task, x))
            if self.spec.method == "ewc":
                fish = self._point_fisher(params, task, x)
                for n, f in fish.items():
                    st.ewc_fisher[n] = st.ewc_fisher.get(n, 0) + f
                st.ewc_anchor = {n: p.detach() for n, p in params.items()}
        st.tasks_done.append(task.index)
        return st

    def _mer_step(
        self,
        st: ContinualState,
        params: Params,
        adapted: Params,
        task: Task,
        rule_at: tuple[Callable, object, int],
        fisher: Tensor | None,
        meta: bool,
    ) -> tuple[Params, object, Tensor | None]:
        """One MER step (:func:`~mia_core.mcl.mer.mer_step`).

        Batches: the current task's loss (FIM-weighted when ``fim_lambda``; the Fisher
        advances once per step), one plain MSE per stored task. ``rule_at``: rule, state, k.
        """
        rule, rule_state, k = rule_at
        box = [fisher]

        def current(a: Params) -> Tensor:
            loss, box[0] = self._task_loss(st, {**params, **a}, task, task.signal_coords, fisher)
            return loss

        losses = [current, *replay_losses(self.inr, params, st.buffer)]
        graph = meta and not self.spec.first_order
        beta, gen = self.spec.mer_beta, self.generator
        out, rule_state = mer_step(adapted, losses, rule, rule_state, k, beta, graph, not meta, gen)
        return out, rule_state, box[0]

    def _replay_sample(self, task: Task, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        n = task.values.shape[1]
        idx = torch.randperm(n, generator=self.generator)[: self.spec.replay_points]
        idx = idx.to(x.device)
        return x[:, idx].detach(), task.values[:, idx].detach(), task.mask[:, idx].detach()

    def _point_fisher(self, params: Params, task: Task, x: Tensor) -> Params:
        """Per-signal diagonal empirical Fisher ``mean_j g_j^2`` of the adapted tensors.

        Every point becomes its own "signal" (weights repeated ``P`` times), so one
        backward pass yields all per-point gradients.
        """
        b, p = task.values.shape[:2]
        rep = {
            n: params[n].detach().repeat_interleave(p, 0).requires_grad_(True) for n in self.adapted
        }
        xr = x[0].unsqueeze(1).repeat(b, 1, 1)  # (B*P, 1, d)
        with torch.enable_grad():
            pred = self.inr(xr, None, rep)
            y = task.values.reshape(b * p, 1, -1)
            m = task.mask.reshape(b * p, 1, 1)
            loss = 0.5 * ((pred - y).square() * m).sum()
            grads = torch.autograd.grad(loss, list(rep.values()))
        denom = task.mask.sum(1).clamp(min=1.0)
        return {
            n: g.reshape(b, p, *g.shape[1:]).square().sum(1) / denom.view(b, *([1] * (g.dim() - 1)))
            for n, g in zip(rep, grads, strict=True)
        }

    def predict(self, st: ContinualState, coords: Tensor) -> Tensor:
        """The current field at signal coordinates ``(P, d)`` -> ``(B, P, C)``."""
        if self.modular:
            return st.modular(coords)[0]
        return self.inr(coords.unsqueeze(0), None, st.params)

    def run(
        self,
        seq: TaskSequence,
        steps: int,
        meta: bool,
        lr: float | None = None,
        optimizer: str = "sgd",
        on_task_end: Callable[[int, ContinualState], None] | None = None,
    ) -> ContinualState:
        """Walk the sequence once, ``steps`` per task."""
        st = self.start(seq, meta)
        for task in TaskStream(seq):
            self.learn_task(st, task, steps, meta, lr, optimizer)
            if on_task_end is not None:
                on_task_end(task.index, st)
        return st

    def forward(self, seq: TaskSequence) -> Tensor:
        """Meta-training loss: walk the sequence, then the final model's loss on every task.

        Returns:
            Scalar: mean over tasks and signals of the (FIM-weighted) MSE.
        """
        with torch.enable_grad():
            st = self.run(seq, self.spec.inner_steps, meta=True)
            pred, feats = self._features(st, seq.coords)
            values = torch.nan_to_num(seq.values)
            mask = (~torch.isnan(seq.values)).all(-1).to(values.dtype)
            weights = self._outer_weights(seq, values - pred, feats, mask)
            losses = [
                weighted_mse(
                    pred[:, seq.task_of == i],
                    values[:, seq.task_of == i],
                    mask[:, seq.task_of == i],
                    None if weights is None else weights[:, seq.task_of == i],
                ).mean()
                for i in range(seq.num_tasks)
            ]
        return torch.stack(losses).mean()

    def _fim(self, residual: Tensor, feats: Tensor, fisher: Tensor) -> Tensor:
        spec = self.spec
        return fim_weights(residual, feats, fisher, spec.fim_lambda, spec.fim_normalise)

    def _outer_weights(
        self, seq: TaskSequence, residual: Tensor, feats: Tensor, mask: Tensor
    ) -> Tensor | None:
        """FIM weights ``(B, P)`` of the outer loss: one Fisher, or one per task."""
        if self.spec.fim_lambda <= 0:
            return None
        if not self.spec.fisher_per_task:
            return self._fim(residual, feats, update_fisher(None, residual, feats, mask, 0.0))
        weights = mask.new_ones(mask.shape)
        for i in range(seq.num_tasks):
            sel = seq.task_of == i
            r, f = residual[:, sel], feats[:, sel]
            weights[:, sel] = self._fim(r, f, update_fisher(None, r, f, mask[:, sel], 0.0))
        return weights

    def _features(self, st: ContinualState, coords: Tensor) -> tuple[Tensor, Tensor]:
        if not self.modular:
            return self.inr(coords.unsqueeze(0), None, st.params, True)
        ids = st.modular.partition.route(coords)
        pred = feats = None
        for i, mod in enumerate(st.modular.modules):
            sel = torch.nonzero(ids == i).flatten()
            x = st.modular.partition.module_input(coords[sel]).unsqueeze(0)
            p, f = self.inr(x, None, mod, True)
            if pred is None:
                pred = p.new_zeros(p.shape[0], coords.shape[0], p.shape[-1])
                feats = f.new_zeros(f.shape[0], coords.shape[0], f.shape[-1])
            pred, feats = pred.index_copy(1, sel, p), feats.index_copy(1, sel, f)
        return pred, feats

    @torch.no_grad()
    def task_psnr(self, st: ContinualState, seq: TaskSequence, data_range: float) -> Tensor:
        """``(T, B)`` PSNR of every task under the current state (NaN for unseen tasks)."""
        pred = self.predict(st, seq.coords)
        values = torch.nan_to_num(seq.values)
        mask = (~torch.isnan(seq.values)).all(-1).to(values.dtype)
        se = (pred - values).square().mean(-1) * mask
        out = torch.full((seq.num_tasks, seq.batch_size), float("nan"), device=values.device)
        for i in st.tasks_done:
            sel = seq.task_of == i
            mse = se[:, sel].sum(1) / mask[:, sel].sum(1).clamp(min=1.0)
            out[i] = psnr(mse, data_range)
        return out

    def continual_eval(
        self,
        seq: TaskSequence,
        budgets: list[int],
        data_range: float = 1.0,
        lr: float | None = None,
        optimizer: str = "sgd",
    ) -> dict[int, Tensor]:
        """Test-time continual learning with each step budget.

        Returns:
            budget -> ``(T, T, B)`` PSNR: ``[j, i]`` is task ``i`` after learning task
            ``j`` (NaN for ``i > j``); the last row is the final model, the diagonal
            each task just after it was learned (their difference is the forgetting).
        """
        out = {}
        for steps in budgets:
            rows: list[Tensor] = []

            def record(_i: int, st: ContinualState, rows: list[Tensor] = rows) -> None:
                rows.append(self.task_psnr(st, seq, data_range))

            with torch.enable_grad():
                self.run(seq, steps, False, lr, optimizer, on_task_end=record)
            out[steps] = torch.stack(rows)
        return out
