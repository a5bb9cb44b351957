"""Tests of the generation tools: beam search, slerp, prior trajectories, interpolation and the
``generate --trajectory`` / ``interpolate`` commands (tiny recipe of tests/conftest.py)."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import pytest
import torch
from torch import Tensor

import latentebm
from latentebm.cli import main
from latentebm.generation import interpolate, prior_trajectory, slerp
from tests.conftest import train_tiny_run
from tests.test_lstm_decoder import BOS, EOS, PAD, VOCAB, Z_DIM, make_decoder

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def score(decoder: torch.nn.Module, seq: Tensor, z: Tensor) -> Tensor:
    """``log p(seq | z)`` of decoded rows, scored by ``log_likelihood`` on ``<bos> + seq``."""
    bos = torch.full((seq.shape[0], 1), BOS, dtype=torch.long)
    with torch.no_grad():
        return decoder.log_likelihood(torch.cat([bos, seq], dim=1), z)


def random_decoder(seed: int) -> torch.nn.Module:
    decoder = make_decoder(init_range=1.0)
    torch.manual_seed(seed)
    for param in decoder.parameters():
        torch.nn.init.uniform_(param, -1.0, 1.0)
    return decoder


# ------------------------------------------------------------------------------ beam search
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_beam_size_one_is_greedy(seed: int) -> None:
    decoder = random_decoder(seed)
    z = torch.randn(64, Z_DIM, generator=torch.Generator().manual_seed(seed)) * 2
    greedy = decoder.sample(z)
    beam = decoder.sample(z, decode="beam", beam_size=1)
    assert torch.equal(beam, greedy)


def test_beam_output_format() -> None:
    decoder = random_decoder(0)
    z = torch.randn(50, Z_DIM, generator=torch.Generator().manual_seed(0)) * 2
    out = decoder.sample(z, decode="beam", beam_size=4)
    assert out.dtype == torch.long and out.shape[0] == 50 and 1 <= out.shape[1] <= 12
    assert not ((out == BOS).any())
    for row in out.tolist():
        if EOS in row:
            end = row.index(EOS)
            assert all(t == PAD for t in row[end + 1 :])
            assert PAD not in row[:end]
        else:
            assert PAD not in row and len(row) == 12  # cut at max_decode_length
    # the longest row sets the width, as in greedy decoding
    assert (out[:, -1] != PAD).any()


def test_beam_improves_on_greedy() -> None:
    """Beam search scores (log-likelihood, no length penalty) at least as high as greedy
    decoding for nearly every z, and higher on average. Beam search is not guaranteed to beat
    greedy for every z (the greedy prefix can drop out of the beam), so allow a few rows."""
    worse = total = 0
    for seed in range(3):
        decoder = random_decoder(seed)
        z = torch.randn(200, Z_DIM, generator=torch.Generator().manual_seed(seed)) * 2
        greedy = score(decoder, decoder.sample(z), z)
        for k in (5, 10):
            beam = score(decoder, decoder.sample(z, decode="beam", beam_size=k), z)
            worse += int((beam < greedy - 1e-4).sum())
            total += beam.numel()
            assert float((beam - greedy).mean()) > 0
    assert worse <= 0.02 * total


def test_wide_beam_is_exact_search() -> None:
    """With a beam as wide as every prefix, beam search finds the most likely sequence
    (checked against every sequence of at most 3 tokens)."""
    decoder = random_decoder(0)
    z = torch.randn(10, Z_DIM, generator=torch.Generator().manual_seed(1))
    emit = [t for t in range(VOCAB) if t not in (PAD, BOS)]
    candidates = []
    for length in range(1, 4):
        for seq in itertools.product(emit, repeat=length):
            if EOS in seq[:-1] or (length < 3 and seq[-1] != EOS):
                continue
            candidates.append([*seq] + [PAD] * (3 - length))
    every = torch.tensor(candidates)
    beam = decoder.sample(z, decode="beam", beam_size=len(emit) ** 2, max_length=3)
    found = score(decoder, beam, z)
    for i in range(z.shape[0]):
        best = score(decoder, every, z[i : i + 1].expand(len(every), -1)).max()
        assert float(found[i]) == pytest.approx(float(best), abs=1e-5)


def test_beam_length_penalty_and_errors() -> None:
    decoder = random_decoder(0)
    z = torch.randn(20, Z_DIM, generator=torch.Generator().manual_seed(0))
    plain = decoder.sample(z, decode="beam", beam_size=4)
    long = decoder.sample(z, decode="beam", beam_size=4, length_penalty=2.0)
    lengths = (long != PAD).sum(1).float().mean()
    assert lengths >= (plain != PAD).sum(1).float().mean()
    with pytest.raises(ValueError, match="beam_size"):
        decoder.sample(z, decode="beam", beam_size=0)
    with pytest.raises(ValueError, match="decode"):
        decoder.sample(z, decode="nucleus")  # type: ignore[arg-type]


def test_decoder_sample_takes_top_p_and_repetition_penalty() -> None:
    decoder = random_decoder(0)
    z = torch.randn(30, Z_DIM, generator=torch.Generator().manual_seed(0)) * 2

    def sampled(**options: object) -> Tensor:
        g = torch.Generator().manual_seed(1)
        return decoder.sample(z, decode="sample", generator=g, **options)  # type: ignore[arg-type]

    assert torch.equal(sampled(top_p=1.0), sampled())
    assert torch.equal(sampled(top_p=1e-6), decoder.sample(z))  # a nucleus of one: greedy
    greedy, penalised = decoder.sample(z), decoder.sample(z, repetition_penalty=1e4)
    assert not torch.equal(greedy, penalised)

    def repeats(out: Tensor) -> int:
        rows = [[t for t in row if t != PAD] for row in out.tolist()]
        return sum(len(row) - len(set(row)) for row in rows)

    assert repeats(penalised) < repeats(greedy)
    with pytest.raises(ValueError, match="top_p"):
        sampled(top_p=0.0)
    with pytest.raises(ValueError, match="repetition_penalty .*beam"):
        decoder.sample(z, decode="beam", repetition_penalty=1.5)


# ------------------------------------------------------------------------------------ slerp
def test_slerp_endpoints_are_exact() -> None:
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(6, generator=g), torch.randn(6, generator=g) * 3
    path = slerp(a, b, torch.linspace(0, 1, 5))
    assert path.shape == (5, 6)
    assert torch.equal(path[0], a) and torch.equal(path[-1], b)
    assert torch.equal(slerp(a, b, 0.0), a) and torch.equal(slerp(a, b, 1.0), b)


def test_slerp_of_unit_vectors_stays_on_the_sphere() -> None:
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(8, generator=g), torch.randn(8, generator=g)
    a, b = a / a.norm(), b / b.norm()
    t = torch.linspace(0, 1, 11)
    path = slerp(a, b, t)
    torch.testing.assert_close(path.norm(dim=1), torch.ones(11))
    # constant angular speed: the angle to a grows linearly in t
    omega = torch.arccos(torch.dot(a, b))
    angles = torch.arccos(torch.clamp(path @ a, -1, 1))
    torch.testing.assert_close(angles, t * omega, atol=1e-3, rtol=0)


def test_slerp_of_orthogonal_unit_vectors_is_a_quarter_circle() -> None:
    a, b = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    mid = slerp(a, b, 0.5)
    torch.testing.assert_close(mid, torch.tensor([math.sqrt(0.5), math.sqrt(0.5)]))


@pytest.mark.parametrize("scale", [2.0, -1.0])
def test_slerp_of_parallel_vectors_is_linear(scale: float) -> None:
    a = torch.tensor([1.0, -2.0, 0.5])
    b = scale * a
    t = torch.linspace(0, 1, 7)
    linear = (1 - t).unsqueeze(1) * a + t.unsqueeze(1) * b
    torch.testing.assert_close(slerp(a, b, t), linear)
    torch.testing.assert_close(slerp(torch.zeros(3), b, t), t.unsqueeze(1) * b)


# ------------------------------------------------------------------ on a tiny trained run
@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run directory trained in this process for 3 steps on the tiny recipe."""
    root = tmp_path_factory.mktemp("generation")
    trainer = {"max_steps": 3, "checkpoint_every": 3, "valid_every": 3, "samples_at_end": 0}
    return train_tiny_run(root, trainer={**trainer, "runs_root": str(root / "runs")})


