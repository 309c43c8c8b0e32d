"""The objectives against plain references that materialise C and A (docs/method.md)."""

import math

import pytest
import torch
import torch.nn.functional as F

from hf_corrdistill.losses import correlation_loss, distilhubert_loss, pool_valid_frames
from hf_corrdistill.losses.correlation import clipped_snr_weight

EPS = 1e-5


# ---------------------------------------------------------------- plain references, written for clarity only
def ref_pool(x, mask, positions):
    """Loop over utterances and bins: AdaptiveAvgPool1d over each utterance's valid frames."""
    out = torch.zeros(x.shape[0], x.shape[1], positions, x.shape[3], dtype=x.dtype)
    for b in range(x.shape[0]):
        valid = x[b][:, mask[b]]  # (N, L, D)
        length = valid.shape[1]
        for p in range(positions):
            lo, hi = math.floor(p * length / positions), math.ceil((p + 1) * length / positions)
            out[b, :, p] = valid[:, lo:hi].mean(1)
    return out


def ref_standardise(z):  # z: (M, D), samples in rows
    return (z - z.mean(0)) / (z.std(0, unbiased=True) + EPS)


def ref_terms(s, t, cross_w=None, self_w=None):
    """One group: C and A formed explicitly (D x D); per-sample outer products when weights are given."""
    m = s.shape[0]
    sh, th = ref_standardise(s), ref_standardise(t)
    c = sh.T @ th / (m - 1)
    a = sh.T @ sh / (m - 1)
    off = ~torch.eye(c.shape[0], dtype=torch.bool)
    on = ((torch.diagonal(c) - 1) ** 2).sum()
    if cross_w is None:
        return on, (c[off] ** 2).sum(), (a[off] ** 2).sum()
    cross = sum(cross_w[k] * ((torch.outer(sh[k], th[k]) / (m - 1))[off] ** 2).sum() for k in range(m))
    selfc = sum(self_w[k] * ((torch.outer(sh[k], sh[k]) / (m - 1))[off] ** 2).sum() for k in range(m))
    return on, cross, selfc


def ref_cosine(s, t):  # (M, D) rows
    return (-F.logsigmoid(F.cosine_similarity(s, t, dim=-1))).mean()


def ref_correlation(student, teacher, mask, style="batch", positions=150, lc=5e-5, ls=5e-6, sd=10.0, sc=100.0,
                    ss=50000.0, wcos=1.0, weighting="fixed", s_snr=None, t_snr=None, snr_low=10.0, snr_high=20.0):
    b, n_layers, f, d = student.shape
    cross_w = self_w = None
    cross_mult = self_mult = 1.0
    if weighting == "snr":
        def clip(snr):
            return torch.clamp(1 + 99 * (snr - snr_low) / (snr_high - snr_low), 1, 100)
        cross_mult, self_mult = (1 / clip(t_snr)).mean(), (1 / clip(s_snr)).mean()
    elif weighting == "snr-reference":
        cross_w, self_w = 1 / (9.9 * t_snr - 98), 1 / (9.9 * s_snr - 98)
    ons, crosses, selfs, cosines = [], [], [], []
    if style == "batch":
        ps, pt = ref_pool(student, mask, positions), ref_pool(teacher, mask, positions)
        for n in range(n_layers):
            for p in range(positions):
                on, cr, se = ref_terms(ps[:, n, p], pt[:, n, p], cross_w, self_w)
                ons.append(on), crosses.append(cr), selfs.append(se)
            cosines.append(ref_cosine(ps[:, n].reshape(-1, d), pt[:, n].reshape(-1, d)))
    else:
        frame_w = None if cross_w is None else (cross_w.repeat_interleave(f)[mask.reshape(-1)],
                                                self_w.repeat_interleave(f)[mask.reshape(-1)])
        for n in range(n_layers):
            s, t = student[:, n][mask], teacher[:, n][mask]  # (M, D) valid frames only
            on, cr, se = ref_terms(s, t, *(frame_w or (None, None)))
            ons.append(on), crosses.append(cr), selfs.append(se)
            cosines.append(ref_cosine(s, t))
    return {
        "on_diagonal": torch.stack(ons).mean() / sd,
        "off_diagonal_cross": lc * cross_mult * torch.stack(crosses).mean() / sc,
        "off_diagonal_self": ls * self_mult * torch.stack(selfs).mean() / ss,
        "cosine": wcos * torch.stack(cosines).mean(),
    }


