"""`edge-device teach`: add photos to the feedback bank from the command line (a running daemon picks it up).

    edge-device teach --not cat1.jpg frames/      # negatives: "this is not a <label>"
    edge-device teach --is missed-dog.jpg         # positives: "this is my <label>, on my camera"
    edge-device teach --background empty/         # the empty scene: what positives must never lift
    edge-device teach --list | --forget [negatives|positives|all]

Each photo is scored the way the daemon scores a frame of it (`FrameScorer.score_still` with the config's `[detect]`:
the whole view, and the crops where the wide-view crops are on), with the bank as it is, so teaching a clip's
frames and flagging the clip live give the same bank:
- `--not` adds every view at or over its threshold (what a live false alarm adds), or the photo's closest view
  when none is;
- `--is` adds the photo's whole view and, where the crops are on, its best crop, each with its margin (how far
  under the threshold it was);
- `--background` adds the whole view and its margin.
Unreadable images are named on one line each and skipped. Use the MQTT buttons for what the camera just saw (the
daemon has the exact views); use `teach` for photos or frames you collected, and for the background.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_oneclass.device.errors import EX_RUNTIME, EdgeError, ImageError

if TYPE_CHECKING:   # the heavy imports wait until `teach` runs: `edge-device --help` stays fast
    import numpy as np

PROG = "edge-device"


def expand(paths: list[str]) -> list[Path]:
    """Files as given, folders as the images below them (sorted)."""
    from edge_oneclass.device.image_io import list_images

    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out.extend(list_images(p))
        else:
            out.append(p)
    return out


def read_images(paths: list[Path]) -> list[tuple[Path, np.ndarray]]:
    """The decoded images; the others named on stderr and skipped."""
    from edge_oneclass.device.image_io import is_image_path, load_rgb

    images = []
    for path in paths:
        if not path.is_dir() and not is_image_path(path) and path.exists():
            print(f"{PROG}: {path}: not an image file (.jpg, .png, …), skipped", file=sys.stderr)
            continue
        try:
            images.append((path, load_rgb(path)))
        except ImageError as exc:
            print(f"{PROG}: {exc}", file=sys.stderr)
    return images


def views_to_teach(views: list[Any], kind: str) -> list[Any]:
    """The views of one photo that a teach of `kind` adds (module docstring)."""
    views = [v for v in views if v.embedding is not None]
    if not views:
        return []
    best = max(views, key=lambda v: v.margin)
    if kind == "not":
        firing = [v for v in views if v.margin >= 0]
        return firing or [best]
    if kind == "is":     # what a flag keeps of a frame: its whole view, and where crops are on the best crop
        crops = [v for v in views[1:] if v.kind != "whole"]
        return [views[0]] + ([max(crops, key=lambda v: v.margin)] if crops else [])
    return [views[0]]          # background: the whole view


def match_owner(directory: Path) -> None:
    """Run as root (sudo), give what teach wrote to the owner of the state directory above it (the daemon's user),
    so the daemon can still write the bank; `sudo -u edge-device edge-device teach …` needs none of this."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0 or not directory.is_dir():
        return
    st = directory.parent.stat()
    if st.st_uid == 0:
        return
    for path in [directory, *directory.rglob("*")]:
        try:
            os.chown(path, st.st_uid, st.st_gid)
        except OSError as exc:
            print(f"{PROG}: cannot hand {path} to uid {st.st_uid} ({exc.strerror or exc})", file=sys.stderr)


def _list(bank: Any) -> None:
    print(bank.describe())
    s = bank.state
    rows = [("not", s.neg_sources, s.neg_added, [f"gate {g:.3f}" for g in bank.gates]),
            ("is ", s.pos_sources, s.pos_added,
             [f"gate {g:.3f} lift {lift:.3g}" for g, lift in zip(bank.pos_gates, bank.pos_lifts, strict=True)]),
            ("bg ", [x for x, u in zip(s.scene_sources, s.scene_user, strict=True) if u],
             s.scene_added[s.scene_user], None),
            ("qt ", [x for x, u in zip(s.scene_sources, s.scene_user, strict=True) if not u],
             s.scene_added[~s.scene_user], None)]
    for kind, sources, added, notes in rows:
        for i, (source, t) in enumerate(zip(sources, added, strict=True)):
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))
            note = f"  {notes[i]}" if notes is not None else ""
            print(f"{kind} {when}{note}  {source}")


