"""``latentebm train --processes N`` and :mod:`latentebm.launch`: the processes' environment,
signals passed on exactly once, one failure ending the job, the batch split, and a stop that
reaches one rank only stopping every rank at the same step."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
import yaml

from latentebm.checkpoint import checkpoint_path, list_checkpoints
from latentebm.cli import main
from latentebm.cli.entry import _parse
from latentebm.launch import run_processes, threads_per_process, worker_environment
from tests.conftest import cli_env

# a worker that counts the SIGINTs and SIGTERMs it gets (until one arrives, or 30 s, then 1 s
# more for a second copy) and writes "<SIGINTs> <SIGTERMs>" to READY_DIR/<rank>.count
COUNTING_WORKER = textwrap.dedent(
    """
    import os, signal, sys, time
    counts = {signal.SIGINT: 0, signal.SIGTERM: 0}
    def count(signum, frame):
        counts[signum] += 1
    signal.signal(signal.SIGINT, count)
    signal.signal(signal.SIGTERM, count)
    folder, rank = os.environ["READY_DIR"], os.environ["RANK"]
    open(f"{folder}/{rank}", "w").close()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not any(counts.values()):
        time.sleep(0.05)
    time.sleep(1.0)
    with open(f"{folder}/{rank}.count", "w") as out:
        out.write(f"{counts[signal.SIGINT]} {counts[signal.SIGTERM]}")
    """
)


def _counting_job(folder: Path, *, ignore_hangup: bool = False) -> subprocess.Popen[bytes]:
    """A launcher of two counting workers in a new session (standing for a terminal's
    foreground process group), once both workers are up."""
    # a terminal's foreground job: SIGINT and SIGHUP as a shell leaves them (pytest itself may
    # run as a background job, whose SIGINT is ignored and would stay so)
    hangup = "signal.SIG_IGN" if ignore_hangup else "signal.SIG_DFL"
    launcher = (
        "import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
        f"signal.signal(signal.SIGHUP, {hangup}); from latentebm.launch import run_processes; "
        f"sys.exit(run_processes([sys.executable, '-c', {COUNTING_WORKER!r}], 2, threads=1))"
    )
    env = cli_env(READY_DIR=str(folder))
    job = subprocess.Popen([sys.executable, "-c", launcher], env=env, start_new_session=True)
    deadline = time.monotonic() + 60
    while not ((folder / "0").exists() and (folder / "1").exists()):
        assert time.monotonic() < deadline and job.poll() is None, "the workers did not start"
        time.sleep(0.05)
    return job


def _counts(job: subprocess.Popen[bytes], folder: Path) -> dict[str, str]:
    try:
        assert job.wait(timeout=60) == 0
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
    return {rank: (folder / f"{rank}.count").read_text() for rank in ("0", "1")}


def test_threads_per_process_shares_the_cores_unless_told() -> None:
    assert threads_per_process(2, {"OMP_NUM_THREADS": "3"}) == 3
    cores = len(os.sched_getaffinity(0))
    assert threads_per_process(2, {}) == max(1, cores // 2)
    assert threads_per_process(cores * 4, {"OMP_NUM_THREADS": ""}) == 1


def test_worker_environment_is_what_init_distributed_reads() -> None:
    env = worker_environment({"KEEP": "1"}, rank=1, processes=2, port=1234, threads=1)
    assert env["KEEP"] == "1"
    assert (env["RANK"], env["LOCAL_RANK"], env["WORLD_SIZE"]) == ("1", "1", "2")
    assert (env["MASTER_ADDR"], env["MASTER_PORT"], env["OMP_NUM_THREADS"]) == (
        "127.0.0.1",
        "1234",
        "1",
    )


def test_each_process_gets_its_rank(tmp_path: Path) -> None:
    script = (
        "import os, sys; "
        "open(sys.argv[1] + '/' + os.environ['RANK'], 'w').write(os.environ['WORLD_SIZE'])"
    )
    command = [sys.executable, "-c", script, str(tmp_path)]
    assert run_processes(command, 3, threads=1) == 0
    assert {p.name: p.read_text() for p in tmp_path.iterdir()} == {"0": "3", "1": "3", "2": "3"}


def test_the_store_is_served_before_any_process_starts(tmp_path: Path) -> None:
    """Each process finds the launcher's store already listening at MASTER_PORT and joins it as
    a client: what one process sets there, another reads (no port picked first and bound by
    rank 0 later, which another program could take in between)."""
    script = textwrap.dedent(
        """
        import os, sys
        from datetime import timedelta
        from torch.distributed import TCPStore
        assert os.environ["TORCHELASTIC_USE_AGENT_STORE"] == "True"
        store = TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]),
                         is_master=False, timeout=timedelta(seconds=120))
        rank = os.environ["RANK"]
        store.set("rank" + rank, "here")
        other = store.get("rank" + str(1 - int(rank))).decode()
        open(sys.argv[1] + "/" + rank, "w").write(other)
        """
    )
    assert run_processes([sys.executable, "-c", script, str(tmp_path)], 2, threads=1) == 0
    assert {p.name: p.read_text() for p in tmp_path.iterdir()} == {"0": "here", "1": "here"}


def test_one_failure_ends_the_others(tmp_path: Path) -> None:
    script = (
        "import os, sys, time; r = os.environ['RANK']; sys.exit(3) if r == '1' else time.sleep(60)"
    )
    started = time.monotonic()
    assert run_processes([sys.executable, "-c", script], 2, threads=1, grace_seconds=0.5) == 3
    assert time.monotonic() - started < 20  # rank 0 was killed, not waited for


def test_a_ctrl_c_at_the_terminal_reaches_every_process_once(tmp_path: Path) -> None:
    """The terminal sends SIGINT to its foreground process group: the launcher's. Each worker
    must get exactly one (from the launcher), not a second one from the terminal."""
    job = _counting_job(tmp_path)
    os.killpg(job.pid, signal.SIGINT)  # what Ctrl-C does
    assert _counts(job, tmp_path) == {"0": "1 0", "1": "1 0"}


def test_sigterm_to_the_launcher_reaches_every_process(tmp_path: Path) -> None:
    job = _counting_job(tmp_path)
    job.send_signal(signal.SIGTERM)
    assert _counts(job, tmp_path) == {"0": "0 1", "1": "0 1"}


def test_a_signal_while_the_processes_start_reaches_them_after(tmp_path: Path) -> None:
    """A SIGTERM that arrives while the launcher starts its processes, and lands on a thread of
    the launcher that does not hold it (one started before the launcher's signal mask), is
    queued and passed on once every process exists, not lost."""
    launcher = textwrap.dedent(
        f"""
        import os, signal, sys, threading, time
        import latentebm.launch as launch
        go, sent = threading.Event(), threading.Event()
        def other_thread():  # started before the mask: SIGTERM lands here
            go.wait()
            os.kill(os.getpid(), signal.SIGTERM)
            sent.set()
        threading.Thread(target=other_thread, daemon=True).start()
        serve = launch.serve_store
        def serve_after_a_signal(processes):
            go.set()
            sent.wait()
            time.sleep(0.5)  # the handler runs in the main thread meanwhile
            return serve(processes)
        launch.serve_store = serve_after_a_signal
        sys.exit(launch.run_processes([sys.executable, "-c", {COUNTING_WORKER!r}], 2, threads=1))
        """
    )
    env = cli_env(READY_DIR=str(tmp_path))
    job = subprocess.run([sys.executable, "-c", launcher], env=env, timeout=120)
    counts = {p.name: p.read_text() for p in tmp_path.glob("*.count")}
    # each worker counted the SIGTERM, or (before installing its handler) was ended by it;
    # a lost signal leaves both counting "0 0" after 30 s and the job exiting 0
    if job.returncode == 0:
        assert counts == {"0.count": "0 1", "1.count": "0 1"}
    else:
        assert job.returncode == 128 + signal.SIGTERM
        assert all(count == "0 1" for count in counts.values())


def test_a_hangup_ignored_by_nohup_stays_ignored(tmp_path: Path) -> None:
    """Under ``nohup`` a closed terminal must not stop the job; a closed terminal without it
    stops the processes with SIGTERM."""
    job = _counting_job(tmp_path, ignore_hangup=True)
    os.killpg(job.pid, signal.SIGHUP)
    time.sleep(1.0)
    os.killpg(job.pid, signal.SIGINT)
    assert _counts(job, tmp_path) == {"0": "1 0", "1": "1 0"}  # no SIGTERM from the hangup
    folder = tmp_path / "without_nohup"
    folder.mkdir()
    job = _counting_job(folder)
    os.killpg(job.pid, signal.SIGHUP)
    assert _counts(job, folder) == {"0": "0 1", "1": "0 1"}


def test_overrides_may_follow_the_options() -> None:
    args = _parse(["train", "r.yaml", "a.b=1", "--processes", "2", "c=2", "~d"])
    assert (args.processes, args.overrides) == (2, ["a.b=1", "c=2", "~d"])
    with pytest.raises(SystemExit):
        _parse(["train", "r.yaml", "--processes", "2", "stray"])


def test_a_batch_that_does_not_split_is_refused_before_anything_starts(
    tiny_recipe, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recipe = tiny_recipe()  # batch_size 16
    run = tmp_path / "run"
    assert main(["train", str(recipe), "--processes", "3", f"trainer.run_dir={run}"]) != 0
    err = capsys.readouterr().err
    assert "trainer.batch_size=16 does not split into 3" in err
    assert len([line for line in err.splitlines() if "error" in line]) == 1
    assert not run.exists()


def test_processes_are_refused_where_they_cannot_apply(
    tiny_recipe, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    recipe = tiny_recipe()
    monkeypatch.setenv("WORLD_SIZE", "2")  # already one of torchrun's processes
    assert main(["train", str(recipe), "--processes", "2"]) != 0
    assert "already runs as one of 2 processes" in capsys.readouterr().err
    monkeypatch.setenv("WORLD_SIZE", "1")  # one process: nothing launched yet, no refusal
    run = tmp_path / "gpu_run"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # device=auto: the GPU
    assert (
        main(["train", str(recipe), "--processes", "2", "device=auto", f"trainer.run_dir={run}"])
        != 0
    )
    assert "the recipe trains on auto (device); --processes starts CPU processes" in (
        capsys.readouterr().err
    )
    assert not run.exists()
    monkeypatch.delenv("WORLD_SIZE")
    shortrun = tmp_path / "shortrun.yaml"
    shortrun.write_text("family: shortrun\n")
    assert main(["train", str(shortrun), "--processes", "2"]) != 0
    assert "is a short-run recipe, which trains in one process" in capsys.readouterr().err


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


def _rank_of(pid: int) -> str | None:
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return None
    for item in environ:
        if item.startswith(b"RANK="):
            return item[5:].decode()
    return None


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="reads /proc (Linux)")
def test_processes_train_split_batches_and_stop_together(tiny_recipe, tmp_path: Path) -> None:
    """Two processes: half the batch each, one run folder; a SIGINT that reaches rank 1 alone
    stops both at the same step with a checkpoint (they agree on the stop), and the run
    resumes from it."""
    run = tmp_path / "run"
    base = ["train", str(tiny_recipe()), "--processes", "2", f"trainer.run_dir={run}"]
    command = [sys.executable, "-m", "latentebm.cli", *base, "trainer.max_steps=100000"]
    job = subprocess.Popen(command, cwd=tmp_path, env=cli_env(), stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (run / "checkpoints").is_dir() or not list_checkpoints(run):
            assert time.monotonic() < deadline and job.poll() is None, "no checkpoint"
            time.sleep(0.2)
        rank1 = [p for p in _children(job.pid) if _rank_of(p) == "1"]
        assert len(rank1) == 1
        os.kill(rank1[0], signal.SIGINT)  # the main process never got a signal
        _, err = job.communicate(timeout=120)
    finally:
        if job.poll() is None:  # the workers too: they run in their own process group
            for pid in _children(job.pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            job.kill()
    assert job.returncode == 130, err[-2000:]
    assert err.count("SIGINT at step") == 1, err[-2000:]
    step = int(err.split("SIGINT at step ")[1].split(":")[0])
    state = torch.load(checkpoint_path(run, step), weights_only=True)
    assert state["world_size"] == 2 and len(state["rng"]) == 2
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["trainer"]["batch_size"] == 8  # the recipe's 16 split in two

    resumed = subprocess.run(
        [sys.executable, "-m", "latentebm.cli", *base, f"trainer.max_steps={step + 2}"]
        + ["trainer.resume=auto"],
        cwd=tmp_path,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"at step {step}" in resumed.stderr
    assert list_checkpoints(run)[-1] == checkpoint_path(run, step + 2)


def test_a_repeated_sigterm_is_one_request(tiny_recipe) -> None:
    """A job manager that signals every process (and the launcher passing it on) delivers
    SIGTERM twice: the trainer counts the second, within 2 s, as the same request (it still
    finishes its step and saves), where any other second signal stops at once."""
    from latentebm.config import load_recipe
    from latentebm.train import Trainer

    trainer = Trainer(load_recipe(tiny_recipe()))
    trainer._install_signal_handlers()
    try:
        signal.raise_signal(signal.SIGTERM)
        signal.raise_signal(signal.SIGTERM)  # no KeyboardInterrupt
        assert trainer._signal == signal.SIGTERM
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGINT)
        trainer._signal_at -= 3.0  # a SIGTERM seconds later is a second request
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGTERM)
    finally:
        trainer._restore_signal_handlers()