def ref_distilhubert(student, teacher, mask, wcos=1.0):
    l1s, coss = [], []
    for n in range(student.shape[1]):
        s, t = student[:, n][mask], teacher[:, n][mask]
        l1s.append((s - t).abs().mean())
        coss.append(ref_cosine(s, t))
    return {"l1": torch.stack(l1s).mean(), "cosine": wcos * torch.stack(coss).mean()}


# ---------------------------------------------------------------- helpers
def make_inputs(b, n, f, d, dtype=torch.float64, seed=0, lengths=None):
    g = torch.Generator().manual_seed(seed)
    teacher = torch.randn(b, n, f, d, generator=g, dtype=torch.float64)
    student = 0.6 * teacher + 0.8 * torch.randn(b, n, f, d, generator=g, dtype=torch.float64)  # correlated
    lengths = lengths or [f] * b
    mask = torch.arange(f)[None, :] < torch.tensor(lengths)[:, None]
    return student.to(dtype), teacher.to(dtype), mask


def snrs(b, seed):
    g = torch.Generator().manual_seed(seed)
    snr = 10.5 + 9 * torch.rand(b, generator=g, dtype=torch.float64)
    snr[0] = math.inf  # one view without additive noise
    return snr


TERMS = ("on_diagonal", "off_diagonal_cross", "off_diagonal_self", "cosine")
SHAPES = [  # (B, N, F, D, lengths, positions)
    (2, 1, 9, 5, None, 4),
    (5, 2, 12, 7, [12, 9, 5, 12, 3], 6),
    (4, 3, 20, 16, [20, 17, 2, 11], 8),
    (3, 2, 7, 4, [7, 3, 2], 10),  # utterances shorter than the pooled positions
]


def relerr(a, b):
    return (a - b).abs().item() / max(b.abs().item(), 1e-12)


# ---------------------------------------------------------------- tests
@pytest.mark.parametrize("weighting", ["fixed", "snr-reference", "snr"])
@pytest.mark.parametrize("style", ["batch", "frames"])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-6), (torch.float32, 1e-4)])
def test_correlation_loss_matches_reference(shape, style, weighting, dtype, tol):
    b, n, f, d, lengths, positions = shape
    student, teacher, mask = make_inputs(b, n, f, d, dtype, seed=b * 31 + f, lengths=lengths)
    s_snr, t_snr = snrs(b, 1), snrs(b, 2)
    kw = dict(style=style, pool_positions=positions, weighting=weighting)
    # exaggerate the small lambdas so each term carries weight in the comparison
    params = dict(lambda_cross=0.3, lambda_self=0.2, diag_scale=2.0, cross_scale=3.0, self_scale=5.0,
                  cosine_weight=0.7)
    out = correlation_loss(student, teacher, mask, **kw, **params, student_snr=s_snr.to(dtype),
                           teacher_snr=t_snr.to(dtype))
    ref = ref_correlation(student.double(), teacher.double(), mask, style, positions, 0.3, 0.2, 2.0, 3.0, 5.0, 0.7,
                          weighting, s_snr, t_snr)
    for term in TERMS:
        assert relerr(getattr(out, term).double(), ref[term]) <= tol, term
    assert relerr(out.loss.double(), sum(ref.values())) <= tol


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-6), (torch.float32, 1e-4)])
def test_correlation_defaults_match_reference(dtype, tol):
    student, teacher, mask = make_inputs(4, 2, 40, 12, dtype, seed=3, lengths=[40, 33, 20, 38])
    out = correlation_loss(student, teacher, mask, pool_positions=16)
    ref = ref_correlation(student.double(), teacher.double(), mask, "batch", 16)
    for term in TERMS:
        assert relerr(getattr(out, term).double(), ref[term]) <= tol, term


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-6), (torch.float32, 1e-4)])
@pytest.mark.parametrize("lengths", [None, [10, 4, 7]])
def test_distilhubert_loss_matches_reference(dtype, tol, lengths):
    student, teacher, mask = make_inputs(3, 2, 10, 6, dtype, seed=5, lengths=lengths)
    out = distilhubert_loss(student, teacher, mask, cosine_weight=0.5)
    ref = ref_distilhubert(student.double(), teacher.double(), mask, 0.5)
    assert relerr(out.l1.double(), ref["l1"]) <= tol
    assert relerr(out.cosine.double(), ref["cosine"]) <= tol
    assert relerr(out.loss.double(), ref["l1"] + ref["cosine"]) <= tol


