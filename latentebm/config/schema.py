"""The schema of a latent-EBM recipe: the dataclasses a recipe file is validated against.

Contract: every key is a field declared with :func:`~latentebm.config.checks.checked_field`
(its documentation, shown by ``latentebm keys``, and its value check); a section whose field
has a dataclass default may be given partially; component sections are
:class:`~latentebm.config.components.ComponentConfig`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from latentebm.config.checks import (
    checked_field,
    device_name,
    digit_label,
    each_positive,
    each_rate,
    non_negative,
    open_unit,
    positive,
    probability,
    seed_value,
)
from latentebm.config.components import ComponentConfig


@dataclass(kw_only=True)
class DataConfig:
    """Where the data sets live."""

    root: str | None = checked_field(
        None, "Data root directory; null -> environment LATENTEBM_DATA.", path=True
    )


@dataclass(kw_only=True)
class PriorConfig:
    """The latent prior: an energy-based correction of N(0, sigma^2 I), or the Gaussian alone."""

    kind: Literal["ebm", "gaussian", "none"] = checked_field(
        "ebm",
        "ebm: learned EBM prior; gaussian: N(0, sigma^2 I); none: no latent variable (the "
        "decoder alone, e.g. the CharRNN baseline: z_dim is taken as 0 and no chain runs).",
    )
    hidden_dims: list[int] = checked_field(
        doc="Hidden layer widths of the energy MLP.",
        factory=lambda: [200, 200],
        check=each_positive,
    )
    negative_slope: float = checked_field(
        0.2, "LeakyReLU negative slope of the energy MLP.", check=non_negative
    )
    prior_sigma: float = checked_field(
        1.0, "Std of the Gaussian reference density.", check=positive
    )
    energy: ComponentConfig | None = checked_field(
        None,
        "kind ebm: the energy network f_alpha as a component, e.g. _component_: "
        "latentebm.prior.MLPEnergy (any torch module built as cls(config, z_dim=d) that maps "
        "z (B, d) to (B,) or (B, 1)); null: the MLP of hidden_dims and negative_slope.",
    )


@dataclass(kw_only=True)
class ChainConfig:
    """Short-run Langevin dynamics: z <- z + a^2/2 * grad log p(z) + a * noise."""

    n_steps: int = checked_field(
        doc="Number of Langevin steps (K); 0 disables the chain.", check=non_negative
    )
    step_size: float = checked_field(
        doc="Noise scale a of one step; the drift is a^2/2 times the gradient of the log density.",
        check=positive,
    )
    noise: bool = checked_field(True, "Add the Gaussian noise term (false: gradient ascent only).")
    clamp: float | None = checked_field(
        None, "Clamp z to [-clamp, clamp] after each step; null: off.", check=positive
    )
    step_schedule: list[float] | None = checked_field(
        None,
        "Per-step noise scales a_0, a_1, ... replacing step_size (steps past the end use the "
        "last value); null: step_size at every step. The authors' text code uses [0.8, 0.7, "
        "0.6, 0.5, 0.2, 0.2, 0.1, 0.1, 0.05] (then 0.05) for its 20-step posterior chain.",
        check=each_positive,
    )
    noise_factor: float = checked_field(
        1.0,
        "Multiply the noise a * eps by this T: 1 is Langevin; T < 1 a colder chain (the "
        "authors' text code: 0.05, raised to 0.2 after 15 epochs).",
        check=non_negative,
    )
    init: Literal["noise", "persistent", "amortized"] = checked_field(
        "noise",
        "Where the chain starts: noise (N(0, sigma^2 I), the paper); persistent (prior chain: "
        "a replay buffer of earlier chain ends; posterior chain: each training example's "
        "previous chain end); amortized (posterior chain only: samples of the inference model "
        'q_phi(z|x) of model.inference, as in Cui and Han 2023, "Learning Energy-Based Model '
        'via Dual-MCMC Teaching").',
    )
    buffer_size: int = checked_field(
        10000, "Prior chain, init persistent: number of stored chain ends.", check=positive
    )
    reinit_rate: float = checked_field(
        0.05,
        "Prior chain, init persistent: probability that a drawn chain restarts from "
        "N(0, sigma^2 I).",
        check=probability,
    )


@dataclass(kw_only=True)
class ModelConfig:
    """The latent-space EBM model: prior, generator and the two Langevin samplers."""

    z_dim: int = checked_field(32, "Dimension of the latent vector z.", check=positive)
    prior: PriorConfig = checked_field(doc="Latent prior.", factory=PriorConfig)
    generator: ComponentConfig = checked_field(
        doc="Generator p(x|z), e.g. _component_: latentebm.generators.lstm.LSTMDecoder."
    )
    prior_chain: ChainConfig = checked_field(
        doc="Langevin sampler of the prior (Table 5: K0, s0).",
        factory=lambda: ChainConfig(n_steps=60, step_size=0.4),
    )
    posterior_chain: ChainConfig = checked_field(
        doc="Langevin sampler of the posterior (Table 5: K1, s1).",
        factory=lambda: ChainConfig(n_steps=20, step_size=0.1),
    )
    inference: ComponentConfig | None = checked_field(
        None,
        "Inference model q_phi(z|x) for posterior_chain.init: amortized, e.g. "
        "_component_: latentebm.inference.SequenceEncoder; null: none.",
    )
    compile: Literal["default", "reduce-overhead", "max-autotune"] | None = checked_field(
        None,
        "torch.compile the chains' log densities with this mode (reduce-overhead: CUDA graphs on "
        "a GPU); null: eager. Slower on CPU (docs/RESULTS.md, Not measured).",
    )


@dataclass(kw_only=True)
class AdamConfig:
    """Adam optimiser settings for one set of parameters."""

    lr: float = checked_field(doc="Learning rate.", check=positive)
    betas: tuple[float, float] = checked_field(
        (0.9, 0.999), "Adam (beta1, beta2).", check=each_rate
    )
    weight_decay: float = checked_field(0.0, "L2 weight decay.", check=non_negative)
    grad_clip: float | None = checked_field(
        None, "Clip the gradient norm to this; null: no clipping.", check=positive
    )
    lr_decay: float = checked_field(
        1.0, "Multiplicative learning-rate decay per epoch.", check=positive
    )


@dataclass(kw_only=True)
class OptimConfig:
    """One optimiser for the prior EBM, one for the generator (and one for an inference model)."""

    prior: AdamConfig = checked_field(
        doc="Optimiser of the prior EBM.",
        factory=lambda: AdamConfig(lr=1e-4, betas=(0.5, 0.999)),
    )
    generator: AdamConfig = checked_field(
        doc="Optimiser of the generator.",
        factory=lambda: AdamConfig(lr=1e-3, betas=(0.9, 0.999), grad_clip=5.0),
    )
    inference: AdamConfig = checked_field(
        doc="Optimiser of the inference model (used only with model.inference).",
        factory=lambda: AdamConfig(lr=1e-3, betas=(0.9, 0.999), grad_clip=5.0),
    )


@dataclass(kw_only=True)
class TimeBudgetConfig:
    """A training budget in time and checkpoints by time (every trainer has these)."""

    max_minutes: float | None = checked_field(
        None,
        "Also stop (with a checkpoint) once this many minutes of training have been spent, "
        "summed over resumed segments: a fixed compute budget; null: no limit. The run stops "
        "early enough for its final validation and end-of-run samples to fit in the budget "
        "(priced from the measured seconds per step and per validation batch, at most half "
        "the budget; a final validation that still does not fit runs only its first batches, "
        "logged with valid_partial_batches).",
        check=positive,
    )
    clock: Literal["wall", "cpu"] = checked_field(
        "wall",
        "What max_minutes and checkpoint_every_minutes count: wall-clock time, or the CPU time "
        "of the training process (all its threads; time.process_time), which other jobs on the "
        "machine barely change: the clock for equal-CPU-budget comparisons.",
    )
    checkpoint_every_minutes: float | None = checked_field(
        None,
        "Also save a checkpoint each time the training time (clock, summed over resumes) "
        "passes a multiple of this many minutes: quality against compute from one run; null: off.",
        check=positive,
    )


@dataclass(kw_only=True)
class TrainerConfig(TimeBudgetConfig):
    """Training loop, validation, checkpointing and logging."""

    max_steps: int = checked_field(40000, "Total number of training steps.", check=positive)
    batch_size: int = checked_field(
        32,
        "Training batch size per process (torchrun: an update sees it times the process "
        "count; `latentebm train --processes N` divides the given value among the N processes "
        "and records each one's share in the run's config.yaml).",
        check=positive,
    )
    log_every: int = checked_field(
        10, "Log training metrics every this many steps.", check=positive
    )
    log_every_minutes: float | None = checked_field(
        None,
        "Also log them once this many minutes have passed since the last row (slow steps: "
        "long documents, a CPU), so a run is never silent for long; null: by steps only. "
        "Rows then fall at times, not steps: a resumed run's rows differ from an "
        "uninterrupted one's.",
        check=positive,
    )
    valid_every: int = checked_field(1000, "Run validation every this many steps.", check=positive)
    valid_batches: int | None = checked_field(
        20, "Validation batches per run; null: whole valid split.", check=positive
    )
    checkpoint_every: int = checked_field(
        1000, "Save a checkpoint every this many steps.", check=positive
    )
    keep_checkpoints: int = checked_field(
        3, "Number of most recent checkpoints kept; 0: keep all.", check=non_negative
    )
    run_dir: str | None = checked_field(
        None, "Run directory; null: <runs_root>/<name>/<timestamp>.", path=True
    )
    runs_root: str = checked_field(
        "runs", "Parent directory of default run directories.", path=True
    )
    resume: str | None = checked_field(
        None,
        "Resume from: null (fresh run), auto (newest checkpoint of trainer.run_dir if set, else "
        "of the newest run of this recipe; a fresh run if none), or a checkpoint file or run "
        "directory.",
        path=True,
    )
    init_from: str | None = checked_field(
        None,
        "A new run starts from this model's weights: a run directory, checkpoint file, "
        "exported folder, pretrained:NAME or hf:OWNER/REPO (the parts in init_parts; the step, "
        "optimisers and chains start anew; when the generator or inference model is copied, "
        "the source's tokenizer is used too). A resumed run ignores it.",
    )
    init_parts: list[Literal["prior", "generator", "inference"]] | None = checked_field(
        None,
        "The parts init_from copies, e.g. [generator]; null: every part this model has that "
        "the source has weights for.",
    )
    freeze: list[Literal["prior", "generator", "inference"]] = checked_field(
        doc="Parts whose parameters are never updated, e.g. [generator]: learn the prior (eq. 10) "
        "from the posterior samples of a given generator (with init_from).",
        factory=list,
    )
    nonfinite: Literal["stop", "skip"] = checked_field(
        "stop", "On a non-finite loss: stop training, or skip the batch."
    )
    samples_at_end: int = checked_field(
        10, "Number of samples written at the end of training.", check=non_negative
    )
    sample_decode: Literal["greedy", "sample"] = checked_field(
        "greedy", "Decoding of the samples written at the end: greedy, or sampled."
    )
    sample_temperature: float = checked_field(
        1.0, "Softmax temperature when sample_decode is sample.", check=positive
    )
    tensorboard: bool = checked_field(True, "Write TensorBoard event files.")
    progress: bool = checked_field(True, "Show a progress bar.")


@dataclass(kw_only=True)
class AnomalyConfig:
    """Anomaly detection (Pang, Han, Nijkamp, Zhu and Wu (2020), "Learning Latent Space
    Energy-Based Prior Model", Section 3.4; the MEG/BiGAN protocol of Table 4): one class is held
    out as anomalous, the model trains on part of the others."""

    digit: int = checked_field(
        doc="The held-out (anomalous) class, e.g. an MNIST digit 0-9.", check=digit_label
    )
    train_fraction: float = checked_field(
        0.8,
        "Fraction of the normal images (shuffled with split_seed) used for training; the rest "
        "and all anomalous images form the test split.",
        check=open_unit,
    )
    split_seed: int = checked_field(
        0, "Seed of the shuffle that splits the normal images.", check=seed_value
    )


@dataclass(kw_only=True)
class Recipe:
    """A complete training recipe."""

    family: Literal["latent"] = checked_field(
        "latent",
        "latent: this schema (a latent-space EBM prior model); a recipe with family: shortrun "
        "is the data-space short-run EBM (latentebm.shortrun) and has its own keys.",
    )
    name: str | None = checked_field(None, "Recipe name; defaults to the recipe file's stem.")
    seed: int = checked_field(0, "Random seed, 0 .. 2**32 - 1.", check=seed_value)
    device: str = checked_field("auto", "auto | cpu | cuda | cuda:N | mps.", check=device_name)
    data: DataConfig = checked_field(doc="Data location.", factory=DataConfig)
    task: ComponentConfig = checked_field(
        doc="The task, e.g. _component_: latentebm.tasks.text.TextTask."
    )
    model: ModelConfig = checked_field(doc="The model.")
    optim: OptimConfig = checked_field(doc="The optimisers.", factory=OptimConfig)
    trainer: TrainerConfig = checked_field(doc="The training loop.", factory=TrainerConfig)
    anomaly: AnomalyConfig | None = checked_field(
        None,
        "Anomaly-detection split (passed to the task as anomaly_digit, anomaly_train_fraction, "
        "anomaly_split_seed); null: the task's ordinary splits.",
    )
