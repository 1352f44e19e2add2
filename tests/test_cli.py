"""One command-line convention: absl flags in snake_case for every command, and config variants."""

import pytest
from absl import flags
from ml_collections import config_flags

from gcd_jax import cli
from gcd_jax import config_base
from gcd_jax import convert_gcdp
from gcd_jax import evaluate
from gcd_jax import prepare
from gcd_jax import sample
from gcd_jax import segnet
from gcd_jax.experiments import clustering
from gcd_jax.experiments import outpainting
from gcd_jax.experiments import paper_claim
from gcd_jax.experiments import sr_cascade
from gcd_jax.models import summary

COMMANDS = [sample, evaluate, prepare, segnet, summary, clustering, outpainting, paper_claim,
            sr_cascade, convert_gcdp]


@pytest.mark.parametrize("module", COMMANDS, ids=lambda m: m.__name__)
def test_every_flag_is_snake_case_and_help_lists_them(module, capsys):
  fv = flags.FlagValues()
  module.define_flags(fv)
  names = sorted(set(fv))
  assert names and all(n == n.lower() and "-" not in n for n in names), names
  with pytest.raises(SystemExit) as e:
    module.main(["--help"])
  assert e.value.code == 0
  out = capsys.readouterr().out
  assert out.startswith(f"usage: {module.PROG}")
  for n in names:
    assert f"--{n}:" in out


def test_a_dashed_or_unknown_flag_is_an_error_that_names_it(capsys):
  assert sample.main(["--workdir=w", "--out=o", "--batch-size=2"]) == 2
  err = capsys.readouterr().err
  assert "batch-size" in err and "Did you mean: batch_size" in err and "--help" in err
  assert evaluate.main(["--workdir=w", "--num_samples=1"]) == 2  # lower bound 2
  assert "num_samples" in capsys.readouterr().err
  assert prepare.main([]) == 2
  assert "--dataset must have a value" in capsys.readouterr().err


def test_parse_gives_lists_repeats_and_one_positional():
  a = sample.parse_args(["--workdir=w", "--out=o", "--text=A b.", "--text", "C d.", "--method=ddim"])
  assert a.text == ["A b.", "C d."] and a.method == "ddim" and a.steps is None
  assert cli.sampler_overrides(a) == {"method": "ddim"}
  e = evaluate.parse_args(["--workdir=w", "--metrics=fid,miou", "--guidance=1,2"])
  assert e.metrics == ["fid", "miou"] and e.guidance == ["1", "2"]
  with pytest.raises(cli.UsageError, match="expected one of run, status, report"):
    cli.parse(paper_claim.define_flags, ["--out=x", "fly"], prog="p", doc="",
              positional=paper_claim.COMMANDS)
  with pytest.raises(cli.UsageError, match="unexpected arguments: extra"):
    sample.parse_args(["--workdir=w", "--out=o", "extra"])


def test_sampler_flag_choices_are_the_configs():
  fv = flags.FlagValues()
  cli.define_sampler_flags(fv)
  for name in ("method", "layout_guidance", "final_layout"):
    assert tuple(fv[name].parser.enum_values) == config_base.CHOICES[("sample", name)]


def _load(spec: str):
  fv = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, "", flag_values=fv)
  fv(["prog", f"--config={spec}"])
  return fv.config


@pytest.mark.parametrize("spec", ["configs/shapes.py", "configs/shapes.py:image_only",
                                  "configs/smoke.py", "configs/mm_celeba_hq_base.py",
                                  "configs/cityscapes_base.py", "configs/cityscapes_base.py:trainval"])
def test_every_config_and_variant_validates(spec):
  config_base.validate(_load(spec))


def test_variants_change_only_what_they_say():
  joint, image_only = _load("configs/shapes.py"), _load("configs/shapes.py:image_only")
  assert joint.model.num_classes == 8 and image_only.model.num_classes == 0
  assert image_only.loss.layout_weight == 0.0
  joint.model.num_classes, joint.loss.layout_weight = 0, 0.0
  assert joint.to_dict() == image_only.to_dict()
  held_out, trainval = _load("configs/cityscapes_base.py"), _load("configs/cityscapes_base.py:trainval")
  assert (held_out.data.train_split, trainval.data.train_split) == ("train", "trainval")
  held_out.data.train_split = "trainval"
  assert held_out.to_dict() == trainval.to_dict()
  with pytest.raises(flags.Error, match="unknown variant"):
    _load("configs/shapes.py:nope")


def test_configs_are_importable():
  from configs import shapes  # pylint: disable=g-import-not-at-top
  assert shapes.get_config("image_only").model.num_classes == 0