def test_prior_trajectory_steps_and_energy(tiny_run: Path) -> None:
    pretrained = latentebm.load(tiny_run)
    result = prior_trajectory(
        pretrained.model,
        pretrained.task,
        3,
        [5, 0, 2, 2],
        n_steps=7,
        generator=torch.Generator().manual_seed(0),
    )
    assert result["steps"] == [0, 2, 5]
    assert set(result["sentences"]) == {0, 2, 5}
    assert all(
        len(v) == 3 and all(isinstance(s, str) for s in v) for v in result["sentences"].values()
    )
    assert len(result["energy"]) == len(result["log_density"]) == 8
    assert all(math.isfinite(v) for v in result["energy"] + result["log_density"])
    assert result["n_steps"] == 7 and result["training_steps"] == 5
    default = pretrained.trajectory(2, [0, 5], seed=0, decode="beam", beam_size=2)
    assert default["n_steps"] == 5 and len(default["energy"]) == 6
    with pytest.raises(ValueError, match="steps"):
        prior_trajectory(pretrained.model, pretrained.task, 2, [0, 9], n_steps=5)


def test_pretrained_generate_top_p_penalty_and_max_new_tokens(tiny_run: Path) -> None:
    model = latentebm.load(tiny_run)
    # defaults unchanged when the new options are not given
    plain = model.generate(8, decode="sample", seed=1)
    assert model.generate(8, decode="sample", seed=1, top_p=1.0, repetition_penalty=1.0) == plain
    assert model.generate(8, decode="sample", seed=1, top_p=0.5) != plain
    # max_new_tokens bounds the tokens (words here) per sample; an alias of max_length
    short = model.generate(8, seed=0, max_new_tokens=2)
    assert all(len(sentence.split()) <= 2 for sentence in short)
    assert max(len(sentence.split()) for sentence in model.generate(8, seed=0)) > 2
    assert model.generate(8, seed=0, max_length=2) == short
    assert model.generate(8, seed=0, max_length=2, max_new_tokens=2) == short
    penalised = model.generate(8, seed=0, repetition_penalty=1.5)
    assert len(penalised) == 8 and all(isinstance(s, str) for s in penalised)
    with pytest.raises(ValueError, match=r"max_new_tokens \(2\) and max_length \(3\) differ"):
        model.generate(2, max_length=3, max_new_tokens=2)
    with pytest.raises(ValueError, match="top_p must be in"):
        model.generate(2, decode="sample", top_p=1.5)
    with pytest.raises(ValueError, match="repetition_penalty must be > 0"):
        model.generate(2, repetition_penalty=0.0)
    with pytest.raises(ValueError, match="repetition_penalty .*beam"):
        model.generate(2, decode="beam", repetition_penalty=1.2)
    with pytest.raises(ValueError, match="max_length must be >= 1"):
        model.generate(2, max_new_tokens=0)