def test_clipped_snr_weight_follows_its_ramp():
    """w = 1 at snr_low, 100 at snr_high, linear between, clipped outside: values worked out by hand."""
    snr = torch.tensor([-5.0, 0.0, 15.0, 30.0, 45.0, math.inf], dtype=torch.float64)
    expected = torch.tensor([1.0, 1.0, 50.5, 100.0, 100.0, 100.0], dtype=torch.float64)  # ramp 0 -> 30 dB
    torch.testing.assert_close(clipped_snr_weight(snr, snr_low=0.0, snr_high=30.0), expected, rtol=0, atol=1e-12)
    default = torch.tensor([10.0, 12.5, 20.0], dtype=torch.float64)  # 10 -> 20 dB
    torch.testing.assert_close(clipped_snr_weight(default), torch.tensor([1.0, 25.75, 100.0], dtype=torch.float64))


@pytest.mark.parametrize("style", ["batch", "frames"])
def test_snr_weighting_uses_the_given_ramp(style):
    student, teacher, mask = make_inputs(4, 2, 12, 6, lengths=[12, 9, 7, 12])
    s_snr, t_snr = snrs(4, 1), snrs(4, 2)
    ours = correlation_loss(student, teacher, mask, style=style, pool_positions=5, weighting="snr", snr_low=12.0,
                            snr_high=17.0, student_snr=s_snr, teacher_snr=t_snr, lambda_cross=0.5, lambda_self=0.5,
                            cross_scale=1.0, self_scale=1.0)
    ref = ref_correlation(student, teacher, mask, style=style, positions=5, weighting="snr", s_snr=s_snr,
                          t_snr=t_snr, snr_low=12.0, snr_high=17.0, lc=0.5, ls=0.5, sc=1.0, ss=1.0)
    for term in ("off_diagonal_cross", "off_diagonal_self"):
        assert relerr(ours[term], ref[term]) < 1e-6, term


def test_pool_matches_adaptive_avg_pool_on_full_length():
    x = torch.randn(3, 2, 37, 5, dtype=torch.float64)
    mask = torch.ones(3, 37, dtype=torch.bool)
    expected = F.adaptive_avg_pool1d(x.permute(0, 1, 3, 2).reshape(-1, 1, 37).squeeze(1), 10)
    got = pool_valid_frames(x, mask, 10)  # (B, N, P, D)
    torch.testing.assert_close(got, expected.reshape(3, 2, 5, 10).permute(0, 1, 3, 2))


@pytest.mark.parametrize("style", ["batch", "frames"])
@pytest.mark.parametrize("weighting", ["fixed", "snr-reference", "snr"])
def test_gradcheck(style, weighting):
    student, teacher, mask = make_inputs(3, 2, 6, 4, seed=11, lengths=[6, 4, 5])
    student.requires_grad_(True)
    teacher.requires_grad_(True)
    s_snr, t_snr = snrs(3, 3), snrs(3, 4)

    def fn(s, t):
        out = correlation_loss(s, t, mask, style=style, pool_positions=3, weighting=weighting, lambda_cross=0.1,
                               lambda_self=0.1, self_scale=1.0, student_snr=s_snr, teacher_snr=t_snr)
        return out.loss

    assert torch.autograd.gradcheck(fn, (student, teacher), eps=1e-6, atol=1e-5)
    assert torch.autograd.gradcheck(lambda s, t: distilhubert_loss(s, t, mask).loss, (student, teacher))


