"""The ``brims-rl`` command line: train, eval, record, analyze, list-envs, study, tune, report.

Exit codes, each with one line on stderr:

* 2, bad input: an unknown env, bad config key or value, missing run, a zip that is not a
  model of ours, a device this machine lacks, a run folder another process trains in;
* 1, a failure: the disk is full or read-only (the line names the path and the OS error),
  or training diverged (the last good model is saved);
* 130 / 143: Ctrl-C / SIGTERM; during training both save a checkpoint first.
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import sys
import threading
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import torch

import envs
from agents.analyze import run_analysis
from agents.config import TrainConfig, resolve_config
from agents.evaluate import evaluate, load_for_env
from agents.events import event_settings, summary_lines
from agents.ram_info import RamRecorder
from agents.record import record_video
from agents.registry import ALGOS, POLICIES
from agents.run_folder import (
    CONFIG_NAME, TB_DIR, RunFolderError, analysis_dir, hold_run_dir, new_run_dir, resolve_resume, run_dir_of,
)
from agents.study import GRACE_HEARTBEATS, HEARTBEAT_SECONDS, StudySpec, grid_study_dir, report_study, run_study
from agents.train import TrainingDiverged, TrainingInterrupted, train
from agents.tune import TuneSettings, load_space, run_tune
from brims_rl import __version__
from envs.robustness import apply_burst

EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 128 + signal.SIGINT  # 130; SIGTERM gives 143

_TRAIN_EXAMPLES = """\
examples:
  brims-rl train                                   # quickstart: a short BRIMs-PPO run on Pong
  brims-rl train --env PongNoFrameskip-v4 --policy brims --timesteps 2000000
  brims-rl train --algo a2c --policy lstm --env breakout --n-envs 16
  brims-rl train --env BrimsRL/CueMemory-v0 --set policy_kwargs.top_k=2 --set n_steps=64
  brims-rl train --resume runs/ppo_brims_pong_20260101-120000_s0_4242      # continue after Ctrl-C / SIGTERM
  brims-rl train --resume runs/ppo_brims_pong_20260101-120000_s0_4242 --timesteps 5000000  # train longer

config resolution (later wins): <config>.atari (or .default) < <config>.<game or env id>
  < quickstart (no --env only) < --set key=value < --timesteps / --n-envs
"""

_EVAL_EXAMPLES = """\
examples:
  brims-rl eval runs/ppo_brims_pong_20260101-120000_s0_4242 --episodes 10
  brims-rl eval runs/ppo_brims_pong_20260101-120000_s0_4242 --noise 20 --flicker 0.3
  brims-rl eval runs/ppo_brims_pong_20260101-120000_s0_4242/checkpoints/model_50000_steps.zip --stochastic
  brims-rl eval model.zip --env PongNoFrameskip-v4 --episodes 3 --n-envs 3
"""

_RECORD_EXAMPLES = """\
examples:
  brims-rl record runs/ppo_brims_pong_20260101-120000_s0_4242 --out pong.mp4
  brims-rl record runs/ppo_brims_pong_20260101-120000_s0_4242 --out pong.gif --max-steps 500 --fps 15
  brims-rl record runs/ppo_brims_pong_20260101-120000_s0_4242 --out modules.mp4 --modules
"""

_ANALYZE_EXAMPLES = """\
examples:
  brims-rl analyze runs/ppo_brims_pong_20260101-120000_s0_4242 --episodes 2
  brims-rl analyze runs/ppo_brims_pong_20260101-120000_s0_4242 --out analysis/pong --flicker 0.5
  brims-rl analyze runs/ppo_brims_pong_20260101-120000_s0_4242 --episodes 5 --events            # all event kinds
  brims-rl analyze runs/ppo_brims_pong_20260101-120000_s0_4242 --events reward,life_lost --window 30
  brims-rl analyze runs/ppo_brims_pong_20260101-120000_s0_4242 --perturb flicker --at 200 --length 10
  tensorboard --logdir runs/ppo_brims_pong_20260101-120000_s0_4242/analysis
"""

_LIST_EXAMPLES = """\
examples:
  brims-rl list-envs
