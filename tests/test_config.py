import dataclasses
from pathlib import Path

import pytest

from mia_core.config import (
    Config,
    ConfigError,
    DataConfig,
    PruningConfig,
    config_to_dict,
    flatten_config,
    load_config,
    parse_override,
    redact,
    save_config,
)
from mia_core.config.spec import Validated, bounded, choice, load_spec

ROOT = Path(__file__).resolve().parents[1]
# Sweep (configs/tune), study (configs/ablation) and encoding (configs/encode) files are
# specs (mia_core.config.spec) with their own tests.
STUDY_DIRS = ("tune", "ablation", "encode", "reproduce")
CONFIG_FILES = sorted(
    p
    for p in (ROOT / "configs").rglob("*.yaml")
    if p.relative_to(ROOT / "configs").parts[0] not in STUDY_DIRS
)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_config_tree_is_not_empty():
    assert len(CONFIG_FILES) >= 19


@pytest.mark.parametrize("path", CONFIG_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_config_file_loads_standalone(path):
    assert isinstance(load_config(path), Config)


def test_defaults_without_file():
    assert load_config(None) == Config()


def test_default_experiment_is_small_mia_composers():
    cfg = load_config(ROOT / "configs/experiments/default.yaml")
    assert (cfg.model.family, cfg.method.name) == ("composers", "mia")
    assert cfg.model.width == cfg.model.context_dim == 64
    assert (cfg.method.sft.dim, cfg.method.sft.mlp_dim, cfg.method.sft.heads) == (64, 64, 2)
    assert (cfg.run.steps, cfg.run.batch_size, cfg.run.outer_lr) == (300, 16, 1e-3)


@pytest.mark.parametrize("method", ["cavia", "metasgd", "gap", "alfa", "mia"])
def test_synthetic_experiments_share_budget(method):
    cfg = load_config(ROOT / f"configs/experiments/synthetic_{method}.yaml")
    base = load_config(ROOT / "configs/experiments/synthetic_cavia.yaml")
    assert cfg.method.name == method
    assert (cfg.data, cfg.model) == (base.data, base.model)
    assert dataclasses.replace(cfg.run, name="x") == dataclasses.replace(base.run, name="x")
    assert cfg.model.context_dim == cfg.model.width


PAPER_PRESETS = [f"paper_synthetic_{m}" for m in ("cavia", "metasgd", "gap", "alfa", "mia")]
PAPER_PRESETS += [f"paper_{d}_{m}" for d in ("era5", "av_digits") for m in ("cavia", "mia")]


@pytest.mark.parametrize("name", PAPER_PRESETS)
def test_paper_presets_use_the_paper_recipe(name):
    cfg = load_config(ROOT / f"configs/experiments/{name}.yaml")
    assert cfg.run.name == name and cfg.method.name == name.rsplit("_", 1)[1]
    run, method, model = cfg.run, cfg.method, cfg.model
    assert (run.outer_lr, run.weight_decay, run.grad_clip) == (1e-4, 0.0, 0.0)
    assert method.uncertainty_weighting and method.inner_steps == 3 and method.inner_lr == 1.0
    assert (model.family, model.composers_layout, model.depth, model.width) == (
        "composers",
        "paper",
        5,
        128,
    )
    assert method.sft.residual_sgd is (method.name != "mia")  # MIA in its pure form
    expected = {
        "synthetic": (64, 10, 8, 0.0, ["sine", "gaussian", "tanh", "relu"], ""),
        "era5": (16, 4, 128, 30.0, ["t2m", "sp", "tcwv"], "runs/data/era5_paper.zarr"),
        "av_digits": (32, 4, 64, 30.0, ["image", "audio"], "runs/data/av_digits.zarr"),
    }[name[len("paper_") :].rsplit("_", 1)[0]]
    got = (run.batch_size, run.eval_repeats, model.context_tokens, model.ff_sigma)
    assert (*got, cfg.data.modalities, cfg.data.store) == expected


def test_paper_options_default_to_the_previous_behaviour():
    model, sft = load_config(None).model, load_config(None).method.sft
    assert (model.composers_layout, model.functa_layout) == ("legacy", "legacy")
    assert (model.functa_backbone, model.functa_latent_map) == ("siren", "linear")
    assert sft.residual_sgd
    with pytest.raises(ConfigError, match="functa_latent_map"):
        load_config(None, ["model.family=functa", "model.functa_latent_map=conv"])
    cfg = load_config(ROOT / "configs/model/functa_paper.yaml")
    assert (cfg.model.functa_backbone, cfg.model.functa_latent_map) == ("relu", "conv")


def test_unknown_key_names_file_and_key_with_suggestion(tmp_path):
    bad = write(tmp_path / "bad.yaml", "method:\n  sft:\n    dimm: 3\n")
    with pytest.raises(ConfigError) as err:
        load_config(bad)
    msg = str(err.value)
    assert "bad.yaml" in msg and "'method.sft.dimm'" in msg
    assert "did you mean 'method.sft.dim'" in msg


def test_unknown_key_in_included_file_names_that_file(tmp_path):
    write(tmp_path / "frag" / "inner.yaml", "run:\n  stepz: 3\n")
    top = write(tmp_path / "top.yaml", "include: [frag/inner.yaml]\n")
    with pytest.raises(ConfigError, match=r"inner\.yaml: unknown key 'run\.stepz'"):
        load_config(top)


def test_key_in_wrong_section_suggests_right_one():
    with pytest.raises(ConfigError, match="did you mean 'method.inner_steps'"):
        load_config(None, ["run.inner_steps=3"])


def test_wrong_type_names_file_key_and_expected_type(tmp_path):
    bad = write(tmp_path / "t.yaml", "run:\n  steps: many\n")
    with pytest.raises(ConfigError) as err:
        load_config(bad)
    msg = str(err.value)
    assert "t.yaml" in msg and "'run.steps'" in msg and "int" in msg and "'many'" in msg


def test_bool_rejected_for_int_and_int_accepted_for_float():
    with pytest.raises(ConfigError, match="'run.batch_size' expects int"):
        load_config(None, ["run.batch_size=true"])
    cfg = load_config(None, ["run.outer_lr=1", "run.grad_clip=2"])
    assert isinstance(cfg.run.outer_lr, float) and cfg.run.outer_lr == 1.0


def test_list_and_dict_fields_checked_elementwise():
    with pytest.raises(ConfigError, match=r"'data.x_range\[1\]' expects float"):
        load_config(None, ["data.x_range=[0, high]"])
    with pytest.raises(ConfigError, match=r"'data.modalities\[0\]' expects str"):
        load_config(None, ["data.modalities=[[1]]"])
    with pytest.raises(ConfigError, match=r"support_ratio_per_modality.sine\[0\]' expects float"):
        load_config(None, ["data.support_ratio_per_modality={sine: [x, 0.1]}"])
    cfg = load_config(None, ["data.support_ratio_per_modality.sine=[0.2, 0.5]"])
    assert cfg.data.support_ratio_per_modality == {"sine": [0.2, 0.5]}


def test_overrides_parse_nested_and_scientific_floats():
    assert parse_override("method.sft.dim=64") == ("method.sft.dim", 64)
    assert parse_override("data.modalities=[sine, tanh]") == ("data.modalities", ["sine", "tanh"])
    cfg = load_config(
        ROOT / "configs/experiments/synthetic_mia.yaml",
        ["method.sft.dim=96", "method.inner_steps=5", "run.outer_lr=3e-4", "run.name=2024"],
    )
    assert cfg.method.sft.dim == 96 and cfg.method.sft.heads == 3
    assert cfg.method.inner_steps == 5 and cfg.run.outer_lr == pytest.approx(3e-4)
    assert cfg.run.name == "2024"


@pytest.mark.parametrize("text", ["run.steps", "=3", "run..steps=3"])
def test_malformed_override(text):
    with pytest.raises(ConfigError, match="command line override"):
        load_config(None, [text])


def test_override_error_names_command_line():
    with pytest.raises(ConfigError, match="command line override 'run.stpes=1'.*run.steps"):
        load_config(None, ["run.stpes=1"])


def test_include_cycle_is_reported(tmp_path):
    write(tmp_path / "a.yaml", "include: [b.yaml]\n")
    write(tmp_path / "b.yaml", "include: [sub/c.yaml]\n")
    write(tmp_path / "sub" / "c.yaml", "include: [../a.yaml]\n")
    with pytest.raises(ConfigError, match=r"include cycle: .*a\.yaml -> .*b\.yaml -> .*c\.yaml"):
        load_config(tmp_path / "a.yaml")


def test_missing_include_names_including_file(tmp_path):
    top = write(tmp_path / "top.yaml", "include: [nope.yaml]\n")
    with pytest.raises(ConfigError, match=r"top\.yaml: included file 'nope\.yaml' not found"):
        load_config(top)


def test_include_order_and_precedence(tmp_path):
    write(tmp_path / "one.yaml", "run: {steps: 1, batch_size: 7}\nmodel: {width: 16}\n")
    write(tmp_path / "two.yaml", "run: {steps: 2}\n")
    top = write(tmp_path / "top.yaml", "include: [one.yaml, two.yaml]\nmodel: {width: 32}\n")
    cfg = load_config(top)
    assert (cfg.run.steps, cfg.run.batch_size, cfg.model.width) == (2, 7, 32)
    assert load_config(top, ["run.steps=9"]).run.steps == 9
    top.write_text("include: [two.yaml, one.yaml]\n")
    assert load_config(top).run.steps == 1


def test_invalid_enum_names_key_source_and_allowed_values(tmp_path):
    bad = write(tmp_path / "enum.yaml", "model:\n  family: nerf\n")
    with pytest.raises(ConfigError) as err:
        load_config(bad)
    msg = str(err.value)
    assert "enum.yaml" in msg and "'model.family'" in msg and "'nerf'" in msg
    for family in ("siren", "relu_ff", "functa", "composers"):
        assert family in msg


@pytest.mark.parametrize(
    "override, key",
    [
        ("data.num_train=1000", "data.num_train"),
        ("data.support_ratio=[0.5, 0.2]", "data.support_ratio"),
        ("data.support_ratio=[0.0, 0.2]", "data.support_ratio"),
        ("data.support_ratio_per_modality.cosine=[0.1, 0.2]", "support_ratio_per_modality.cosine"),
        ("method.pruning.keep_ratio=0", "method.pruning.keep_ratio"),
        ("method.pruning.keep_ratio=1.5", "method.pruning.keep_ratio"),
        (["method.name=mia", "method.sft.heads=5"], "method.sft.heads"),  # checked when chosen
        ("run.steps=-1", "run.steps"),
        ("run.device=tpu", "run.device"),
    ],
)
def test_value_checks(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(None, override if isinstance(override, list) else [override])


def test_value_error_names_the_layer_that_set_the_key(tmp_path):
    write(tmp_path / "base.yaml", "data: {num_functions: 10}\n")
    top = write(tmp_path / "top.yaml", "include: [base.yaml]\ndata: {num_train: 50}\n")
    with pytest.raises(ConfigError, match=r"top\.yaml: invalid value for 'data\.num_train'"):
        load_config(top)


def test_dataclasses_validate_on_direct_construction():
    with pytest.raises(ConfigError, match="keep_ratio"):
        PruningConfig(keep_ratio=0.0)
    with pytest.raises(ConfigError, match="num_train"):
        DataConfig(num_functions=5, num_train=5)


def test_save_load_round_trip(tmp_path):
    cfg = load_config(
        ROOT / "configs/experiments/default.yaml",
        ["data.support_ratio_per_modality.tanh=[0.05, 0.2]", "model.functa_grid=[4, 4]"],
    )
    saved = save_config(cfg, tmp_path / "out" / "config.yaml")
    assert saved.is_file()
    assert load_config(saved) == cfg
    assert load_config(save_config(Config(), tmp_path / "d.yaml")) == Config()


def test_config_to_dict_and_flatten():
    cfg = Config()
    nested = config_to_dict(cfg)
    assert nested["method"]["sft"]["dim"] == 192
    flat = flatten_config(cfg)
    assert flat["method.sft.dim"] == 192
    assert flat["run.outer_lr"] == 1e-4
    assert flat["data.x_range"] == "[-5.0, 5.0]"
    assert flat["data.support_ratio_per_modality"] == "{}"
    assert flat["model.context_tokens"] == 8  # "tokens" is not a secret
    assert all(isinstance(v, str | int | float | bool) for v in flat.values())
    assert len([k for k in flat if k.startswith("method.sft.")]) == len(
        dataclasses.fields(cfg.method.sft)
    )


def test_redact():
    raw = {
        "tracking": {"uri": "http://x", "password": "p", "auth_token": "t", "aws_key_id": "k"},
        "client_secret": "s",
        "items": [{"api_key": "a", "ok": 1}],
        "context_tokens": 8,
    }
    out = redact(raw)
    assert out["tracking"] == {
        "uri": "http://x",
        "password": "***",
        "auth_token": "***",
        "aws_key_id": "***",
    }
    assert out["client_secret"] == "***"
    assert out["items"] == [{"api_key": "***", "ok": 1}]
    assert out["context_tokens"] == 8
    assert raw["client_secret"] == "s"  # input untouched
    assert flatten_config(raw)["tracking.password"] == "***"


def test_binary_file_is_one_line_error_naming_the_file(tmp_path):
    for name, data in (("nul.yaml", b"run:\x00\x01"), ("img.png", b"\x89PNG\r\n\x1a\n")):
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(ConfigError) as err:
            load_config(path)
        msg = str(err.value)
        assert name in msg and "not a text file" in msg and "\n" not in msg
    with pytest.raises(ConfigError, match="is a directory"):
        load_config(tmp_path)


# --- specs: any dataclass through the same loader ------------------------------------


@dataclasses.dataclass
class _Part:
    lo: float = 0.0
    kind: str = dataclasses.field(default="a", metadata={"choices": ("a", "b")})


@dataclasses.dataclass
class _Job(Validated):
    out: str
    steps: int = bounded(4, ge=1)
    mode: str = choice("fast", ("fast", "slow"))
    window: list[int] | None = None
    part: _Part = dataclasses.field(default_factory=_Part)
    parts: dict[str, _Part] = dataclasses.field(default_factory=dict)

    def _extra_problems(self):
        if self.window is not None and len(self.window) != 2:
            yield "window", "must be [start, stop]"


def test_spec_loads_section_includes_and_overrides(tmp_path):
    write(tmp_path / "base.yaml", "job:\n  steps: 2\n  parts: {p.q: {lo: 1}}\n")
    top = write(tmp_path / "top.yaml", "include: base.yaml\njob:\n  out: x\n  mode: slow\n")
    spec = load_spec(_Job, top, ["job.part.kind=b", "job.parts.p.q.kind=b", "job.out=2024"], "job")
    assert (spec.out, spec.steps, spec.mode, spec.part.kind) == ("2024", 2, "slow", "b")
    assert spec.parts == {"p.q": _Part(lo=1.0, kind="b")}  # a dict key may contain dots
    flat = write(tmp_path / "flat.yaml", "out: y\nwindow: [1, 2]\n")
    assert load_spec(_Job, flat, ["job.steps=3"], "job", nested=False).window == [1, 2]
    assert load_spec(_Job, None, ["out=z"]).out == "z"  # no section: bare keys


@pytest.mark.parametrize(
    "text, overrides, pattern",
    [
        (
            "job: {out: x, stepz: 1}",
            [],
            r"f\.yaml: unknown key 'job\.stepz'; did you mean 'job\.steps'",
        ),
        (
            "job: {out: x}",
            ["job.kind=b"],
            r"override 'job\.kind=b'.*did you mean 'job\.part\.kind'",
        ),
        ("job: {out: x, steps: many}", [], r"f\.yaml: 'job\.steps' expects int, got 'many'"),
        ("job: {out: x, window: [1, y]}", [], r"'job\.window\[1\]' expects int"),
        ("job: {out: x, mode: medium}", [], r"invalid value for 'job\.mode': must be one of"),
        ("job: {out: x, steps: 0}", [], r"f\.yaml: invalid value for 'job\.steps': must be >= 1"),
        ("job: {out: x}", ["job.part.kind=c"], r"override.*'job\.part\.kind': must be one of"),
        ("job: {out: x}", ["job.window=[1]"], r"override.*'job\.window': must be \[start"),
        ("job: {steps: 2}", [], r"f\.yaml: missing required key 'job\.out'"),
        ("job: {out: x}", ["steps=2"], r"expected 'job\.key=value'"),
        ("jobs: {out: x}", [], r"unknown top-level key 'jobs'; did you mean 'job'"),
    ],
)
def test_spec_errors_name_source_key_and_problem(tmp_path, text, overrides, pattern):
    path = write(tmp_path / "f.yaml", text + "\n")
    with pytest.raises(ConfigError, match=pattern):
        load_spec(_Job, path, overrides, "job")
