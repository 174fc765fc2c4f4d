"""The ``brims-rl`` command line: train, eval, record, analyze, list-envs.

Heavy imports (torch, SB3, ale-py) happen inside the commands, so ``--help`` and argument
errors answer at once. Bad input (unknown env, bad config key or value, missing run, a
zip that is not a model of ours) ends with a one-line message on stderr and exit code 2;
Ctrl-C during training saves a checkpoint and exits with 130.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

_TRAIN_EXAMPLES = """\
examples:
  brims-rl train                                   # quickstart: a short BRIMs-PPO run on Pong
  brims-rl train --env PongNoFrameskip-v4 --policy brims --timesteps 2000000
  brims-rl train --algo a2c --policy lstm --env breakout --n-envs 16
  brims-rl train --env BrimsRL/CueMemory-v0 --set policy_kwargs.top_k=2 --set n_steps=64
  brims-rl train --resume runs/ppo_brims_pong_20260101-120000      # continue after Ctrl-C
  brims-rl train --resume runs/ppo_brims_pong_20260101-120000 --timesteps 5000000  # train longer

config resolution (later wins): <config>.atari (or .default) < <config>.<game or env id>
  < quickstart (no --env only) < --set key=value < --timesteps / --n-envs
"""

_EVAL_EXAMPLES = """\
examples:
  brims-rl eval runs/ppo_brims_pong_20260101-120000 --episodes 10
  brims-rl eval runs/ppo_brims_pong_20260101-120000 --noise 20 --flicker 0.3
  brims-rl eval runs/ppo_brims_pong_20260101-120000/checkpoints/model_50000_steps.zip --stochastic
  brims-rl eval model.zip --env PongNoFrameskip-v4 --episodes 3 --n-envs 3
"""

_RECORD_EXAMPLES = """\
examples:
  brims-rl record runs/ppo_brims_pong_20260101-120000 --out pong.mp4
  brims-rl record runs/ppo_brims_pong_20260101-120000 --out pong.gif --max-steps 500 --fps 15
"""

_ANALYZE_EXAMPLES = """\
examples:
  brims-rl analyze runs/ppo_brims_pong_20260101-120000 --episodes 2
  brims-rl analyze runs/ppo_brims_pong_20260101-120000 --out analysis/pong --flicker 0.5
  tensorboard --logdir runs/ppo_brims_pong_20260101-120000/analysis
"""

_LIST_EXAMPLES = """\
examples:
  brims-rl list-envs