"""


class UsageError(Exception):
    """A bad command line the parser itself cannot see (conflicting options)."""


class CommandFailed(Exception):
    """The command could not do its job, through no fault of the command line (exit 1)."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised wherever the program is, as Ctrl-C raises ``KeyboardInterrupt``: the same
    clean-up runs (training saves a checkpoint, temp files are removed)."""

    signum = signal.SIGTERM


def _raise_terminated(signum: int, frame: Any) -> None:
    raise Terminated()


def quote(path: Any) -> str:
    """A path as it must be typed in a shell command (spaces, quotes)."""
    return shlex.quote(str(path))


# --------------------------------------------------------------------------- argument types


def _int_at_least(low: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{value} is invalid: it must be >= {low}")
        return value

    return parse


def check_device(text: str) -> str:
    """``auto``, or a torch device this machine has (``cpu``, ``cuda``, ``cuda:N``, ``mps``).

    Raises:
        ValueError: not a device name, or a device this machine lacks (``auto`` falls back).
    """
    if text == "auto":
        return text
    try:
        device = torch.device(text)
    except RuntimeError:
        raise ValueError(f"{text!r} is not a torch device; use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            why = "this torch has no CUDA support" if torch.version.cuda is None else "no GPU is visible"
            raise ValueError(f"device {text!r}: CUDA is not available here ({why}); use --device auto or cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"device {text!r}: CUDA is not available for index {device.index} "
                             f"(this machine has {torch.cuda.device_count()} GPU(s))")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {text!r}: MPS is not available here; use --device auto or cpu")
    return text


def _device(text: str) -> str:
    try:
        return check_device(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


# Commands that only run a trained model: batch-1 forward passes gain little from more
# threads, and spin-waiting threads on busy cores cost many times over (see --threads).
INFERENCE_THREADS = 1


def idle_core_threads() -> int:
    """torch's own thread count (one per core), less the cores other processes keep busy now
    (the 1-minute load average), at least 1: training's default."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    busy = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    return max(1, min(torch.get_num_threads(), round(cores - busy)))


def _add_threads_arg(parser: argparse.ArgumentParser, default_help: str) -> None:
    parser.add_argument(
        "--threads", type=_int_at_least(1), default=None, metavar="N",
        help=f"torch CPU threads (default: {default_help}; OMP_NUM_THREADS, when set, is kept). "
        "torch's threads spin-wait, so more threads than free cores slow it down many times over: "
        "on a machine other jobs keep busy use 1; on an idle one, one per core",
    )


def _set_threads(args: argparse.Namespace) -> None:
    """Apply ``--threads``, else the command's default unless OMP_NUM_THREADS chose already."""
    threads = getattr(args, "threads", None)
    default = getattr(args, "default_threads", None)
    if threads is None and "OMP_NUM_THREADS" not in os.environ:
        threads = default() if callable(default) else default
    if threads:
        torch.set_num_threads(threads)


