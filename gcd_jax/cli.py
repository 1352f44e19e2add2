"""The one command-line convention of every gcd_jax command: absl flags.

Every command (`main`, `sample`, `evaluate`, `prepare`, `segnet`, the model
summary and the experiment drivers) spells its flags in snake_case and takes
them as `--name=value` (or `--name value`; booleans as `--name` / `--noname`;
lists comma-separated, `--metrics=fid,miou`; repeatable flags repeated,
`--text=a --text=b`). `--help` prints a command's flags.

`main` parses absl's global flags (it needs `config_flags`). The other commands
define their flags on a fresh `flags.FlagValues` per call, so that they can be
called from Python and from tests in one process as often as needed:

  args = sample.parse_args(["--workdir=w", "--text=A red ball.", "--out=o"])
  sample.run(args)
"""

from __future__ import annotations

import sys
import types
from typing import Any, Callable, Sequence

from absl import flags

from gcd_jax import config_base


class InputError(ValueError):
  """Bad command-line input; the message names the flag, file or value."""


class UsageError(ValueError):
  """Flags that do not parse (unknown flag, bad value, missing required flag)."""


Define = Callable[[flags.FlagValues], None]


def parse(define: Define, argv: Sequence[str] | None, *, prog: str, doc: str,
          positional: Sequence[str] = ()) -> types.SimpleNamespace:
  """Parses `argv` (without the program name) with the flags `define` declares.

  Returns a namespace of every flag's value; with `positional` (the allowed
  words, e.g. a sub-command), its attribute `command` holds the one given.
  `--help` prints the command's documentation and flags and exits 0; anything
  that does not parse raises UsageError naming the flag.
  """
  fv = flags.FlagValues()
  define(fv)
  flags.DEFINE_bool("help", False, "Show this help and exit.", flag_values=fv)
  argv = list(sys.argv[1:] if argv is None else argv)
  if {"-h", "--help", "--helpfull"} & set(argv):  # before the required flags are checked
    print(help_text(fv, prog=prog, doc=doc))
    raise SystemExit(0)
  try:
    rest = fv([prog, *argv])[1:]
  except flags.Error as e:
    raise UsageError(str(e)) from None
  values = {name: fv[name].value for name in fv if name != "help"}
  if positional:
    if len(rest) != 1 or rest[0] not in positional:
      raise UsageError(f"expected one of {', '.join(positional)} (got {' '.join(rest) or 'none'})")
    values["command"] = rest[0]
  elif rest:
    raise UsageError(f"unexpected arguments: {' '.join(rest)}")
  return types.SimpleNamespace(**values)


def help_text(fv: flags.FlagValues, *, prog: str, doc: str) -> str:
  """The command's documentation, then every flag with its help and default."""
  lines = [f"usage: {prog} [--flag=value ...]", "", doc.strip(), "", "flags:"]
  for name in sorted(set(fv)):
    flag = fv[name]
    required = any("must have a value" in getattr(v, "message", "") for v in flag.validators)
    extra = " (required)" if required else (
        "" if flag.default in (None, [], False) else f" (default: {flag.default_as_str})")
    lines.append(f"  --{name}: {flag.help}{extra}")
  return "\n".join(lines)


def command_main(define: Define, command: Callable[[types.SimpleNamespace], Any], *, prog: str,
                 doc: str, argv: Sequence[str] | None = None, positional: Sequence[str] = (),
                 jax_cache: bool = True, errors: tuple[type[BaseException], ...] = ()) -> int:
  """Runs a command as its `main`: parse, (enable the compile cache,) run.

  Returns the exit status: 0, or 2 after printing `prog: error: ...` on stderr
  for flags that do not parse and for the command's own input errors
  (InputError, FileNotFoundError, ValueError and `errors`). `--help` prints
  the flags and raises SystemExit(0).
  """
  try:
    args = parse(define, argv, prog=prog, doc=doc, positional=positional)
  except UsageError as e:
    print(f"{prog}: error: {e}\nRun `{prog} --help` for the flags.", file=sys.stderr)
    return 2
  from gcd_jax import compilation_cache  # pylint: disable=g-import-not-at-top
  compilation_cache.tune_gc()
  if jax_cache:
    compilation_cache.enable()
  try:
    command(args)
  except (InputError, FileNotFoundError, ValueError, *errors) as e:
    print(f"{prog}: error: {e}", file=sys.stderr)
    return 2
  return 0


