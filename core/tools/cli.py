"""The ``painmon`` command line. Heavy modules are imported inside each command."""

from __future__ import annotations

import argparse
import logging
import math
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from painmon.core.research.options import AUGMENT_MODES, COMPILE_MODES, CV_ENGINES
from painmon.core.tools.doctor import TRAIN_EXTRA_INSTALL, TRAIN_EXTRA_MODULES
from painmon.core.util.errors import PainmonError
from painmon.core.util.outputs import LOG_FILES, refuse_existing_output
from painmon.core.util.redact import redact_source

log = logging.getLogger("painmon")

EXIT_OK = 0
EXIT_USAGE = 2
FACE_MODEL_HELP = (
    "a face_landmarker.task (default: the bundle painmon ships), or 'haar' for OpenCV's "
    "Haar cascade"
)


class CliError(PainmonError):
    """A problem the user can fix; printed as one line, exit code 2."""


def _version() -> str:
    from painmon import __version__

    return __version__


def _parse_seeds(text: str) -> list[int]:
    """``--seeds 42,123,999`` as integers; anything else is the user's to fix (exit 2)."""
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise CliError(
            f"--seeds takes comma-separated integers, e.g. 42,123,999; got {text!r}"
        ) from None
    if not seeds:
        raise CliError("--seeds needs at least one integer, e.g. 42,123,999")
    for seed in seeds:
        if not 0 <= seed <= MAX_SEED:
            raise CliError(f"--seeds must each be >= 0 and <= {MAX_SEED}, got {seed}")
        if seeds.count(seed) > 1:
            raise CliError(f"--seeds lists {seed} twice: each seed runs once")
    return seeds


def _check_jobs(jobs: int) -> int:
    """``--jobs`` is how many processes train at once: 1 or more."""
    if jobs < 1:
        raise CliError(f"--jobs is how many folds train at once: 1 or more, got {jobs}")
    return jobs


def _check_engine(engine: str, jobs: int) -> None:
    """``--engine stacked[-bmm]`` trains every fold in one process: ``--jobs`` must stay 1."""
    if engine != "processes" and jobs > 1:
        raise CliError(
            f"--engine {engine} trains every fold in one process: drop --jobs {jobs} (or use "
            "--engine processes)"
        )


ENGINE_HELP = (
    "how the fold models train: 'processes' (default) runs each with its own training loop, "
    "--jobs at a time; 'stacked' trains every (seed, fold) model at once in one process "
    "(stacked weights, one vmapped step, captured as a CUDA graph on a GPU): the fast path "
    "on one GPU; no --jobs, no resume of a half-finished fold; 'stacked-bmm' is 'stacked' "
    "with each layer as one batched GEMM over the models, channels-last, instead of vmap's "
    "grouped convolutions (the same function; which is faster depends on the GPU)"
)


class _Parser(argparse.ArgumentParser):
    """argparse with its errors on one line (``painmon CMD: error: ...``), exit 2, no usage dump."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")

    def parse_args(self, args: Any = None, namespace: Any = None) -> Any:
        # Stray arguments are the chosen command's to report ("painmon split: error: ...").
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            parser: argparse.ArgumentParser = self
            while parser._subparsers is not None:
                action = parser._subparsers._group_actions[0]
                chosen = getattr(parsed, action.dest, None)
                if chosen not in action.choices:
                    break
                parser = action.choices[chosen]
            parser.error(f"unrecognized arguments: {' '.join(extras)}")
        return parsed


# The ``train`` extra (pyproject.toml) by import name, and what each command imports of it:
# on a bedside install (`pip install .`) these commands say so in one line, before any work.
_TRAINING = ("torch", "safetensors", "sklearn", "scipy")
TRAIN_EXTRA_NEEDS: dict[str, tuple[str, ...]] = {
    "split": ("sklearn",),
    "crops": ("torch", "scipy"),
    "train": _TRAINING,
    "cv": _TRAINING,
    "evaluate": _TRAINING,
    "reproduce": _TRAINING,
    "export": ("torch", "safetensors", "onnx", "sklearn", "scipy"),
    "bench train": _TRAINING,
}

# The largest seed every library painmon seeds accepts (NumPy's legacy RandomState, sklearn).
MAX_SEED = 2**32 - 1


def _int_option(minimum: int, maximum: int | None = None) -> Callable[[str], int]:
    """An argparse ``type``: a whole number in ``minimum..maximum`` (one-line error otherwise)."""

    def parse(text: str) -> int:
        value = int(text)  # a ValueError reads "invalid int value: 'x'"
        if value < minimum or (maximum is not None and value > maximum):
            limits = f"from {minimum} to {maximum}" if maximum is not None else f">= {minimum}"
            raise argparse.ArgumentTypeError(f"must be a whole number {limits}, got {value}")
        return value

    parse.__name__ = "int"
    return parse


def _float_option(
    minimum: float, maximum: float | None = None, *, above: bool = False, below: bool = False
) -> Callable[[str], float]:
    """An argparse ``type``: a finite number from ``minimum`` (exclusive with ``above``) to
    ``maximum`` (exclusive with ``below``); NaN and infinity are refused."""

    def parse(text: str) -> float:
        value = float(text)  # a ValueError reads "invalid float value: 'x'"
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
        too_low = value <= minimum if above else value < minimum
        too_high = maximum is not None and (value >= maximum if below else value > maximum)
        if too_low or too_high:
            low = f"> {minimum:g}" if above else f">= {minimum:g}"
            if maximum is None:
                limits = low
            else:
                limits = f"{'(' if above else '['}{minimum:g}, {maximum:g}{')' if below else ']'}"
                limits = f"in {limits}"
            raise argparse.ArgumentTypeError(f"must be {limits}, got {value:g}")
        return value

    parse.__name__ = "float"
    return parse


_positive_int = _int_option(1)
_seed = _int_option(0, MAX_SEED)
_positive_seconds = _float_option(0.0, above=True)


# --- commands ---------------------------------------------------------------------------


def _cmd_models_list(args: argparse.Namespace) -> int:
    from painmon.core.store.catalog import format_installed_models

    try:
        from painmon.models import format_model_table
    except ModuleNotFoundError as exc:
        if exc.name != "torch":
            raise
        print(
            "model zoo: needs PyTorch, which this install leaves out (it runs exported .onnx "
            "models); for training: pip install 'painmon[train]'"
        )
    else:
        print(format_model_table())
    print()
    print(format_installed_models())
    return EXIT_OK


def _cmd_models_download(args: argparse.Namespace) -> int:
    from painmon.core.store.catalog import download_face_model

    def progress(done: int, total: int | None) -> None:
        print(f"\r{done / 1e6:.1f}/{(total or 0) / 1e6:.1f} MB", end="", file=sys.stderr)

    path = download_face_model(timeout_s=args.timeout, force=args.force, progress=progress)
    print(f"\nface model verified: {path}")
    return EXIT_OK


def _cmd_doctor(args: argparse.Namespace) -> int:
    from painmon.core.tools.doctor import doctor_exit_code, format_doctor, run_doctor

    report = run_doctor(camera_index=args.camera)
    print(format_doctor(report))
    return doctor_exit_code(report)


def _cmd_synth(args: argparse.Namespace) -> int:
    from painmon.core.synth.dataset import run_synth_cli

    if args.out is None and args.video is None:
        raise CliError("give --out DIR (a face-image dataset) or --video PATH (a patient video)")
    from painmon.core.synth.stream import truth_csv_path

    refuse_existing_output(args.out, args.force, "a dataset folder")
    if args.video is not None:
        refuse_existing_output(args.video, args.force, "a video", "--video")
        refuse_existing_output(
            truth_csv_path(args.video), args.force, "the ground truth of a video", "--video"
        )
    print(
        run_synth_cli(
            out=args.out,
            subjects=args.subjects,
            images_per_subject=args.images_per_subject,
            seed=args.seed,
            video=args.video,
            seconds=args.seconds,
            fps=args.fps,
        )
    )
    return EXIT_OK


def _cmd_split(args: argparse.Namespace) -> int:
    from painmon.core.research.splits import run_split_cli

    refuse_existing_output(args.out, args.force, "a split plan")
    if args.out.is_dir():
        raise CliError(f"--out {args.out} is a folder: give a file path for the split plan")
    text = run_split_cli(
        args.manifest,
        args.out,
        folds=args.folds,
        seed=args.seed,
        allow_outside_root=args.allow_outside_root,
    )
    print(text)
    return EXIT_OK


def _train_config(args: argparse.Namespace, **overrides: Any) -> Any:
    from painmon.core.research.train import TrainConfig

    return TrainConfig(
        model=args.model,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        weight_decay=args.weight_decay,
        label_smoothing=args.label_smoothing,
        warmup_epochs=args.warmup_epochs,
        patience=args.patience,
        seed=args.seed,
        device=args.device,
        augment=args.augment,
        compile=args.compile,
        deterministic=not args.nondeterministic,
        **overrides,
    )


def _check_device_and_model(device: str, model: str) -> None:
    """A device this machine has and a registered model (before any data is prepared)."""
    from painmon.core.research.seeding import resolve_device
    from painmon.models import list_models

    resolve_device(device)  # a missing GPU fails now, not after the crops are prepared
    if model not in list_models():
        raise CliError(f"unknown model {model!r}; known models: {', '.join(list_models())}")


def _check_training_inputs(args: argparse.Namespace, cfg: Any) -> None:
    """What can be wrong with a training command's options, found before any crop is made."""
    _check_device_and_model(cfg.device, cfg.model)
    if getattr(args, "init_from", None) is not None:
        from painmon.core.research.experiment import check_init_run

        check_init_run(args.init_from, cfg)  # before any crop is made; the subjects come later
    if args.splits is not None:
        from painmon.core.research.splits import SplitPlan

        SplitPlan.from_json(args.splits)  # read again (and matched to the data) by resolve_plan