def _add_model_args(parser: argparse.ArgumentParser, episodes_default: int) -> None:
    """Options every command that plays a trained model shares."""
    _add_threads_arg(parser, default_help=str(INFERENCE_THREADS))
    parser.set_defaults(default_threads=INFERENCE_THREADS)
    parser.add_argument("run", metavar="RUN_OR_ZIP", help="run folder written by `brims-rl train`, or a model zip")
    parser.add_argument("--env", default=None, help="env id or Atari game (default: the run's env)")
    parser.add_argument("--episodes", type=_int_at_least(1), default=episodes_default, help="episodes to play")
    parser.add_argument("--seed", type=_int_at_least(0), default=0, help="env seed")
    parser.add_argument("--device", type=_device, default="auto", help="torch device: auto, cpu, cuda, ...")
    parser.add_argument("--best", action="store_true", help="use the run's best_model.zip instead of model.zip")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--deterministic", dest="deterministic", action="store_true", default=True, help="greedy actions (default)")
    mode.add_argument("--stochastic", dest="deterministic", action="store_false", help="sample actions from the policy")
    robust = parser.add_argument_group("robustness (Atari only; the training settings otherwise)")
    robust.add_argument("--noise", type=float, default=None, metavar="SIGMA", help="Gaussian pixel noise, std in grey levels")
    robust.add_argument("--flicker", type=float, default=None, metavar="P", help="blank each frame with probability P")
    robust.add_argument("--occlusion", type=int, default=None, metavar="SIZE", help="black square of SIZE pixels")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="brims-rl",
        description="Reinforcement learning with BRIMs recurrent cores (Stable-Baselines3).",
        epilog="Run `brims-rl <command> --help` for each command's options and examples.",
    )
    parser.add_argument("--version", action="version", version=f"brims-rl {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="command")
    commands.required = True
    formatter = argparse.RawDescriptionHelpFormatter

    train = commands.add_parser(
        "train", help="train an agent into a run folder", epilog=_TRAIN_EXAMPLES, formatter_class=formatter,
        description="Train an agent. Without arguments: the quickstart run (BRIMs-PPO on Pong, a few minutes).",
    )
    train.add_argument("--algo", choices=tuple(ALGOS), default=None, help="algorithm (default ppo)")
    train.add_argument("--policy", choices=tuple(POLICIES), default=None, help="policy (default brims)")
    train.add_argument("--env", default=None, help="env id or Atari game, e.g. PongNoFrameskip-v4 (default: quickstart)")
    train.add_argument("--config", default=None, help="YAML config file (default: configs/<algo>.yaml)")
    train.add_argument("--timesteps", type=_int_at_least(1), default=None, help="total env steps (over all envs)")
    train.add_argument("--n-envs", type=_int_at_least(1), default=None, help="parallel envs")
    train.add_argument("--seed", type=_int_at_least(0), default=None, help="random seed (default 0)")
    train.add_argument("--device", type=_device, default=None, help="torch device: auto (default), cpu, cuda, ...")
    train.add_argument("--run-dir", default=None, help="folder the run folder is created in (default runs/)")
    train.add_argument("--name", default=None, help="run folder name inside --run-dir, new or empty "
                       "(default <algo>_<policy>_<env>_<time>_s<seed>_<pid>)")
    train.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override a config key (repeatable; dotted keys reach into policy_kwargs)",
    )
    train.add_argument("--resume", default=None, metavar="RUN_DIR_OR_ZIP", help="continue a run from its newest model (a folder with none yet: from step 0), or from a zip of it")
    train.add_argument("--no-progress-bar", dest="progress_bar", action="store_false", help="hide the progress bar")
    train.add_argument("--verbose", type=int, choices=(0, 1), default=0, help="1 prints SB3's training tables")
    _add_threads_arg(train, default_help="one per core that other processes leave idle at the start, at least 1")
    train.set_defaults(handler=cmd_train, default_threads=idle_core_threads)

    evaluate = commands.add_parser(
        "eval", help="mean/std raw game score of a trained agent", epilog=_EVAL_EXAMPLES, formatter_class=formatter,
        description="Play episodes with a trained agent (recurrent state carried) and print raw game scores.",
    )
    _add_model_args(evaluate, episodes_default=10)
    evaluate.add_argument("--n-envs", type=_int_at_least(1), default=1, help="parallel envs")
    evaluate.add_argument("--max-steps", type=_int_at_least(1), default=None, help="stop after this many vector steps")
    evaluate.set_defaults(handler=cmd_eval)

    record = commands.add_parser(
        "record", help="write a video of the agent playing", epilog=_RECORD_EXAMPLES, formatter_class=formatter,
        description="Record the agent's episode(s) to an .mp4 or .gif.",
    )
    _add_model_args(record, episodes_default=1)
    record.add_argument("--out", default="video.mp4", help="output file, .mp4 or .gif (default video.mp4)")
    record.add_argument("--fps", type=_int_at_least(1), default=30, help="frames per second")
    record.add_argument("--max-steps", type=_int_at_least(1), default=None, help="cut the video after this many steps")
    record.add_argument(
        "--modules", action="store_true",
        help="BRIMs policies: under each frame, every layer's modules (updated or kept) and their input attention "
        "on null / bottom-up / top-down",
    )
    record.set_defaults(handler=cmd_record)

    analyze = commands.add_parser(
        "analyze", help="record BRIMs module activations and attention", epilog=_ANALYZE_EXAMPLES, formatter_class=formatter,
        description="Run a BRIMs agent and write its per-step, per-layer module activations and input "
        "attention to TensorBoard and to analysis.npz.",
    )
    _add_model_args(analyze, episodes_default=1)
    analyze.add_argument("--n-envs", type=_int_at_least(1), default=1, help="parallel envs")
    analyze.add_argument("--out", default=None, help="output folder (default <run>/analysis)")
    analyze.add_argument("--max-steps", type=_int_at_least(1), default=None, help="stop after this many vector steps")
    events = analyze.add_argument_group(
        "event-aligned averages (events.npz, events.csv, events_<kind>.png, TensorBoard events/<kind>)"
    )
    events.add_argument("--events", nargs="?", const="all", default=None, metavar="KINDS",
                        help="average each layer's activity around events: all (default) or a comma list of "
                        "reward, life_lost, episode_start, surprise, perturbation")
    events.add_argument("--window", default=None, metavar="K", help="steps before and after each event (default 20)")
    events.add_argument("--surprise-threshold", type=float, default=None, metavar="X",
                        help="a surprise is a mean absolute frame change above X (default: mean + 3 std of the run's changes)")
    events.add_argument("--perturb", default=None, metavar="KIND",
                        help="a burst of noise, occlusion or flicker in every episode (Atari), analysed as event 'perturbation'")
    events.add_argument("--at", default=None, metavar="STEP", help="episode step of the burst's first frame (with --perturb)")
    events.add_argument("--length", default=None, metavar="L", help="steps the burst lasts (with --perturb)")
    events.add_argument("--perturb-level", type=float, default=None, metavar="V",
                        help="burst strength: noise sigma (default 64), flicker p (1), occlusion size in pixels (42)")
    events.add_argument("--ram", action="store_true",
                        help="Pong, Breakout: mutual information between each module and the ball and paddle "
                        "positions read from the emulator RAM (ram_information.png; uses the sb3 env backend)")
    analyze.set_defaults(handler=cmd_analyze)

    list_envs = commands.add_parser(
        "list-envs", help="list the Atari games and BrimsRL tasks", epilog=_LIST_EXAMPLES, formatter_class=formatter,
        description="List the environments brims-rl knows by name.",
    )
    list_envs.set_defaults(handler=cmd_list_envs)
    _add_study_commands(commands, formatter)
    return parser