"""


class UsageError(Exception):
    """A bad command line the parser itself cannot see (conflicting options)."""


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


def _device(text: str) -> str:
    """``auto`` or anything ``torch.device`` accepts (``cpu``, ``cuda``, ``cuda:1``, ``mps``)."""
    if text == "auto":
        return text
    import torch

    try:
        torch.device(text)
    except RuntimeError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a torch device; use auto, cpu, cuda, cuda:N or mps") from None
    return text


def _add_threads_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--threads", type=_int_at_least(1), default=None,
        help="torch CPU threads (default: torch's own, one per core, fastest on a machine of your own); "
        "on a machine other jobs keep busy, use fewer (e.g. 1): torch's threads spin-wait, and "
        "oversubscribed cores slow it down many times over",
    )


def _add_model_args(parser: argparse.ArgumentParser, episodes_default: int) -> None:
    """Options every command that plays a trained model shares."""
    _add_threads_arg(parser)
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
    from brims_rl import __version__

    parser.add_argument("--version", action="version", version=f"brims-rl {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="command")
    commands.required = True
    formatter = argparse.RawDescriptionHelpFormatter

    train = commands.add_parser(
        "train", help="train an agent into a run folder", epilog=_TRAIN_EXAMPLES, formatter_class=formatter,
        description="Train an agent. Without arguments: the quickstart run (BRIMs-PPO on Pong, a few minutes).",
    )
    train.add_argument("--algo", choices=("ppo", "a2c"), default=None, help="algorithm (default ppo)")
    train.add_argument("--policy", choices=("brims", "lstm", "cnn"), default=None, help="policy (default brims)")
    train.add_argument("--env", default=None, help="env id or Atari game, e.g. PongNoFrameskip-v4 (default: quickstart)")
    train.add_argument("--config", default=None, help="YAML config file (default: configs/<algo>.yaml)")
    train.add_argument("--timesteps", type=_int_at_least(1), default=None, help="total env steps (over all envs)")
    train.add_argument("--n-envs", type=_int_at_least(1), default=None, help="parallel envs")
    train.add_argument("--seed", type=_int_at_least(0), default=None, help="random seed (default 0)")
    train.add_argument("--device", type=_device, default=None, help="torch device: auto (default), cpu, cuda, ...")
    train.add_argument("--run-dir", default=None, help="folder the run folder is created in (default runs/)")
    train.add_argument("--name", default=None, help="run folder name (default <algo>_<policy>_<env>_<time>)")
    train.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override a config key (repeatable; dotted keys reach into policy_kwargs)",
    )
    train.add_argument("--resume", default=None, metavar="RUN_DIR_OR_ZIP", help="continue a run from its latest checkpoint")
    train.add_argument("--no-progress-bar", dest="progress_bar", action="store_false", help="hide the progress bar")
    train.add_argument("--verbose", type=int, choices=(0, 1), default=0, help="1 prints SB3's training tables")
    _add_threads_arg(train)
    train.set_defaults(handler=cmd_train)

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
    analyze.set_defaults(handler=cmd_analyze)

    list_envs = commands.add_parser(
        "list-envs", help="list the Atari games and BrimsRL tasks", epilog=_LIST_EXAMPLES, formatter_class=formatter,
        description="List the environments brims-rl knows by name.",
    )
    list_envs.set_defaults(handler=cmd_list_envs)
    return parser


# --------------------------------------------------------------------------- commands


def cmd_train(args: argparse.Namespace) -> int:
    from agents.config import TrainConfig, resolve_config
    from agents.train import CONFIG_NAME, TrainingInterrupted, new_run_dir, resolve_resume, train

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
        run_dir, resume_from = resolve_resume(args.resume)
        config = TrainConfig.load(run_dir / CONFIG_NAME)
        if args.timesteps is not None:
            config.hyperparams["total_timesteps"] = args.timesteps
        if args.device is not None:
            config.device = args.device
        print(f"Resuming {run_dir} from {resume_from}")
    else:
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
        root = args.run_dir or "runs"
        run_dir = Path(root) / args.name if args.name else new_run_dir(config, root)
        if run_dir.exists() and any(run_dir.iterdir()):
            raise UsageError(f"run folder {str(run_dir)!r} already exists and is not empty; pick another --name")
        resume_from = None
        print(f"Training {config.algo}/{config.policy} on {config.env_id} for "
              f"{config.hyperparams['total_timesteps']} steps into {run_dir}")
    try:
        result = train(config, run_dir, resume_from=resume_from, progress_bar=args.progress_bar, verbose=args.verbose)
    except TrainingInterrupted as stop:
        print(f"\nInterrupted at {stop.num_timesteps} steps; checkpoint saved to {stop.checkpoint}", file=sys.stderr)
        print(f"resume with: brims-rl train --resume {stop.run_dir}", file=sys.stderr)
        return EXIT_INTERRUPTED
    if result.steps_trained > 0:
        print(f"Done: {result.num_timesteps} steps ({result.steps_trained} in {result.seconds:.0f} s, "
              f"{result.steps_per_second:.0f} steps/s). Model: {result.model_path}")
    else:
        print(f"Nothing to train: the run is at {result.num_timesteps} steps, its target is "
              f"{config.hyperparams['total_timesteps']} (raise it with --timesteps). Model: {result.model_path}")
    print(f"  TensorBoard: tensorboard --logdir {run_dir / 'tb'}")
    print(f"  Evaluate:    brims-rl eval {run_dir} --episodes 5")
    print(f"  Video:       brims-rl record {run_dir} --out {run_dir / 'video.mp4'}")
    if config.policy == "brims":
        print(f"  Modules:     brims-rl analyze {run_dir} --episodes 1")
    return 0


def _robustness(args: argparse.Namespace) -> dict[str, Any]:
    return dict(noise=args.noise, flicker=args.flicker, occlusion=args.occlusion)


def cmd_eval(args: argparse.Namespace) -> int:
    from agents.evaluate import evaluate

    result = evaluate(
        args.run, env_id=args.env, n_episodes=args.episodes, deterministic=args.deterministic, n_envs=args.n_envs,
        seed=args.seed, device=args.device, max_steps=args.max_steps, best=args.best, **_robustness(args),
    )
    stats = result.stats
    print(f"Model {result.model_path} on {result.env_id}")
    for i, (score, length) in enumerate(zip(stats.returns, stats.lengths), start=1):
        print(f"episode {i}: score {score:g}, length {length}")
    if not stats.returns:
        print(f"no episode finished within --max-steps {args.max_steps}", file=sys.stderr)
        return 1
    print(f"mean score: {stats.mean:.2f} +/- {stats.std:.2f} over {len(stats.returns)} episodes")
    return 0


def cmd_record(args: argparse.Namespace) -> int:
    from agents.record import record_video

    result = record_video(
        args.run, args.out, env_id=args.env, n_episodes=args.episodes, max_steps=args.max_steps, fps=args.fps,
        deterministic=args.deterministic, seed=args.seed, device=args.device, best=args.best, **_robustness(args),
    )
    scores = ", ".join(f"{r:g}" for r in result.stats.returns) or "none finished"
    print(f"Wrote {result.path} ({result.n_frames} frames); episode scores: {scores}")
    return 0


def cmd_analyze(args: argparse.Namespace) -> int:
    from agents.analyze import run_analysis
    from agents.evaluate import load_for_env

    model, env, run, env_id = load_for_env(
        args.run, args.env, n_envs=args.n_envs, seed=args.seed, device=args.device, best=args.best, **_robustness(args)
    )
    try:
        if getattr(model.policy, "activation_recorder", False) is False:
            raise ValueError(f"{str(run.model_path)!r} has no BRIMs policy ({type(model.policy).__name__}): nothing to analyze")
        if args.out is not None:
            out_dir = Path(args.out)
        elif run.run_dir is not None:
            out_dir = run.run_dir / "analysis"
        else:
            out_dir = run.model_path.with_name(f"analysis_{run.model_path.stem}")
        npz = run_analysis(model, env, args.episodes, out_dir, deterministic=args.deterministic, max_steps=args.max_steps)
    finally:
        env.close()
    print(f"Wrote {npz} and TensorBoard events in {out_dir} (env {env_id})")
    print(f"  View: tensorboard --logdir {out_dir}")
    return 0


def cmd_list_envs(args: argparse.Namespace) -> int:
    import envs

    games = envs.list_atari_games()
    print(f"Atari games ({len(games)}; any spelling works: pong, Pong, PongNoFrameskip-v4, ALE/Pong-v5):")
    width = max(map(len, games)) + 2
    per_line = max(1, 88 // width)
    for start in range(0, len(games), per_line):
        print("  " + "".join(name.ljust(width) for name in games[start : start + per_line]).rstrip())
    print("\nBrimsRL memory tasks:")
    for task in (envs.CUE_MEMORY_ID, envs.MASKED_CARTPOLE_ID):
        print(f"  {task}")
    print("\nAny other registered gymnasium id (e.g. CartPole-v1) works too.")
    return 0


# --------------------------------------------------------------------------- entry point


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the command line; returns the exit code (0 ok, 2 bad input, 130 interrupted)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    prefix = f"brims-rl {args.command}: error: "
    if getattr(args, "threads", None):
        import torch

        torch.set_num_threads(args.threads)
    try:
        return args.handler(args)
    except UsageError as error:
        print(prefix + str(error), file=sys.stderr)
        return EXIT_USAGE
    except (ValueError, FileNotFoundError) as error:  # NotABrimsModelError is a ValueError
        print(prefix + str(error).strip(), file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `brims-rl ... | head`: the reader left; no traceback for that
        sys.stdout = open(os.devnull, "w")
        return 0


if __name__ == "__main__":
    sys.exit(main())