def _prepare(args: argparse.Namespace) -> Any:
    """The dataset (or crops file) of ``--manifest``, with its face crops."""
    from painmon.core.research.experiment import prepare_data

    if args.cache_dir is not None and args.cache_dir.exists() and not args.cache_dir.is_dir():
        raise CliError(f"--cache-dir {args.cache_dir} is not a folder: give a folder for crops")

    return prepare_data(
        args.manifest,
        cache_dir=args.cache_dir,
        allow_outside_root=args.allow_outside_root,
        framing=getattr(args, "framing", None),
    )


def _cmd_train(args: argparse.Namespace) -> int:
    from painmon.core.research.experiment import resolve_plan, resume_plan, train_on_plan

    refuse_existing_output(
        args.out,
        args.force or args.resume,
        "a run folder",
        alternative="pass --resume to continue it",
        ignore=LOG_FILES,
    )
    cfg = _train_config(args)
    _check_training_inputs(args, cfg)
    if args.resume:
        from painmon.core.research.train import check_resume, resume_identity

        # Another model or recipe is refused before any crop is made; the data and the
        # subjects are checked (by train_on_plan) once the crops are there.
        check_resume(args.out, {"config": resume_identity(cfg)["config"]})
    data = _prepare(args)
    if args.resume:  # the run's own split, never a new one: its weights saw its subjects
        plan = resume_plan(args.out, data, args.splits, seed=args.split_seed)
    else:
        plan = resolve_plan(data, args.splits, seed=args.split_seed, folds=5)
    result = train_on_plan(data, plan, cfg, args.out, resume=args.resume, init_from=args.init_from)
    print(
        f"{result.stopped}: best epoch {result.best_epoch} of {result.epochs_run}, "
        f"validation macro-F1 {result.best_val_macro_f1:.3f}; temperature {result.temperature:.3f} "
        f"(ECE {result.ece_before:.3f} -> {result.ece_after:.3f}); {result.seconds:.0f} s\n"
        f"run folder: {result.out_dir}"
    )
    return EXIT_OK


def _cmd_cv(args: argparse.Namespace) -> int:
    from painmon.core.research.experiment import cross_validate, format_cv_summary, resolve_plan

    seeds = _parse_seeds(args.seeds)
    _check_jobs(args.jobs)
    _check_engine(args.engine, args.jobs)
    refuse_existing_output(args.out, args.force, "a cross-validation folder", ignore=LOG_FILES)
    cfg = _train_config(args)
    _check_training_inputs(args, cfg)
    if args.splits is not None:
        from painmon.core.research.splits import DEFAULT_FOLDS, SplitPlan

        # A plan's folds are cross-validated as they are: an explicit --folds that differs is
        # refused; the default (5, perhaps not typed) only warns.
        planned = len(SplitPlan.from_json(args.splits).folds)
        if planned and planned != args.folds and args.folds != DEFAULT_FOLDS:
            raise CliError(
                f"--folds {args.folds} differs from the {planned} folds of --splits "
                f"{args.splits}: the plan's folds are used as they are; drop --folds, or make "
                f"a {args.folds}-fold plan with `painmon split --folds {args.folds}`"
            )
    data = _prepare(args)
    plan = resolve_plan(data, args.splits, seed=args.split_seed, folds=args.folds)
    if args.splits is not None and plan.folds and len(plan.folds) != args.folds:
        log.warning(
            "--splits %s has %d folds: cross-validating over those (--folds does not apply "
            "to a split plan)",
            args.splits,
            len(plan.folds),
        )
    summary = cross_validate(
        data, plan, cfg, args.out, seeds=seeds, jobs=args.jobs, engine=args.engine
    )
    print(format_cv_summary(summary))
    print(f"per-fold table: {Path(args.out) / 'cv_folds.csv'}")
    return EXIT_OK


def _cmd_bench_train(args: argparse.Namespace) -> int:
    import json

    from painmon.core.tools.bench_train import bench_train

    _check_jobs(args.jobs)
    _check_engine(args.engine, args.jobs)
    if args.members is not None and args.engine == "processes":
        raise CliError("--members is how many models one stacked run trains: add --engine stacked")
    refuse_existing_output(args.json, args.force, "a benchmark result", "--json")
    _check_device_and_model(args.device, args.model)
    result = bench_train(
        device=args.device,
        epochs=args.epochs,
        compile_mode=args.compile,
        augment=args.augment,
        model=args.model,
        jobs=args.jobs,
        batch_size=args.batch_size,
        engine=args.engine,
        members=args.members or 5,
        deterministic=not args.nondeterministic,
    )
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    return EXIT_OK


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from painmon.core.research.experiment import evaluate_partition, format_evaluation

    refuse_existing_output(args.json, args.force, "a metrics file", "--json")
    refuse_existing_output(args.predictions, args.force, "a predictions file", "--predictions")
    refuse_existing_output(args.report, args.force, "a report", "--report")
    if args.manifest.suffix.lower() != ".npz":  # the cheap checks of both inputs first
        from painmon.core.research.datasets import load_dataset

        load_dataset(args.manifest, allow_outside_root=args.allow_outside_root)
    _check_run_folder(args.run)
    data = _prepare(args)
    result = evaluate_partition(
        args.run, data, args.split, args.json, args.predictions, args.report,
        other_dataset=args.other_dataset,
    )  # fmt: skip
    print(format_evaluation(result))
    if args.report:
        print(f"report: {args.report}")
    return EXIT_OK


def _check_run_folder(run: Path) -> None:
    """A run folder ``evaluate`` can score: a verified checkpoint and its split plan."""
    from painmon.core.research.splits import SplitPlan
    from painmon.core.research.train import load_checkpoint

    if run.exists() and not run.is_dir():
        raise CliError(f"--run {run} is a file: give the run folder `painmon train` wrote")
    load_checkpoint(run, "cpu")  # a missing or corrupt checkpoint fails before the crops
    splits = run / "splits.json"
    if not splits.is_file():
        raise CliError(f"{splits} is missing: evaluate needs the run's own split plan")
    SplitPlan.from_json(splits)


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _cmd_export(args: argparse.Namespace) -> int:
    if args.no_domain_gate:
        for option, value in (
            ("--manifest", args.manifest),
            ("--gate-quantile", args.gate_quantile),
            ("--gate-ring-swap", args.gate_ring_swap or None),
            ("--gate-threshold", args.gate_threshold),
        ):
            if value is not None:
                raise CliError(f"{option} sets up the domain gate; drop it or --no-domain-gate")
    refuse_existing_output(args.out, args.force, "a model")
    if Path(args.out).suffix != ".onnx":
        raise CliError(f"--out is the model to write and must end in .onnx, got {args.out}")
    if args.out.is_dir():
        raise CliError(f"--out {args.out} is a folder: give a file path ending in .onnx")
    sidecar = Path(args.out).with_name(Path(args.out).name + ".sha256")
    refuse_existing_output(sidecar, args.force, "a model's checksum")
    from painmon.core.research.domain_gate import DEFAULT_QUANTILE, THRESHOLD_AUTO
    from painmon.core.research.export import export_onnx
    from painmon.core.research.export import log as export_log

    # export_onnx logs a one-line summary for Python callers; the command prints its own,
    # fuller one below, so the library's INFO line would say it twice (warnings still pass).
    previous_level = export_log.level
    export_log.setLevel(logging.WARNING)
    try:
        result = export_onnx(
            args.run,
            args.out,
            opset=args.opset,
            intended_use=args.intended_use,
            demo=args.demo,
            gate_data=args.manifest,
            domain_gate=not args.no_domain_gate,
            gate_quantile=DEFAULT_QUANTILE if args.gate_quantile is None else args.gate_quantile,
            gate_ring_swap=args.gate_ring_swap,
            gate_threshold=args.gate_threshold or THRESHOLD_AUTO,
        )
    finally:
        export_log.setLevel(previous_level)
    print(
        f"exported {result.architecture} to {result.onnx_path} (opset {result.opset})\n"
        f"  sha256 {result.sha256} (also in {result.sidecar_path.name})\n"
        f"  ONNX Runtime vs torch over {result.parity_samples} inputs "
        f"({result.gradcams_compared} Grad-CAM maps compared): max |diff| "
        + ", ".join(f"{k} {v:.1e}" for k, v in result.parity_max_abs_diff.items())
        + " (domain_score relative)" * (result.domain_gate is not None)
    )
    gate = result.domain_gate
    if gate is None:
        print("  domain gate: none (the bedside will say it cannot tell unfamiliar faces)")
    else:
        print(
            f"  domain gate: Mahalanobis on {gate.feature_dims} features, fitted on "
            f"{gate.train_crops} crops of {gate.train_subjects} training subjects"
            + (" (half of them ring-swapped copies)" if gate.ring_swap else "")
            + f"; threshold {gate.threshold:.1f} = {gate.threshold_from()}; the validation "
            f"subjects' median score {gate.val_scores_median:.1f}"
        )
    return EXIT_OK


