"""The configuration: one schema holds every default; the attention and model groups are the
registry's; conf/ holds only choices and Hydra settings."""

import dataclasses
from pathlib import Path

import pytest
import yaml
from fixtures import config

import attention_zoo as zoo
from harness.config import Config
from harness.measuring.meters.contention import usable_cpus

CONF = Path(__file__).resolve().parent.parent / "conf"


@pytest.mark.parametrize("name", zoo.available())
def test_every_mechanism_is_a_config_choice_with_its_constructor_options(name):
    cfg = config(f"attention={name}")
    options = {k: tuple(v) if isinstance(v, list) else v for k, v in cfg.attention_options.items()}
    assert cfg.attention_name == name
    assert options == zoo.info(name).options


@pytest.mark.parametrize("preset", zoo.PRESETS)
def test_every_preset_is_a_model_choice(preset):
    model = config(f"model={preset}").model
    spec = {"depth": model.depth, "dim": model.dim, "num_heads": model.num_heads}
    assert (model.name, spec) == (preset, zoo.PRESETS[preset])


def test_the_config_files_repeat_no_default():
    main = set(yaml.safe_load((CONF / "config.yaml").read_text()))
    assert main == {"defaults", "hydra"}, "defaults belong in harness/config.py"
    assert not list(CONF.glob("attention/*.yaml")) and not list(CONF.glob("model/*.yaml"))
    schema = {f.name for f in dataclasses.fields(Config)}
    for path in CONF.glob("sweep/*.yaml"):
        keys = set(yaml.safe_load(path.read_text())) - {"defaults", "hydra"}
        assert keys <= schema, f"{path} sets {keys - schema}, which the schema does not have"


def test_defaults_come_from_the_schema():
    cfg = config("sweep=paper")  # a sweep that sets no timing: the schema's
    assert cfg.timing.window_s == Config().timing.window_s
    assert Config().threads is None  # null in the schema: resolved to the CPUs this process may use
    assert cfg.threads == usable_cpus()


def test_a_yaml_in_conf_attention_makes_a_named_variant(tmp_path):
    import shutil

    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    shutil.copytree(CONF, tmp_path / "conf")
    (tmp_path / "conf" / "attention").mkdir(exist_ok=True)
    (tmp_path / "conf" / "attention" / "swin14.yaml").write_text(
        "defaults: [swin, _self_]\nwindow_size: 14\n"
    )
    with initialize_config_dir(str(tmp_path / "conf"), version_base=None):
        variant = OmegaConf.to_object(compose("config", overrides=["attention=swin14"]))
        plain = OmegaConf.to_object(compose("config", overrides=["attention=swin"]))
    assert variant.attention == {"name": "swin", "window_size": 14, "shift": True}
    assert plain.attention["window_size"] == 7
