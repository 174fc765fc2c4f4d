"""The training pipeline behind ``brims-rl train``: build, learn, checkpoint, resume.

The run folder's layout, lock and write rules live in :mod:`agents.run_folder`. Training
ends in one of four ways: done (``model.zip`` written); interrupted by Ctrl-C or SIGTERM
(:class:`TrainingInterrupted`, a checkpoint saved); diverged (:class:`TrainingDiverged`,
the last model with finite weights saved); or an ``OSError`` naming the path that could
not be written (the newest good checkpoint stays as it was).
"""

from __future__ import annotations

import copy
import json
import signal
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import torch
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback, CallbackList, EvalCallback
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper
from stable_baselines3.common.vec_env.base_vec_env import VecEnvStepReturn

import envs
from agents.config import TrainConfig
from agents.loading import load
from agents.registry import algorithm_class, policy_name
from agents.run_folder import (  # noqa: F401  (re-exported: public names of this module)
    BEST_MODEL_NAME,
    CHECKPOINT_DIR,
    CONFIG_NAME,
    EVALUATIONS_NAME,
    MODEL_NAME,
    MONITOR_NAME,
    TB_DIR,
    TB_LOG_NAME,
    atomic_save,
    atomic_write,
    checkpoint_path,
    find_run_dir,
    hold_run_dir,
    latest_checkpoint,
    new_run_dir,
    newest_model,
    os_error_at,
    resolve_resume,
    saved_num_timesteps,
)
from brims_rl.callbacks import ModuleActivationCallback, TopKWarmup
from brims_rl.policies import BrimsPolicy


class TrainingInterrupted(Exception):
    """Ctrl-C or SIGTERM during training; a checkpoint was saved at ``checkpoint``.

    ``signum`` is the signal that stopped it (``SIGINT`` for Ctrl-C).
    """

    def __init__(self, run_dir: Path, checkpoint: Path, num_timesteps: int, signum: int = signal.SIGINT) -> None:
        super().__init__(f"training interrupted at {num_timesteps} steps; checkpoint saved to {checkpoint}")
        self.run_dir = run_dir
        self.checkpoint = checkpoint
        self.num_timesteps = num_timesteps
        self.signum = signum


class TrainingDiverged(Exception):
    """The weights (or the logits) stopped being finite.

    Attributes:
        num_timesteps: the step count when it was found (the update after that step diverged).
        checkpoint: where the last model with finite weights was saved (None: there was none).
        checkpoint_steps: that model's step count.
    """

    def __init__(self, num_timesteps: int, checkpoint: Optional[Path] = None, checkpoint_steps: Optional[int] = None):
        saved = (
            f"the last good model (step {checkpoint_steps}) is saved to {checkpoint}"
            if checkpoint is not None
            else "no finite model was left to save"
        )
        super().__init__(f"training diverged after step {num_timesteps} (NaN or inf in the weights or logits); {saved}")
        self.num_timesteps = num_timesteps
        self.checkpoint = checkpoint
        self.checkpoint_steps = checkpoint_steps


@dataclass
class TrainResult:
    """What :func:`train` produced."""

    run_dir: Path
    model_path: Path
    num_timesteps: int  # in all, steps of earlier sessions of a resumed run included
    steps_trained: int  # in this session
    seconds: float  # of this session's learning

    @property
    def steps_per_second(self) -> float:
        return self.steps_trained / self.seconds if self.seconds > 0 else float("nan")


# --------------------------------------------------------------------------- env and monitor


