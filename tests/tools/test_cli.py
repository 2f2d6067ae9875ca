"""The `painmon` command line: real output, exit codes, one clear line on bad input."""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys

import pytest

from painmon.core.tools.cli import main


def test_version_through_python_dash_m():
    out = subprocess.run([sys.executable, "-m", "painmon", "--version"], capture_output=True,
                         text=True, timeout=60, check=True)  # fmt: skip
    assert out.stdout.startswith("painmon ")


def test_progress_into_a_log_file_is_whole_lines(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "painmon", "synth", "--out", str(tmp_path / "d"), "--subjects",
         "1", "--images-per-subject", "5", "--seed", "2"],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    assert "\r" not in proc.stderr
    lines = proc.stderr.splitlines()
    assert any(line.startswith("synthetic faces: 5/5 img (100 %), in ") for line in lines), lines
    # painmon's progress messages are bare; nothing says INFO.
    assert f"wrote 5 synthetic images of 1 subjects to {tmp_path / 'd'}" in lines
    assert "INFO" not in proc.stderr


def test_models_list_prints_every_model(capsys):
    assert main(["models", "list"]) == 0
    text = capsys.readouterr().out
    for name in ("dacnn", "simplecnn", "micropainnet", "painxception"):
        assert name in text
    assert "3x64x64" in text and "M " in text


