"""Average checkpoints of one architecture into a model soup:
``trainkit soup runs/a runs/b runs/c [--greedy] [--recompute-bn N] --out DIR`` (writes DIR/soup.pt).

Uniform (default): the mean of every checkpoint. ``--greedy``: candidates sorted by their
own held-out top-1 (the recipe's val split); each joins only if the soup's held-out top-1
does not drop. ``--recompute-bn N``: re-estimate BatchNorm statistics on N training
batches (for every trial soup when greedy). The output is a trainkit checkpoint:
``trainkit evaluate DIR/soup.pt`` evaluates it on test.
"""

from __future__ import annotations

import argparse
import logging
import sys


from trainkit.models.hub import checkpoint_state
from trainkit.runtime.checkpoint import save_atomic
from trainkit.commands.common import add_shared, new_parser, output_file, parse
from trainkit.cli import one_line_errors, setup_logging
from trainkit.runtime.distributed import pick_device
from trainkit.eval.soup import average_state_dicts, greedy_soup, load_candidates, soup_checkpoint, soup_context

log = logging.getLogger("trainkit")


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = new_parser(__doc__, ["trainkit soup runs/a runs/b runs/c --out runs/soup-abc   # writes soup.pt",
                             "trainkit soup runs/a runs/b --greedy --recompute-bn 20 --data-root ../shared/data/x "
                             "--out runs/soup-greedy"])
    p.add_argument("checkpoints", nargs="+", help="run folders (their best.pt) or checkpoint files")
    p.add_argument("--greedy", action="store_true", help="greedy soup on held-out top-1 (default: uniform)")
    p.add_argument("--recompute-bn", type=int, default=0, metavar="N", help="re-estimate BatchNorm on N train batches")
    add_shared(p, "out", "data_root", "device", help={"out": "folder for the soup checkpoint soup.pt",
                                                      "data_root": "override data.root (the data set moved)"})
    p.add_argument("--batch", type=int, help="eval batch (default: the run's)")
    p.add_argument("--workers", type=int, help="loader workers (default: the run's)")
    p.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    args = parse(p, argv, "soup", overrides=False)
    if args.out is None:
        p.error("give --out DIR, the folder for soup.pt")
    args.out = output_file(args.out, "soup.pt", (".pt", ".pth"))
    if args.recompute_bn < 0:
        p.error("--recompute-bn: a number of batches >= 0")
    return args


@one_line_errors
def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    setup_logging(threads=args.threads)
    ckpts = load_candidates(args.checkpoints)
    states = [checkpoint_state(c) for c in ckpts]   # each run's own evaluation weights (EMA or raw)
    info = {"method": "greedy" if args.greedy else "uniform", "candidates": args.checkpoints,
            "recompute_bn_batches": args.recompute_bn}
    ctx = None
    if args.greedy or args.recompute_bn:
        ctx = soup_context(ckpts[0], device=pick_device(args.device, 0), bn_batches=args.recompute_bn,
                           need_val=args.greedy, data_root=args.data_root, batch=args.batch, workers=args.workers)
    if args.greedy:
        soup, chosen, rows = greedy_soup(states, ctx.score, args.checkpoints)
        for r in rows:
            log.info("%-40s own val top1 %6.2f%%  soup with it %6.2f%%  %s", r["candidate"], r["own_top1"],
                     r["soup_top1"], "added" if r["added"] else "left out")
        info.update(chosen=[args.checkpoints[i] for i in chosen], greedy_log=rows, val_top1=rows and max(
            r["soup_top1"] for r in rows if r["added"]))
    else:
        soup = average_state_dicts(states)
        info["chosen"] = list(args.checkpoints)
    if ctx is not None and args.recompute_bn:
        soup = ctx.prepare(soup)   # the written weights carry the statistics they were scored with
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_atomic(soup_checkpoint(ckpts[0], soup, info), args.out)
    log.info("%s soup of %d/%d checkpoints -> %s", info["method"], len(info["chosen"]), len(ckpts), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
