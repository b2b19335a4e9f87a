"""The method registry (mia_core/config/methods.py): names, builders, deferred sub-sections."""

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mia_core.adapt import ALFA, GAP, SGD, MetaSGD, StateFusionTransformer
from mia_core.builders import adapt_mode, build_learner, build_rule
from mia_core.config import ConfigError, MethodConfig, load_config
from mia_core.config.methods import (
    CONTEXT,
    CONTINUAL,
    META,
    MWT,
    MethodSpec,
    get_method,
    method_names,
    register,
)
from mia_core.config.schema import CONTINUAL_METHOD_NAMES, METHOD_NAMES
from mia_core.mcl import CONTINUAL_METHODS, SequenceLearner, grid_task_sequence
from mia_core.mcl.build import build_sequence_learner
from mia_core.meta.learner import MetaLearner
from mia_core.mwt import build_mwt
from mia_core.mwt.model import MWT as MWTModel
from pipelines.data.stores.reader import grid_coords
from pipelines.tasks.registry import registered
from tests.tiny_configs import TINY_META_MODEL, TINY_MWT_MODEL

ROOT = Path(__file__).resolve().parents[1]
TINY_SIREN = ["model.family=siren", "model.width=16", "model.depth=2", "model.omega0=10.0"]
RULES = {
    "cavia": SGD,
    "metasgd": MetaSGD,
    "gap": GAP,
    "alfa": ALFA,
    "mia": StateFusionTransformer,
    "maml": SGD,
    "meta_inr": SGD,
}


def preset(name: str) -> Path | None:
    """The method's preset: ``configs/method/<name>.yaml``, else an experiment of it."""
    own = ROOT / "configs" / "method" / f"{name}.yaml"
    if own.is_file():
        return own
    for path in sorted((ROOT / "configs" / "experiments").glob(f"{name}_*.yaml")):
        if load_config(path).method.name == name:
            return path
    return None  # mer: no preset, the defaults


def test_schema_choices_are_the_registry_names():
    (name,) = [f for f in dataclasses.fields(MethodConfig) if f.name == "name"]
    assert name.metadata["choices"] == METHOD_NAMES == method_names()
    assert CONTINUAL_METHOD_NAMES == CONTINUAL_METHODS == method_names(CONTINUAL)
    assert sorted(registered()) == sorted(method_names())
    assert set(method_names(META)) == set(RULES)  # a new rule also gets a test entry here
    for kind, task in ((META, "MetaLearningTask"), (MWT, "MWTTask"), (CONTINUAL, "ContinualTask")):
        assert {registered()[n].__name__ for n in method_names(kind)} == {task}


def test_every_registered_method_is_reachable_and_its_sections_exist():
    fields = {f.name for f in dataclasses.fields(MethodConfig)}
    for name in method_names():
        spec = get_method(name)
        assert spec.name == name and set(spec.sections) <= fields
        assert load_config(None, [f"method.name={name}"]).method.name == name
    assert [n for n in method_names() if get_method(n).adapts_weights] == ["maml", "meta_inr"]


@pytest.mark.parametrize("name", method_names(META))
def test_every_meta_method_builds_and_runs_a_tiny_learner(name, make_ep):
    cfg = load_config(preset(name), [*TINY_META_MODEL, "method.alfa_hidden=8"])
    assert cfg.method.name == name
    torch.manual_seed(0)
    learner = build_learner(cfg.model, cfg.method, {"sine": (1, 1), "tanh": (1, 1)})
    assert isinstance(learner, MetaLearner) and type(learner.rule) is RULES[name]
    assert learner.adapt_mode == adapt_mode(cfg.method) == get_method(name).adapts
    out = learner(make_ep(batch=2, num_points=12, dtype=torch.float32))
    assert torch.isfinite(out.loss)


def test_weight_rates_and_head_pick_the_rule_and_mode():
    method = load_config(None, ["method.name=maml", "method.weight_rates=param_step"]).method
    rule = build_rule(method, {"sine": (1, 4)}, {"sine": "sine"})
    assert type(rule) is MetaSGD
    head = load_config(None, ["method.name=meta_inr", "method.head_ridge=0.1"]).method
    assert adapt_mode(head) == "head"