class RawScoreMonitor(VecEnvWrapper):
    """Writes one row per finished episode to a CSV in SB3's ``Monitor`` format.

    SB3's ``VecMonitor`` builds episodes from the rewards and dones it sees, which on Atari
    are clipped and end at every life loss. This wrapper instead records the
    ``info["episode"]`` the env reports (raw game score at a real game over), so
    ``stable_baselines3.common.monitor.load_results(run_dir)`` reads true scores.

    Args:
        venv: the env to watch (observations, rewards and dones pass through untouched).
        filename: the CSV to write; None writes nothing (used for the evaluation env, so the
            training and evaluation envs are wrapped alike). An existing file is appended to
            (a resumed run), keeping its header and its time origin.
        resume_steps: the step count a resumed run restarts from. Games the stopped process
            finished after its last checkpoint were played by weights that no longer exist,
            and counting them would shift every later game's step: the rows whose running
            sum of lengths (the steps trained when the game ended, as readers compute it)
            exceeds ``resume_steps`` are dropped before appending.
    """

    def __init__(
        self, venv: VecEnv, filename: Optional[Union[str, Path]] = None, env_id: str = "", resume_steps: Optional[int] = None
    ) -> None:
        super().__init__(venv)
        self.filename = Path(filename) if filename is not None else None
        self.env_id = env_id
        self.resume_steps = resume_steps
        self._file = None
        self._t_start = time.time()

    def _open(self) -> None:
        """Open the CSV at the first reset, so building a run that then fails writes nothing."""
        path = self.filename
        if path.is_file() and path.stat().st_size > 0:
            with path.open() as existing:
                header = existing.readline()
            try:
                self._t_start = float(json.loads(header.lstrip("#"))["t_start"])
            except (ValueError, KeyError):
                pass
            if self.resume_steps is not None:
                self._drop_games_after(self.resume_steps)
            self._file = path.open("a")
        else:
            self._file = path.open("w")
            self._file.write("#" + json.dumps({"t_start": self._t_start, "env_id": self.env_id}) + "\n")
            self._file.write("r,l,t\n")
            self._file.flush()

    def _drop_games_after(self, steps: int) -> None:
        # A game ended at the running sum of the lengths up to it (agents.report.read_monitor's
        # steps): keep the games that ended at or before the checkpoint's step count.
        lines = self.filename.read_text().splitlines(keepends=True)
        kept, trained = lines[:2], 0.0
        for line in lines[2:]:
            try:
                trained += float(line.split(",")[1])
            except (IndexError, ValueError):
                continue  # a line cut by a crash
            if trained > steps:
                break
            kept.append(line if line.endswith("\n") else line + "\n")
        if len(kept) < len(lines):
            with atomic_write(self.filename) as tmp:
                tmp.write_text("".join(kept))

    def reset(self) -> Any:
        if self.filename is not None and self._file is None:
            try:
                self._open()
            except OSError as error:
                raise os_error_at(error, self.filename) from None
        return self.venv.reset()

    def step_wait(self) -> VecEnvStepReturn:
        obs, rewards, dones, infos = self.venv.step_wait()
        if self._file is not None and dones.any():
            rows = []
            for i in np.flatnonzero(dones).tolist():
                episode = infos[i].get("episode")
                if episode is not None:
                    rows.append(f"{episode['r']},{episode['l']},{round(time.time() - self._t_start, 6)}\n")
            if rows:
                try:
                    self._file.writelines(rows)
                    self._file.flush()
                except OSError as error:  # a full disk: say which file
                    raise os_error_at(error, self.filename) from None
        return obs, rewards, dones, infos

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        super().close()


def make_run_env(config: TrainConfig, n_envs: int, seed: int, **overrides: Any) -> VecEnv:
    """The env a run's config describes, with ``n_envs`` copies (``overrides`` win over the config)."""
    kwargs = config.env_kwargs()
    kwargs.pop("n_envs", None)
    kwargs.update(overrides)
    return envs.make_env(config.env_id, n_envs=n_envs, seed=seed, **kwargs)


# --------------------------------------------------------------------------- models


def build_model(config: TrainConfig, env: VecEnv, tensorboard_log: Optional[str] = None, verbose: int = 0) -> BaseAlgorithm:
    """A new model for ``config`` on ``env``."""
    cls = algorithm_class(config.algo, config.policy)
    model = cls(
        policy_name(config.policy, env.observation_space),
        env,
        seed=config.seed,
        device=config.device,
        tensorboard_log=tensorboard_log,
        verbose=verbose,
        **config.algorithm_kwargs(),
    )
    if not hasattr(model, "brims_rl_algorithm"):
        # Saved in the zip, so brims_rl.load knows which SB3 class wrote a baseline model.
        model.brims_rl_algorithm = cls.__name__
    return model


# --------------------------------------------------------------------------- callbacks


def nonfinite(model: BaseAlgorithm) -> bool:
    """Whether any weight of the policy, or any optimizer state, is NaN or inf.

    One host sync per device (optimizers keep some state, such as Adam's step, on the CPU)."""
    tensors = list(model.policy.parameters())
    for state in model.policy.optimizer.state.values():
        tensors += [value for value in state.values() if torch.is_tensor(value) and value.is_floating_point()]
    # A NaN wins max and min, an inf is one of them: two reductions, no tensor-sized temporaries
    # (5x faster than isfinite(t).all() on the Pong model's weights and Adam state).
    extremes: dict[torch.device, list[torch.Tensor]] = {}
    for tensor in tensors:
        if tensor.numel():
            extremes.setdefault(tensor.device, []).extend((tensor.amax().float(), tensor.amin().float()))
    return not all(bool(torch.isfinite(torch.stack(values)).all()) for values in extremes.values())


