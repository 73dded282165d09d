"""Loss plugins: Scruples' reference values, numerical safety, agreement with the metrics, registry."""

from __future__ import annotations

import math
import sys
import textwrap

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from loss_plugins import LossPluginError, get_loss, is_loss_class, list_losses, make_loss
from loss_plugins.dirichlet_multinomial import log_rising_factorial
from moral_tasks.metrics import core as M

DM = get_loss("dirichlet_multinomial")()
SCE = get_loss("soft_cross_entropy")()


def test_scruples_reference_values():
    # scruples tests/scruples/baselines/test_loss.py
    z = torch.log(torch.tensor([[1.0, 1.0]], dtype=torch.float64))
    assert DM(z, torch.tensor([[0.5, 0.5]])).item() == pytest.approx(0.9347116558304358, abs=1e-12)
    z = torch.log(torch.tensor([[1e-20, 1e-20]], dtype=torch.float64))
    assert DM(z, torch.tensor([[3.0, 0.0]])).item() == pytest.approx(math.log(2), abs=1e-12)
    # float32 logits give a float32 loss of the same value
    z32 = torch.log(torch.tensor([[1.0, 1.0]]))
    out = DM(z32, torch.tensor([[0.5, 0.5]]))
    assert out.dtype == torch.float32 and out.item() == pytest.approx(0.9347116558304358, rel=1e-6)


def test_soft_cross_entropy_hand_worked():
    z = torch.tensor([[0.0, 0.0]])
    assert SCE(z, torch.tensor([[3, 1]])).item() == pytest.approx(math.log(2), rel=1e-6)
    z = torch.tensor([[math.log(0.8), math.log(0.2)]])
    assert SCE(z, torch.tensor([[5, 0]])).item() == pytest.approx(-math.log(0.8), rel=1e-6)


def mp_dm_nll(z, c):
    import mpmath as mp

    mp.mp.dps = 60
    a = [mp.e ** mp.mpf(x) for x in z]
    ll = mp.loggamma(sum(a)) - mp.loggamma(sum(a) + sum(c))
    ll += sum(mp.loggamma(ak + ck) - mp.loggamma(ak) for ak, ck in zip(a, c))
    return float(-ll)


@pytest.mark.parametrize(
    "z,c",
    [
        ([50.0, -50.0, 10.0], [20, 0, 1]),
        ([-50.0, -50.0, -50.0], [0, 0, 5]),
        ([50.0, 50.0], [0, 0.5]),
        ([3.0, 7.0, 0.5, -2.0, 1.0], [2, 7, 0, 0, 1]),
        ([6.9, 6.91], [40, 41]),  # both sides of the Stirling switch (alpha ~ 1e3)
    ],
)
def test_dirichlet_float32_extremes_match_high_precision(z, c):
    logits = torch.tensor([z], dtype=torch.float32, requires_grad=True)
    loss = DM(logits, torch.tensor([c]))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()
    assert loss.item() == pytest.approx(mp_dm_nll(z, c), rel=1e-6, abs=1e-6)


def test_log_rising_factorial_is_smooth_across_the_switch():
    x = torch.tensor([999.999999, 1000.0, 1000.000001], dtype=torch.float64)
    d = torch.full_like(x, 17.0)
    vals = log_rising_factorial(x, d)
    assert (vals.diff().abs() < 1e-6).all()
    assert torch.equal(log_rising_factorial(x, torch.zeros_like(x)), torch.zeros_like(x))


def test_dirichlet_gradients_match_finite_differences():
    z = torch.tensor([[0.3, -1.2, 2.0], [7.5, 7.0, 6.0]], dtype=torch.float64, requires_grad=True)
    c = torch.tensor([[3.0, 0.0, 5.0], [10.0, 4.0, 0.0]], dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda t: DM(t, c), (z,))