def test_interpolate_endpoints_decode_posterior_means(tiny_run: Path) -> None:
    pretrained = latentebm.load(tiny_run)
    a, b = "the cat sees a fish", "a dog eats some milk"
    for path in ("linear", "slerp"):
        pairs = interpolate(
            pretrained.model,
            pretrained.task,
            a,
            b,
            n_points=5,
            path=path,
            generator=torch.Generator().manual_seed(0),
        )
        assert [t for t, _ in pairs] == pytest.approx([0, 0.25, 0.5, 0.75, 1])
        assert all(isinstance(s, str) for _, s in pairs)
    # the endpoints are the greedy decodings of the posterior means (same seed: same chains)
    from latentebm.generation import posterior_mean

    z = posterior_mean(
        pretrained.model, pretrained.task, [a, b], generator=torch.Generator().manual_seed(0)
    )
    ends = pretrained.task.decode(pretrained.model.generator.sample(z))
    assert [pairs[0][1], pairs[-1][1]] == ends


def test_generate_trajectory_command(tiny_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["generate", str(tiny_run), "-n", "2", "--trajectory", "0,2,5"]
    code = main([*args, "--langevin-steps", "5", "--seed", "0"])
    assert code == 0
    out_dirs = sorted((tiny_run / "samples").glob("trajectory-*"))
    assert len(out_dirs) == 1
    png = (out_dirs[0] / "energy.png").read_bytes()
    assert png.startswith(PNG_MAGIC)
    text = (out_dirs[0] / "trajectory.txt").read_text(encoding="utf-8")
    headers = [line for line in text.splitlines() if line.startswith("# step")]
    assert [h.split()[2] for h in headers] == ["0", "2", "5"]
    assert len([line for line in text.splitlines() if line and not line.startswith("#")]) <= 6
    assert capsys.readouterr().out == text
    # a second call never overwrites: an explicit, non-empty directory gets a -2 suffix
    target = tiny_run / "traj"
    for _ in range(2):
        assert main([*args, "--trajectory-dir", str(target), "--decode", "beam"]) == 0
    assert (target / "energy.png").is_file() and (tiny_run / "traj-2" / "energy.png").is_file()
    # a step past --langevin-steps is an error line
    assert main([*args, "--langevin-steps", "3"]) == 2
    assert "steps must lie in 0..3" in capsys.readouterr().err


def test_interpolate_command(tiny_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["interpolate", str(tiny_run), "the cat sees a fish", "a dog eats some milk"]
    assert main([*args, "--points", "4", "--path", "slerp", "--seed", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4
    ts = [float(line.split("\t", 1)[0]) for line in lines]
    assert ts == pytest.approx([0, 1 / 3, 2 / 3, 1], abs=1e-3)
    assert all(line.count("\t") == 1 for line in lines)
    assert main([*args, "--decode", "beam", "--beam-size", "3", "--seed", "1"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 8


def test_generate_shows_a_progress_bar_when_asked(capsys: pytest.CaptureFixture[str]) -> None:
    """``progress=True``: a bar counting samples on stderr (the CLI asks past one batch)."""
    import latentebm

    model = latentebm.load("pretrained:quickstart")
    capsys.readouterr()
    assert len(model.generate(5, seed=0, batch_size=2, progress=True)) == 5
    err = capsys.readouterr().err
    assert "generate:" in err and "/5 [" in err and "sample/s" in err  # left=False: cleared
    model.generate(5, seed=0, batch_size=2)
    assert capsys.readouterr().err == ""