class DivergenceGuard(BaseCallback):
    """Keeps the last weights known to be finite, and stops training when they no longer are.

    At each rollout's end (before the update that might diverge) the policy's and the
    optimizer's state are checked, one host sync per rollout, nothing per step, and copied
    when finite. :meth:`restore_last_good` puts the copy back.
    """

    def __init__(self) -> None:
        super().__init__()
        self._good: Optional[tuple[int, dict[str, Any], dict[str, Any]]] = None

    def check(self) -> None:
        """Raise :class:`TrainingDiverged` if the model's weights are no longer finite."""
        if nonfinite(self.model):
            raise TrainingDiverged(self.model.num_timesteps)

    def _on_rollout_end(self) -> None:
        self.check()
        policy = self.model.policy
        state = {name: tensor.detach().clone() for name, tensor in policy.state_dict().items()}
        self._good = (self.model.num_timesteps, state, copy.deepcopy(policy.optimizer.state_dict()))

    def _on_training_end(self) -> None:
        self.check()  # the last update has no rollout after it

    def _on_step(self) -> bool:
        return True

    def restore_last_good(self) -> Optional[int]:
        """Load the last finite copy into the model; return its step count (None: no copy)."""
        if self._good is None:
            return None
        steps, state, optimizer_state = self._good
        self.model.policy.load_state_dict(state)
        self.model.policy.optimizer.load_state_dict(optimizer_state)
        self.model.num_timesteps = steps
        return steps


def _diverged(model: BaseAlgorithm, error: ValueError) -> bool:
    """A ValueError out of ``learn``: torch's distributions refusing NaN/inf logits (raised in
    the middle of an update, before any callback sees the weights), or any error once the
    weights are no longer finite."""
    return "found invalid values" in str(error) or nonfinite(model)


class AtomicCheckpointCallback(BaseCallback):
    """Saves ``checkpoints/model_<steps>_steps.zip`` every ``save_freq`` env steps (atomically).

    A model whose weights are no longer finite is not saved (:class:`TrainingDiverged`).
    """

    def __init__(self, run_dir: Path, save_freq: int, guard: Optional[DivergenceGuard] = None, verbose: int = 0) -> None:
        super().__init__(verbose)
        self.run_dir = run_dir
        self.save_freq = save_freq
        self.guard = guard
        self._last_saved_slot = 0

    def _on_training_start(self) -> None:
        # On a resumed run, count from where it stopped: no immediate duplicate checkpoint.
        self._last_saved_slot = self.num_timesteps // self.save_freq

    def _on_step(self) -> bool:
        slot = self.num_timesteps // self.save_freq
        if slot > self._last_saved_slot:
            self._last_saved_slot = slot
            if self.guard is not None:
                self.guard.check()
            path = atomic_save(self.model, checkpoint_path(self.run_dir, self.num_timesteps))
            if self.verbose:
                print(f"Saved checkpoint {path}")
        return True