# --------------------------------------------------------------------------- commands


def cmd_train(args: argparse.Namespace) -> int:
    if args.resume is not None:
        given = [
            flag for flag, value in (
                ("--algo", args.algo), ("--policy", args.policy), ("--env", args.env), ("--config", args.config),
                ("--n-envs", args.n_envs), ("--seed", args.seed), ("--name", args.name), ("--run-dir", args.run_dir),
                ("--set", args.overrides or None),
            ) if value is not None
        ]
        if given:
            raise UsageError(
                f"{', '.join(given)} cannot be combined with --resume: the run's {CONFIG_NAME} is reused "
                "(only --timesteps and --device may change)"
            )
        run_dir = run_dir_of(args.resume)
        config = TrainConfig.load(run_dir / CONFIG_NAME)
        if args.timesteps is not None:
            config.hyperparams["total_timesteps"] = args.timesteps
        if args.device is not None:
            config.device = args.device
        check_device(config.device)  # the run's own device may be missing on this machine
    else:
        if args.name is not None and (args.name in ("", ".", "..") or Path(args.name).name != args.name):
            raise UsageError(f"--name {args.name!r}: give a plain folder name (no '/' or '..'); it goes inside --run-dir")
        config = resolve_config(
            args.algo or "ppo",
            policy=args.policy,
            env_id=args.env,
            config_file=args.config,
            overrides=args.overrides,
            seed=0 if args.seed is None else args.seed,
            device=args.device or "auto",
            total_timesteps=args.timesteps,
            n_envs=args.n_envs,
        )
        root = Path(args.run_dir or "runs")
        run_dir = root / args.name if args.name else new_run_dir(root, config.algo, config.policy, config.env_id, config.seed)
    try:
        with hold_run_dir(run_dir, new=args.resume is None):
            if args.resume is not None:
                _, resume_from = resolve_resume(args.resume)  # under the lock: the folder holds still
                print(f"Resuming {run_dir} from {resume_from or 'step 0 (it holds no model yet)'}")
            else:
                resume_from = None
                print(f"Training {config.algo}/{config.policy} on {config.env_id} for "
                      f"{config.hyperparams['total_timesteps']} steps into {run_dir}")
            result = train(config, run_dir, resume_from=resume_from or (run_dir if args.resume else None),
                           progress_bar=args.progress_bar, verbose=args.verbose)
    except TrainingInterrupted as stop:
        print(f"\nInterrupted at {stop.num_timesteps} steps; checkpoint saved to {quote(stop.checkpoint)}", file=sys.stderr)
        print(f"resume with: brims-rl train --resume {quote(stop.run_dir)}", file=sys.stderr)
        return 128 + stop.signum
    except TrainingDiverged as error:
        raise CommandFailed(f"{error}; lower learning_rate (or max_grad_norm) and train again") from None
    except RunFolderError as error:  # in use by another process, or not empty
        raise UsageError(str(error)) from None
    if result.steps_trained > 0:
        print(f"Done: {result.num_timesteps} steps ({result.steps_trained} in {result.seconds:.0f} s, "
              f"{result.steps_per_second:.0f} steps/s). Model: {result.model_path}")
    else:
        print(f"Nothing to train: the run is at {result.num_timesteps} steps, its target is "
              f"{config.hyperparams['total_timesteps']} (raise it with --timesteps). Model: {result.model_path}")
    print(f"  TensorBoard: tensorboard --logdir {quote(run_dir / TB_DIR)}")
    print(f"  Evaluate:    brims-rl eval {quote(run_dir)} --episodes 5")
    print(f"  Video:       brims-rl record {quote(run_dir)} --out {quote(run_dir / 'video.mp4')}")
    if config.policy == "brims":
        print(f"  Modules:     brims-rl analyze {quote(run_dir)} --episodes 1")
    return 0