@settings(max_examples=50, deadline=None)
@given(
    st.integers(2, 5).flatmap(
        lambda k: st.tuples(
            arrays(np.float64, (4, k), elements=st.floats(-8, 8)),
            arrays(np.int64, (4, k), elements=st.integers(0, 30)).filter(lambda c: (c.sum(1) > 0).all()),
        )
    )
)
def test_losses_equal_the_harness_metrics(case):
    """The trained objective is the reported number: soft CE = xentropy; DM = dirichlet_nll at s = sum(alpha)."""
    z, c = case
    logq = M.log_normalize(z)
    assert SCE(torch.tensor(z), torch.tensor(c)).item() == pytest.approx(M.xentropy(logq, c), rel=1e-5, abs=1e-6)
    # With per-row concentrations s_i = sum_k exp(z_ik), the DM loss is the metric's NLL row by row.
    per_row = [M.dirichlet_nll(logq[i:i + 1], c[i:i + 1], float(np.exp(z[i]).sum())) for i in range(len(z))]
    assert DM(torch.tensor(z), torch.tensor(c)).item() == pytest.approx(np.mean(per_row), rel=1e-8, abs=1e-8)


def test_registry_names_and_module_class():
    assert {"soft_cross_entropy", "dirichlet_multinomial"} <= set(list_losses())
    cls = get_loss("loss_plugins.soft_cross_entropy:SoftCrossEntropy")
    assert cls is type(SCE)
    with pytest.raises(LossPluginError, match="unknown loss 'nope'; available: .*dirichlet_multinomial"):
        get_loss("nope")
    with pytest.raises(LossPluginError, match="'no_such_mod:X' could not be loaded: ModuleNotFoundError"):
        get_loss("no_such_mod:X")


@pytest.mark.parametrize("spec,kind", [
    ("math:pi", "a float (3.141592653589793)"),
    ("math:sqrt", "a builtin_function_or_method (sqrt)"),
    ("loss_plugins.registry", None),  # no colon: a name, not a module path
    ("collections:OrderedDict", "the class OrderedDict, whose instances cannot be called"),
    ("loss_plugins:registry", "the module loss_plugins.registry"),
])
def test_objects_that_are_not_loss_classes_are_refused(spec, kind):
    with pytest.raises(LossPluginError) as err:
        get_loss(spec)
    if kind is None:
        assert "unknown loss" in str(err.value)
    else:
        assert str(err.value).startswith(f"loss {spec!r} is not a loss class but {kind};")


def test_a_loss_class_that_cannot_be_created_is_one_error(tmp_path, monkeypatch):
    (tmp_path / "needs_args.py").write_text("class Weighted:\n    def __init__(self, w):\n        self.w = w\n"
                                            "    def __call__(self, logits, counts):\n        return logits.sum()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert is_loss_class(get_loss("needs_args:Weighted"))
    with pytest.raises(LossPluginError, match=r"loss 'needs_args:Weighted' could not be created: TypeError"):
        make_loss("needs_args:Weighted")
    sys.modules.pop("needs_args", None)


@pytest.fixture
def fake_plugins(tmp_path, monkeypatch):
    """Two installed distributions on sys.path: one good, one whose module is broken."""
    (tmp_path / "good_losses.py").write_text(textwrap.dedent("""
        import torch
        class Absolute:
            def __call__(self, logits, counts):
                p = counts / counts.sum(-1, keepdim=True)
                return (torch.softmax(logits, -1) - p).abs().sum(-1).mean()
    """))
    (tmp_path / "bad_losses.py").write_text("raise ImportError('this plugin is broken')\n")
    for dist, name, target in (("good_pkg", "absolute_error", "good_losses:Absolute"),
                               ("bad_pkg", "broken_loss", "bad_losses:Broken")):
        info = tmp_path / f"{dist}-0.1.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
        (info / "entry_points.txt").write_text(f"[moral_ambiguity.losses]\n{name} = {target}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield
    for mod in ("good_losses", "bad_losses"):
        sys.modules.pop(mod, None)


def test_entry_point_plugins_and_broken_ones(fake_plugins):
    assert {"absolute_error", "broken_loss", "soft_cross_entropy"} <= set(list_losses())
    loss = get_loss("absolute_error")()
    assert loss(torch.zeros(1, 2), torch.tensor([[1.0, 1.0]])).item() == pytest.approx(0.0)
    with pytest.raises(LossPluginError) as err:
        get_loss("broken_loss")
    assert "'broken_loss'" in str(err.value) and "bad_pkg" in str(err.value) and "this plugin is broken" in str(err.value)
    # The built-ins are untouched by a broken plugin.
    assert get_loss("dirichlet_multinomial") is type(DM)
