"""`edge-device teach`: add photos to the feedback bank from the command line (a running daemon picks it up).

    edge-device teach --not cat1.jpg frames/      # negatives: "this is not a <label>"
    edge-device teach --is missed.jpg             # positives: kept for retraining, protect similar views
    edge-device teach --list | --forget

Each image is embedded by the model the way the daemon sees a frame's whole view (the centre square,
`device.model.preprocess`), and also mirrored. Unreadable images are named on one line each and skipped.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from edge_oneclass.device.errors import EX_RUNTIME, EdgeError, ImageError

if TYPE_CHECKING:   # the heavy imports wait until `teach` runs: `edge-device --help` stays fast
    import numpy as np

    from edge_oneclass.device.model.runner import Runner

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


def embed_images(runner: Runner, paths: list[Path], mirror: bool = True
                 ) -> tuple[list[np.ndarray], list[str], list[tuple[Path, np.ndarray]]]:
    """Embeddings (whole view, and mirrored), their sources, and the decoded images; errors printed and skipped."""
    import numpy as np

    from edge_oneclass.device.image_io import is_image_path, load_rgb
    from edge_oneclass.device.model.preprocess import preprocess

    embeddings: list[np.ndarray] = []
    sources: list[str] = []
    images: list[tuple[Path, np.ndarray]] = []
    for path in paths:
        if not path.is_dir() and not is_image_path(path) and path.exists():
            print(f"{PROG}: {path}: not an image file ({', '.join(('.jpg', '.png', '…'))}), skipped", file=sys.stderr)
            continue
        try:
            rgb = load_rgb(path)
        except ImageError as exc:
            print(f"{PROG}: {exc}", file=sys.stderr)
            continue
        view = preprocess(rgb, runner.input_size)
        for suffix, img in (("", view), (" (mirrored)", view[:, ::-1]))[: 2 if mirror else 1]:
            result = runner.infer(np.ascontiguousarray(img))
            assert result.embedding is not None
            embeddings.append(result.embedding)
            sources.append(f"{path}{suffix}")
        images.append((path, rgb))
    return embeddings, sources, images


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


def run_teach(args: argparse.Namespace) -> int:
    import numpy as np

    from edge_oneclass.device.config import load_config
    from edge_oneclass.device.console import setup_logging
    from edge_oneclass.device.feedback.bank import FRAMES_DIR, MISSED_DIR, FeedbackBank, FrameStore
    from edge_oneclass.device.model.runner import Runner
    from edge_oneclass.device.update.store import active_model_path

    cfg = load_config(args.config)
    setup_logging("WARNING")
    path = active_model_path(cfg)     # the model the daemon runs: after a push, the pushed one and its calibration
    runner = Runner(path, threads=cfg.model.threads)
    card = runner.card
    assert card is not None
    if not runner.embedding_dim:
        raise EdgeError(f"{path}: this model has no embedding output, so it cannot be taught; re-export it "
                        f"with this version of train-edge")
    bank = FeedbackBank.open(cfg.feedback.dir, path, card, runner.embedding_dim, cfg.feedback.max_negatives)
    if args.list:
        print(bank.describe())
        for kind, sources, added, gates in (("not", bank.neg_sources, bank.neg_added, bank.gates),
                                           ("is ", bank.pos_sources, bank.pos_added, None)):
            for i, (source, t) in enumerate(zip(sources, added, strict=True)):
                when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))
                gate = f"  gate {gates[i]:.3f}" if gates is not None else ""
                print(f"{kind} {when}{gate}  {source}")
        return 0
    if args.forget:
        negatives, positives = bank.forget()
        print(f"forgot {negatives} negative(s) and {positives} positive(s); the kept JPEGs in "
              f"{bank.dir / FRAMES_DIR} and {bank.dir / MISSED_DIR} stay for retraining")
        match_owner(bank.dir)
        return 0
    negative = args.not_ is not None
    paths = expand(args.not_ if negative else args.is_)
    embeddings, sources, images = embed_images(runner, paths)
    if not embeddings:
        print(f"{PROG}: no readable images among {len(paths)} path(s); nothing taught", file=sys.stderr)
        return EX_RUNTIME
    stack = np.stack(embeddings)
    result = bank.add_negatives(stack, sources) if negative else bank.add_positives(stack, sources)
    refused = {s for s, _ in result.refused}
    for source, reason in result.refused:
        print(f"refused {source}: {reason}")
    kept = FrameStore(bank.dir / (FRAMES_DIR if negative else MISSED_DIR), cfg.feedback.max_frames)
    from edge_oneclass.device.snapshot import encode_jpeg

    for path, rgb in images:
        if str(path) in refused:
            continue
        print(f"added   {path}")
        try:
            kept.add(encode_jpeg(rgb, quality=95), "teach")
        except (OSError, ValueError) as exc:
            print(f"{PROG}: cannot keep a copy of {path} in {kept.dir} ({exc})", file=sys.stderr)
    print(f"{result.summary('negative' if negative else 'positive')}; bank: {bank.describe()}")
    match_owner(bank.dir)
    return 0


def add_parser(sub: argparse._SubParsersAction, with_config) -> None:
    teach = with_config(sub.add_parser("teach", help="teach the detector from photos: --not (false alarms) or --is"))
    what = teach.add_mutually_exclusive_group(required=True)
    what.add_argument("--not", dest="not_", nargs="+", metavar="PATH",
                      help="images or folders that are NOT the label (e.g. the cat that set it off)")
    what.add_argument("--is", dest="is_", nargs="+", metavar="PATH",
                      help="images or folders of the label that were missed (kept for retraining)")
    what.add_argument("--list", action="store_true", help="show what the bank holds")
    what.add_argument("--forget", action="store_true", help="empty the bank (kept JPEGs stay for retraining)")
    teach.set_defaults(fn=run_teach)