def _robustness(args: argparse.Namespace) -> dict[str, Any]:
    return dict(noise=args.noise, flicker=args.flicker, occlusion=args.occlusion)


def cmd_eval(args: argparse.Namespace) -> int:
    result = evaluate(
        args.run, env_id=args.env, n_episodes=args.episodes, deterministic=args.deterministic, n_envs=args.n_envs,
        seed=args.seed, device=args.device, max_steps=args.max_steps, best=args.best, **_robustness(args),
    )
    stats = result.stats
    print(f"Model {result.model_path} on {result.env_id}")
    for i, (score, length, cut) in enumerate(zip(stats.returns, stats.lengths, stats.truncated), start=1):
        print(f"episode {i}: score {score:g}, length {length}" + (" (time limit)" if cut else ""))
    if not stats.returns:
        print(f"no episode finished within --max-steps {args.max_steps}", file=sys.stderr)
        return 1
    print(f"mean score: {stats.mean:.2f} +/- {stats.std:.2f} over {len(stats.returns)} episodes")
    if stats.n_truncated:
        # A policy that stalls (never presses FIRE, hides in a corner) plays until the game's
        # frame cap: say so instead of reporting its score as if the game had ended.
        print(
            f"warning: {stats.n_truncated} of {len(stats.returns)} episodes did not end but hit the env's time limit: "
            "the policy stalls (for Atari, max_episode_steps frames); --max-steps bounds an evaluation",
            file=sys.stderr,
        )
    return 0


def cmd_record(args: argparse.Namespace) -> int:
    result = record_video(
        args.run, args.out, env_id=args.env, n_episodes=args.episodes, max_steps=args.max_steps, fps=args.fps,
        deterministic=args.deterministic, seed=args.seed, device=args.device, best=args.best, modules=args.modules,
        **_robustness(args),
    )
    scores = ", ".join(f"{r:g}" for r in result.stats.returns) or "none finished"
    print(f"Wrote {result.path} ({result.n_frames} frames); episode scores: {scores}")
    return 0