def _check_live_inputs(
    source: str | None, model: Path | None, face_model: Path | None, *, load: bool = False
) -> None:
    """The spelling of ``--source``, and ``--model`` and ``--face-model`` as files, checked
    before a model is loaded or a window opens; with ``load`` an ONNX model is loaded too."""
    import zipfile

    from painmon.core.live.source_spec import check_source_spec
    from painmon.core.util.paths import FACE_MODEL_HAAR

    if source is not None:
        check_source_spec(source, check_path=True)
        if Path(source).expanduser().exists():
            from painmon.core.live.capture import open_source

            # A file that is no video (or a folder without images) fails here, before a model
            # is loaded or a window opens.
            open_source(source).close()
    if face_model is not None and str(face_model).strip().lower() != FACE_MODEL_HAAR:
        if not face_model.is_file():
            raise CliError(
                f"--face-model {face_model} not found (or not a file): give a "
                "face_landmarker.task, or 'haar'"
            )
        if not zipfile.is_zipfile(face_model):
            raise CliError(
                f"--face-model {face_model} is not a Face Landmarker bundle (a .task archive): "
                "give a face_landmarker.task (`painmon models download`), or 'haar'"
            )
    if model is not None:
        if not model.exists():
            raise CliError(f"--model {model} not found: give a model.onnx from `painmon export`")
        if model.is_dir() and not (model / "best.safetensors").is_file():
            raise CliError(
                f"--model {model} is a folder without best.safetensors: give a model.onnx from "
                "`painmon export` (or a run folder)"
            )
        if model.is_file() and model.suffix.lower() not in (".onnx", ".safetensors"):
            raise CliError(
                f"--model {model} is not a model (.onnx): give a model.onnx from `painmon export`"
            )
        if load and model.is_file() and model.suffix != ".safetensors":
            from painmon.core.live.monitor import load_onnx_model
            from painmon.core.live.scoring import quiet_model_logs

            # A check only: the run loads the model again and logs its providers then; a
            # refused model here is one error line, not provider chatter before it.
            with quiet_model_logs():
                load_onnx_model(model)


def _cmd_monitor(args: argparse.Namespace) -> int:
    """``painmon monitor``; returns the run's exit status (see the monitor's --help epilog)."""
    from painmon.core.live.session import validate_pseudonym

    # The ward bus options first: one line for a bad one before anything loads (not started).
    publisher = _ward_publisher(args)
    _check_live_inputs(args.source, args.model, args.face_model)
    validate_pseudonym(args.pseudonym)
    if args.out.exists() and not args.out.is_dir():
        raise CliError(f"--out {args.out} is a file, not a folder: give a folder for sessions")
    from painmon.core.live.monitor import load_onnx_model, run_monitor_cli
    from painmon.core.live.scoring import is_checkpoint

    model = args.model
    if model is None:
        from painmon.core.store.catalog import shipped_demo_model_path

        model = shipped_demo_model_path()
        if not model.is_file():
            raise CliError("no --model given and this build ships no demo model")
        print(
            "no --model given: using the synthetic-data DEMO model — not for clinical use",
            file=sys.stderr,
        )
    load_model = load_onnx_model
    if is_checkpoint(model):
        # A research run folder scores through torch (the training extra); an .onnx never does.
        from painmon.core.research.torch_scoring import load_pain_model as load_model

    def monitor(**hooks: Any) -> int:
        return run_monitor_cli(
            args.source,
            model,
            args.out,
            args.max_seconds,
            args.realtime,
            args.face_model,
            args.pseudonym,
            load_model=load_model,
            pipelined=args.pipelined,
            **hooks,
        )

    if publisher is None:
        return monitor()
    from painmon.core.ward.bed import monitor_hooks

    hooks = monitor_hooks(publisher)
    # The bed is the primary alarm: an absent broker never stops the monitor (it retries).
    publisher.start()
    code = 3
    try:
        code = monitor(
            on_result=hooks.on_result,
            on_poll=hooks.on_poll,
            on_alarm_state=hooks.on_alarm_state,
        )
    finally:
        publisher.stop(f"monitor ended (exit status {code})")
    return code


def _ward_publisher(args: argparse.Namespace):  # -> BedPublisher | None
    """The ward bus publisher of ``painmon monitor --publish`` (None without --publish)."""
    if args.publish is None:
        ward_options = ("ward", "bed", "mqtt_user", "mqtt_password_file", "tls_ca", "tls_cert")
        if args.remote_ack or any(getattr(args, name) for name in (*ward_options, "tls_key")):
            raise CliError("--ward, --bed, --remote-ack, --mqtt-* and --tls-* need --publish URL")
        return None
    import importlib.util

    # paho is imported by core.ward only (an import-linter contract): look, do not import.
    missing = [name for name in ("paho", "jsonschema") if importlib.util.find_spec(name) is None]
    if missing:
        raise CliError(
            f"publishing to the ward bus needs the ward extra ({', '.join(missing)} missing): "
            "pip install 'painmon[ward]'"
        )
    from painmon.core.ward.bed import bed_publisher_from_options

    return bed_publisher_from_options(
        args.publish,
        args.ward,
        args.bed,
        obs_hz=args.obs_hz,
        remote_ack=args.remote_ack,
        # The bed's MQTT user is its bed label unless told otherwise (the ward's ACL says so).
        username=args.mqtt_user or (args.bed if args.mqtt_password_file else None),
        password_file=args.mqtt_password_file,
        tls_ca=args.tls_ca,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
    )


def _cmd_hl7_gateway(args: argparse.Namespace) -> int:
    """``painmon hl7-gateway``: ward bus → HL7 v2.6 (IHE PCD-01/PCD-04) over MLLP."""
    import importlib.util

    missing = [m for m in ("paho", "hl7apy", "jsonschema") if importlib.util.find_spec(m) is None]
    if missing:
        raise CliError(
            f"needs the ward extra: pip install 'painmon[ward]' (missing: {', '.join(missing)})"
        )
    from painmon.core.ward.client import read_secret
    from painmon.core.ward.hl7_gateway import parse_host_port, run_gateway_cli
    from painmon.core.ward.security import TlsFiles

    parse_host_port(args.mllp)  # a bad HOST:PORT is one line before anything starts
    if args.mqtt_password_file is not None and args.mqtt_user is None:
        raise CliError("--mqtt-password-file needs --mqtt-user")
    password = read_secret(args.mqtt_password_file) if args.mqtt_password_file else None
    outbox = args.outbox
    if outbox is None:
        from painmon.core.util.paths import user_data_dir

        outbox = user_data_dir() / "hl7-outbox"
    return run_gateway_cli(
        args.broker,
        args.mllp,
        outbox,
        ward=args.ward,
        every_s=args.every_s,
        username=args.mqtt_user,
        password=password,
        tls=TlsFiles(ca=args.tls_ca) if args.tls_ca else None,
    )


