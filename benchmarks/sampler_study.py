"""Samplers at equal quality: steps against quality and time on a trained run.

  python benchmarks/sampler_study.py --workdir workdirs/shapes --segnet SEGNET \
      --out=docs/results/sampler_study [--num_samples=1000] [--guidance=2]

Every candidate samples the same N test captions from the same seeds (one
`python -m gcd_jax.evaluate` point each, cached in the run's eval/ directory, so
an interrupted study resumes where it stopped) and is scored by the same judges:
the exact oracle reads the generated image (semantic recall, attribute
accuracy), the segnet gives the features of fd_seg and the FSDs. The baseline is
100 ancestral (DDPM) steps, the released sampler. A candidate matches it when
no quality metric is worse than the baseline's 95% bootstrap interval (below it
for recall and accuracy, above it for fd_seg and the FSDs); its time
is its median wall time per batch after the first (the compile) over the
baseline's, measured one after another in this process (run nothing else
meanwhile).

Writes OUT/study.json (every record) and OUT/study.md (the table).
"""

import json
import pathlib
import sys

from absl import flags
from gcd_jax import cli
from gcd_jax import evaluate
from gcd_jax import fileio

BASELINE = ("ddpm", 100, 0.0)
# (method, steps, eta): dpm2m with eta 0 is the ODE solver, with eta 1 the SDE one.
CANDIDATES = (("dpm2m", 25, 1.0), ("ddpm", 25, 0.0), ("dpm2m", 20, 1.0), ("dpm2m", 25, 0.0),
              ("dpm2m", 20, 0.0), ("ddim", 25, 0.0), ("dpm2m", 15, 1.0))
QUALITY = (("semantic_recall", "higher"), ("attribute_accuracy", "higher"),
           ("fd_seg", "lower"), ("image_fsd", "lower"), ("fsd", "lower"))


def point(args, method: str, steps: int, eta: float) -> dict:
  argv = [f"--workdir={args.workdir}", f"--num_samples={args.num_samples}",
          f"--guidance={args.guidance}", f"--steps={steps}", f"--method={method}",
          f"--eta={eta}", f"--seed={args.seed}", f"--batch_size={args.batch_size}",
          f"--metrics={args.metrics}"]
  if args.segnet:
    argv += [f"--segnet={args.segnet}"]
  record = evaluate.run(evaluate.parse_args(argv))[0]
  return {"method": method, "steps": steps, "eta": eta, "metrics": record["metrics"],
          "intervals": record["intervals"], "seconds": record["seconds"],
          "sampler": record["sampler"], "key": record["key"]}


def table(base: dict, rows: list[dict], n: int) -> str:
  head = ("| sampler | eta | steps | s / sample | time vs DDPM-100 | "
          + " | ".join(k for k, _ in QUALITY) + " | matches DDPM-100 |")
  lines = [head, "|---" * (len(QUALITY) + 6) + "|"]
  def per_sample(r):
    return r["seconds"].get("per_sample_steady", r["seconds"]["sampling"] / n)
  t_base = per_sample(base)
  for r in [base] + rows:
    cells, ok = [], True
    for k, direction in QUALITY:
      v = r["metrics"].get(k)
      if v is None:
        cells.append("")
        continue
      lo, hi = base["intervals"].get(k, (float("nan"), float("nan")))
      # As good as the baseline: not below its interval where higher is better,
      # not above it where lower is better ("(worse)"; "(better)" beyond it).
      worse = v < lo if direction == "higher" else v > hi
      better = v > hi if direction == "higher" else v < lo
      ok &= not worse
      cells.append(f"{v:.4f}" + (" (worse)" if worse else " (better)" if better else "")
                   + (f" [{lo:.4f}, {hi:.4f}]" if r is base else ""))
    t = per_sample(r)
    lines.append(f"| {r['method']} | {r['eta']:g} | {r['steps']} | {t:.3f} | {t / t_base:.2f}x | "
                 + " | ".join(cells) + f" | {'baseline' if r is base else ('yes' if ok else 'no')} |")
  return "\n".join(lines) + "\n"


def define_flags(fv: flags.FlagValues) -> None:
  flags.DEFINE_string("workdir", None, "A trained run.", required=True, flag_values=fv)
  flags.DEFINE_string("segnet", None, "A trained segnet (fd_seg, the FSDs).", flag_values=fv)
  flags.DEFINE_string("out", None, "Where study.json and study.md go.", required=True,
                      flag_values=fv)
  flags.DEFINE_integer("num_samples", 1000, "Samples per sampler.", flag_values=fv)
  flags.DEFINE_float("guidance", 2.0, "Guidance scale (image and layout).", flag_values=fv)
  flags.DEFINE_integer("batch_size", 50, "Samples per compiled call.", flag_values=fv)
  flags.DEFINE_integer("seed", 0, "Sampling seed.", flag_values=fv)
  flags.DEFINE_string("metrics", "correspondence,image_fsd,fsd,fd_seg", "Evaluators.",
                      flag_values=fv)
  flags.DEFINE_string("candidates", ",".join(f"{m}:{s}:{e:g}" for m, s, e in CANDIDATES),
                      "method:steps:eta,... to compare with 100 ancestral steps.", flag_values=fv)
  flags.DEFINE_bool("report_only", False, "Rewrite study.md from study.json.", flag_values=fv)


def main() -> None:
  args = cli.parse(define_flags, None, prog="python benchmarks/sampler_study.py", doc=__doc__)
  out = pathlib.Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  if args.report_only:
    study = json.loads((out / "study.json").read_text())
    fileio.atomic_write_text(out / "study.md", table(study["baseline"], study["candidates"],
                                                     args.num_samples))
    print((out / "study.md").read_text())
    return
  base = point(args, *BASELINE)
  rows = []
  for item in args.candidates.split(","):
    method, steps, eta = item.split(":")
    rows.append(point(args, method, int(steps), float(eta)))
    fileio.atomic_write_text(out / "study.json", json.dumps({"baseline": base, "candidates": rows},
                                                            indent=1))
    fileio.atomic_write_text(out / "study.md", table(base, rows, args.num_samples))
    print(table(base, rows, args.num_samples), file=sys.stderr)


if __name__ == "__main__":
  main()