def cmd_analyze(args: argparse.Namespace) -> int:
    settings = event_settings(  # bad options fail before the model loads
        args.events, args.window, args.surprise_threshold, args.perturb, args.at, args.length, args.perturb_level, args.ram
    )
    backend = {"backend": "sb3"} if args.ram else {}  # the C++ vector env does not expose the RAM
    model, env, run, env_id = load_for_env(
        args.run, args.env, n_envs=args.n_envs, seed=args.seed, device=args.device, best=args.best,
        **_robustness(args), **backend,
    )
    try:
        if args.ram:
            if not envs.is_atari_id(env_id):
                raise ValueError(f"--ram reads the Atari RAM; {env_id!r} is not an Atari game")
            env = RamRecorder(env, envs.normalize_game_id(env_id))
        if args.perturb is not None:
            env = apply_burst(env, args.perturb, settings.perturb_at, settings.perturb_length, args.perturb_level, seed=args.seed)
        if getattr(model.policy, "activation_recorder", False) is False:
            raise ValueError(f"{str(run.model_path)!r} has no BRIMs policy ({type(model.policy).__name__}): nothing to analyze")
        out_dir = Path(args.out) if args.out is not None else analysis_dir(run.model_path, run.run_dir)
        npz = run_analysis(
            model, env, args.episodes, out_dir, deterministic=args.deterministic, max_steps=args.max_steps, events=settings
        )
    finally:
        env.close()
    print(f"Wrote {npz} and TensorBoard events in {out_dir} (env {env_id})")
    if settings is not None:
        print(f"Event-aligned averages in {out_dir} (events.npz, events.csv, events_<kind>.png):")
        for line in summary_lines(out_dir / "events.npz"):
            print(f"  {line}")
    print(f"  View: tensorboard --logdir {quote(out_dir)}")
    return 0


