"""The Frechet distance (Heusel et al. 2017) of the image metrics: equal to the closed form of the two Gaussians
fitted to the features, the same streamed in batches as all at once, and equal to the values it gave when it was
hand-written (float64 sums of f and f f^T, the eigenvalues of S_x S_y), now that torchmetrics computes it."""

import numpy as np
import pytest
import scipy.linalg
import torch

from lightning_diffusion.metrics.features import SampleMetrics, frechet_distance

# the metrics of the sets below by the hand-written implementation (KID by torchmetrics on the kept features)
RECORDED = {
    torch.float64: {"fd": 54.87247085571289, "fd_floor": 3.5672810077667236},
    torch.float32: {"fd": 54.87247085571289, "fd_floor": 3.5672810077667236},
}
RECORDED[torch.float64] |= {"kid": 0.5011948943138123, "kid_floor": -0.0009711107704788446}
RECORDED[torch.float32] |= {"kid": 0.5011948943138123, "kid_floor": -0.0009711108286865056}


class GivenFeatures(SampleMetrics):
    """A metric whose 'images' are already features (N, D)."""

    def _features(self, images):
        return images, None


def feature_sets(dtype):
    """Real, generated (another mean and covariance) and floor (another draw of the real distribution) features:
    600 x 64, seeded."""
    generator = torch.Generator().manual_seed(0)
    draw = lambda: torch.randn(600, 64, generator=generator, dtype=torch.float64)  # noqa: E731
    mixing = torch.eye(64, dtype=torch.float64) + 0.1 * torch.randn(64, 64, generator=generator, dtype=torch.float64)
    real, floor = draw(), draw()
    generated = 0.2 + 1.3 * draw() @ mixing
    return tuple(x.to(dtype) for x in (real, generated, floor))


def closed_form(x, y):
    """|mu_x - mu_y|^2 + tr(S_x + S_y - 2 (S_x S_y)^(1/2)) of the empirical means and unbiased covariances, by
    scipy's matrix square root."""
    x, y = x.double().numpy(), y.double().numpy()
    s_x, s_y = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    root = scipy.linalg.sqrtm(s_x @ s_y).real
    return float(np.sum((x.mean(0) - y.mean(0)) ** 2) + np.trace(s_x + s_y - 2 * root))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_frechet_distance_is_the_closed_form_of_the_fitted_gaussians(dtype):
    real, generated, floor = feature_sets(dtype)
    for other in (generated, floor):
        assert frechet_distance(real, other).item() == pytest.approx(closed_form(real, other), rel=1e-6)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_streamed_in_batches_of_7_equals_all_at_once_and_the_recorded_values(dtype):
    real, generated, floor = feature_sets(dtype)
    streamed = GivenFeatures(batch_size=7).evaluate(generated, real, floor)
    whole = GivenFeatures(batch_size=len(real)).evaluate(generated, real, floor)
    assert set(streamed) == set(RECORDED[dtype])
    for name, recorded in RECORDED[dtype].items():
        assert streamed[name].item() == pytest.approx(whole[name].item(), rel=1e-6), name
        assert streamed[name].item() == pytest.approx(recorded, rel=1e-6), name
    assert frechet_distance(real, generated).item() == pytest.approx(RECORDED[dtype]["fd"], rel=1e-6)
    assert frechet_distance(real, floor).item() == pytest.approx(RECORDED[dtype]["fd_floor"], rel=1e-6)