@pytest.mark.parametrize("name", method_names(MWT))
def test_mwt_builds_a_tiny_model(name):
    cfg = load_config(preset(name), TINY_MWT_MODEL)
    torch.manual_seed(0)
    model = build_mwt(cfg.model, cfg.method, (5, 4), 1, 3)
    assert isinstance(model, MWTModel)
    assert torch.isfinite(model(torch.rand(2, 5, 4, 1), torch.tensor([0, 2])).loss)
    with pytest.raises(ValueError, match="pipelines/tasks/mwt.py"):
        build_learner(cfg.model, cfg.method, {"image": (2, 1)})


@pytest.mark.parametrize("name", method_names(CONTINUAL))
def test_every_continual_method_builds_a_tiny_sequence_learner(name):
    cfg = load_config(
        preset(name), [f"method.name={name}", *TINY_SIREN, "method.mcl.tasks=spatial"]
    )
    coords = torch.from_numpy(grid_coords((8, 8))).float()
    seq = grid_task_sequence(torch.rand(2, coords.shape[0], 1), coords, "spatial", 2, 1)
    torch.manual_seed(0)
    learner = build_sequence_learner(cfg.model, cfg.method, 2, 1, seq.partition)
    assert isinstance(learner, SequenceLearner) and learner.spec.method == name
    assert torch.isfinite(learner(seq))
    with pytest.raises(ValueError, match="meta-continual method: run it with ray_jobs/continual"):
        build_learner(cfg.model, cfg.method, {"s": (2, 1)})


def test_unknown_method_is_one_line_listing_the_registered_names():
    with pytest.raises(ConfigError) as err:
        get_method("reptile")
    msg = str(err.value)
    assert "\n" not in msg and "'reptile'" in msg and all(n in msg for n in method_names())
    method = MethodConfig()
    method.name = "reptile"  # past validation: the builders ask the registry
    with pytest.raises(ConfigError, match="registered: cavia, metasgd"):
        build_learner(load_config(None).model, method, {"s": (1, 1)})
    with pytest.raises(ConfigError) as err:
        load_config(None, ["method.name=reptile"])
    msg = str(err.value)
    assert "\n" not in msg and "'method.name'" in msg and all(n in msg for n in method_names())


BAD_SECTION = {
    "sft": "method.sft.heads=5",
    "mwt": "method.mwt.cls_heads=3",
    "mcl": "method.mcl.eval_budgets=[]",
}


@pytest.mark.parametrize("section", sorted(BAD_SECTION))
def test_a_sub_section_is_checked_only_when_its_method_is_chosen(section):
    owners = [n for n in method_names() if section in get_method(n).sections]
    others = [n for n in method_names() if section not in get_method(n).sections]
    assert owners and others
    for name in owners:
        with pytest.raises(ConfigError) as err:
            load_config(None, [f"method.name={name}", BAD_SECTION[section]])
        key = BAD_SECTION[section].split("=")[0]
        assert str(err.value).startswith(f"command line override '{BAD_SECTION[section]}': ")
        assert f"invalid value for '{key}'" in str(err.value)
    cfg = load_config(None, [f"method.name={others[0]}", BAD_SECTION[section]])
    with pytest.raises(ConfigError, match=f"{section}\\."):  # choosing the owner checks it
        dataclasses.replace(cfg.method, name=owners[0])


def test_specs_are_checked_and_registered_once():
    with pytest.raises(ValueError, match="already registered"):
        register(MethodSpec("cavia", META, adapts=CONTEXT, rule=get_method("cavia").rule))
    with pytest.raises(ValueError, match="needs adapts"):
        MethodSpec("x", META)
    with pytest.raises(ValueError, match="needs adapts"):
        MethodSpec("x", CONTINUAL, adapts=CONTEXT)
    with pytest.raises(ValueError, match="kind must be one of"):
        MethodSpec("x", "other")


def test_the_config_and_its_registry_import_no_torch():
    code = "import sys\nimport mia_core.config\nprint('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