def run_teach(args: argparse.Namespace) -> int:
    import numpy as np

    from edge_oneclass.device.config import load_config
    from edge_oneclass.device.console import setup_logging
    from edge_oneclass.device.detect.scoring import FrameScorer
    from edge_oneclass.device.feedback.bank import FeedbackBank
    from edge_oneclass.device.feedback.frame_store import FRAMES_DIR, MISSED_DIR, FrameStore
    from edge_oneclass.device.model.running import RunningModel
    from edge_oneclass.device.update.store import active_model_path

    cfg = load_config(args.config)
    setup_logging("WARNING")
    path = active_model_path(cfg)     # the model the daemon runs: after a push, the pushed one and its calibration
    model = RunningModel.load(path, cfg.model.threads, cfg.model.threshold, cfg.detect.crop_recall)
    if not model.embedding_dim:
        raise EdgeError(f"{path}: this model has no embedding output, so it cannot be taught; re-export it "
                        f"with this version of train-edge")
    fc = cfg.feedback
    bank = FeedbackBank.open(fc.dir, path, model.card, model.embedding_dim, fc.max_negatives, fc.max_quiet)
    if args.list:
        _list(bank)
        return 0
    if args.forget is not None:
        negatives, positives = bank.forget(args.forget)
        print(f"forgot {negatives} negative(s) and {positives} positive(s); the kept JPEGs in "
              f"{bank.dir / FRAMES_DIR} and {bank.dir / MISSED_DIR} stay for retraining")
        match_owner(bank.dir)
        return 0
    kind = "not" if args.not_ is not None else "is" if args.is_ is not None else "background"
    paths = expand(args.not_ or args.is_ or args.background)
    images = read_images(paths)
    scorer = FrameScorer(cfg.detect, cfg.camera.region, adjust=bank.adjust)
    taught: list[tuple[Path, Any]] = []
    for image_path, rgb in images:
        taught += [(image_path, v) for v in views_to_teach(scorer.score_still(rgb, model).views, kind)]
    if not taught:
        print(f"{PROG}: no readable images among {len(paths)} path(s); nothing taught", file=sys.stderr)
        return EX_RUNTIME
    embeddings = np.stack([v.embedding for _, v in taught])
    margins = [v.margin - v.adjustment for _, v in taught]    # the model's own margin, without the bank
    sources = [str(p) if v.kind == "whole" else f"{p} {v.kind} {v.box.as_list()}" for p, v in taught]
    if kind == "not":
        result = bank.add_negatives(embeddings, sources)
    elif kind == "is":
        result = bank.add_positives(embeddings, margins, sources)
    else:
        result = bank.add_scene(embeddings, margins, sources, user=True)
    refused_sources = {s for s, _ in result.refused}
    refused = {str(p) for (p, _), s in zip(taught, sources, strict=True) if s in refused_sources}
    for source, reason in result.refused:
        print(f"refused {source}: {reason}")
    if kind != "background":
        kept = FrameStore(bank.dir / (FRAMES_DIR if kind == "not" else MISSED_DIR), fc.max_frames)
        from edge_oneclass.device.snapshot import encode_jpeg

        for image_path, rgb in images:
            if str(image_path) in refused:
                continue
            try:
                kept.add(encode_jpeg(rgb, quality=95), "teach")
            except (OSError, ValueError) as exc:
                print(f"{PROG}: cannot keep a copy of {image_path} in {kept.dir} ({exc})", file=sys.stderr)
    for image_path, _ in images:
        if str(image_path) not in refused:
            print(f"added   {image_path}")
    what = {"not": "negative", "is": "positive", "background": "background view"}[kind]
    print(f"{result.summary(what)}; bank: {bank.describe()}")
    match_owner(bank.dir)
    return 0


def add_parser(sub: argparse._SubParsersAction, with_config) -> None:
    teach = with_config(sub.add_parser("teach", help="teach the detector from photos: --not, --is or --background"))
    what = teach.add_mutually_exclusive_group(required=True)
    what.add_argument("--not", dest="not_", nargs="+", metavar="PATH",
                      help="images or folders that are NOT the label (e.g. the cat that set it off)")
    what.add_argument("--is", dest="is_", nargs="+", metavar="PATH",
                      help="images or folders of the label that were missed (from this camera: it is learnt at once)")
    what.add_argument("--background", nargs="+", metavar="PATH",
                      help="images or folders of the empty scene (edge-device capture): what positives never lift")
    what.add_argument("--list", action="store_true", help="show what the bank holds")
    what.add_argument("--forget", nargs="?", const="all", choices=["negatives", "positives", "all"],
                      help="empty one side of the bank or all of it (kept JPEGs stay for retraining)")
    teach.set_defaults(fn=run_teach)