def _cmd_station(args: argparse.Namespace) -> int:
    """``painmon station``: the central station window on the ward bus."""
    import importlib.util

    # paho is imported by core.ward only (an import-linter contract): look, do not import.
    missing = [m for m in ("paho", "jsonschema") if importlib.util.find_spec(m) is None]
    if missing:
        raise CliError(
            f"needs the ward extra: pip install 'painmon[ward]' (missing: {', '.join(missing)})"
        )
    from painmon.core.ward.station import StationModel, station_client

    client = station_client(  # bad options are one line before any window opens
        args.broker,
        ward=args.ward,
        station_id=args.station_id,
        username=args.mqtt_user,
        password_file=args.mqtt_password_file,
        tls_ca=args.tls_ca,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
    )
    _prepare_window()
    from painmon.app.station_window import run_station

    return run_station(client, StationModel(args.station_id))


def _cmd_crops(args: argparse.Namespace) -> int:
    refuse_existing_output(args.out, args.force, "a crops file")
    if args.manifest.suffix.lower() == ".npz":
        raise CliError(f"--manifest {args.manifest} is already a crops file: give the dataset")
    if args.out.suffix.lower() != ".npz":
        raise CliError(f"--out is the crops file to write and must end in .npz, got {args.out}")
    if args.out.is_dir():
        raise CliError(f"--out {args.out} is a folder: give a file path ending in .npz")
    data = _prepare(args)
    data.crops.save_npz(args.out, dataset_sha256=data.dataset_sha256)
    counts = ", ".join(f"class {k}: {n}" for k, n in enumerate(data.crops.class_counts()))
    print(
        f"{len(data.crops)} face crops of {len(set(data.crops.subjects.tolist()))} subjects "
        f"({data.crops.preprocessing.get('detector')} detector; {counts})\n"
        f"{data.report.skipped_count} samples skipped\nwrote {args.out}"
    )
    return EXIT_OK


def _prepare_window() -> None:
    """Before any Qt import: undo cv2's Qt variables; no display -> one line, exit 2."""
    from painmon.core.tools.doctor import prepare_window_environment

    prepare_window_environment()


def _cmd_app(args: argparse.Namespace) -> int:
    _prepare_window()
    _check_live_inputs(args.source, args.model, args.face_model, load=True)
    from painmon.app.main import run_app

    return run_app(
        source=args.source,
        model=args.model,
        face_model=args.face_model,
        every_frame=args.every_frame,
    )


def _cmd_bench_app(args: argparse.Namespace) -> int:
    refuse_existing_output(args.json, args.force, "a benchmark result", "--json")
    _check_live_inputs(args.source, args.model, args.face_model, load=True)
    import os

    from painmon.app.bench import bench_app_cli  # imports cv2, which sets Qt variables
    from painmon.core.tools.doctor import cv2_package_dir, remove_cv2_qt_variables

    # Offscreen without a display (bench_app decides), but never with cv2's Qt 5 plugins.
    remove_cv2_qt_variables(os.environ, cv2_package_dir())
    if args.playback:
        from painmon.app.bench import bench_playback_cli

        return bench_playback_cli(
            args.source,
            args.seconds,
            args.face_model,
            args.model,
            args.json,
            args.every_frame,
            serial=args.serial,
        )
    if args.every_frame:
        raise CliError("--every-frame applies to --playback only")
    return bench_app_cli(
        args.source, args.seconds, args.face_model, args.model, args.json, serial=args.serial
    )


def _cmd_bench_au(args: argparse.Namespace) -> int:
    refuse_existing_output(
        args.synth_dir,
        args.force or args.reuse,
        "a folder of synthetic videos",
        "--synth-dir",
        alternative="pass --reuse to use its videos",
    )
    if args.skip_media and args.skip_synth:
        raise CliError("nothing to do: --skip-media and --skip-synth together skip both parts")
    if not args.skip_synth:
        _parse_seeds(args.seeds)
    if args.synth_dir is not None and args.synth_dir.exists() and not args.synth_dir.is_dir():
        raise CliError(f"--synth-dir {args.synth_dir} is a file: give a folder for the videos")
    _check_live_inputs(None, None, args.face_model)
    from painmon.core.tools.bench_au import run

    return run(args)


def _cmd_bench_gate(args: argparse.Namespace) -> int:
    refuse_existing_output(args.json, args.force, "a gate report", "--json")
    if not (args.real or args.in_domain or args.crops):
        raise CliError("nothing to measure: give --crops, --in-domain and/or --real")
    if args.splits is not None and args.crops is None:
        raise CliError("--splits picks the test subjects of --crops: give --crops too")
    if args.crops is not None and not args.crops.is_file():
        raise CliError(f"--crops {args.crops} not found: give a crops .npz from `painmon crops`")
    _check_live_inputs(None, args.model, args.face_model)
    for option, paths in (("--real", args.real), ("--in-domain", args.in_domain)):
        for path in paths:
            if not Path(path).exists():
                raise CliError(f"{option}: no file or folder at {path}")
            _check_live_inputs(str(path), None, None)
    if args.crops is not None:  # read before the model loads: a broken file fails first
        from painmon.core.research.crops import CropSet

        CropSet.load_npz(args.crops)
    if args.splits is not None:
        from painmon.core.research.splits import SplitPlan

        SplitPlan.from_json(args.splits)
    from painmon.core.tools.bench_gate import format_gate_report, gate_report, write_gate_report

    model = args.model
    if model is None:
        from painmon.core.store.catalog import shipped_demo_model_path

        model = shipped_demo_model_path()
    report = gate_report(
        model,
        real=args.real,
        in_domain_videos=args.in_domain,
        crops=args.crops,
        splits=args.splits,
        face_model=str(args.face_model) if args.face_model else None,
    )
    print(format_gate_report(report))
    if args.json:
        write_gate_report(report, args.json)
    return EXIT_OK


def _cmd_demo(args: argparse.Namespace) -> int:
    _prepare_window()
    _check_live_inputs(args.source, args.model, args.face_model, load=True)
    from painmon.app.main import run_app

    return run_app(
        source=args.source,
        model=args.model,
        demo=True,
        face_model=args.face_model,
        every_frame=args.every_frame,
    )


def _cmd_reproduce(args: argparse.Namespace) -> int:
    from painmon.core.research.reproduce import format_reproduce_summary, run_reproduce

    seeds = _parse_seeds(args.seeds)
    _check_jobs(args.jobs)
    _check_engine(args.engine, args.jobs)
    refuse_existing_output(
        args.out,
        args.force or args.resume,
        "a reproduce folder",
        alternative="pass --resume to reuse its finished cross-validations",
        ignore=LOG_FILES,
    )
    from painmon.core.research.seeding import resolve_device

    resolve_device(args.device)  # a missing GPU fails now, not after the crops are prepared
    if args.splits is not None:
        from painmon.core.research.splits import SplitPlan

        SplitPlan.from_json(args.splits)
    result = run_reproduce(
        args.manifest,
        args.out,
        quick=args.quick,
        device=args.device,
        jobs=args.jobs,
        engine=args.engine,
        deterministic=not args.nondeterministic,
        seeds=seeds,
        folds=args.folds,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        splits=args.splits,
        cache_dir=args.cache_dir,
        allow_outside_root=args.allow_outside_root,
        split_seed=args.split_seed,
    )
    print(format_reproduce_summary(result))
    return EXIT_OK


def _print_json(result: dict, json_path: Path | None) -> int:
    import json

    text = json.dumps(result, indent=2)
    print(text)
    if json_path:
        Path(json_path).write_text(text + "\n")
    return EXIT_OK


def _cmd_bench_pipeline(args: argparse.Namespace) -> int:
    from painmon.core.tools.bench_pipeline import bench_pipeline

    refuse_existing_output(args.json, args.force, "a benchmark result", "--json")
    _check_live_inputs(args.source, args.model, args.face_model)
    model = _model_or_shipped_demo(args.model)
    result = bench_pipeline(
        args.source,
        model,
        args.face_model,
        args.max_frames,
        None,
        ort_threads=args.ort_threads,
        pipelined_rounds=args.rounds,
    )
    return _print_json(result, args.json)


def _cmd_bench_soak(args: argparse.Namespace) -> int:
    from painmon.core.tools.bench_pipeline import bench_soak

    refuse_existing_output(args.json, args.force, "a benchmark result", "--json")
    _check_live_inputs(args.source, args.model, args.face_model)
    model = _model_or_shipped_demo(args.model)
    result = bench_soak(args.seconds, args.source, model, args.face_model, None)
    return _print_json(result, args.json)


