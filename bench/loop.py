"""The napari plugin's human-in-the-loop on real data (issue 35), timed as a user meets it.

The plugin's own plain functions, no Qt: :func:`seg.napari.run.segment_job` (Segment),
:func:`seg.napari.pairs.save_pair` (Teach, sparse) and :func:`seg.napari.run.finetune_job`
(Fine-tune, then segment again), each driven as the widgets drive them (a generator, progress per
yield) and timed in wall seconds.

1. Base: the GOWT1 package of ``bench/transfer.py`` (``--base``; Fluo-N2DH-GOWT1 nuclei, median
   diameter ~61 px).
2. Data: the canonical DIC-C2DH-HeLa dataset (``data/DIC-C2DH-HeLa``, ``seg ingest``); its cells'
   median diameter is the training split's fingerprint (~120 px).
3. Steps:
   (a) Segment one training frame with the base at the cells' diameter (and, for reference, with
       ``auto``: the diameter it estimates);
   (b) Teach two training frames (``--frames``; gold truth by default): each starts from the base's
       segmentation and is "corrected" as a user fixes the cells the ground truth annotates: every
       produced segment lying mostly (>= half its area) inside an annotated cell is erased, the
       annotated cells are painted in with new ids (a segment that only overlaps one keeps the
       rest of its pixels, as it would under napari's brush); saved SPARSE (only the cells changed,
       the rest 65535 = not annotated) into a training folder. The human's time at the brush is
       not measured; the step's time is the second frame's segmentation and the two saves.
   (c) Fine-tune from the base on every pair (``--steps``, fp32: ``finetune_job`` takes no
       precision, so the bench gives ``seg.finetune.finetune`` ``amp="none"`` for it);
   (d) the new package segments the held-out test frames again (``finetune_job``'s ``image``).
   Test SEG (annotated cells only): BEFORE (base at the cells' diameter), AFTER (new package at its
   own scale), and the base with no diameter (its own scale).

    SEG_RAW_ROOT=/work/shared/data xvfb-run -a .venv/bin/python bench/loop.py [--steps 150] [--screenshot]

Prints the tables, writes bench/results/loop.json and ends with one line ``RESULT loop
seg_before=... seg_after=... seg_no_diameter=... minutes_segment=... minutes_teach=...
minutes_finetune=... minutes_resegment=...``. ``--screenshot``: a napari viewer (under Xvfb) with a
test frame, its AFTER segmentation and the plugin's three dock widgets, saved to
docs/napari_loop.png (``--screenshot-only`` redoes it from the saved run).
"""

from __future__ import annotations

import argparse
import functools
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import tifffile

import seg.napari.run as plugin_run
from seg.data import canonical
from seg.errors import SegError
from seg.finetune import finetune
from seg.io import read_json, write_json
from seg.metrics.ctc import seg_measure
from seg.napari.pairs import UNANNOTATED, save_pair
from seg.napari.run import finetune_job, segment_job
from seg.packaging import load_package
from common import cpu_name, ensure_canonical

ROOT = Path(__file__).resolve().parents[1]
HELA = "DIC-C2DH-HeLa"
RESULTS = ROOT / "bench" / "results" / "loop.json"
SCREENSHOT = ROOT / "docs" / "napari_loop.png"
def drive(gen):
    """Run a plugin job (a generator of ``(done, total, message)``) as the widget does; returns
    (its return value, [(seconds since start, done, total, message)], seconds in all)."""
    t0 = time.perf_counter()
    events = []
    try:
        while True:
            done, total, msg = next(gen)
            events.append((time.perf_counter() - t0, done, total, msg))
    except StopIteration as stop:
        return stop.value, events, time.perf_counter() - t0


def correct(produced: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, dict]:
    """The labels a user leaves after fixing the cells the ground truth annotates (module docstring):
    produced segments lying mostly inside annotated cells erased, the annotated cells painted with
    new ids on top."""
    produced = np.asarray(produced)
    corrected = produced.copy()
    annotated = gt > 0
    erased, clipped = [], []
    for pid in np.unique(produced[produced > 0]):
        seg = produced == pid
        inside = int(np.sum(seg & annotated))
        if inside == 0:
            continue
        if inside >= 0.5 * seg.sum():
            corrected[seg] = 0
            erased.append(int(pid))
        else:
            clipped.append(int(pid))
    base = int(produced.max()) + 1
    gt_ids = [int(g) for g in np.unique(gt[gt > 0])]
    for k, g in enumerate(gt_ids):
        corrected[gt == g] = base + k
    return corrected, {"gt_cells": len(gt_ids), "produced_segments": int(len(np.unique(produced[produced > 0]))),
                       "erased_segments": len(erased), "clipped_segments": len(clipped)}