@pytest.mark.parametrize("style", ["batch", "frames"])
def test_constant_feature_batch_of_two_and_short_utterances_stay_finite(style):
    student, teacher, mask = make_inputs(2, 2, 5, 6, torch.float32, seed=2, lengths=[5, 1])
    student[:, :, :, 2] = 0.25  # constant across the batch
    teacher[:, :, :, 4] = -1.0
    student.requires_grad_(True)
    out = correlation_loss(student, teacher, mask, style=style, pool_positions=150)
    out.loss.backward()
    for term in TERMS:
        assert torch.isfinite(getattr(out, term)), term
    assert torch.isfinite(student.grad).all()


@pytest.mark.parametrize("style", ["batch", "frames"])
def test_padded_frames_change_nothing(style):
    student, teacher, mask = make_inputs(4, 2, 15, 6, seed=7, lengths=[15, 9, 4, 12])
    student.requires_grad_(True)
    base = correlation_loss(student, teacher, mask, style=style, pool_positions=5)
    base.loss.backward()
    grad = student.grad.clone()
    padded = ~mask[:, None, :, None].expand_as(student)
    junk_s, junk_t = student.detach().clone(), teacher.clone()
    junk_s[padded] = float("nan")
    junk_t[padded] = float("inf")
    junk_s.requires_grad_(True)
    again = correlation_loss(junk_s, junk_t, mask, style=style, pool_positions=5)
    again.loss.backward()
    for term in TERMS:
        assert torch.equal(getattr(base, term), getattr(again, term)), term
    assert torch.equal(junk_s.grad, grad)
    assert (junk_s.grad[padded] == 0).all()  # padded frames receive exactly zero gradient


def test_padded_frames_change_nothing_in_distilhubert_loss():
    student, teacher, mask = make_inputs(3, 2, 10, 6, seed=8, lengths=[10, 6, 3])
    padded = ~mask[:, None, :, None].expand_as(student)
    junk_s, junk_t = student.clone(), teacher.clone()
    junk_s[padded], junk_t[padded] = float("nan"), float("inf")
    junk_s.requires_grad_(True)
    out = distilhubert_loss(junk_s, junk_t, mask)
    out.loss.backward()
    assert torch.equal(out.loss, distilhubert_loss(student, teacher, mask).loss)
    assert (junk_s.grad[padded] == 0).all() and torch.isfinite(junk_s.grad).all()


def test_perfect_student_has_zero_on_diagonal_and_cosine_floor():
    _, teacher, mask = make_inputs(6, 1, 30, 8, seed=9)
    out = correlation_loss(teacher, teacher, mask, pool_positions=10)
    assert out.on_diagonal.item() < 1e-6
    assert out.cosine.item() == pytest.approx(-F.logsigmoid(torch.tensor(1.0)).item(), rel=1e-6)


def test_half_precision_inputs_are_computed_in_float32():
    student, teacher, mask = make_inputs(4, 2, 16, 8, torch.bfloat16, seed=4)
    out = correlation_loss(student, teacher, mask, pool_positions=4)
    ref = correlation_loss(student.float(), teacher.float(), mask, pool_positions=4)
    assert out.loss.dtype == torch.float32
    assert torch.equal(out.loss, ref.loss)


def test_bad_arguments_are_named():
    student, teacher, mask = make_inputs(3, 1, 4, 3)
    with pytest.raises(ValueError, match="style"):
        correlation_loss(student, teacher, mask, style="rows")
    with pytest.raises(ValueError, match="weighting"):
        correlation_loss(student, teacher, mask, weighting="auto")
    with pytest.raises(ValueError, match="teacher_snr"):
        correlation_loss(student, teacher, mask, weighting="snr", student_snr=torch.ones(3) * 15)
    with pytest.raises(ValueError, match="at least 2"):
        correlation_loss(student[:1], teacher[:1], mask[:1])
    with pytest.raises(ValueError, match="padding_mask"):
        correlation_loss(student, teacher, mask[:, :2])
    with pytest.raises(ValueError, match="student and teacher"):
        distilhubert_loss(student, teacher[:, :, :2])