def _model_or_shipped_demo(model: Path | None) -> Path:
    """``--model``, else the synthetic-data demo model painmon ships (no torch needed)."""
    if model is not None:
        return model
    from painmon.core.store.catalog import shipped_demo_model_path

    demo = shipped_demo_model_path()
    if not demo.is_file():
        raise CliError("no --model given and this build ships no demo model: give --model")
    log.info("no --model given: timing the shipped demo model %s", demo.name)
    return demo


def _cmd_bench_faults(args: argparse.Namespace) -> int:
    """``painmon bench faults``: one line per scenario; exit 1 when one missed its target."""
    from painmon.core.tools.bench_faults import bench_faults, select_scenarios, write_record

    refuse_existing_output(args.json, args.force, "a benchmark result", "--json")
    names = select_scenarios(args.only)
    print(f"painmon bench faults: {len(names)} scenarios against `painmon monitor` subprocesses")
    record = bench_faults(
        names,
        args.model,
        str(args.face_model) if args.face_model else None,
        on_result=lambda result: print(result.format(), flush=True),
        keep=args.keep,
    )
    counts = record["counts"]
    print(
        f"{counts['PASS']} passed, {counts['FAIL']} failed, {counts['SKIP']} skipped "
        f"in {record['wall_s']:.0f} s"
    )
    if args.json:
        write_record(record, args.json)
    return EXIT_OK if record["passed"] else 1


def _cmd_bench_ward(args: argparse.Namespace) -> int:
    """``painmon bench ward``: beds against a real Mosquitto; exit 1 when a target is missed."""
    from painmon.core.tools.bench_ward import bench_ward, format_record, write_record

    refuse_existing_output(args.json, args.force, "a benchmark result", "--json")
    print(
        f"painmon bench ward: {args.beds} beds x {args.hz:g} Hz for {args.seconds:g} s "
        "against a real Eclipse Mosquitto on 127.0.0.1",
        flush=True,
    )
    from painmon.core.tools.bench_ward import FAULTS

    faults = list(FAULTS) if args.faults else args.fault or []
    record = bench_ward(
        args.beds,
        args.hz,
        args.seconds,
        procs=args.procs,
        alarm_every_s=args.alarm_every_s,
        faults=faults,
    )
    print(format_record(record))
    if args.json:
        write_record(record, args.json)
    return EXIT_OK if record["passed"] else 1


# --- parser -------------------------------------------------------------------------------


def _add_force(p: argparse.ArgumentParser, what: str = "the output") -> None:
    p.add_argument(
        "--force", action="store_true", help=f"overwrite {what} if it exists and is not empty"
    )


def _add_allow_outside_root(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--allow-outside-root",
        action="store_true",
        help="let a manifest list images outside its own folder (../, absolute paths, links)",
    )


def _add_training_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--manifest",
        type=Path,
        required=True,
        help="manifest CSV, UNBC root, BioVid root, or crops.npz from `painmon crops`",
    )
    p.add_argument("--splits", type=Path, help="splits.json from `painmon split` (else made here)")
    p.add_argument("--model", default="dacnn", help="see `painmon models list`")
    p.add_argument("--epochs", type=_positive_int, default=100)
    p.add_argument("--batch-size", type=_int_option(2), default=32)
    p.add_argument("--lr", type=_float_option(0.0, above=True), default=1e-4)
    p.add_argument("--weight-decay", type=_float_option(0.0), default=1e-4)
    p.add_argument("--label-smoothing", type=_float_option(0.0, 1.0, below=True), default=0.1)
    p.add_argument(
        "--warmup-epochs",
        type=_int_option(0),
        default=5,
        help="epochs of linear learning-rate warm-up before the cosine decay (default 5)",
    )
    p.add_argument(
        "--patience", type=_positive_int, default=15,
        help="stop after this many epochs without a better validation macro-F1",
    )  # fmt: skip
    p.add_argument("--seed", type=_seed, default=42, help="training seed (weights, batches)")
    p.add_argument(
        "--split-seed", type=_seed, default=42,
        help="seed of the subject split when --splits is not given (independent of --seed; "
        "another value than 42 gives other test subjects)",
    )  # fmt: skip
    p.add_argument("--device", default="auto", help="auto, cuda, mps or cpu")
    p.add_argument("--augment", default="full", choices=AUGMENT_MODES)
    p.add_argument("--compile", default="none", choices=COMPILE_MODES)
    _add_nondeterministic(p)
    p.add_argument("--cache-dir", type=Path, help="face-crop cache (default: user cache)")
    _add_allow_outside_root(p)


NONDETERMINISTIC_HELP = (
    "let cuDNN autotune and use non-deterministic kernels (faster on a GPU; a rerun then "
    "differs in the last bits; default: deterministic kernels, the same bits every run)"
)


