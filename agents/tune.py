"""Hyperparameter search on Optuna: ``brims-rl tune --env E --policy P --trials N [--space FILE] ...``.

Each trial samples a point of a YAML search space (``configs/tune_<algo>.yaml`` has one per
policy), trains it into an ordinary run folder ``<tune dir>/trials/trial_<n>`` with
:func:`agents.train.train`, reports every periodic evaluation's mean score to Optuna and is
pruned (``MedianPruner``) when it falls behind the trials before it; its value is its last
evaluation's mean score. The best trial's resolved hyperparameters are written as a config
file that ``brims-rl train --config`` accepts. Trials of one study run on any number of
machines that share ``--storage``; ``--trials N`` counts the study's finished trials in all.

Search space format: ``<key>: <distribution>``, keys as ``--set`` takes them
(``learning_rate``, ``policy_kwargs.top_k``), one of

* ``{type: float, low: 1.0e-4, high: 1.0e-3, log: true}`` (``step`` optional),
* ``{type: int, low: 2, high: 6}`` (``step``, ``log`` optional),
* ``{type: categorical, choices: [64, 128, 256]}``,

either flat or under one section per policy (``brims:``, ``lstm:``, ``cnn:``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Sequence, Union

import numpy as np
import yaml
from stable_baselines3.common.callbacks import BaseCallback

from agents.config import TrainConfig, resolve_config
from agents.config_files import CONFIG_DIR
from agents.registry import POLICIES
from agents.report import slug
from agents.run_folder import CONFIG_NAME, EVALUATIONS_NAME, atomic_write
from agents.study import StudyError, default_storage, hide_password, open_storage, quiet_experimental, read_yaml, set_string
from agents.train import TrainingDiverged, train

if TYPE_CHECKING:
    import optuna

DISTRIBUTION_KEYS = {
    "float": ({"type", "low", "high"}, {"log", "step"}),
    "int": ({"type", "low", "high"}, {"log", "step"}),
    "categorical": ({"type", "choices"}, set()),
}
BEST_CONFIG_NAME = "best_config.yaml"
TRIALS_DIR = "trials"


def default_space_file(algo: str) -> Path:
    return CONFIG_DIR / f"tune_{algo}.yaml"


def load_space(path: Union[str, Path], policy: str) -> dict[str, dict[str, Any]]:
    """The search space for ``policy`` in ``path`` (its policy section, or the whole file if flat).

    Raises:
        StudyError: not a mapping, a missing policy section, an unknown distribution or key.
    """
    where = f"search space {str(path)!r}"
    raw = read_yaml(Path(path), where)
    if not isinstance(raw, dict) or not raw:
        raise StudyError(f"{where}: expected a mapping of config keys to distributions")
    if set(raw) & set(POLICIES):
        if policy not in raw:
            raise StudyError(f"{where}: no section for policy {policy!r} (it has {', '.join(sorted(raw))})")
        raw = raw[policy]
        if not isinstance(raw, dict) or not raw:
            raise StudyError(f"{where}: section {policy!r} must map config keys to distributions")
    for key, spec in raw.items():
        kind = spec.get("type") if isinstance(spec, dict) else None
        if kind not in DISTRIBUTION_KEYS:
            raise StudyError(f"{where}: {key}: expected {{type: float|int|categorical, ...}}, got {spec!r}")
        required, optional = DISTRIBUTION_KEYS[kind]
        missing, unknown = required - set(spec), set(spec) - required - optional
        if missing or unknown:
            raise StudyError(
                f"{where}: {key}: a {kind} distribution takes {', '.join(sorted(required | optional))}"
                + (f"; missing {sorted(missing)}" if missing else "") + (f"; unknown {sorted(unknown)}" if unknown else "")
            )
        if kind == "categorical" and (not isinstance(spec["choices"], list) or not spec["choices"]):
            raise StudyError(f"{where}: {key}: choices must be a non-empty list")
    return raw


def suggest(trial: "optuna.Trial", space: dict[str, dict[str, Any]]) -> list[str]:
    """Sample every key of ``space`` for ``trial``; return them as ``--set`` strings."""
    overrides = []
    for key, spec in space.items():
        kind = spec["type"]
        if kind == "float":
            value: Any = trial.suggest_float(key, float(spec["low"]), float(spec["high"]), log=spec.get("log", False),
                                             step=spec.get("step"))
        elif kind == "int":
            value = trial.suggest_int(key, int(spec["low"]), int(spec["high"]), log=spec.get("log", False),
                                      step=spec.get("step", 1))
        else:
            value = trial.suggest_categorical(key, spec["choices"])
        overrides.append(set_string(key, value))
    return overrides


def _extreme_overrides(space: dict[str, dict[str, Any]], end: str) -> list[str]:
    """Every key at its low (or high) end: what :func:`check_space` resolves before any trial runs."""
    values = {}
    for key, spec in space.items():
        if spec["type"] == "categorical":
            values[key] = spec["choices"][0 if end == "low" else -1]
        else:
            values[key] = spec[end]
    return [set_string(key, value) for key, value in values.items()]


@dataclass
class TuneSettings:
    """What a tune study is: its env, policy, algorithm, space and the fixed settings of every trial."""

    env: str
    policy: str
    algo: str
    trials: int
    timesteps: Optional[int] = None
    overrides: tuple[str, ...] = ()
    config_file: Optional[str] = None
    seed: int = 0
    space: Optional[dict[str, dict[str, Any]]] = None

    def config(self, sampled: Sequence[str] = ()) -> TrainConfig:
        return resolve_config(
            self.algo, policy=self.policy, env_id=self.env, config_file=self.config_file,
            overrides=[*self.overrides, *sampled], seed=self.seed, total_timesteps=self.timesteps,
        )

    def identity(self) -> dict[str, Any]:
        """What must match for a worker to join an existing tune study."""
        return dict(env=self.env, policy=self.policy, algo=self.algo, timesteps=self.timesteps,
                    overrides=list(self.overrides), config=self.config_file, space=self.space)


def check_settings(settings: TuneSettings) -> TrainConfig:
    """Resolve the trial config at both ends of the space; trials must be evaluated before their end.

    Raises:
        StudyError: a bad env, policy, key or value, or no evaluation within a trial.
    """
    try:
        for end in ("low", "high"):
            config = settings.config(_extreme_overrides(settings.space or {}, end))
    except (ValueError, FileNotFoundError) as error:
        raise StudyError(str(error)) from None
    eval_freq = config.hyperparams.get("eval_freq", 0)
    total = config.hyperparams["total_timesteps"]
    if not eval_freq or eval_freq > total:
        raise StudyError(
            f"tune scores trials by their periodic evaluations: eval_freq ({eval_freq}) must be between 1 and the "
            f"trial budget ({total} steps); pass --set eval_freq=N or a larger --timesteps"
        )
    return config


def _last_evaluation(run_dir: Path) -> float:
    with np.load(run_dir / EVALUATIONS_NAME) as data:
        return float(np.mean(data["results"][-1]))


def _pruning_callback(trial: "optuna.Trial"):
    """An SB3 callback run after each evaluation: report it, stop training when Optuna prunes."""
    class ReportEvaluation(BaseCallback):
        pruned = False

        def _on_step(self) -> bool:
            trial.report(float(self.parent.last_mean_reward), self.num_timesteps)
            self.pruned = trial.should_prune()
            return not self.pruned

    return ReportEvaluation()


@dataclass
class TuneOutcome:
    study_name: str
    tune_dir: Path
    storage: str
    finished: int
    best_config: Optional[Path]
    best_value: Optional[float]
    best_number: Optional[int]
    nothing_to_do: bool


def open_tune_study(storage: Any, name: str, settings: TuneSettings) -> "optuna.Study":
    import optuna

    try:
        study = optuna.create_study(
            storage=storage, study_name=name, direction="maximize",
            sampler=optuna.samplers.TPESampler(seed=settings.seed),
            pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0),
        )
        study.set_user_attr("kind", "tune")
        study.set_user_attr("settings", settings.identity())
        return study
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(
            study_name=name, storage=storage, sampler=optuna.samplers.TPESampler(seed=settings.seed),
            pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0),
        )
    kind, stored = study.user_attrs.get("kind"), study.user_attrs.get("settings")
    if kind != "tune":
        raise StudyError(f"study {name!r} in {hide_password(storage.url)} is not a tune study; pick another --study-name")
    if stored != settings.identity():
        changed = sorted(k for k in settings.identity() if stored.get(k) != settings.identity()[k])
        raise StudyError(f"study {name!r} in {hide_password(storage.url)} exists with other settings ({', '.join(changed)} "
                         "differ); pick another --study-name")
    return study


def run_tune(
    settings: TuneSettings,
    storage_url: Optional[str] = None,
    study_name: Optional[str] = None,
    tune_dir: Optional[Path] = None,
    heartbeat: int = 30,
    log=print,
) -> TuneOutcome:
    """Run trials until the study holds ``settings.trials`` finished ones; write the best config."""
    import optuna
    from optuna.trial import TrialState

    if settings.space is None:
        settings.space = load_space(default_space_file(settings.algo), settings.policy)
    check_settings(settings)
    name = study_name or f"tune_{settings.algo}_{settings.policy}_{slug(settings.env)}"
    tune_dir = Path(tune_dir or Path("studies") / name)
    if storage_url is None:
        tune_dir.mkdir(parents=True, exist_ok=True)
    url = storage_url or default_storage(tune_dir)
    storage = open_storage(url, heartbeat)
    study = open_tune_study(storage, name, settings)
    counted = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
    done = len(study.get_trials(deepcopy=False, states=counted))
    left = settings.trials - done
    if left > 0:
        log(f"tune {name}: {done} of {settings.trials} trials finished; storage {hide_password(url)}; folder {tune_dir}")

        class InvalidTrial(Exception):
            """A sampled combination the config refuses (e.g. a batch size the rollout cannot split)."""

        def objective(trial: optuna.Trial) -> float:
            sampled = suggest(trial, settings.space)
            try:
                config = settings.config(sampled)
            except ValueError as error:
                trial.set_user_attr("error", str(error))
                raise InvalidTrial(str(error)) from None
            run_dir = tune_dir / TRIALS_DIR / f"trial_{trial.number:04d}"
            trial.set_user_attr("run_dir", str(run_dir.absolute()))
            log(f"trial {trial.number}: {' '.join(sampled)}")
            callback = _pruning_callback(trial)
            train(config, run_dir, progress_bar=False, after_evaluation=callback)
            if callback.pruned:
                log(f"trial {trial.number}: pruned at {callback.num_timesteps} steps")
                raise optuna.TrialPruned()
            value = _last_evaluation(run_dir)
            log(f"trial {trial.number}: last evaluation {value:.3g}")
            return value

        with quiet_experimental():  # Optuna's heartbeats warn at every trial
            study.optimize(
                objective, n_trials=left, catch=(InvalidTrial, TrainingDiverged),
                callbacks=[optuna.study.MaxTrialsCallback(settings.trials, states=counted)],
            )
    finished = len(study.get_trials(deepcopy=False, states=counted))
    best = write_best_config(study, settings, tune_dir / BEST_CONFIG_NAME)
    return TuneOutcome(
        name, tune_dir, hide_password(url), finished, best,
        study.best_value if best else None, study.best_trial.number if best else None, left <= 0,
    )


def write_best_config(study: "optuna.Study", settings: TuneSettings, path: Path) -> Optional[Path]:
    """The best complete trial's resolved hyperparameters as a config file for ``train --config``
    (one section for the env, one block for the policy); None when no trial completed."""
    from optuna.trial import TrialState

    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        return None
    best = study.best_trial
    config = TrainConfig.load(Path(best.user_attrs["run_dir"]) / CONFIG_NAME)
    header = (
        f"# brims-rl tune: the best of {len(study.trials)} trials of study {study.study_name!r}: trial {best.number}, "
        f"last evaluation {best.value:.4g}.\n"
        f"# Its sampled values: {', '.join(f'{k}={v}' for k, v in best.params.items())}.\n"
        f"# Train with: brims-rl train --algo {settings.algo} --config {path.name} --env {settings.env} "
        f"--policy {settings.policy} --timesteps N\n"
    )
    body = yaml.safe_dump({settings.env: {settings.policy: config.hyperparams}}, sort_keys=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as tmp:
        tmp.write_text(header + body)
    return path
