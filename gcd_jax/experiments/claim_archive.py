"""The archive of `paper_claim`: what the report needs, small enough to commit.

An experiment directory (checkpoints, stored samples, logs) lives on one
machine; the grid takes longer than one machine may live. The report therefore
works from an archive in the results directory (<results>/archive/), which the
report step fills from the experiment directory as stages finish and which
`run` consults, so that a run archived on an earlier machine is not run again:

  protocol.json             the protocol and grid the archive belongs to
  judge/                    the segmentation network every run is judged by
                            (segnet.msgpack, segnet.json): a new machine
                            restores it instead of training another judge
  reference_n<N>.npz        the judges' reading of the first N test images:
                            oracle class pixel counts, segnet features
  runs/<run>/stages.json    per finished stage: attempts, wall time, hardware
  runs/<run>/<stage>.json   its evaluation record (`gcd_jax.evaluate --json`,
                            clustering, outpainting)
  runs/<run>/clustering_maps.npz   the first test images, layouts and
                            k-means maps of the clustering stage (the figure)
  global_stages.json        attempts, wall time and hardware of prepare and judge
  runs/<run>/<stage>_g<g>.npz   per generated sample of a sweep / chosen point,
                            what its statistics are made of: per-sample recall,
                            attribute counts, oracle class pixel counts and
                            segnet features (`point_arrays`), about 0.6 MB
                            per 1,000 samples

`statistics` rebuilds a point's bootstrap statistics (correspondence,
image_fsd, fd_seg, kid_seg) from these arrays with the evaluators' own
functions, so the report's intervals are the same with or without the
samples; tests/test_paper_claim.py checks that they agree exactly.
"""

from __future__ import annotations

import json
import pathlib
import shutil
from typing import TYPE_CHECKING, Sequence

import numpy as np

from gcd_jax import fileio

if TYPE_CHECKING:
  from gcd_jax.evaluators import base
  from gcd_jax.experiments import paper_claim

ARCHIVE = "archive"
EVALUATIONS = ("sweep", "chosen")  # stages with per-sample arrays
RECORDS = ("sweep", "chosen", "clustering", "clustering_qsample", "outpainting")
MAP_ROWS = 8  # clustering maps kept for the picture grid


def root(results: pathlib.Path) -> pathlib.Path:
  return pathlib.Path(results) / ARCHIVE


def run_root(results: pathlib.Path, name: str) -> pathlib.Path:
  return root(results) / "runs" / name


def point_path(results: pathlib.Path, name: str, stage: str, guidance: float) -> pathlib.Path:
  return run_root(results, name) / f"{stage}_g{guidance:g}.npz"


def reference_path(results: pathlib.Path, n: int) -> pathlib.Path:
  return root(results) / f"reference_n{n}.npz"


# ---------------------------------------------------------------------------
# Per-sample arrays and the statistics made of them.


def _segnet(ctx: base.Context):
  if ctx.judges.segnet_features is None:
    raise ValueError("the archive needs the segnet judge (fd_seg)")
  return ctx.judges.segnet_features


def point_arrays(ctx: base.Context, samples: base.Samples) -> dict[str, np.ndarray]:
  """What a point's statistics are made of, per generated sample."""
  from gcd_jax.evaluators import metrics  # pylint: disable=g-import-not-at-top
  from gcd_jax.metrics import fid, layout_metrics  # pylint: disable=g-import-not-at-top
  classes = ctx.reference.classes
  arrays = metrics.correspondence_arrays(ctx.reference, samples.image_layouts, samples.images)
  arrays["image_class_counts"] = layout_metrics.class_pixel_counts(
      samples.image_layouts, classes.num_classes, classes.ignore_id)
  arrays["segnet_features"] = np.asarray(fid.compute_features(_segnet(ctx), samples.images))
  return arrays


