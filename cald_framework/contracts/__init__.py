"""The contracts between the host and its plugins: everything a plugin may import.

Every plugin kind registers one ``*Plugin`` record through its registration hook (see
:mod:`cald_framework.hookspecs`). The host only ever talks to plugins through these records,
which is what keeps ``cald_framework/`` free of any concrete model family or mixer. One module
per concern: :mod:`.options`, :mod:`.mixers`, :mod:`.sources`, :mod:`.tasks`,
:mod:`.extractors` and :mod:`.guidance`; import the names from here.

Conventions shared by every contract:

* ``padding_mask`` / ``hidden_mask`` are ``bool`` tensors of shape ``[batch, time]``, ``True`` at
  valid positions. Valid positions always form a prefix (right padding).
* Hidden states are ``[batch, time, width]``.
"""

from .extractors import ExtractedStates, Extractor, ExtractorPlugin
from .guidance import (
    AvailableTeachers,
    FrozenTeacherSchedule,
    GuidanceContext,
    GuidancePlugin,
    GuidanceSchedule,
    LossWeights,
    ModeChoice,
    StepPlan,
    TaskOnly,
    TeacherDrift,
    TeacherKind,
    TeacherUpdater,
    Waypoint,
)
from .mixers import (
    AttentionProjections,
    MixerContext,
    MixerPlugin,
    PrefillMixer,
    RecurrentMixer,
    RecurrentSlot,
    SequenceMixer,
    SizeLimits,
    StateStore,
    advance,
    map_state,
    no_weight_decay_names,
)
from .options import (
    ASSET_PREFIX,
    Location,
    NoOptions,
    PluginOptions,
    PrecisionName,
    ScheduleName,
    lacks_schedule_floor,
)
from .sources import NO_OVERRIDES, AttentionSlot, PaddingState, SourceFamily, SourcePlugin
from .tasks import CaldOutput, HeadSpec, MetricAccumulator, Modality, Task, TaskData, TaskPlugin

__all__ = [
    "ASSET_PREFIX",
    "AttentionProjections",
    "AttentionSlot",
    "AvailableTeachers",
    "CaldOutput",
    "ExtractedStates",
    "Extractor",
    "ExtractorPlugin",
    "FrozenTeacherSchedule",
    "GuidanceContext",
    "GuidancePlugin",
    "GuidanceSchedule",
    "HeadSpec",
    "Location",
    "LossWeights",
    "MetricAccumulator",
    "MixerContext",
    "MixerPlugin",
    "Modality",
    "ModeChoice",
    "NO_OVERRIDES",
    "NoOptions",
    "PaddingState",
    "PluginOptions",
    "PrecisionName",
    "PrefillMixer",
    "RecurrentMixer",
    "RecurrentSlot",
    "ScheduleName",
    "SequenceMixer",
    "SizeLimits",
    "SourceFamily",
    "SourcePlugin",
    "StateStore",
    "StepPlan",
    "Task",
    "TaskData",
    "TaskOnly",
    "TaskPlugin",
    "TeacherDrift",
    "TeacherKind",
    "TeacherUpdater",
    "Waypoint",
    "advance",
    "lacks_schedule_floor",
    "map_state",
    "no_weight_decay_names",
]
