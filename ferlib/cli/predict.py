"""``python -m ferlib predict PHOTO_OR_FOLDER… --run DIR | --weights ENTRY [--out DIR]``: a table of the
expressions of the faces in each photo, an annotated PNG per photo and, for several photos, one CSV
(:class:`ferlib.inference.Predictor` does the work). A file that cannot be decoded (a zero-byte file, a web page
saved as .jpg) is skipped, as the dataset readers skip it, and listed with the reason in the table and the CSV."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ferlib.cli import int_at_least
from ferlib.inference import (CROP_SIZES, PredictError, Predictor, UnreadablePhotoError, draw_predictions,
                              format_table, list_photos, skipped_row)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m ferlib predict", description=__doc__.split("\n\n")[0])
    p.add_argument("inputs", nargs="+", metavar="PHOTO_OR_FOLDER", help="photos, or folders of photos")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--run", help="a run directory written by python -m ferlib train")
    what.add_argument("--weights", help="a ferlib.weights entry (e.g. emonet_rafdb_lam0.6) or a checkpoint file")
    p.add_argument("--model", default=None, help="with --weights FILE the registry does not know: the model name")
    p.add_argument("--checkpoint", default="best", choices=("best", "last"), help="with --run: which checkpoint")
    p.add_argument("--crop", default=None, choices=sorted(CROP_SIZES),
                   help="how faces are cropped (default: as the model's training data)")
    p.add_argument("--out", default=None, help="folder for the annotated PNGs and the CSV "
                                               "(default: results/predictions)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    p.add_argument("--threads", type=int_at_least(1), default=None, help="CPU threads for torch (default: torch's)")
    p.add_argument("--min-face-prob", type=float, default=0.9, help="detector score a face needs")
    p.add_argument("--no-progress", action="store_true")
    return p


def main(argv=None) -> int:
    import csv

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from tqdm.auto import tqdm

    from ferlib.engine.env import configure_threads
    from ferlib.error_report import report
    from ferlib.evaluation import CLI_ERRORS
    from ferlib.paths import results_dir

    a = build_parser().parse_args(argv)
    configure_threads(a.threads)
    try:
        photos, folder = list_photos(a.inputs)
        kw = dict(crop=a.crop, device=a.device, min_face_prob=a.min_face_prob)
        if a.run:
            predictor = Predictor.from_run(a.run, a.checkpoint, **kw)
        else:
            predictor = Predictor.from_weights(a.weights, a.model, **kw)
        out = Path(a.out) if a.out else results_dir() / "predictions"
        out.mkdir(parents=True, exist_ok=True)
        rows, pngs, skipped = [], [], []
        for photo in tqdm(photos, desc="photos", unit="photo", disable=a.no_progress):
            try:
                res = predictor(photo)
            except UnreadablePhotoError as err:  # skipped and listed, as the dataset readers do
                rows.append(skipped_row(err))
                skipped.append(err)
                continue
            rows += res.rows() or [{"photo": str(photo), "face": None}]
            fig = draw_predictions(res)
            png = out / f"{photo.stem}_expressions.png"
            fig.savefig(png, dpi=110, bbox_inches="tight")
            plt.close(fig)
            pngs.append(png)
    except Exception as e:  # noqa: BLE001 - re-raised unless it is a user's error
        if not report(e, (PredictError, ImportError) + CLI_ERRORS):
            raise
        return 2
    print(format_table(rows, predictor.classes))
    if skipped:
        print(f"skipped {len(skipped)} unreadable file(s): " + "; ".join(f"{e.path.name} ({e.reason})" for e in skipped),
              file=sys.stderr)
    if not pngs:
        print(f"error: no photo could be read ({len(skipped)} skipped); see the table above", file=sys.stderr)
        return 2
    print(f"annotated: {pngs[0]}" if len(pngs) == 1 else f"annotated: {len(pngs)} PNGs in {out}")
    if folder or len(photos) > 1:
        fields = ["photo", "face", "x1", "y1", "x2", "y2", "score", "label", "confidence"] + predictor.classes + [
            "skipped"]
        with open(out / "predictions.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fields)
            writer.writeheader()
            writer.writerows(rows)
        print(f"table: {out / 'predictions.csv'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