def _add_nondeterministic(p: argparse.ArgumentParser) -> None:
    p.add_argument("--nondeterministic", action="store_true", help=NONDETERMINISTIC_HELP)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="painmon",
        description="Real-time bedside monitor of facial pain expression (DA-CNN, PSPI 0-4).",
    )
    parser.add_argument("--version", action="version", version=f"painmon {_version()}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    models = sub.add_parser("models", help="list the model zoo")
    models_sub = models.add_subparsers(dest="models_command", metavar="ACTION")
    models_list = models_sub.add_parser(
        "list", help="each model with parameter count and input size"
    )
    models_list.set_defaults(func=_cmd_models_list)
    models_download = models_sub.add_parser(
        "download", help="fetch and verify the MediaPipe Face Landmarker bundle"
    )
    models_download.add_argument(
        "--force", action="store_true", help="download again even if a verified copy exists"
    )
    models_download.add_argument(
        "--timeout", type=_positive_seconds, default=30.0, help="network timeout (s)"
    )
    models_download.set_defaults(func=_cmd_models_download)

    doctor = sub.add_parser("doctor", help="check libraries, GPU, camera, models and folders")
    doctor.add_argument("--camera", type=_int_option(0), default=0, help="camera index to probe")
    doctor.set_defaults(func=_cmd_doctor)

    synth = sub.add_parser("synth", help="draw synthetic patients (images + manifest, or a video)")
    synth.add_argument("--out", type=Path, help="folder for PNGs and manifest.csv")
    synth.add_argument("--subjects", type=_positive_int, default=20)
    synth.add_argument("--images-per-subject", type=_positive_int, default=100)
    synth.add_argument("--video", type=Path, help="write a scripted pain-episode video (.mp4)")
    synth.add_argument("--seconds", type=_positive_seconds, default=60.0)
    synth.add_argument("--fps", type=_float_option(0.0, above=True), default=30.0)
    synth.add_argument("--seed", type=_seed, default=0)
    _add_force(synth, "--out or --video")
    synth.set_defaults(func=_cmd_synth)

    split = sub.add_parser("split", help="subject-wise stratified train/val/test split and K folds")
    split.add_argument(
        "--manifest", type=Path, required=True, help="manifest CSV, UNBC or BioVid root"
    )
    split.add_argument("--out", type=Path, required=True, help="where to write splits.json")
    split.add_argument("--folds", type=_int_option(2), default=5)
    split.add_argument("--seed", type=_seed, default=42)
    _add_allow_outside_root(split)
    _add_force(split, "--out")
    split.set_defaults(func=_cmd_split)

    crops = sub.add_parser(
        "crops", help="detect and crop faces once into a portable .npz (train elsewhere with it)"
    )
    crops.add_argument("--manifest", type=Path, required=True, help="manifest, UNBC or BioVid")
    crops.add_argument("--out", type=Path, required=True, help="crops.npz to write")
    crops.add_argument("--cache-dir", type=Path, help="face-crop cache (default: user cache)")
    crops.add_argument(
        "--framing",
        choices=("stable-landmarks-2", "stable-landmarks", "box"),
        default="stable-landmarks-2",
        help="how crops are framed: 'stable-landmarks-2' (default and the shipped demo "
        "model's crops; inner eye corners centre the crop), 'stable-landmarks' (temples "
        "centre it: the previous demo model's crops), 'box' (the landmark box plus a margin: "
        "models before issue #11)",
    )
    _add_allow_outside_root(crops)
    _add_force(crops, "--out")
    crops.set_defaults(func=_cmd_crops)

    train = sub.add_parser("train", help="train a pain model with the paper's recipe")
    _add_training_arguments(train)
    train.add_argument("--out", type=Path, required=True, help="run folder")
    train.add_argument("--resume", action="store_true", help="continue the run in --out")
    train.add_argument(
        "--init-from",
        type=Path,
        metavar="RUN",
        help="start from this run folder's best weights (fine-tuning); refused if it learnt "
        "from any of this split's test subjects",
    )
    _add_force(train, "the run in --out (its weights are lost)")
    train.set_defaults(func=_cmd_train)

    cv = sub.add_parser("cv", help="subject-wise K-fold cross-validation with 95%% CIs")
    _add_training_arguments(cv)
    cv.add_argument("--out", type=Path, required=True, help="folder for fold runs and tables")
    cv.add_argument("--folds", type=_int_option(2), default=5)
    cv.add_argument("--seeds", default="42", help="comma-separated, e.g. 42,123,999 (the paper's)")
    cv.add_argument(
        "--jobs", type=_positive_int, default=1, help="folds trained at once (processes)"
    )
    cv.add_argument("--engine", choices=CV_ENGINES, default="processes",
                    help=ENGINE_HELP)  # fmt: skip
    _add_force(cv, "--out")
    cv.set_defaults(func=_cmd_cv)

    evaluate = sub.add_parser("evaluate", help="score a run on its own held-out subjects")
    evaluate.add_argument("--run", type=Path, required=True, help="run folder from painmon train")
    evaluate.add_argument("--manifest", type=Path, required=True)
    evaluate.add_argument("--split", default="test", choices=("test", "val", "train"))
    evaluate.add_argument("--json", type=Path, help="write metrics.json here")
    evaluate.add_argument("--predictions", type=Path, help="write preds.csv here")
    evaluate.add_argument("--report", type=Path, help="write a self-contained report.html here")
    evaluate.add_argument("--cache-dir", type=Path, help="face-crop cache (default: user cache)")
    evaluate.add_argument(
        "--other-dataset", action="store_true",
        help="score a dataset other than the run's (its hash differs): all its crops, labelled "
        "as a different dataset, since its subject IDs are not the run's test subjects",
    )  # fmt: skip
    _add_allow_outside_root(evaluate)
    _add_force(evaluate, "--json, --predictions and --report")
    evaluate.set_defaults(func=_cmd_evaluate)

    export = sub.add_parser("export", help="ONNX model for the monitor, with a parity check")
    export.add_argument("--run", type=Path, required=True, help="run folder or best.safetensors")
    export.add_argument("--out", type=Path, required=True, help="model.onnx to write")
    # The opsets torch's TorchScript ONNX exporter (the one export uses) can write.
    export.add_argument("--opset", type=_int_option(7, 20), default=17)
    export.add_argument("--intended-use", help="text stored in the model's metadata")
    export.add_argument("--demo", action="store_true", help="mark as synthetic-data demo model")
    export.add_argument(
        "--manifest",
        type=Path,
        help="the crops (.npz) or dataset the run was trained on, for the domain gate "
        "(default: the dataset recorded in the run)",
    )
    export.add_argument(
        "--gate-quantile",
        type=_float_option(0.5, 1.0, below=True),
        help="domain gate threshold: this quantile (0.5 to under 1) of the scores of "
        "people the gate was not fitted on (see --gate-threshold; default 0.99)",
    )
    export.add_argument(
        "--gate-ring-swap",
        action="store_true",
        help="fit the domain gate also on each training crop with its outer ring taken from "
        "another person, as --augment periphery trained on them (the threshold still comes "
        "from crops as they are)",
    )
    export.add_argument(
        "--gate-threshold",
        choices=("auto", "validation", "cross-fit"),
        help="what the domain gate's threshold is the quantile of: 'validation' (the "
        "validation subjects' crops), 'cross-fit' (every training and validation subject "
        "scored by a gate fitted without its fold of 5: on UNBC a threshold from 20 people, "
        "not 2), 'auto' (default: cross-fit with fewer than 10 validation subjects and at "
        "least 10 people in all)",
    )
    export.add_argument(
        "--no-domain-gate",
        action="store_true",
        help="export without a domain gate (research only: the bedside then cannot tell a "
        "face unlike the training data, and says so)",
    )
    _add_force(export, "--out and its .sha256")
    export.set_defaults(func=_cmd_export)

    bench = sub.add_parser("bench", help="benchmarks that print numbers")
    bench_sub = bench.add_subparsers(dest="bench_command", metavar="WHAT")
    bench_train = bench_sub.add_parser("train", help="s/epoch at the paper's protocol size")
    bench_train.add_argument("--device", default="auto")
    bench_train.add_argument("--model", default="dacnn")
    bench_train.add_argument(
        "--epochs", type=_positive_int, default=3, help="timed epochs after warm-up"
    )
    bench_train.add_argument("--batch-size", type=_int_option(2), default=32)
    bench_train.add_argument("--augment", default="full", choices=AUGMENT_MODES)
    bench_train.add_argument("--compile", default="none", choices=COMPILE_MODES)
    bench_train.add_argument("--jobs", type=_positive_int, default=1, help="folds trained at once")
    bench_train.add_argument("--engine", choices=CV_ENGINES, default="processes", help=ENGINE_HELP)
    _add_nondeterministic(bench_train)
    bench_train.add_argument(
        "--members",
        type=_positive_int,
        help="models one stacked run trains together (default 5: the folds of one seed; "
        "15 = 3 seeds x 5 folds)",
    )
    bench_train.add_argument("--json", type=Path, help="also write the result here")
    _add_force(bench_train, "--json")
    bench_train.set_defaults(func=_cmd_bench_train)
    bench_pipe = bench_sub.add_parser(
        "pipeline", help="per-stage engine latency, fps, realtime factor, ORT vs torch"
    )
    bench_pipe.add_argument("--source", required=True, help="a video file (or synthetic)")
    bench_pipe.add_argument(
        "--model", type=Path, help="exported .onnx (default: the shipped demo model)"
    )
    bench_pipe.add_argument("--face-model", type=Path, help=FACE_MODEL_HELP)
    bench_pipe.add_argument("--max-frames", type=_positive_int)
    bench_pipe.add_argument(
        "--ort-threads",
        type=_positive_int,
        default=1,
        help="ONNX Runtime intra-op threads of the DA-CNN (default 1: the engine's setting)",
    )
    bench_pipe.add_argument(
        "--rounds",
        type=_int_option(0),
        default=1,
        help="rounds of face-only / serial / pipelined passes, medians reported (0: none)",
    )
    bench_pipe.add_argument("--json", type=Path, help="also write the result here")
    _add_force(bench_pipe, "--json")
    bench_pipe.set_defaults(func=_cmd_bench_pipeline)
    bench_soak = bench_sub.add_parser("soak", help="resident memory growth over a long run")
    bench_soak.add_argument(
        "--seconds", type=_positive_seconds, default=600.0, help="wall-clock length"
    )
    bench_soak.add_argument("--source", default="synthetic")
    bench_soak.add_argument(
        "--model", type=Path, help="exported .onnx (default: the shipped demo model)"
    )
    bench_soak.add_argument("--face-model", type=Path, help=FACE_MODEL_HELP)
    bench_soak.add_argument("--json", type=Path, help="also write the result here")
    _add_force(bench_soak, "--json")
    bench_soak.set_defaults(func=_cmd_bench_soak)
    bench_app = bench_sub.add_parser(
        "app", help="camera-to-display latency and GUI stall; --playback: real-time playback"
    )
    bench_app.add_argument(
        "--source",
        required=True,
        help="a video file, played at 30 fps (--playback: a file or synthetic, at its own rate)",
    )
    bench_app.add_argument(
        "--playback",
        action="store_true",
        help="measure playback instead: media seconds per wall second, frames dropped, and the "
        "alarm delay in wall seconds, in the real window (offscreen without a display)",
    )
    bench_app.add_argument(
        "--every-frame",
        action="store_true",
        help="with --playback: score every frame in order (the analysis mode) instead",
    )
    bench_app.add_argument(
        "--serial",
        action="store_true",
        help="score frame by frame without overlapping the next frame's face stage (the "
        "window pipelines by default), to compare the two",
    )
    bench_app.add_argument("--seconds", type=_positive_seconds, default=20.0)
    bench_app.add_argument("--face-model", type=Path, help=FACE_MODEL_HELP)
    bench_app.add_argument("--model", type=Path, help="default: the shipped demo model")
    bench_app.add_argument("--json", type=Path, help="also write the result here")
    _add_force(bench_app, "--json")
    bench_app.set_defaults(func=_cmd_bench_app)

    bench_au = bench_sub.add_parser(
        "au", help="the AU estimate on laughing/smiling/talking real faces and synthetic episodes"
    )
    # The options of core/tools/bench_au.py (defined here too: importing it loads cv2 and
    # MediaPipe, which every painmon command would then pay for at start-up).
    bench_au.add_argument("--media", type=Path, help="folder of the shared media")
    bench_au.add_argument("--face-model", type=Path, help=FACE_MODEL_HELP)
    bench_au.add_argument("--synth-dir", type=Path, help="keep the synthetic videos here")
    bench_au.add_argument("--reuse", action="store_true", help="reuse videos in --synth-dir")
    bench_au.add_argument("--seeds", default="1,2,3,4", help="synthetic video seeds")
    bench_au.add_argument("--seconds", type=_positive_seconds, default=60.0)
    bench_au.add_argument("--fps", type=_float_option(0.0, above=True), default=30.0)
    bench_au.add_argument("--skip-media", action="store_true")
    bench_au.add_argument("--skip-synth", action="store_true")
    _add_force(bench_au, "the videos in --synth-dir")
    bench_au.set_defaults(func=_cmd_bench_au)

    bench_gate = bench_sub.add_parser(
        "gate", help="a model's domain gate: flagged fractions on real and in-domain faces, AUROC"
    )
    bench_gate.add_argument("--model", type=Path, help="default: the shipped demo model")
    bench_gate.add_argument(
        "--real", nargs="*", default=[], help="videos/images of faces outside the model's domain"
    )
    bench_gate.add_argument(
        "--in-domain", nargs="*", default=[], help="videos of faces like the training data"
    )
    bench_gate.add_argument("--crops", type=Path, help="crops .npz (painmon crops) of the domain")
    bench_gate.add_argument("--splits", type=Path, help="splits.json: use its test subjects only")
    bench_gate.add_argument("--face-model", type=Path, help=FACE_MODEL_HELP)
    bench_gate.add_argument("--json", type=Path, help="also write the report here")
    _add_force(bench_gate, "--json")
    bench_gate.set_defaults(func=_cmd_bench_gate)

    bench_faults = bench_sub.add_parser(
        "faults",
        help="kill -9, signals, stream death/stall, frozen feed, full disk (issue #12); "
        "exit 1 if a target is missed",
    )
    bench_faults.add_argument(
        "--only", nargs="+", metavar="NAME", help="scenarios to run (e.g. sigterm frozen)"
    )
    bench_faults.add_argument("--model", type=Path, help="default: the shipped demo model")
    bench_faults.add_argument("--face-model", type=Path, help=FACE_MODEL_HELP)
    bench_faults.add_argument("--keep", type=Path, help="keep the sessions and logs under here")
    bench_faults.add_argument("--json", type=Path, help="also write the full record here")
    _add_force(bench_faults, "--json")
    bench_faults.set_defaults(func=_cmd_bench_faults)

    bench_ward = bench_sub.add_parser(
        "ward",
        help="N simulated beds and one station over a real Mosquitto (issue #14): delivered %%, "
        "latencies, alarm events lost; exit 1 if a target is missed",
    )
    bench_ward.add_argument("--beds", type=_int_option(1, 512), default=16)
    bench_ward.add_argument("--hz", type=_float_option(1.0, 10.0), default=10.0, help="obs rate")
    bench_ward.add_argument("--seconds", type=_positive_seconds, default=30.0)
    bench_ward.add_argument(
        "--procs", type=_positive_int, help="bed processes (default: one per bed)"
    )
    bench_ward.add_argument(
        "--alarm-every-s", type=_positive_seconds, default=2.0, help="alarm events per bed"
    )
    bench_ward.add_argument(
        "--faults",
        action="store_true",
        help="after the normal run: broker SIGTERM/SIGKILL + restart, station restart, "
        "bed SIGKILL/SIGSTOP, acknowledge round trips",
    )
    bench_ward.add_argument(
        "--fault",
        action="append",
        choices=[
            "broker-sigterm",
            "broker-sigkill",
            "station-restart",
            "bed-sigkill",
            "bed-sigstop",
        ],
        metavar="NAME",
        help="one fault run (repeatable): broker-sigterm, broker-sigkill, station-restart, "
        "bed-sigkill, bed-sigstop",
    )
    bench_ward.add_argument("--json", type=Path, help="also write the record here")
    _add_force(bench_ward, "--json")
    bench_ward.set_defaults(func=_cmd_bench_ward)

    monitor = sub.add_parser(
        "monitor",
        help="headless monitoring into session files",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        # The codes are defined in painmon.core.live.monitor.MONITOR_EXIT_CODES (a test keeps
        # this text in step; importing the monitor here would slow every command down).
        epilog="""\
exit status:
  0    the run ended cleanly (end of media, or --max-seconds)
  2    it could not start (bad source, model or arguments; one-line error)
  3    it ended on a fault: source error, damaged media, model error or session
       files that could not be written (the summary's "ended:" line says which)
  129  hangup (SIGHUP: the terminal closed)
  130  interrupted (Ctrl-C, SIGINT)
  143  terminated (SIGTERM)
Every ending syncs and closes the session files and records why in session.json.""",
    )
    monitor.add_argument(
        "--source",
        required=True,
        help="camera:N, a video file, an image folder, a URL or synthetic",
    )
    monitor.add_argument(
        "--model", type=Path, help="model.onnx from painmon export (default: the demo model)"
    )
    monitor.add_argument("--out", type=Path, required=True, help="folder for session files")
    monitor.add_argument(
        "--max-seconds", type=_positive_seconds, help="stop after this much media time"
    )
    monitor.add_argument("--realtime", action="store_true", help="play files at their own speed")
    monitor.add_argument("--face-model", type=Path, help=FACE_MODEL_HELP)
    monitor.add_argument("--pseudonym", default="anonymous", help="patient pseudonym (no names)")
    monitor.add_argument(
        "--pipelined",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="find the next frame's face while this one is scored: same results, more frames "
        "per second when frames queue up (default; --no-pipelined: one thread)",
    )
    ward_bus = monitor.add_argument_group(
        "ward bus (needs the ward extra: pip install 'painmon[ward]')"
    )
    ward_bus.add_argument(
        "--publish", metavar="URL", help="also publish to the ward's MQTT broker: mqtt://HOST:PORT"
    )
    ward_bus.add_argument("--ward", help="ward label on the bus (with --publish)")
    ward_bus.add_argument("--bed", help="bed label on the bus, also its MQTT user name")
    ward_bus.add_argument(
        "--obs-hz", type=float, default=2.0, help="observations per second, 1-10 (default 2)"
    )
    ward_bus.add_argument(
        "--remote-ack",
        action="store_true",
        help="let the central station acknowledge alarms at this bed (off by default)",
    )
    ward_bus.add_argument("--mqtt-user", help="MQTT user name (default: none, or --bed's label)")
    ward_bus.add_argument("--mqtt-password-file", type=Path, help="file holding the MQTT password")
    ward_bus.add_argument("--tls-ca", type=Path, help="the ward CA's certificate (PEM)")
    ward_bus.add_argument("--tls-cert", type=Path, help="this bed's client certificate (PEM)")
    ward_bus.add_argument("--tls-key", type=Path, help="this bed's client key (PEM)")
    monitor.set_defaults(func=_cmd_monitor)

    for name, func, text, source_help, model_help in (
        ("app", _cmd_app, "the bedside monitor window", "default: last used, else camera:0",
         "default: last used"),
        ("demo", _cmd_demo, "the bedside window on a scripted synthetic patient",
         "default: synthetic", "default: the shipped demo model"),
    ):  # fmt: skip
        window = sub.add_parser(name, help=text)
        window.add_argument(
            "--source", help=f"camera:N, video file, image folder, URL or synthetic ({source_help})"
        )
        window.add_argument("--model", type=Path, help=f"model.onnx ({model_help})")
        window.add_argument("--face-model", type=Path, help=FACE_MODEL_HELP)
        window.add_argument(
            "--every-frame",
            action="store_true",
            help="score every frame of a file in order, in slow motion if needed, for "
            "analysis (default: play at the file's own rate and drop frames that cannot "
            "be scored)",
        )
        window.set_defaults(func=func)

    hl7 = sub.add_parser(
        "hl7-gateway",
        help="send the ward's observations and alarms to the hospital record (HL7 v2 / MLLP)",
        description="Subscribes to the ward broker (read-only: no receipts, no commands) and "
        "sends one HL7 v2.6 ORU^R01 per bed per period (IHE PCD-01) and one ORU^R40 per "
        "alarm event (IHE PCD-04) over MLLP, through a durable outbox on disk: a message is "
        "deleted only after the receiver's MSA|AA; AE/AR answers are kept in OUTBOX/rejected.",
    )
    hl7.add_argument("--broker", required=True, help="mqtt://HOST:PORT or mqtts://HOST:PORT")
    hl7.add_argument("--mllp", required=True, help="the HL7 receiver, HOST:PORT")
    hl7.add_argument("--ward", default="+", help="the ward label (default: every ward)")
    hl7.add_argument(
        "--every-s",
        type=_float_option(1.0),
        default=60.0,
        help="one observation report per bed per this many seconds (default 60)",
    )
    hl7.add_argument(
        "--outbox", type=Path, help="outbox folder (default: hl7-outbox in the user data folder)"
    )
    hl7.add_argument("--mqtt-user", help="MQTT user name of the gateway")
    hl7.add_argument(
        "--mqtt-password-file", type=Path, help="file whose first line is the MQTT password"
    )
    hl7.add_argument("--tls-ca", type=Path, help="CA certificate (PEM) of the ward broker")
    hl7.set_defaults(func=_cmd_hl7_gateway)

    station = sub.add_parser(
        "station",
        help="the central station window: every bed of the ward on one screen",
        description="Subscribes to the ward broker, shows one tile per bed (level or why it is "
        "unknown, 10-minute sparkline, alarms, OFFLINE / NO DATA), confirms every alarm event "
        "with a receipt and sends acknowledge requests to beds that allow them.",
    )
    station.add_argument("--broker", required=True, help="mqtt://HOST:PORT or mqtts://HOST:PORT")
    station.add_argument("--ward", default="+", help="the ward label (default: every ward)")
    station.add_argument(
        "--station-id", default="station", help="this station's name on the bus (default station)"
    )
    station.add_argument("--mqtt-user", help="the station's MQTT user name")
    station.add_argument(
        "--mqtt-password-file", type=Path, help="file whose first line is the MQTT password"
    )
    station.add_argument("--tls-ca", type=Path, help="CA certificate (PEM) of the ward broker")
    station.add_argument("--tls-cert", type=Path, help="the station's client certificate (PEM)")
    station.add_argument("--tls-key", type=Path, help="the station's client key (PEM)")
    station.set_defaults(func=_cmd_station)

    rep = sub.add_parser("reproduce", help="the founding paper's Tables 2-4 in one command")
    rep.add_argument("--manifest", type=Path, required=True, help="manifest, UNBC or BioVid root")
    rep.add_argument(
        "--splits", type=Path, help="splits.json from `painmon split` (else made here)"
    )
    rep.add_argument("--epochs", type=_positive_int, default=100)
    rep.add_argument("--batch-size", type=_int_option(2), default=32)
    rep.add_argument(
        "--lr",
        type=_float_option(0.0, above=True),
        default=1e-4,
        help="every row's learning rate (paper: 1e-4)",
    )
    rep.add_argument("--device", default="auto", help="auto, cuda, mps or cpu")
    rep.add_argument("--cache-dir", type=Path, help="face-crop cache (default: user cache)")
    rep.add_argument("--out", type=Path, required=True, help="tables.md, results.json, CV runs")
    rep.add_argument(
        "--quick", action="store_true", help="smoke run (2 folds, 1 epoch): numbers mean nothing"
    )
    rep.add_argument(
        "--jobs", type=_positive_int, default=1, help="folds trained at once (processes)"
    )
    _add_nondeterministic(rep)
    rep.add_argument("--engine", choices=CV_ENGINES, default="processes",
                     help=ENGINE_HELP)  # fmt: skip
    rep.add_argument(
        "--seeds", default="42", help="training seeds, comma-separated, e.g. 42,123,999"
    )
    rep.add_argument(
        "--split-seed",
        type=_seed,
        default=42,
        help="seed of the subject split and folds, independent of --seeds (default 42; "
        "another value gives other test subjects)",
    )
    rep.add_argument("--folds", type=_int_option(2), default=5)
    rep.add_argument(
        "--resume",
        action="store_true",
        help="continue a reproduce in --out, reusing its finished cross-validations",
    )
    _add_allow_outside_root(rep)
    _add_force(rep, "--out")
    rep.set_defaults(func=_cmd_reproduce)
    return parser


class _CliLogFormatter(logging.Formatter):
    """Progress (INFO) as the bare message; warnings and errors with level and source.

    Every line goes through :func:`redact_source`: a library's message or a traceback
    may quote a stream URL with its password or token.
    """

    def format(self, record: logging.LogRecord) -> str:
        if record.levelno == logging.INFO:
            return redact_source(record.getMessage())
        return redact_source(f"{record.levelname} {record.name}: {super().format(record)}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a usage error (already printed, one line)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING)
    for handler in logging.getLogger().handlers:
        if type(handler) is logging.StreamHandler and handler.formatter is not None:
            handler.setFormatter(_CliLogFormatter("%(message)s"))
    # painmon's own progress (epochs, CV rows, sessions) is for the user; other libraries
    # stay at warnings. Restored on the way out: main() also runs inside other programs.
    painmon_log = logging.getLogger("painmon")
    previous_level = painmon_log.level
    if not args.verbose:
        painmon_log.setLevel(logging.INFO)
    try:
        return _run(parser, args)
    finally:
        painmon_log.setLevel(previous_level)


def _run(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    func: Callable[[argparse.Namespace], int] | None = getattr(args, "func", None)
    if func is None:
        if args.command is None:
            parser.print_help()
            return EXIT_USAGE
        # ``painmon models`` / ``painmon bench`` without saying which one: that command's own
        # help on stdout, then the usual one error line on stderr, exit 2 (argparse's way).
        action = next(a for a in parser._subparsers._group_actions if a.dest == "command")
        sub = action.choices[args.command]
        sub.print_help()
        choices = next(a for a in sub._subparsers._group_actions).choices
        return _report_error(
            args, f"choose one of {', '.join(choices)} (its help is printed above)"
        )
    missing = missing_training_extra(_command_name(args))
    if missing:
        return _report_error(args, _training_extra_message(missing))
    # Only PainmonError (and the environment's OSError) is the user's to fix. Anything else
    # (ValueError, KeyError, TypeError, AssertionError ...) is a bug in painmon: it propagates,
    # Python prints the traceback and the process exits with status 1.
    try:
        return func(args)
    except PainmonError as exc:  # the user can act on it: one line, no traceback
        return _report_error(args, str(exc))
    except ModuleNotFoundError as exc:
        top = (exc.name or "").partition(".")[0]
        if top not in TRAIN_EXTRA_MODULES:
            raise  # a missing module outside the optional training extra: a broken install
        return _report_error(args, _training_extra_message([top]))
    except OSError as exc:
        # The environment, not painmon: a missing file, permission denied, a full disk or a
        # dropped connection. The user fixes those, so one line naming the file, not a bug.
        return _report_error(args, _describe_os_error(exc))
    except KeyboardInterrupt:
        print(f"painmon {args.command}: interrupted", file=sys.stderr)
        return 130


def _command_name(args: argparse.Namespace) -> str:
    """``bench pipeline``, as argparse names it in its own errors (else ``train`` ...)."""
    action = getattr(args, f"{args.command}_command", None)
    return f"{args.command} {action}" if isinstance(action, str) else str(args.command)


def missing_training_extra(
    command: str, find_spec: Callable[[str], object] | None = None
) -> list[str]:
    """The ``train`` extra's modules ``command`` imports that this install lacks."""
    if find_spec is None:
        import importlib.util

        find_spec = importlib.util.find_spec
    return [m for m in TRAIN_EXTRA_NEEDS.get(command, ()) if find_spec(m) is None]


def _training_extra_message(missing: Sequence[str]) -> str:
    return (
        f"needs the training extra: {TRAIN_EXTRA_INSTALL} (missing: {', '.join(missing)}); "
        "the bedside commands (monitor, app, demo, doctor) run without it"
    )


def _report_error(args: argparse.Namespace, message: str) -> int:
    """Print ``painmon CMD: error: MESSAGE`` on stderr (plus the traceback with -v); exit 2."""
    command = _command_name(args)
    if args.verbose:
        log.exception("painmon %s failed", command)
    print(f"painmon {command}: error: {message}", file=sys.stderr)
    return EXIT_USAGE


def _describe_os_error(exc: OSError) -> str:
    """``str(exc)``, with the file name added when the OS error carries one but not its text."""
    text = str(exc) or type(exc).__name__
    for name in (exc.filename, exc.filename2):
        if name is not None and str(name) not in text:
            text = f"{text}: {name}"
    return text
