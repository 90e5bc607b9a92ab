#!/usr/bin/env python3
"""Reads a kiln run directory with TensorBoard's own event reader and checks that every kind of
record kiln writes is there and decodes: scalars, histograms, images and hparams plugin data.

    python3 scripts/check_tensorboard.py experiments/<name>/<run>

Exits non-zero, naming what is missing, when a check fails.
"""

import sys

from tensorboard.backend.event_processing import event_accumulator
from tensorboard.plugins.hparams import plugin_data_pb2


def main(run_dir: str) -> int:
    acc = event_accumulator.EventAccumulator(run_dir, size_guidance={"scalars": 0, "histograms": 0, "images": 0, "tensors": 0})
    acc.Reload()
    tags = acc.Tags()
    problems = []

    for tag in ["train/loss", "train/accuracy", "train/learning_rate", "train/samples_per_sec", "valid/loss", "valid/accuracy"]:
        if tag not in tags["scalars"]:
            problems.append(f"scalar {tag} missing (have {sorted(tags['scalars'])})")
    if not problems:
        acc_values = [e.value for e in acc.Scalars("valid/accuracy")]
        if not all(0.0 <= v <= 1.0 for v in acc_values):
            problems.append(f"valid/accuracy out of range: {acc_values}")
        steps = [e.step for e in acc.Scalars("train/loss")]
        if steps != sorted(steps) or len(set(steps)) != len(steps):
            problems.append(f"train/loss steps not strictly increasing: {steps}")

    histograms = [t for t in tags["histograms"] if t.startswith("weights/")]
    if not histograms:
        problems.append("no weight histograms")
    else:
        h = acc.Histograms(histograms[0])[-1].histogram_value
        if h.num <= 0 or len(h.bucket) != len(h.bucket_limit) or abs(sum(h.bucket) - h.num) > 0.5:
            problems.append(f"histogram {histograms[0]} is inconsistent: num={h.num} buckets={sum(h.bucket)}")

    if "valid/misclassified" not in tags["images"]:
        problems.append(f"image valid/misclassified missing (have {tags['images']})")
    else:
        img = acc.Images("valid/misclassified")[-1]
        if not img.encoded_image_string.startswith(b"\x89PNG") or img.width <= 0 or img.height <= 0:
            problems.append("valid/misclassified is not a PNG image")

    contents = acc.PluginTagToContent("hparams")
    found = {}
    for tag, content in contents.items():
        data = plugin_data_pb2.HParamsPluginData.FromString(content)
        found[tag] = data
    start = found.get("_hparams_/session_start_info")
    if start is None:
        problems.append(f"hparams session_start_info missing (have {sorted(found)})")
    else:
        hp = start.session_start_info.hparams
        for name in ["lr", "batch_size", "model", "optimizer"]:
            if name not in hp:
                problems.append(f"hparam {name} missing (have {sorted(hp)})")
    experiment = found.get("_hparams_/experiment")
    if experiment is None:
        problems.append("hparams experiment missing")
    else:
        metrics = [m.name.tag for m in experiment.experiment.metric_infos]
        if "valid/accuracy" not in metrics:
            problems.append(f"hparams metric valid/accuracy missing (have {metrics})")

    for p in problems:
        print(f"FAIL {run_dir}: {p}", file=sys.stderr)
    if problems:
        return 1
    print(
        f"ok: {run_dir}: {len(tags['scalars'])} scalar tags, {len(histograms)} histograms, "
        f"{len(tags['images'])} image tags, {len(start.session_start_info.hparams)} hparams"
    )
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    sys.exit(main(sys.argv[1]))