def cmd_list_envs(args: argparse.Namespace) -> int:
    games = envs.list_atari_games()
    print(f"Atari games ({len(games)}; any spelling works: pong, Pong, PongNoFrameskip-v4, ALE/Pong-v5):")
    width = max(map(len, games)) + 2
    per_line = max(1, 88 // width)
    for start in range(0, len(games), per_line):
        print("  " + "".join(name.ljust(width) for name in games[start : start + per_line]).rstrip())
    print("\nBrimsRL memory tasks:")
    for task in (envs.CUE_MEMORY_ID, envs.MASKED_CARTPOLE_ID):
        print(f"  {task}")
    print("\nMinAtar games (10x10 grids; pip install 'brims-rl[minatar]'; -v0: all six actions):")
    print("  " + "  ".join(envs.MINATAR_IDS))
    print("\nAny other registered gymnasium id (e.g. CartPole-v1) works too.")
    return 0


# --------------------------------------------------------------------------- studies, tuning, reports

_STUDY_EXAMPLES = """\
examples:
  brims-rl study minatar.yaml --workers 2                      # SQLite in studies/<name>/, 2 processes
  brims-rl study minatar.yaml --storage postgresql://user:pw@dbhost/brims   # the same on every machine
  brims-rl report studies/minatar

SPEC.yaml:
  name: minatar
  algo: ppo                     # optional (ppo)
  envs: [MinAtar/Breakout-v1, {env: MinAtar/Breakout-v1, label: Breakout-flicker, set: {flicker: 0.3}}]
  policies: [brims, lstm, cnn]
  seeds: [0, 1]
  timesteps: 500000
  set: {eval_freq: 50000}       # optional: any key --set accepts
"""

_TUNE_EXAMPLES = """\
examples:
  brims-rl tune --env MinAtar/Breakout-v1 --policy brims --trials 20 --timesteps 200000
  brims-rl tune --env BrimsRL/CueMemory-v0 --policy lstm --trials 10 --space my_space.yaml
  brims-rl train --config studies/tune_ppo_brims_minatar-breakout-v1/best_config.yaml --env MinAtar/Breakout-v1 --policy brims
"""

_REPORT_EXAMPLES = """\
examples:
  brims-rl report studies/minatar
  brims-rl report --storage postgresql://user:pw@dbhost/brims --study-name minatar
"""


def _add_heartbeat_args(parser: argparse.ArgumentParser, unit: str) -> None:
    """``--heartbeat`` and ``--threads`` (1 per worker) of the commands that work on an Optuna study."""
    parser.add_argument(
        "--heartbeat", type=_int_at_least(1), default=HEARTBEAT_SECONDS, metavar="SECONDS",
        help=f"seconds between a worker's heartbeats; a {unit} whose worker misses {GRACE_HEARTBEATS} is run again "
        f"(default {HEARTBEAT_SECONDS}; give every machine the same)",
    )
    _add_threads_arg(parser, default_help="1 per worker")


def _add_study_commands(commands: Any, formatter: type) -> None:
    study = commands.add_parser(
        "study", help="train a grid of envs x policies x seeds, on one or many machines", epilog=_STUDY_EXAMPLES,
        formatter_class=formatter,
        description="Run a grid study (Optuna storage): every worker takes the next point nobody has taken; "
        "each point is an ordinary run folder under the study folder. Run the same command on more machines "
        "with the same --storage to share the grid.",
    )
    study.add_argument("spec", metavar="SPEC.yaml", help="the study: name, envs, policies, seeds, timesteps, [algo, config, set]")
    study.add_argument("--storage", default=None, metavar="URL",
                       help="Optuna storage URL (default: sqlite in the study folder); postgresql://... to share machines")
    study.add_argument("--workers", type=_int_at_least(1), default=1, metavar="N", help="worker processes on this machine")
    study.add_argument("--dir", default=None, help="the study folder (default studies/<name>)")
    _add_heartbeat_args(study, "point")
    study.set_defaults(handler=cmd_study, default_threads=1)

    tune = commands.add_parser(
        "tune", help="Optuna hyperparameter search; writes the best trial's config", epilog=_TUNE_EXAMPLES,
        formatter_class=formatter,
        description="Search hyperparameters with Optuna (TPE, median pruning on the periodic evaluations). "
        "Each trial is a run folder; the best trial's settings are written as a config for `train --config`.",
    )
    tune.add_argument("--env", required=True, help="env id or Atari game")
    tune.add_argument("--policy", choices=tuple(POLICIES), required=True, help="policy")
    tune.add_argument("--algo", choices=tuple(ALGOS), default="ppo", help="algorithm (default ppo)")
    tune.add_argument("--trials", type=_int_at_least(1), required=True, metavar="N",
                      help="finished trials the study holds in the end (over all workers and machines)")
    tune.add_argument("--space", default=None, metavar="FILE", help="YAML search space (default configs/tune_<algo>.yaml)")
    tune.add_argument("--storage", default=None, metavar="URL", help="Optuna storage URL (default: sqlite in the tune folder)")
    tune.add_argument("--study-name", default=None, metavar="NAME", help="default tune_<algo>_<policy>_<env>")
    tune.add_argument("--dir", default=None, help="folder of the trials' run folders and best_config.yaml (default studies/<name>)")
    tune.add_argument("--timesteps", type=_int_at_least(1), default=None, help="steps per trial")
    tune.add_argument("--config", default=None, help="YAML config file (default configs/<algo>.yaml)")
    tune.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                      help="fixed config override for every trial (repeatable)")
    tune.add_argument("--seed", type=_int_at_least(0), default=0, help="seed of the trials and of the sampler")
    _add_heartbeat_args(tune, "trial")
    tune.set_defaults(handler=cmd_tune, default_threads=1)

    report = commands.add_parser(
        "report", help="tables with confidence intervals, curves CSV and plots of a study", epilog=_REPORT_EXAMPLES,
        formatter_class=formatter,
        description="Write report.md (final score mean, IQM and 95% bootstrap intervals over seeds per env and "
        "policy), curves.csv and curves_<env>.png into <study>/report/.",
    )
    report.add_argument("study_dir", nargs="?", default=None, metavar="STUDY_DIR", help="the study folder")
    report.add_argument("--storage", default=None, metavar="URL", help="find the study folder through its storage")
    report.add_argument("--study-name", default=None, metavar="NAME", help="with --storage: the study")
    report.add_argument("--out", default=None, help="output folder (default <study>/report)")
    report.set_defaults(handler=cmd_report)