def score(labels: np.ndarray, masks: list[np.ndarray]) -> float:
    preds = [labels] if np.ndim(labels) == 2 else list(labels)
    return float(seg_measure(masks, preds))


def run_loop(args) -> dict:
    load_start = os.getloadavg()
    data = ROOT / "data"
    ds = ensure_canonical(data, HELA)
    meta = canonical.load_meta(ds)
    by_id = {e["id"]: e for e in canonical.slices(meta)}
    diameter = float(meta["fingerprint"]["objects"]["diameter"]["median"])
    base = Path(args.base).resolve()
    work = Path(args.work).resolve()
    folder = work / "pairs"
    for p in (folder, folder.with_name(folder.name + plugin_run.MODELS_SUFFIX)):
        shutil.rmtree(p, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    frames = [by_id[f] for f in args.frames]
    for e in frames:
        if e["split"] != "train" or not e.get("instances"):
            raise SystemExit(f"{e['id']}: not an annotated training frame of {HELA}")
    test = [e for e in canonical.slices(meta, "test") if e.get("instances")]
    test_images = np.stack([canonical.load_raw_image(ds, e) for e in test])
    test_masks = [canonical.load_instances(ds, e) for e in test]
    print(f"{HELA}: cells' median diameter {diameter:.1f} px (fingerprint); base {base}", flush=True)

    # (a) Segment one training frame at the cells' diameter (the widget loads the package from its path)
    img0 = canonical.load_raw_image(ds, frames[0])
    seg0, _, t_segment = drive(segment_job(img0, str(base), device="cpu", diameter=diameter))
    t_auto0 = time.perf_counter()
    try:
        seg_auto, _, t_auto = drive(segment_job(img0, str(base), device="cpu", diameter="auto"))
        auto_d, auto_error = seg_auto.scale["diameter"], None
    except SegError as e:  # the first pass at the package's own scale found nothing to measure
        t_auto, auto_d, auto_error = time.perf_counter() - t_auto0, None, str(e)
        print(f"auto: {e}", flush=True)
    print(f"(a) segment {frames[0]['id']} at {diameter:.1f} px: {t_segment:.1f} s, "
          f"{len(np.unique(seg0.labels)) - 1} cells; auto: {auto_d} px ({t_auto:.1f} s)", flush=True)

    # (b) Teach: the second frame segmented too, both corrected and saved sparse
    t0 = time.perf_counter()
    produced = [seg0.labels]
    seconds_seg_second = 0.0
    for e in frames[1:]:
        s, _, secs = drive(segment_job(canonical.load_raw_image(ds, e), str(base), device="cpu", diameter=diameter))
        produced.append(s.labels)
        seconds_seg_second += secs
    t_save0 = time.perf_counter()
    records = []
    for e, prod in zip(frames, produced):
        gt = canonical.load_instances(ds, e)
        corrected, stats = correct(prod, gt)
        rec = save_pair(folder, canonical.load_raw_image(ds, e), corrected, mode="sparse", produced=prod,
                        prefix=HELA, source={"frame": e["id"], "labels": e.get("labels"), "package": str(base),
                                             "diameter": diameter, "bench": "bench/loop.py"})
        mask = tifffile.imread(rec["mask"])
        stats.update({"frame": e["id"], "labels": e.get("labels"), "pair": rec["name"], "objects": rec["objects"],
                      "touched": len(rec["touched"] or []),
                      "annotated_fraction": round(float(np.mean(mask != UNANNOTATED)), 4)})
        records.append(stats)
    t_teach = time.perf_counter() - t0
    t_saves = time.perf_counter() - t_save0
    print(f"(b) teach: {len(records)} sparse pairs in {folder} ({t_teach:.1f} s: segmenting the 2nd frame "
          f"{seconds_seg_second:.1f} s, correcting and saving {t_saves:.1f} s)", flush=True)
    for r in records:
        print(f"    {r['pair']} ({r['frame']}, {r['labels']}): {r['gt_cells']} GT cells, {r['produced_segments']} "
              f"produced segments ({r['erased_segments']} erased, {r['clipped_segments']} clipped), "
              f"{r['objects']} annotated objects, {100 * r['annotated_fraction']:.1f}% of pixels annotated",
              flush=True)

    # (c) + (d) Fine-tune from the base on every pair, fp32, then segment the test frames again
    plugin_run.finetune = functools.partial(finetune, amp="none")
    (summary, after), events, t_all = drive(finetune_job(str(base), folder, steps=args.steps, device="cpu",
                                                         image=test_images, segment_device="cpu"))
    marks: dict = {}  # finetune_job's own steps (done of 3) come first; segment_job's progress follows
    for t, done, total, msg in events:
        if total == 3 and done not in marks:
            marks[done] = t
    t_finetune = marks[1]
    t_load = marks[2] - marks[1]
    t_reseg = t_all - marks[2]
    print(f"(c) fine-tune: {summary['steps']} steps on {summary['pairs']} pairs, {t_finetune:.1f} s -> "
          f"{summary['out']}", flush=True)
    print(f"(d) segment {len(test)} test frames again: {t_reseg:.1f} s (loading {t_load:.1f} s)", flush=True)
    tifffile.imwrite(work / "after_test_labels.tif", after.labels.astype(np.uint16))

    # Scores on the held-out test frames
    before, _, t_before = drive(segment_job(test_images, str(base), device="cpu", diameter=diameter))
    nodiam, _, _ = drive(segment_job(test_images, str(base), device="cpu", diameter=None))
    seg_before, seg_after, seg_nodiam = (score(before.labels, test_masks), score(after.labels, test_masks),
                                         score(nodiam.labels, test_masks))
    per_frame = {e["id"]: {"before": score(b, [m]), "after": score(a, [m]), "no_diameter": score(n, [m]),
                           "gt_cells": int(len(np.unique(m[m > 0])))}
                 for e, b, a, n, m in zip(test, before.labels, after.labels, nodiam.labels, test_masks)}
    return {
        "machine": cpu_name(), "cpus": os.cpu_count(),
        "load_average_1min": {"start": round(load_start[0], 2), "end": round(os.getloadavg()[0], 2)}, "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": "SEG_RAW_ROOT=/work/shared/data xvfb-run -a .venv/bin/python bench/loop.py "
                   + " ".join(sys.argv[1:]),
        "base": str(base), "base_diameter": load_package(base).scale["diameter"], "dataset": HELA,
        "diameter": diameter, "auto_diameter": auto_d, "auto_error": auto_error, "frames": [e["id"] for e in frames],
        "test_frames": [e["id"] for e in test], "steps": args.steps, "precision": "fp32 (amp none)",
        "folder": str(folder), "package": summary["out"], "pairs": records,
        "seconds": {"segment": round(t_segment, 2), "segment_auto": round(t_auto, 2), "teach": round(t_teach, 2),
                    "teach_segment_second_frame": round(seconds_seg_second, 2),
                    "teach_correct_and_save": round(t_saves, 2), "finetune": round(t_finetune, 2),
                    "finetune_train": summary.get("seconds_train"), "load_new_package": round(t_load, 2),
                    "resegment": round(t_reseg, 2), "segment_before": round(t_before, 2)},
        "seg": {"before": seg_before, "after": seg_after, "no_diameter": seg_nodiam, "per_frame": per_frame,
                "after_scale": after.scale, "before_scale": before.scale},
        "finetune": {k: v for k, v in summary.items() if k != "data"},
    }


def print_report(doc: dict) -> None:
    s, g = doc["seconds"], doc["seg"]
    print(f"\nThe loop on {doc['dataset']} ({doc['machine']}; fp32; {doc['steps']} fine-tuning steps)")
    rows = [("(a) Segment", f"1 training frame, base at {doc['diameter']:.0f} px", s["segment"]),
            ("    (auto)", "same frame, auto: " + (f"estimate {doc['auto_diameter']:.0f} px" if doc["auto_diameter"]
                                                    else "no estimate (no object found)"), s["segment_auto"]),
            ("(b) Teach", f"segment 2nd frame + correct + save {len(doc['pairs'])} sparse pairs", s["teach"]),
            ("(c) Fine-tune", f"{doc['steps']} steps from the base on {len(doc['pairs'])} pairs", s["finetune"]),
            ("(d) Segment again", f"{len(doc['test_frames'])} test frames, new package", s["resegment"])]
    print(f"{'step':<18} {'what':<52} {'seconds':>8} {'minutes':>8}")
    for step, what, secs in rows:
        print(f"{step:<18} {what:<52} {secs:>8.1f} {secs / 60:>8.2f}")
    print(f"\nTest SEG ({', '.join(doc['test_frames'])}; annotated cells only)")
    print(f"{'frame':<10} {'GT cells':>8} {'no diameter':>12} {'before':>8} {'after':>8}")
    for fid, r in g["per_frame"].items():
        print(f"{fid:<10} {r['gt_cells']:>8} {r['no_diameter']:>12.3f} {r['before']:>8.3f} {r['after']:>8.3f}")
    print(f"{'all':<10} {'':>8} {g['no_diameter']:>12.3f} {g['before']:>8.3f} {g['after']:>8.3f}")
    print("RESULT loop " + " ".join([
        f"seg_before={g['before']:.4f}", f"seg_after={g['after']:.4f}", f"seg_no_diameter={g['no_diameter']:.4f}",
        f"minutes_segment={s['segment'] / 60:.3f}", f"minutes_teach={s['teach'] / 60:.3f}",
        f"minutes_finetune={s['finetune'] / 60:.3f}", f"minutes_resegment={s['resegment'] / 60:.3f}"]), flush=True)


def screenshot(doc: dict, out: Path = SCREENSHOT) -> str:
    """A napari viewer with the first test frame, its AFTER segmentation and the plugin's docks,
    saved to ``out``; returns what it shows (or why not)."""
    try:
        import napari
        from qtpy.QtWidgets import QApplication
    except Exception as e:  # noqa: BLE001 - napari is an optional extra
        return f"no screenshot: napari does not import ({e})"
    ds = ROOT / "data" / doc["dataset"]
    meta = canonical.load_meta(ds)
    entry = next(e for e in canonical.slices(meta) if e["id"] == doc["test_frames"][0])
    image = canonical.load_raw_image(ds, entry)
    labels = tifffile.imread(Path(doc["folder"]).parent / "after_test_labels.tif")[0]
    import warnings

    warnings.filterwarnings("ignore", message=".*PyQt5 backend is deprecated.*")
    try:  # napari 0.9 shows that deprecation as a toast over the canvas on the window's first show
        import napari._qt.qt_main_window as qt_main_window

        qt_main_window.SHOW_QT_WARNING = False
    except (ImportError, AttributeError):
        pass
    viewer = napari.Viewer(show=True, title="seg: the loop on DIC-C2DH-HeLa")
    try:
        viewer.window._qt_window.resize(1500, 950)
        viewer.add_image(image, name=entry["id"])
        viewer.add_labels(labels, name=f"{entry['id']} labels", opacity=0.45)  # the name the plugin gives
        docks = []
        for name in ("Segment", "Teach", "Fine-tune"):
            try:
                _, widget = viewer.window.add_plugin_dock_widget("seg", name)
                docks.append((name, widget))
            except Exception as e:  # noqa: BLE001 - a layers-only screenshot is fine
                print(f"dock widget {name}: {e}", flush=True)
        for name, w in docks:  # the widgets as the run left them
            try:
                if name == "Segment":
                    w.package.value = str(Path(doc["package"]) / "package.json")
                elif name == "Teach":
                    w.folder.value = doc["folder"]
                elif name == "Fine-tune":
                    w.base.value = str(Path(doc["base"]) / "package.json")
                    w.folder.value = doc["folder"]
                    w.steps.value = int(doc["steps"])
                    w.image.value = viewer.layers[entry["id"]]
            except Exception as e:  # noqa: BLE001
                print(f"dock widget {name}: fields not set ({e})", flush=True)
        viewer.reset_view()
        for _ in range(20):
            QApplication.processEvents()
            time.sleep(0.05)
        out.parent.mkdir(parents=True, exist_ok=True)
        viewer.screenshot(str(out), canvas_only=False)
    finally:
        viewer.close()
    return f"{out}: {entry['id']}, AFTER labels, docks {[n for n, _ in docks]}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", default=str(ROOT / "results" / "transfer" / "gowt1-package"))
    ap.add_argument("--steps", type=int, default=150, help="fine-tuning steps")
    ap.add_argument("--frames", nargs=2, default=["01_t002", "01_t021"],
                    help="the two training frames the user corrects (default: DIC-HeLa's gold-truth ones)")
    ap.add_argument("--work", default=str(ROOT / "results" / "loop"))
    ap.add_argument("--screenshot", action="store_true", help="then save docs/napari_loop.png (napari, Xvfb)")
    ap.add_argument("--screenshot-only", action="store_true", help="only the screenshot, from bench/results/loop.json")
    args = ap.parse_args(argv)
    if args.screenshot_only:
        print(screenshot(read_json(RESULTS)))
        return 0
    doc = run_loop(args)
    write_json(RESULTS, doc)
    print_report(doc)
    if args.screenshot:
        print(screenshot(doc), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