@pytest.mark.slow
def test_synth_split_train_from_the_command_line(
    tmp_path, capsys, caplog, monkeypatch, face_model_path
):
    monkeypatch.setenv("PAINMON_FACE_MODEL", str(face_model_path))
    data = tmp_path / "data"
    assert main(["synth", "--out", str(data), "--subjects", "14", "--images-per-subject", "5",
                 "--seed", "1"]) == 0  # fmt: skip
    assert (data / "manifest.csv").is_file()
    assert "14" in capsys.readouterr().out

    splits = tmp_path / "splits.json"
    assert main(["split", "--manifest", str(data / "manifest.csv"), "--out", str(splits)]) == 0
    table = capsys.readouterr().out
    assert "train" in table and "test" in table and "fold 5 val" in table
    plan = json.loads(splits.read_text())
    assert set(plan) == {"manifest_sha256", "seed", "train", "val", "test", "folds"}

    run = tmp_path / "run"
    code = main(["train", "--manifest", str(data / "manifest.csv"), "--splits", str(splits),
                 "--model", "micropainnet", "--epochs", "1", "--batch-size", "8",
                 "--patience", "7", "--device", "cpu", "--out", str(run),
                 "--cache-dir", str(tmp_path / "cache")])  # fmt: skip
    assert code == 0
    assert "run folder" in capsys.readouterr().out
    # Each epoch is reported (not only a bar that vanishes), and main() puts the painmon
    # logger's level back when it returns.
    assert any(r.getMessage().startswith("epoch 1: loss") for r in caplog.records)
    assert logging.getLogger("painmon").level == logging.NOTSET
    assert (run / "best.safetensors").is_file()
    assert json.loads((run / "config.json").read_text())["patience"] == 7

    metrics, preds = tmp_path / "metrics.json", tmp_path / "preds.csv"
    assert main(["evaluate", "--run", str(run), "--manifest", str(data / "manifest.csv"),
                 "--json", str(metrics), "--predictions", str(preds),
                 "--report", str(tmp_path / "report.html"),
                 "--cache-dir", str(tmp_path / "cache")]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "macro-F1" in out and re.search(
        r"calibration: temperature [\d.]+; ECE [\d.]+ at T = 1 -> ", out
    )
    assert "<img" in (tmp_path / "report.html").read_text()
    result = json.loads(metrics.read_text())
    for key in (
        "accuracy",
        "balanced_accuracy",
        "macro_f1",
        "cohen_kappa",
        "quadratic_kappa",
        "mcc",
        "auc_macro",
        "auc_micro",
        "ece",
        "brier",
        "nll",
        "confusion_matrix",
        "n",
    ):
        assert key in result, key  # fmt: skip
    lines = preds.read_text().splitlines()
    assert lines[0] == "path,subject,label,pred,p0,p1,p2,p3,p4"
    assert len(lines) - 1 == result["n"]
    test_subjects = set(plan["test"])
    assert {line.split(",")[1] for line in lines[1:]} <= test_subjects
    probs = [float(x) for x in lines[1].split(",")[4:]]
    assert abs(sum(probs) - 1) < 1e-4

    # Export with no --manifest: the domain gate is fitted on the dataset the run recorded,
    # on its own training subjects, with the threshold from its validation subjects.
    onnx_path = tmp_path / "model.onnx"
    assert main(["export", "--run", str(run), "--out", str(onnx_path)]) == 0
    out = capsys.readouterr().out
    assert re.search(r"domain gate: Mahalanobis on \d+ features, fitted on \d+ crops of "
                     r"\d+ training subjects; threshold [\d.]+", out)  # fmt: skip
    assert onnx_path.is_file() and (tmp_path / "model.onnx.sha256").is_file()

    # The same --out again: refused (the first export stays) unless --force.
    first = onnx_path.read_bytes()
    assert main(["export", "--run", str(run), "--out", str(onnx_path), "--demo"]) == 2
    assert "refusing to overwrite" in capsys.readouterr().err
    assert onnx_path.read_bytes() == first
    assert main(["export", "--run", str(run), "--out", str(onnx_path), "--demo", "--force"]) == 0
    assert "max |diff|" in capsys.readouterr().out
    assert onnx_path.is_file() and (tmp_path / "model.onnx.sha256").is_file()


@pytest.mark.parametrize(
    "argv",
    [
        ["split", "--manifest", "/nonexistent/manifest.csv", "--out", "x.json"],
        ["synth"],
        ["synth", "--out", "{tmp}/d", "--subjects", "0"],
        ["export", "--run", "{tmp}/no-run", "--out", "{tmp}/m.onnx"],
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(argv, tmp_path, capsys):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("painmon ") and "error:" in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    "argv",
    [
        ["cv", "--manifest", "{tmp}/m.csv", "--out", "{tmp}/o", "--seeds", "42,x"],
        ["train", "--manifest", "{tmp}/m.csv", "--out", "{tmp}/o", "--epochs", "0"],
        ["synth", "--video", "{tmp}/v.mp4", "--fps", "0"],
        ["bench", "pipeline", "--source", "synthetic", "--max-frames", "0"],
        ["models", "download", "--timeout", "0"],
    ],
)
def test_bad_values_once_plain_value_errors_are_one_line_and_exit_code_2(argv, tmp_path, capsys):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    command = " ".join(argv[:2]) if argv[0] in ("bench", "models") else argv[0]
    assert err.startswith(f"painmon {command}: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err


def test_a_painmon_error_from_a_command_is_one_line_and_exit_code_2(monkeypatch, capsys):
    from painmon.core.tools import cli
    from painmon.core.util.errors import PainmonError

    def fail(args):
        raise PainmonError("the camera is busy; close the other program and retry")

    monkeypatch.setattr(cli, "_cmd_doctor", fail)
    assert main(["doctor"]) == 2
    err = capsys.readouterr().err
    assert err == "painmon doctor: error: the camera is busy; close the other program and retry\n"


def test_verbose_also_logs_the_traceback_of_a_painmon_error(monkeypatch, capsys, caplog):
    from painmon.core.tools import cli
    from painmon.core.util.errors import InvalidInputError

    def fail(args):
        raise InvalidInputError("seed must be an int")

    monkeypatch.setattr(cli, "_cmd_doctor", fail)
    with caplog.at_level(logging.DEBUG, logger="painmon"):
        assert main(["-v", "doctor"]) == 2
    assert "painmon doctor: error: seed must be an int" in capsys.readouterr().err
    assert any(r.exc_info and r.exc_info[0] is InvalidInputError for r in caplog.records)


def test_an_os_error_is_one_line_naming_the_file(monkeypatch, capsys):
    from painmon.core.tools import cli

    def fail(args):
        raise PermissionError(13, "Permission denied", "/data/sessions")

    monkeypatch.setattr(cli, "_cmd_doctor", fail)
    assert main(["doctor"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("painmon doctor: error: ") and err.count("\n") == 1
    assert "Permission denied" in err and "/data/sessions" in err


@pytest.mark.parametrize("bug", [ValueError, KeyError, TypeError, AssertionError])
def test_an_unexpected_exception_is_a_bug_and_propagates(bug, monkeypatch, capsys):
    from painmon.core.tools import cli

    def fail(args):
        raise bug("internal invariant broken")

    monkeypatch.setattr(cli, "_cmd_doctor", fail)
    with pytest.raises(bug, match="internal invariant broken"):
        main(["doctor"])
    assert "error:" not in capsys.readouterr().err


def test_an_unexpected_value_error_exits_1_with_a_traceback():
    # As the installed `painmon` script runs it: sys.exit(main()).
    code = (
        "import sys\n"
        "from painmon.core.tools import cli\n"
        "def fail(args):\n"
        "    raise ValueError('internal invariant broken')\n"
        "cli._cmd_doctor = fail\n"
        "sys.exit(cli.main(['doctor']))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert proc.returncode == 1
    assert "Traceback (most recent call last)" in proc.stderr
    assert "ValueError: internal invariant broken" in proc.stderr
    assert "painmon doctor: error:" not in proc.stderr


# ---- outputs that exist are never overwritten without --force ---------------------------


def _tree(root):
    """Every path under ``root`` with its size and modification time: a disk fingerprint."""
    return {
        str(p.relative_to(root)): (p.is_dir(), p.lstat().st_size, p.lstat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
    }


# (argv, the output that already holds something: a file or a folder with a file)
REFUSED_OUTPUTS = [
    (["synth", "--out", "{tmp}/out", "--subjects", "1", "--images-per-subject", "5"], "out/"),
    (["synth", "--video", "{tmp}/out.mp4", "--seconds", "1"], "out.mp4"),
    (["synth", "--video", "{tmp}/v.mp4", "--seconds", "1"], "v.truth.csv"),
    (["split", "--manifest", "{tmp}/m.csv", "--out", "{tmp}/out"], "out"),
    (["crops", "--manifest", "{tmp}/m.csv", "--out", "{tmp}/out"], "out"),
    (["train", "--manifest", "{tmp}/m.csv", "--out", "{tmp}/out"], "out/"),
    (["cv", "--manifest", "{tmp}/m.csv", "--out", "{tmp}/out"], "out/"),
    (["evaluate", "--run", "{tmp}/r", "--manifest", "{tmp}/m.csv", "--json", "{tmp}/out"], "out"),
    (["evaluate", "--run", "{tmp}/r", "--manifest", "{tmp}/m.csv", "--predictions",
      "{tmp}/out"], "out"),
    (["evaluate", "--run", "{tmp}/r", "--manifest", "{tmp}/m.csv", "--report", "{tmp}/out"],
     "out"),
    (["export", "--run", "{tmp}/r", "--out", "{tmp}/out"], "out"),
    (["export", "--run", "{tmp}/r", "--out", "{tmp}/m.onnx"], "m.onnx.sha256"),
    (["reproduce", "--manifest", "{tmp}/m.csv", "--out", "{tmp}/out"], "out/"),
    (["bench", "train", "--json", "{tmp}/out"], "out"),
    (["bench", "pipeline", "--source", "synthetic", "--json", "{tmp}/out"], "out"),
    (["bench", "soak", "--seconds", "1", "--json", "{tmp}/out"], "out"),
    (["bench", "app", "--source", "{tmp}/v.mp4", "--json", "{tmp}/out"], "out"),
    (["bench", "gate", "--json", "{tmp}/out"], "out"),
    (["bench", "au", "--synth-dir", "{tmp}/out", "--skip-media"], "out/"),
]  # fmt: skip


@pytest.mark.parametrize(("argv", "existing"), REFUSED_OUTPUTS, ids=lambda v: " ".join(v)[:40])
def test_an_existing_output_is_refused_before_any_work(argv, existing, tmp_path, capsys):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    target = tmp_path / existing.rstrip("/")
    if existing.endswith("/"):
        target.mkdir()
        target = target / "best.safetensors"
    target.write_bytes(b"a finished result")
    before = _tree(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    command = " ".join(argv[:2]) if argv[0] == "bench" else argv[0]
    assert err.startswith(f"painmon {command}: error: refusing to overwrite {tmp_path}/"), err
    assert "or pass --force" in err
    assert _tree(tmp_path) == before  # nothing written, nothing changed


def test_force_overwrites_and_resume_continues(tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    (data / "stale.txt").write_text("an old dataset")
    synth = ["synth", "--out", str(data), "--subjects", "1", "--images-per-subject", "5"]
    assert main(synth) == 2
    assert main([*synth, "--force"]) == 0
    assert (data / "manifest.csv").is_file()
    capsys.readouterr()
    # --resume is train's way past the guard: it then fails on what there is to resume.
    run = tmp_path / "run"
    run.mkdir()
    (run / "best.json").write_text("{}")
    argv = ["train", "--manifest", str(data / "manifest.csv"), "--out", str(run), "--device", "tpu"]
    assert main(argv) == 2
    assert "pass --resume to continue it" in capsys.readouterr().err
    assert main([*argv, "--resume"]) == 2
    assert "refusing" not in capsys.readouterr().err
    # A launcher's log in a fresh run folder (the app's retraining) is not a result.
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    (fresh / "train.log").write_text("starting\n")
    assert main([*argv[:4], str(fresh), "--device", "tpu"]) == 2
    assert "refusing" not in capsys.readouterr().err


@pytest.mark.parametrize("jobs", ["0", "-2"])
@pytest.mark.parametrize("command", [["cv"], ["reproduce"], ["bench", "train"]])
def test_jobs_below_one_is_one_line_and_exit_code_2(command, jobs, tmp_path, capsys):
    argv = [*command, "--jobs", jobs]
    if command[0] != "bench":
        argv += ["--manifest", str(tmp_path / "m.csv"), "--out", str(tmp_path / "o")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err == (
        f"painmon {' '.join(command)}: error: argument --jobs: must be a whole number >= 1, "
        f"got {jobs} (see painmon {' '.join(command)} --help)\n"
    )
    assert list(tmp_path.iterdir()) == []


def _toy_manifest(folder, subjects: int = 15, per_subject: int = 4, outside=None):
    """A manifest of distinct tiny files (the loader never decodes them)."""
    (folder / "img").mkdir(parents=True)
    rows = ["path,subject,label"]
    for s in range(subjects):
        for i in range(per_subject):
            path = folder / "img" / f"s{s:02d}_{i}.png"
            path.write_bytes(f"{s}-{i}".encode())
            rows.append(f"img/{path.name},s{s:02d},{(s + i) % 5}")
    if outside is not None:
        outside.write_bytes(b"someone else's face")
        rows.append(f"{outside},s99,0")
    manifest = folder / "manifest.csv"
    manifest.write_text("\n".join(rows) + "\n")
    return manifest


def test_a_manifest_reaching_outside_its_folder_needs_allow_outside_root(tmp_path, capsys):
    manifest = _toy_manifest(tmp_path / "data", outside=tmp_path / "other.png")
    out = tmp_path / "splits.json"
    argv = ["split", "--manifest", str(manifest), "--out", str(out), "--folds", "2"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "outside the manifest's folder" in err
    assert "--allow-outside-root" in err and not out.exists()
    assert main([*argv, "--allow-outside-root"]) == 0
    assert "s99" in out.read_text()


def test_a_broken_crops_file_is_one_line_and_exit_code_2(tmp_path, capsys):
    bad = tmp_path / "crops.npz"
    bad.write_bytes(b"PK\x03\x04 cut off in the middle of a copy")
    assert main(["split", "--manifest", str(bad), "--out", str(tmp_path / "s.json")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"painmon split: error: cannot read crops file {bad}")
    assert err.count("\n") == 1 and not (tmp_path / "s.json").exists()


@pytest.mark.parametrize(
    "argv",
    [
        ["split", "--out", "{tmp}/out.json"],
        ["crops", "--out", "{tmp}/out.npz", "--cache-dir", "{tmp}/cache"],
        ["train", "--out", "{tmp}/out", "--cache-dir", "{tmp}/cache"],
        ["cv", "--out", "{tmp}/out", "--cache-dir", "{tmp}/cache"],
        ["evaluate", "--run", "{tmp}/data", "--json", "{tmp}/out.json", "--cache-dir",
         "{tmp}/cache"],
        ["reproduce", "--out", "{tmp}/out", "--cache-dir", "{tmp}/cache", "--quick"],
    ],
    ids=lambda argv: argv[0],
)  # fmt: skip
def test_one_face_under_two_subjects_is_refused_and_nothing_written(argv, tmp_path, capsys):
    manifest = _toy_manifest(tmp_path / "data")
    copy = tmp_path / "data" / "img" / "copy.png"
    copy.write_bytes((tmp_path / "data" / "img" / "s03_1.png").read_bytes())
    with manifest.open("a") as handle:
        handle.write("img/copy.png,s07,1\n")
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    before = _tree(tmp_path)
    assert main([*argv[:1], "--manifest", str(manifest), *argv[1:]]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "same image" in err, err
    for name in ("'s03'", "'s07'", "s03_1.png", "copy.png"):
        assert name in err
    assert _tree(tmp_path) == before


# --- issue #13: commands that tell the truth -------------------------------------------------


@pytest.mark.parametrize(
    ("command", "actions"),
    [("models", ("list", "download")), ("bench", ("train", "pipeline", "soak", "faults"))],
)
def test_a_command_without_its_action_prints_its_own_help_and_exits_2(command, actions, capsys):
    assert main([command]) == 2
    captured = capsys.readouterr()
    assert captured.out.startswith(f"usage: painmon {command} ")
    for action in actions:
        assert action in captured.out
    err = captured.err.splitlines()
    assert len(err) == 1 and err[0].startswith(f"painmon {command}: error: choose one of")


@pytest.mark.parametrize("command", ["app", "demo"])
@pytest.mark.parametrize("every_frame", [False, True])
def test_every_frame_reaches_the_window(command, every_frame, monkeypatch):
    import painmon.app.main as app_main

    seen = {}
    monkeypatch.setenv("QT_QPA_PLATFORM", "offscreen")
    monkeypatch.setattr(app_main, "run_app", lambda **kwargs: seen.update(kwargs) or 0)
    argv = [command, "--source", "synthetic"] + (["--every-frame"] if every_frame else [])
    assert main(argv) == 0
    assert seen["every_frame"] is every_frame
    assert seen.get("demo", False) is (command == "demo")


def test_every_frame_is_in_the_window_commands_help(capsys):
    for command in ("app", "demo"):
        assert main([command, "--help"]) == 0
        out = capsys.readouterr().out
        assert "--every-frame" in out and "drop frames" in out


def test_a_missing_camera_is_one_line_without_opencv_internals(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "painmon", "monitor", "--source", "camera:97", "--out",
         str(tmp_path / "s"), "--face-model", "haar"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.splitlines()
    assert lines[-1].startswith("painmon monitor: error: camera 97 could not be opened")
    # The only other line is the demo-model notice (no --model given).
    assert lines[:-1] == ["no --model given: using the synthetic-data DEMO model — not for "
                          "clinical use"]  # fmt: skip
    assert "VIDEOIO" not in proc.stderr and "WARN" not in proc.stderr


@pytest.mark.slow
def test_export_prints_its_summary_once(untrained_dacnn_onnx, tmp_path):
    checkpoint = untrained_dacnn_onnx.parent / "best.safetensors"
    proc = subprocess.run(
        [sys.executable, "-m", "painmon", "export", "--run", str(checkpoint), "--out",
         str(tmp_path / "m.onnx"), "--no-domain-gate"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    both = (proc.stdout + proc.stderr).splitlines()
    assert sum(line.startswith("exported ") for line in both) == 1, both
    assert sum("sha256" in line for line in both) == 1, both
    assert (tmp_path / "m.onnx.sha256").is_file()


def test_bench_app_every_frame_needs_playback_and_playback_reaches_the_benchmark(
    monkeypatch, capsys
):
    import painmon.app.bench as app_bench

    seen = {}

    def fake_playback(source, seconds, face_model, model, json_path, every_frame, serial=False):
        seen.update(source=source, seconds=seconds, every_frame=every_frame, serial=serial)
        return 0

    monkeypatch.setattr(app_bench, "bench_playback_cli", fake_playback)
    assert main(["bench", "app", "--source", "synthetic", "--every-frame"]) == 2
    assert "--every-frame applies to --playback only" in capsys.readouterr().err
    assert main(["bench", "app", "--source", "synthetic", "--playback", "--seconds", "3",
                 "--every-frame"]) == 0  # fmt: skip
    assert seen == {"source": "synthetic", "seconds": 3.0, "every_frame": True, "serial": False}
    assert main(["bench", "app", "--source", "synthetic", "--playback", "--serial"]) == 0
    assert seen["serial"] is True and seen["every_frame"] is False

    def fake_latency(source, seconds, face_model, model, json_path, serial=False):
        seen.update(latency_serial=serial)
        return 0

    monkeypatch.setattr(app_bench, "bench_app_cli", fake_latency)
    assert main(["bench", "app", "--source", "synthetic", "--serial"]) == 0
    assert seen["latency_serial"] is True
