"""init = "attention" for the Mamba-family mixers: each layer starts as a linear attention built
from the teacher's projections, checked against O(T^2) references written here from the maps."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from cald_mixers.bimamba2 import BiMamba2Mixer, BiMamba2Options
from cald_mixers.mamba import MambaMixer, MambaOptions
from cald_mixers.mamba2 import Mamba2Mixer, Mamba2Options
from cald_testing.mixers import context, padded_batch
from cald_testing.models import TINY_MODELS
from torch import nn

from cald_framework.contracts import AttentionProjections
from cald_framework.conversion import convert
from cald_framework.errors import SpecError
from cald_framework.modeling import CaldModel
from cald_framework.plugin_manager import load_registries

WIDTH, HEADS = 8, 2  # heads of 4 channels
LENGTHS = [7, 4, 1]


def teacher(seed: int = 0, bias: bool = True, output: bool = True) -> AttentionProjections:
    """Float64 projections of width 8, with biases unless told otherwise."""
    torch.manual_seed(seed)

    def linear() -> nn.Linear:
        return nn.Linear(WIDTH, WIDTH, bias=bias).double()

    return AttentionProjections(linear(), linear(), linear(), linear() if output else None)


def built(kind: type[nn.Module], options: object, projections: AttentionProjections) -> nn.Module:
    ctx = context(WIDTH, HEADS, causal=True, projections=projections)
    return kind(options, ctx).double()


def features(projections: AttentionProjections, hidden: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """``x, B, C = silu(V h + b_v), silu(K h + b_k), silu(Q h + b_q)`` (the mapping's claim)."""
    return tuple(
        F.silu(linear(hidden)) for linear in (projections.value, projections.key, projections.query)
    )


def decayed_sum(
    x: torch.Tensor, score: torch.Tensor, log_decay: torch.Tensor, dt: torch.Tensor
) -> torch.Tensor:
    """``y_t = sum_(s<=t) score[t, s] exp(sum_(s<r<=t) log_decay_r) dt_s x_s``, explicitly."""
    time = x.shape[0]
    y = torch.zeros_like(x)
    for t in range(time):
        for s in range(t + 1):
            y[t] += score[t, s] * torch.exp(log_decay[s + 1 : t + 1].sum(0)) * dt[s] * x[s]
    return y


def mamba2_linear_attention(
    mixer: Mamba2Mixer, projections: AttentionProjections, hidden: torch.Tensor
) -> torch.Tensor:
    """One sequence ``[T, D]`` through per-head causal linear attention, gate, norm, out_proj."""
    x, B, C = features(projections, hidden)
    z, _, dt_raw = mixer._split(mixer.in_proj(hidden))
    dt = F.softplus(dt_raw + mixer.dt_bias)  # [T, heads]
    A = -torch.exp(mixer.A_log)
    head_dim = WIDTH // HEADS
    y = torch.zeros_like(x)
    for head in range(HEADS):
        part = slice(head * head_dim, (head + 1) * head_dim)
        score = C[:, part] @ B[:, part].T
        mixed = decayed_sum(x[:, part], score, dt[:, head] * A[head], dt[:, head, None])
        y[:, part] = mixed + mixer.D[head] * x[:, part]
    gated = (y * F.silu(z)).view(-1, HEADS, head_dim)
    normed = gated * torch.rsqrt(gated.square().mean(-1, keepdim=True) + mixer.norm.eps)
    return mixer.out_proj(normed.flatten(-2) * mixer.norm.weight)


def mamba_linear_attention(
    mixer: MambaMixer, projections: AttentionProjections, hidden: torch.Tensor
) -> torch.Tensor:
    """Mamba-1 as a sum over state indices ``n`` of decayed scores ``C_t,n B_s,n``."""
    x, _, _ = features(projections, hidden)
    gate = mixer.in_proj(hidden)[:, WIDTH:]
    dt_low, B, C = mixer.x_proj(x).split([mixer.dt_rank, mixer.d_state, mixer.d_state], -1)
    dt = F.softplus(mixer.dt_proj(dt_low))  # [T, channels]
    A = -torch.exp(mixer.A_log)  # [channels, n]
    y = mixer.D * x
    for n in range(mixer.d_state):
        score = C[:, n, None] * B[None, :, n]
        y = y + decayed_sum(x, score, dt * A[:, n], dt)
    return mixer.out_proj(y * F.silu(gate))


def assert_each_sequence_matches(mixer: nn.Module, reference, projections) -> None:
    """Every valid row of a padded batch equals the reference on that sequence alone."""
    hidden, mask = padded_batch(LENGTHS, WIDTH)
    out = mixer(hidden, mask)
    for row, length in enumerate(LENGTHS):
        expected = reference(mixer, projections, hidden[row, :length])
        torch.testing.assert_close(out[row, :length], expected, rtol=0, atol=1e-10)


def test_mamba2_starts_as_per_head_causal_linear_attention():
    projections = teacher()
    mixer = built(Mamba2Mixer, Mamba2Options(init="attention", chunk_size=4), projections)
    assert_each_sequence_matches(mixer, mamba2_linear_attention, projections)
    unpadded, _ = padded_batch([5], WIDTH)
    expected = mamba2_linear_attention(mixer, projections, unpadded[0])
    torch.testing.assert_close(mixer(unpadded, None)[0], expected, rtol=0, atol=1e-10)


def test_bimamba2_starts_as_the_mean_of_both_directions_of_linear_attention():
    projections = teacher()
    mixer = built(BiMamba2Mixer, BiMamba2Options(init="attention", chunk_size=4), projections)

    def reference(mixer, projections, hidden):
        forward = mamba2_linear_attention(mixer.forward_mamba, projections, hidden)
        backward = mamba2_linear_attention(mixer.backward_mamba, projections, hidden.flip(0))
        return forward + backward.flip(0)

    assert_each_sequence_matches(mixer, reference, projections)
    for direction in (mixer.forward_mamba, mixer.backward_mamba):
        torch.testing.assert_close(direction.norm.weight, torch.full((WIDTH,), 0.5).double())


def test_mamba_starts_as_linear_attention_with_the_average_head_score():
    projections = teacher()
    mixer = built(MambaMixer, MambaOptions(init="attention", d_state=WIDTH), projections)
    assert_each_sequence_matches(mixer, mamba_linear_attention, projections)
    # at full rank, C_t . B_s on x = V h is the attention's average head score q_t . k_s / heads
    hidden = torch.randn(5, WIDTH, dtype=torch.float64)
    x = projections.value.weight @ hidden.T  # [D, T]: the pre-activation without bias
    _, B, C = mixer.x_proj(x.T).split([mixer.dt_rank, WIDTH, WIDTH], -1)
    queries, keys = projections.query.weight @ hidden.T, projections.key.weight @ hidden.T
    # the map is computed in float64 and stored in the float32 parameters the mixer starts with
    torch.testing.assert_close(C @ B.T, queries.T @ keys / HEADS, rtol=1e-5, atol=1e-6)


def test_mamba_below_full_rank_keeps_the_leading_singular_directions():
    projections = teacher(bias=False)
    full = built(MambaMixer, MambaOptions(init="attention", d_state=WIDTH), projections)
    cut = built(MambaMixer, MambaOptions(init="attention", d_state=3), projections)
    torch.testing.assert_close(
        cut.x_proj.weight[cut.dt_rank :][:3], full.x_proj.weight[full.dt_rank :][:3]
    )
    assert cut.d_state == 3


def test_the_mapping_copies_the_teacher_rows_and_output():
    projections = teacher()
    mixer = built(Mamba2Mixer, Mamba2Options(init="attention"), projections)
    rows = mixer.in_proj.weight
    torch.testing.assert_close(rows[WIDTH : 2 * WIDTH], projections.value.weight, rtol=0, atol=0)
    torch.testing.assert_close(rows[2 * WIDTH : 3 * WIDTH], projections.key.weight, rtol=0, atol=0)
    torch.testing.assert_close(
        rows[3 * WIDTH : 4 * WIDTH], projections.query.weight, rtol=0, atol=0
    )
    torch.testing.assert_close(mixer.out_proj.weight, projections.output.weight, rtol=0, atol=0)
    biases = torch.cat([projections.value.bias, projections.key.bias, projections.query.bias])
    torch.testing.assert_close(mixer.conv1d.bias, biases, rtol=0, atol=0)
    taps = mixer.conv1d.weight.squeeze(1)
    assert (taps[:, -1] == 1).all() and (taps[:, :-1] == 0).all()
    assert (mixer.headdim, mixer.d_state, mixer.ngroups) == (4, 4, 2)


def test_without_an_output_projection_out_proj_starts_as_the_identity():
    projections = teacher(output=False)
    for mixer in (
        built(Mamba2Mixer, Mamba2Options(init="attention"), projections),
        built(MambaMixer, MambaOptions(init="attention"), projections),
    ):
        torch.testing.assert_close(mixer.out_proj.weight, torch.eye(WIDTH).double())


def test_random_init_is_untouched_by_the_option():
    torch.manual_seed(3)
    explicit = Mamba2Mixer(Mamba2Options(init="random", headdim=4), context(8, 2)).state_dict()
    torch.manual_seed(3)
    default = Mamba2Mixer(Mamba2Options(headdim=4), context(8, 2)).state_dict()
    assert all(torch.equal(explicit[name], default[name]) for name in default)
    assert Mamba2Options().model_dump()["expand"] == 2
    assert MambaOptions().d_state == 16 and BiMamba2Options().expand == 1


@pytest.mark.parametrize(
    ("kind", "options"),
    [
        (Mamba2Mixer, Mamba2Options(init="attention")),
        (BiMamba2Mixer, BiMamba2Options(init="attention")),
        (MambaMixer, MambaOptions(init="attention")),
    ],
)
def test_a_saved_config_rebuilds_the_same_shapes_without_projections(kind, options):
    converted = built(kind, options, teacher())
    reloaded_options = type(options)(**options.model_dump(mode="json"))
    bare = kind(reloaded_options, context(WIDTH, HEADS, causal=True)).double()
    shapes = {name: tensor.shape for name, tensor in converted.state_dict().items()}
    assert shapes == {name: tensor.shape for name, tensor in bare.state_dict().items()}


@pytest.mark.parametrize(
    ("kind", "options", "message"),
    [
        (
            Mamba2Mixer,
            Mamba2Options(init="attention", headdim=8),
            r"^mamba2: init = 'attention' needs headdim = 4 \(d_model / num_heads = 8 / 2\), "
            r"got 8$",
        ),
        (
            Mamba2Mixer,
            Mamba2Options(init="attention", ngroups=1),
            r"^mamba2: init = 'attention' needs ngroups = 2 \(one group per head\), got 1$",
        ),
        (
            BiMamba2Mixer,
            BiMamba2Options(init="attention", d_state=128),
            r"^bimamba2: init = 'attention' needs d_state = 4 .*, got 128$",
        ),
        (
            MambaMixer,
            MambaOptions(init="attention", expand=2),
            r"^mamba: init = 'attention' needs expand = 1 \(d_inner = d_model\), got 2$",
        ),
        (
            Mamba2Mixer,
            Mamba2Options(init="attention", conv_bias=False),
            r"^mamba2: init = 'attention' needs conv_bias = true to carry the attention's "
            r"projection biases$",
        ),
    ],
)
def test_geometry_that_contradicts_attention_init_is_a_one_line_error(kind, options, message):
    with pytest.raises(SpecError, match=message):
        built(kind, options, teacher())


def test_heads_that_do_not_divide_the_width_are_refused():
    ctx = context(9, 2, causal=True)
    with pytest.raises(SpecError, match=r"^mamba: init = 'attention' needs num_heads 2 to divide"):
        MambaMixer(MambaOptions(init="attention"), ctx)


# ------------------------------------------------------------------ whole converted models

CONVERSIONS = [
    ("llama", "mamba2", {"chunk_size": 4}, {"out_proj.weight": "o_proj.weight"}),
    ("gpt-neox", "mamba", {}, {"out_proj.weight": "dense.weight"}),
    ("wav2vec2-stable", "bimamba2", {"chunk_size": 4}, {}),
    ("bert", "bimamba2", {"chunk_size": 4}, {}),
]


def _teacher_model(case: str, seed: int = 0) -> CaldModel:
    source, config, head = TINY_MODELS[case]
    torch.manual_seed(seed)
    return CaldModel.from_source_config(source, config, head, max_length=40).double().eval()


@pytest.mark.parametrize(("case", "mixer", "options", "taken"), CONVERSIONS)
def test_a_converted_model_reports_its_attention_tensors_and_reloads(
    case, mixer, options, taken, make_inputs, tmp_path
):
    plugin = load_registries().mixers.get(mixer)
    student, report = convert(
        _teacher_model(case), plugin, {**options, "init": "attention"}, max_length=40
    )
    for new, old in taken.items():
        found = {name: source for name, source in report.from_attention.items() if new in name}
        assert len(found) == 2 and all(source.endswith(old) for source in found.values())
    student.eval().save_pretrained(tmp_path)
    reloaded = CaldModel.from_pretrained(tmp_path).double().eval()
    assert reloaded.config.mixer_options == student.config.mixer_options
    inputs = make_inputs(case)
    torch.testing.assert_close(
        reloaded(**inputs).logits, student(**inputs).logits, rtol=0, atol=0
    )


def _relative_layer_errors(case: str, mixer: str, options: dict, seed: int) -> list[float]:
    """Per layer: ||mixer(h) - attention(h)|| / ||attention(h)|| on the attention's own inputs."""
    teacher = _teacher_model(case, seed)
    slots = teacher.family.attention_slots(teacher.backbone)
    seen: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def record(index: int):
        def hook(module, args, kwargs, output):
            hidden = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
            seen[index] = hidden, output[0] if isinstance(output, tuple) else output

        return hook

    hooks = [
        slot.module.register_forward_hook(record(slot.layer_index), with_kwargs=True)
        for slot in slots
    ]
    ids = torch.randint(3, 60, (2, 24), generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        teacher(input_ids=ids, attention_mask=torch.ones_like(ids))
    for handle in hooks:
        handle.remove()
    plugin = load_registries().mixers.get(mixer)
    d_model, heads = teacher.family.dimensions(teacher.backbone)
    errors = []
    for slot in slots:
        projections = teacher.family.projections(slot)
        ctx = context(d_model, heads, causal=True, projections=projections)
        layer = plugin.build(plugin.options(**options), ctx).double()
        hidden, expected = seen[slot.layer_index]
        with torch.no_grad():
            errors.append(float((layer(hidden, None) - expected).norm() / expected.norm()))
    return errors


@pytest.mark.parametrize(
    ("case", "mixer", "geometry"),
    [
        ("llama", "mamba2", {"expand": 1, "headdim": 4, "d_state": 4, "ngroups": 4}),
        ("gpt-neox", "mamba", {"expand": 1, "d_state": 4}),
    ],
)
def test_attention_init_starts_much_closer_to_the_teacher_layers(case, mixer, geometry):
    """Same shapes both ways; errors averaged over three teachers and their layers."""

    def mean_error(init: str) -> float:
        errors = [
            error
            for seed in range(3)
            for error in _relative_layer_errors(case, mixer, {**geometry, "init": init}, seed)
        ]
        return sum(errors) / len(errors)

    assert mean_error("attention") < mean_error("random") / 5