def reference_arrays(ctx: base.Context) -> dict[str, np.ndarray]:
  """The judges' reading of the reference images (the other side of image_fsd and fd_seg)."""
  from gcd_jax.evaluators import base as base_lib  # pylint: disable=g-import-not-at-top
  from gcd_jax.evaluators import metrics  # pylint: disable=g-import-not-at-top
  from gcd_jax.metrics import layout_metrics  # pylint: disable=g-import-not-at-top
  classes = ctx.reference.classes
  real = base_lib.Samples(ctx.reference.images, None, ctx.judges).image_layouts
  return {"image_class_counts": layout_metrics.class_pixel_counts(real, classes.num_classes,
                                                                  classes.ignore_id),
          "segnet_features": np.asarray(metrics.reference_features(
              _segnet(ctx), ctx.reference, ctx.judges.cache_dir))}


def statistics(point: dict[str, np.ndarray], reference: dict[str, np.ndarray],
               ignore_id: int | None) -> dict[str, base.Statistic]:
  """The bootstrap statistics of the correspondence, image_fsd and fd_seg evaluators."""
  from gcd_jax.evaluators import metrics  # pylint: disable=g-import-not-at-top
  from gcd_jax.metrics import frechet, layout_metrics  # pylint: disable=g-import-not-at-top
  stats = metrics.correspondence_from_arrays(point)
  real = frechet.FrechetReference(layout_metrics.percentages_of_counts(
      reference["image_class_counts"], ignore_id))
  gen = layout_metrics.percentages_of_counts(point["image_class_counts"], ignore_id)
  stats["image_fsd"] = lambda idx: real.distance(gen[idx])
  stats.update(metrics.features_from_arrays(point["segnet_features"], reference["segnet_features"],
                                            ("fd_seg", "kid_seg")))
  return stats