# ---------------------------------------------------------------------------
# Flags that several commands share: one definition, one spelling.


def define_sampler_flags(fv: flags.FlagValues) -> None:
  """The sampler settings `sample` and `evaluate` take (default: the checkpoint config's)."""
  choices = config_base.CHOICES
  flags.DEFINE_integer("steps", None, "Sampling steps (default: the config's).", lower_bound=1,
                       flag_values=fv)
  flags.DEFINE_enum("method", None, choices[("sample", "method")],
                    "Reverse-process solver (default: the config's).", flag_values=fv)
  flags.DEFINE_float("eta", None, "ddim / dpm2m noise: 0 deterministic (ODE), 1 ancestral (SDE).",
                     flag_values=fv)
  flags.DEFINE_float("threshold", None, "Dynamic-thresholding percentile (0: off).",
                     flag_values=fv)
  flags.DEFINE_enum("layout_guidance", None, choices[("sample", "layout_guidance")],
                    "Where the layout guidance applies.", flag_values=fv)
  flags.DEFINE_enum("final_layout", None, choices[("sample", "final_layout")],
                    "The last layout step: argmax or a sample.", flag_values=fv)


SAMPLER_FLAGS = ("steps", "method", "eta", "threshold", "layout_guidance", "final_layout")


def sampler_overrides(args: types.SimpleNamespace) -> dict[str, Any]:
  """The sampler flags that were given, as SamplerConfig fields."""
  return {k: getattr(args, k) for k in SAMPLER_FLAGS if getattr(args, k) is not None}


def define_cascade_flags(fv: flags.FlagValues, what: str) -> None:
  """The super-resolution stage of a cascade (`sample`, `evaluate`); `what` ends
  the --sr_workdir help (what the command does with the cascade)."""
  flags.DEFINE_string("sr_workdir", None, f"A super-resolution stage after --workdir: {what}",
                      flag_values=fv)
  flags.DEFINE_integer("sr_step", None, "The SR stage's checkpoint step (default: the latest).",
                       flag_values=fv)
  flags.DEFINE_integer("sr_steps", None, "The SR stage's sampling steps (default: its config's).",
                       lower_bound=1, flag_values=fv)
  flags.DEFINE_float("sr_guidance_image", None, "The SR stage's image guidance (default: its "
                     "config's, 1 as released).", flag_values=fv)
  flags.DEFINE_float("sr_guidance_layout", None, "The SR stage's layout guidance (default: its "
                     "config's).", flag_values=fv)
  flags.DEFINE_float("lowres_level", None, "The SR stage's augmentation level of its low-res input "
                     "(default: its config's, 0.2 as released).", flag_values=fv)


SR_FLAGS = {"sr_steps": "steps", "sr_guidance_image": "guidance_image",
            "sr_guidance_layout": "guidance_layout", "lowres_level": "lowres_level"}


def sr_sampler_overrides(args: types.SimpleNamespace) -> dict[str, Any]:
  """The SR stage's sampler flags that were given, as SamplerConfig fields; they
  (and --sr_step) need --sr_workdir."""
  given = {field: getattr(args, flag) for flag, field in SR_FLAGS.items()
           if getattr(args, flag) is not None}
  if not args.sr_workdir and (given or args.sr_step is not None):
    raise InputError("--sr_step, --sr_steps, --sr_guidance_* and --lowres_level need --sr_workdir")
  return given
