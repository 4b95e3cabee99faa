"""fpgaprune sweep (`make sweep`): search pruning, bit widths and reuse factors for the Pareto front
of accuracy against LUT-equivalents and DSPs, with Optuna, on one machine or many.

    fpgaprune sweep --workers 2                     # local: SQLite under runs/<name>/sweep/
    fpgaprune sweep --storage URL --worker          # on every other host of a many-machine sweep
    fpgaprune sweep --pick 17                       # trial 17 as a run; then `make hls CONFIG=...`

The search space and objectives are the config's `sweep:` section (fpgaprune/sweep/space.py).
"""

from __future__ import annotations

import argparse

from .common import add_config_arguments, add_quiet_argument, config_from_args, options_from_args, say_cli

HELP = ("search pruning, bit widths and reuse factors (the config's sweep section) for the Pareto front of "
        "accuracy against resources (runs/<name>/sweep/)")


def add_arguments(p) -> None:
    add_config_arguments(p)
    p.add_argument("--test-data", metavar="DATASET",
                   help="dataset whose test split gives the reported test accuracy, e.g. mnist-t10k:PATH")
    add_quiet_argument(p)
    p.add_argument("--allow-custom-code", action="store_true",
                   help="allow loading models with Lambda layers or custom classes")
    p.add_argument("--workers", type=int, default=1, metavar="N",
                   help="worker processes on this machine (default 1; capped by available memory; 0 = only "
                        "watch the workers of other hosts and write the front)")
    p.add_argument("--storage", metavar="URL",
                   help="shared Optuna storage: postgresql+psycopg2://user@host/db, mysql+pymysql://..., "
                        "sqlite:///PATH or journal:PATH (default: sweep.storage, else runs/<name>/sweep/study.db)")
    p.add_argument("--worker", action="store_true",
                   help="run as one worker of a shared sweep: claim trials until the budget is spent, then exit")
    p.add_argument("--trials", type=int, metavar="N", help="trials in the study (default: sweep.trials)")
    p.add_argument("--synth", type=int, default=0, metavar="K",
                   help="vendor synthesis of the K best Pareto candidates (where vivado_hls / vitis_hls exist)")
    p.add_argument("--pick", type=int, metavar="N", help="turn trial N into a normal run (then `make hls`)")
    p.add_argument("--force", action="store_true", help="with --pick: replace an existing picked run")
    p.add_argument("--worker-seed", type=int, help=argparse.SUPPRESS)
    p.add_argument("--threads", type=int, help=argparse.SUPPRESS)


def run(args) -> int:
    from fpgaprune.errors import BadInput

    if args.trials is not None:
        args.overrides = [*args.overrides, f"sweep.trials={args.trials}"]
    for flag, value, low in (("--workers", args.workers, 0), ("--synth", args.synth, 0), ("--trials", args.trials, 1)):
        if value is not None and value < low:
            raise BadInput(f"{flag} {value}: must be at least {low}")
    if args.worker and args.pick is not None:
        raise BadInput("--worker and --pick: choose one")
    cfg = config_from_args(args)
    quiet_trials()
    if args.threads:
        set_threads(args.threads)
    options = options_from_args(args)
    if args.pick is not None:
        return pick(cfg, args)
    if args.worker:
        from fpgaprune.sweep.launch import work_here

        stop_on_sigterm()
        work_here(cfg, storage=args.storage, options=options, worker_seed=args.worker_seed, say=say_cli)
        return 0
    from fpgaprune.sweep.launch import sweep

    sweep(cfg, workers=args.workers, storage=args.storage, options=options, synth=args.synth, say=say_cli)
    return 0


def quiet_trials() -> None:
    """TF's retracing notes (every trial builds its models anew, so they would repeat per trial) and
    Optuna's notes: the sweep prints its own lines."""
    import tensorflow as tf

    from fpgaprune.process import quiet_optuna

    tf.get_logger().setLevel("ERROR")
    quiet_optuna()


def stop_on_sigterm() -> None:
    """A worker told to stop (the launcher's Ctrl-C) queues its trial again at once, as Ctrl-C does,
    instead of leaving it for the heartbeat to time out."""
    import signal

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)


def set_threads(n: int) -> None:
    """This worker's share of the cores (set before TensorFlow runs anything)."""
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(n)
    tf.config.threading.set_inter_op_parallelism_threads(n)


def pick(cfg, args) -> int:
    from fpgaprune.sweep.front import pick as pick_trial
    from fpgaprune.sweep.launch import open_checked
    from fpgaprune.sweep.storage import storage_url

    _, study = open_checked(cfg, storage_url(cfg, args.storage), create=False)
    folder, config_file = pick_trial(cfg, study, args.pick, force=args.force)
    say_cli(f"trial {args.pick} is now the run {folder}; continue with `make hls CONFIG={config_file}`")
    return 0