def _compact(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """Exact, smaller dtypes: counts fit uint16 (at most 65,535 pixels per image)."""
  out = {}
  for k, v in arrays.items():
    v = np.asarray(v)
    if k.endswith("_counts") or k.startswith("attribute_"):
      if v.size and (v.min() < 0 or v.max() > np.iinfo(np.uint16).max):
        raise ValueError(f"{k}: values outside uint16")
      v = v.astype(np.uint16)
    out[k] = v
  return out


def write_arrays(path: pathlib.Path, arrays: dict[str, np.ndarray], meta: dict) -> None:
  fileio.atomic_write_npz(path, {**_compact(arrays), "meta": np.array(json.dumps(meta, sort_keys=True))})


def read_arrays(path: pathlib.Path) -> tuple[dict[str, np.ndarray], dict]:
  with np.load(path, allow_pickle=False) as f:
    arrays = {k: f[k] for k in f.files if k != "meta"}
    meta = json.loads(str(f["meta"])) if "meta" in f.files else {}
  for k in list(arrays):
    if arrays[k].dtype == np.uint16:
      arrays[k] = arrays[k].astype(np.int64)
  return arrays, meta


# ---------------------------------------------------------------------------
# Filling the archive from an experiment directory.


def check_protocol(results: pathlib.Path, protocol: dict, grid: Sequence[paper_claim.RunSpec]
                   ) -> None:
  """Writes archive/protocol.json on first use; refuses an archive of another protocol."""
  import dataclasses  # pylint: disable=g-import-not-at-top
  record = json.loads(json.dumps({"protocol": protocol,
                                  "grid": [dataclasses.asdict(s) for s in grid]}))
  path = root(results) / "protocol.json"
  if path.exists():
    old = json.loads(path.read_text())
    changed = {k: (v, record["protocol"].get(k, "<removed>")) for k, v in old["protocol"].items()
               if record["protocol"].get(k, "<removed>") != v}
    missing = [s for s in old["grid"] if s not in record["grid"]]
    if changed or missing:
      raise ValueError(f"{path}: the archive holds runs of another protocol (changed (was, now): "
                       f"{changed}; runs no longer in the grid: {missing}). Use another --results.")
  fileio.atomic_write_text(path, json.dumps(record, indent=1))


def judge_identity(directory: pathlib.Path) -> str | None:
  path = pathlib.Path(directory) / "segnet.json"
  return json.loads(path.read_text())["identity"] if path.is_file() else None


def archive_judge(judge: pathlib.Path, results: pathlib.Path) -> None:
  """Copies the experiment's judge into the archive; refuses a different one."""
  mine, archived = judge_identity(judge), judge_identity(root(results) / "judge")
  if mine is None:
    return
  if archived is not None and archived != mine:
    raise ValueError(f"{judge} is judge {mine}, but {root(results) / 'judge'} holds {archived}: "
                     "numbers judged by different networks are never mixed. Restore the archived "
                     "judge there (`run` does) or use another --results.")
  if archived is None:
    dest = root(results) / "judge"
    for name in ("segnet.msgpack", "segnet.json"):  # the record last: it marks the copy complete
      fileio.atomic_write(dest / name, (pathlib.Path(judge) / name).read_bytes())


def restore_judge(results: pathlib.Path, judge: pathlib.Path) -> bool:
  """Copies the archived judge into the experiment directory if it has none. True if copied."""
  src = root(results) / "judge"
  archived = judge_identity(src)
  if archived is None:
    return False
  mine = judge_identity(judge)
  if mine is not None:
    if mine != archived:
      raise ValueError(f"{judge} is judge {mine}, but the archive {src} holds {archived}; "
                       "use another --out or --results.")
    return False
  tmp = pathlib.Path(str(judge) + ".restoring")
  shutil.rmtree(tmp, ignore_errors=True)
  shutil.copytree(src, tmp)
  judge.parent.mkdir(parents=True, exist_ok=True)
  shutil.rmtree(judge, ignore_errors=True)
  tmp.rename(judge)
  return True


def read_global(results: pathlib.Path) -> dict:
  """The archived summaries of the global stages (prepare, judge), by key."""
  path = root(results) / "global_stages.json"
  return json.loads(path.read_text()) if path.exists() else {}


def maps_path(results: pathlib.Path, name: str) -> pathlib.Path:
  return run_root(results, name) / "clustering_maps.npz"


def read_stages(results: pathlib.Path, name: str) -> dict:
  path = run_root(results, name) / "stages.json"
  return json.loads(path.read_text()) if path.exists() else {}


def read_record(results: pathlib.Path, name: str, stage: str):
  path = run_root(results, name) / f"{stage}.json"
  return json.loads(path.read_text()) if path.exists() else None


def archived(results: pathlib.Path, name: str, stage: str) -> bool:
  """True if the stage's record (and for an evaluation, every point's arrays) is archived."""
  if stage not in read_stages(results, name):
    return False
  if stage in RECORDS:
    record = read_record(results, name, stage)
    if record is None:
      return False
    if stage in EVALUATIONS:
      return all(point_path(results, name, stage, r["guidance"]).exists() for r in record)
  return True


def run_archived(results: pathlib.Path, name: str, stages: Sequence[str]) -> bool:
  """True if every stage of a run but its training is archived (training is then not needed)."""
  return all(archived(results, name, s) for s in stages if s != "train")


def update(out: pathlib.Path, results: pathlib.Path, protocol: dict,
           grid: Sequence[paper_claim.RunSpec], contexts, log=print) -> None:
  """Archives every finished stage of `out` that is not archived yet.

  `contexts(n)`: the evaluation Context (reference and judges) of n samples.
  """
  from gcd_jax.evaluators import suite  # pylint: disable=g-import-not-at-top
  from gcd_jax.experiments import paper_claim  # pylint: disable=g-import-not-at-top
  check_protocol(results, protocol, grid)
  archive_judge(paper_claim.judge_dir(out), results)
  done = read_global(results)
  for st in paper_claim.global_stages(out, protocol):
    summary = paper_claim.stage_summary(out, st)
    if summary["done"] and st.key not in done:
      done[st.key] = {k: v for k, v in summary.items() if k != "output"}
      fileio.atomic_write_text(root(results) / "global_stages.json", json.dumps(done, indent=1))
  for spec in grid:
    stages = read_stages(results, spec.name)
    for st in paper_claim.run_stages(out, protocol, spec):
      kind = st.key.split("/")[0]
      summary = paper_claim.stage_summary(out, st)
      if kind == "clustering" and summary["done"] and archived(results, spec.name, kind):
        _complete_maps(results, spec.name, st.output.with_suffix(".npz"), log)
      if not summary["done"] or archived(results, spec.name, kind):
        continue
      if kind in RECORDS:
        record = json.loads(st.output.read_text())
        if kind in EVALUATIONS:
          for point in record:
            path = point_path(results, spec.name, kind, point["guidance"])
            if path.exists():
              continue
            ctx = contexts(point["num_samples"])
            samples = suite.read_samples(pathlib.Path(point["directory"]), ctx.judges)
            if samples is None:
              raise FileNotFoundError(f"{point['directory']}: no stored samples to archive")
            ensure_reference(results, ctx)
            write_arrays(path, point_arrays(ctx, samples),
                         {"run": spec.name, "stage": kind, "guidance": point["guidance"],
                          "num_samples": point["num_samples"],
                          "judge": ctx.judges.segnet_features.identity})
        if kind == "clustering":  # the rows the report's picture grid shows
          with np.load(st.output.with_suffix(".npz"), allow_pickle=False) as f:
            maps = {k: f[k][:MAP_ROWS] for k in f.files if _is_map(k)}
          maps["colours"] = np.asarray(contexts(protocol["sweep_samples"]).reference.classes.colors,
                                       np.uint8)
          fileio.atomic_write_npz(maps_path(results, spec.name), maps)
        fileio.atomic_write_text(run_root(results, spec.name) / f"{kind}.json",
                                 json.dumps(record, indent=1))
      # Paths of this machine mean nothing elsewhere; the budget and hardware do.
      stages[kind] = {k: v for k, v in summary.items() if k != "output"}
      fileio.atomic_write_text(run_root(results, spec.name) / "stages.json",
                               json.dumps(stages, indent=1))
      log(f"archived {st.key}")


def _is_map(key: str) -> bool:
  return key in ("images", "layouts") or "_level" in key


def _complete_maps(results: pathlib.Path, name: str, local: pathlib.Path, log) -> None:
  """Adds the decoder levels that an older archive left out (it kept level 0
  only) from the run's own clustering maps, where this machine still has them."""
  path = maps_path(results, name)
  if not (path.exists() and local.exists()):
    return
  with np.load(path, allow_pickle=False) as f:
    maps = {k: f[k] for k in f.files}
  with np.load(local, allow_pickle=False) as f:
    missing = [k for k in f.files if _is_map(k) and k not in maps]
    if not missing:
      return
    if not np.array_equal(f["layouts"][:MAP_ROWS], maps["layouts"]):
      raise ValueError(f"{local}: its layouts differ from the archived maps {path}")
    maps.update({k: f[k][:MAP_ROWS] for k in missing})
  fileio.atomic_write_npz(path, maps)
  log(f"archived the clustering maps of {name} at every level")


def ensure_reference(results: pathlib.Path, ctx: base.Context) -> None:
  path = reference_path(results, len(ctx.reference.images))
  if not path.exists():
    write_arrays(path, reference_arrays(ctx),
                 {"dataset": ctx.reference.dataset, "split": ctx.reference.split,
                  "num_samples": len(ctx.reference.images),
                  "ignore_id": ctx.reference.classes.ignore_id,
                  "judge": ctx.judges.segnet_features.identity})


def point_statistics(results: pathlib.Path, name: str, stage: str, record: dict
                     ) -> tuple[dict, int]:
  """(statistics, number of samples) of an archived point."""
  point, meta = read_arrays(point_path(results, name, stage, record["guidance"]))
  reference, ref_meta = read_arrays(reference_path(results, record["num_samples"]))
  if meta.get("judge") != ref_meta.get("judge"):
    raise ValueError(f"{name}/{stage} g={record['guidance']:g}: judged by {meta.get('judge')}, "
                     f"its reference by {ref_meta.get('judge')}")
  return statistics(point, reference, ref_meta["ignore_id"]), len(point["recall"])