class _SaveBest(BaseCallback):
    """EvalCallback's ``callback_on_new_best``: write ``best_model.zip`` atomically."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path

    def _on_step(self) -> bool:
        atomic_save(self.model, self.path)
        return True


class RunEvalCallback(EvalCallback):
    """SB3's ``EvalCallback`` on the run's own schedule, writing ``evaluations.npz`` and
    ``best_model.zip`` atomically.

    Evaluations happen when the run's step count crosses a multiple of ``eval_freq_steps``,
    so a run resumed at any step keeps the schedule it started with. Works with recurrent
    models: SB3's ``evaluate_policy`` carries their state and, on Atari, counts whole games
    with raw scores (the env reports itself Monitor-wrapped). A resumed run first reads back
    the evaluations already in the run folder, so the file keeps the whole history and the
    best model is only replaced by a better one. ``resume_steps``: the step count the run
    restarts from; evaluations after it (made by a stopped process after its last checkpoint,
    with weights that no longer exist) are dropped, as :class:`RawScoreMonitor` drops games,
    so the steps evaluated again are not listed twice.
    """

    def __init__(
        self,
        eval_env: VecEnv,
        run_dir: Path,
        eval_freq_steps: int,
        n_eval_episodes: int,
        verbose: int = 0,
        callback_after_eval: Optional[BaseCallback] = None,
        resume_steps: int = 0,
    ):
        # eval_freq=1: SB3 evaluates whenever _on_step lets it; the schedule is ours.
        super().__init__(
            eval_env,
            callback_on_new_best=_SaveBest(run_dir / BEST_MODEL_NAME),
            callback_after_eval=callback_after_eval,
            n_eval_episodes=n_eval_episodes,
            eval_freq=1,
            deterministic=True,
            verbose=verbose,
        )
        self.run_dir = run_dir
        self.eval_freq_steps = eval_freq_steps
        self._last_slot = 0
        self.log_path = str(run_dir / EVALUATIONS_NAME)  # each evaluation points it at a temp file
        previous = run_dir / EVALUATIONS_NAME
        if previous.is_file():
            with np.load(previous) as data:
                kept = data["timesteps"] <= resume_steps
                self.evaluations_timesteps = data["timesteps"][kept].tolist()
                self.evaluations_results = data["results"][kept].tolist()
                self.evaluations_length = data["ep_lengths"][kept].tolist()
            if self.evaluations_results:
                self.best_mean_reward = float(max(np.mean(r) for r in self.evaluations_results))

    def _on_training_start(self) -> None:
        self._last_slot = self.num_timesteps // self.eval_freq_steps

    def _on_step(self) -> bool:
        slot = self.num_timesteps // self.eval_freq_steps
        if slot <= self._last_slot:
            return True
        self._last_slot = slot
        # Evaluation games must not reach the activation recorder: they are not rollout steps
        # (and their batch size differs from the training envs').
        policy = self.model.policy
        with policy.recording(None) if isinstance(policy, BrimsPolicy) else nullcontext():
            with atomic_write(self.run_dir / EVALUATIONS_NAME) as tmp:
                self.log_path = str(tmp)  # SB3's np.savez writes here (the name ends with .npz)
                return super()._on_step()


def _activation_callback(config: TrainConfig) -> Optional[BaseCallback]:
    """The BRIMs module-activation logger, when the policy is BRIMs and the interval > 0."""
    interval = config.hyperparams.get("activation_log_interval", 0)
    if config.policy != "brims" or not interval:
        return None
    return ModuleActivationCallback(log_interval=interval)


def build_callbacks(
    config: TrainConfig,
    run_dir: Path,
    eval_seed: int,
    after_evaluation: Optional[BaseCallback] = None,
    resume_steps: int = 0,
) -> tuple[list[BaseCallback], list[VecEnv]]:
    """The divergence guard (first), checkpoint, evaluation and activation callbacks of a run,
    and the envs they opened. ``after_evaluation`` runs after each evaluation (SB3's
    ``callback_after_eval``: its ``parent.last_mean_reward`` is the score; False stops training)."""
    settings = config.run_settings()
    opened: list[VecEnv] = []
    guard = DivergenceGuard()
    callbacks: list[BaseCallback] = [guard]
    if settings.get("checkpoint_freq", 0) > 0:
        callbacks.append(AtomicCheckpointCallback(run_dir, settings["checkpoint_freq"], guard))
    if settings.get("eval_freq", 0) > 0:
        eval_env = RawScoreMonitor(make_run_env(config, n_envs=settings.get("n_eval_envs", 1), seed=eval_seed))
        opened.append(eval_env)
        callbacks.append(
            RunEvalCallback(
                eval_env, run_dir, settings["eval_freq"], settings.get("eval_episodes", 5), verbose=1,
                callback_after_eval=after_evaluation, resume_steps=resume_steps,
            )
        )
    activation = _activation_callback(config)
    if activation is not None:
        callbacks.append(activation)
    warmup = settings.get("top_k_warmup_steps", 0)
    if config.policy == "brims" and warmup > 0:
        callbacks.append(TopKWarmup(warmup))
    return callbacks, opened


# --------------------------------------------------------------------------- the pipeline


def train(
    config: TrainConfig,
    run_dir: Union[str, Path],
    resume_from: Optional[Union[str, Path]] = None,
    progress_bar: bool = True,
    verbose: int = 0,
    after_evaluation: Optional[BaseCallback] = None,
) -> TrainResult:
    """Train ``config`` into ``run_dir`` (layout: :mod:`agents.run_folder`), holding its lock.

    Args:
        config: the resolved, validated config (saved as ``config.yaml``).
        run_dir: the run folder (created if missing; a new run's folder must be empty).
        resume_from: continue this run from a model zip of it, or from the run folder itself
            (its newest model; a folder with none yet starts again at step 0):
            ``num_timesteps``, the learning-rate and clip schedules, the evaluation schedule
            and the TensorBoard curves continue; training stops at ``total_timesteps`` in all.
            A run already at its target writes nothing.
        progress_bar: SB3's progress bar.
        verbose: SB3 verbosity of the model (1 prints the training tables).
        after_evaluation: a callback run after each periodic evaluation (see
            :func:`build_callbacks`); when it returns False training stops there and the model
            is saved as for a finished run (``brims-rl tune`` prunes trials this way).

    Raises:
        TrainingInterrupted: Ctrl-C (or a signal the caller turned into ``KeyboardInterrupt``),
            after saving a checkpoint.
        TrainingDiverged: after saving the last model with finite weights.
        RunFolderError: another process trains in ``run_dir``, or a new run's folder is not empty.
        ValueError: ``total_timesteps`` is below the steps the resumed model has trained.
        OSError: a file could not be written (the error names it).
    """
    run_dir = Path(run_dir)
    total = config.hyperparams["total_timesteps"]
    n_envs = config.hyperparams.get("n_envs", 1)
    with hold_run_dir(run_dir, new=resume_from is None):
        if resume_from is not None and Path(resume_from).is_dir():
            resume_from = newest_model(run_dir)  # read under the lock: nobody is writing it now
        start_steps = saved_num_timesteps(Path(resume_from)) if resume_from is not None else 0
        if total < start_steps:
            raise ValueError(
                f"the target of {total} steps (total_timesteps, --timesteps) is below the {start_steps} steps "
                f"{str(resume_from)!r} has trained; give at least {start_steps}"
            )
        if resume_from is not None and total == start_steps:
            return TrainResult(run_dir, Path(resume_from), start_steps, 0, 0.0)

        # A resumed run gets fresh env seeds, so it does not replay the first run's games.
        seed = config.seed + start_steps
        env = RawScoreMonitor(
            make_run_env(config, n_envs=n_envs, seed=seed), run_dir / MONITOR_NAME, config.env_id, resume_steps=start_steps
        )
        opened: list[VecEnv] = [env]
        try:
            tb_dir = str(run_dir / TB_DIR)
            if resume_from is None:
                model = build_model(config, env, tensorboard_log=tb_dir, verbose=verbose)
            else:
                model = load(resume_from, env=env, device=config.device)
                model.tensorboard_log = tb_dir  # the run folder may have moved since
                model.verbose = verbose
            if config.hyperparams.get("compile_core"):
                model.policy.compile_cores()
            config.save(run_dir / CONFIG_NAME)
            callbacks, eval_envs = build_callbacks(
                config, run_dir, eval_seed=seed + 10_000, after_evaluation=after_evaluation, resume_steps=start_steps
            )
            opened += eval_envs
            # A run restarted from step 0 continues its TensorBoard run too.
            fresh = resume_from is None and not (run_dir / TB_DIR / f"{TB_LOG_NAME}_1").exists()
            started = time.time()
            _learn(model, config, callbacks, run_dir, reset_num_timesteps=fresh, progress_bar=progress_bar)
            seconds = time.time() - started
            model_path = atomic_save(model, run_dir / MODEL_NAME)
            return TrainResult(run_dir, model_path, model.num_timesteps, model.num_timesteps - start_steps, seconds)
        finally:
            for venv in opened:
                venv.close()


def _learn(
    model: BaseAlgorithm,
    config: TrainConfig,
    callbacks: list[BaseCallback],
    run_dir: Path,
    reset_num_timesteps: bool,
    progress_bar: bool,
) -> None:
    """``model.learn`` up to the config's total; every way it can stop early saves what it can."""
    guard = callbacks[0]
    assert isinstance(guard, DivergenceGuard)
    try:
        model.learn(
            config.hyperparams["total_timesteps"] - model.num_timesteps,
            callback=CallbackList(callbacks),
            log_interval=config.hyperparams.get("log_interval", 1),
            tb_log_name=TB_LOG_NAME,
            reset_num_timesteps=reset_num_timesteps,
            progress_bar=progress_bar,
        )
    except KeyboardInterrupt as stop:
        checkpoint = atomic_save(model, checkpoint_path(run_dir, model.num_timesteps))
        signum = getattr(stop, "signum", signal.SIGINT)
        raise TrainingInterrupted(run_dir, checkpoint, model.num_timesteps, signum) from None
    except (TrainingDiverged, ValueError) as error:
        if isinstance(error, ValueError) and not _diverged(model, error):
            raise
        found_at = model.num_timesteps
        good_steps = guard.restore_last_good()
        checkpoint = atomic_save(model, checkpoint_path(run_dir, good_steps)) if good_steps is not None else None
        raise TrainingDiverged(found_at, checkpoint, good_steps) from None
    except OSError as error:  # e.g. TensorBoard's writer on a full disk: name the run at least
        raise os_error_at(error, run_dir) from None