def cmd_study(args: argparse.Namespace) -> int:
    spec = StudySpec.load(args.spec)
    try:
        threads = args.threads or (None if "OMP_NUM_THREADS" in os.environ else 1)  # as --threads says
        outcome = run_study(spec, args.storage, Path(args.dir) if args.dir else None, workers=args.workers,
                            heartbeat=args.heartbeat, threads=threads)
    except TrainingInterrupted as stop:
        print(f"\nInterrupted; {stop.run_dir} keeps a checkpoint at {stop.num_timesteps} steps and its point is queued "
              "again: run the same command to continue", file=sys.stderr)
        return 128 + stop.signum
    status = outcome.status
    if outcome.nothing_to_do:
        print(f"study {spec.name}: all {status.total} points have already finished ({len(status.complete)} complete, "
              f"{len(status.failed)} failed); nothing to do")
    else:
        print(f"study {spec.name}: {status.line()}")
    for point, why in sorted(status.failed.items()):
        print(f"  failed: {point}: {why}", file=sys.stderr)
    print(f"  Report: brims-rl report {quote(outcome.study_dir)}")
    return outcome.exit_code


def cmd_tune(args: argparse.Namespace) -> int:
    settings = TuneSettings(
        env=args.env, policy=args.policy, algo=args.algo, trials=args.trials, timesteps=args.timesteps,
        overrides=tuple(args.overrides), config_file=args.config, seed=args.seed,
        space=load_space(args.space, args.policy) if args.space else None,
    )
    outcome = run_tune(settings, args.storage, args.study_name, Path(args.dir) if args.dir else None, heartbeat=args.heartbeat)
    if outcome.nothing_to_do:
        print(f"tune {outcome.study_name}: the study already holds {outcome.finished} finished trials; nothing to do")
    if outcome.best_config is None:
        print(f"tune {outcome.study_name}: no trial completed ({outcome.finished} pruned or failed); no config written",
              file=sys.stderr)
        return EXIT_FAILURE
    print(f"tune {outcome.study_name}: best trial {outcome.best_number}, last evaluation {outcome.best_value:.4g}; "
          f"config: {outcome.best_config}")
    print(f"  Train: brims-rl train --algo {args.algo} --config {quote(outcome.best_config)} --env {quote(args.env)} "
          f"--policy {args.policy}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    if (args.storage is None) == (args.study_dir is None) or (args.storage is not None) != (args.study_name is not None):
        raise UsageError("give a STUDY_DIR, or --storage URL with --study-name NAME")
    study_dir = Path(args.study_dir) if args.study_dir else grid_study_dir(args.storage, args.study_name)
    files = report_study(study_dir, Path(args.out) if args.out else None)
    print(files.markdown.read_text())
    print(f"Wrote {files.markdown}, {files.csv}" + "".join(f", {plot}" for plot in files.plots))
    return 0


# --------------------------------------------------------------------------- entry point


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the command line; returns the exit code (0 ok, 1 failure, 2 bad input, 130/143 interrupted)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    prefix = f"brims-rl {args.command}: error: "
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _raise_terminated) if main_thread else None
    try:
        _set_threads(args)
        return args.handler(args)
    except UsageError as error:
        print(prefix + str(error), file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError as error:
        if error.filename is not None:  # a file's pipe, not our stdout
            return _failed(prefix, error)
        sys.stdout = open(os.devnull, "w")  # `brims-rl ... | head`: the reader left; no traceback for that
        return 0
    except (ValueError, FileNotFoundError) as error:  # NotABrimsModelError is a ValueError
        if isinstance(error, FileNotFoundError) and error.errno is not None:
            return _failed(prefix, error)  # the OS's, not a path the user typed wrong
        print(prefix + str(error).strip(), file=sys.stderr)
        return EXIT_USAGE
    except (OSError, CommandFailed) as error:
        return _failed(prefix, error)
    except KeyboardInterrupt as stop:
        print("\ninterrupted", file=sys.stderr)
        return 128 + getattr(stop, "signum", signal.SIGINT)
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)


def _failed(prefix: str, error: Exception) -> int:
    """One line: the OS error with its path (a full or read-only disk), or why training failed."""
    lines = str(error).strip().splitlines()
    print(prefix + (lines[0] if lines else type(error).__name__), file=sys.stderr)
    return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
