"""Agreement with the published method's reference package, and its quirks.

``multimodal-fusion`` 0.6.0 (MIT) is the oracle: with `FusionParams.published`
fusex must reproduce its maps.  Where the reference does something surprising,
a test here shows it, and README.md ("Differences from the reference")
explains it.
"""

import numpy as np
import pytest

import fusex
from fusex import FusionParams
from fusex.datasets import phantom

mmf = pytest.importorskip("multimodal_fusion", reason="install the test extra for the reference package")
DataFusion = mmf.DataFusion
ctvlib = mmf.ctvlib


def _reference(sample, n_iter=50, method=0, **run):
    """Run the reference on copies (it normalizes the arrays it is given in place)."""
    ref = DataFusion(list(sample.elements))
    ref.load_chemical_maps({e: m.copy() for e, m in zip(sample.elements, sample.maps)}, method=method)
    ref.load_haadf(sample.haadf.copy())
    ref.run(nIter=n_iter, plot_images=False, plot_convergence=False, **run)
    return np.stack([ref.get_results()[e] for e in sample.elements])


def _relative_l2(a, b):
    return np.linalg.norm((a - b).reshape(len(a), -1), axis=1) / np.linalg.norm(b.reshape(len(b), -1), axis=1)


@pytest.mark.parametrize(("lattice", "dose", "seed"), [("perovskite", 3.0, 0), ("rocksalt", 10.0, 1)])
def test_published_params_reproduce_the_reference(lattice, dose, seed):
    sample = phantom((64, 64), lattice=lattice, dose=dose, seed=seed)
    ours = fusex.fuse(sample.haadf, sample.maps, elements=sample.elements, params=FusionParams.published())
    theirs = _reference(sample)
    assert np.all(_relative_l2(ours.maps, theirs) < 1e-5)  # the contract asks for 1 %


def test_published_params_reproduce_other_reference_settings():
    sample = phantom((48, 48), seed=2)
    params = FusionParams.published(n_iter=20, lambda_chem=0.05, lambda_tv=0.05, gamma=1.8)
    ours = fusex.fuse(sample.haadf, sample.maps, elements=sample.elements, params=params)
    ref = DataFusion(list(sample.elements), gamma=1.8)
    ref.load_chemical_maps({e: m.copy() for e, m in zip(sample.elements, sample.maps)})
    ref.load_haadf(sample.haadf.copy())
    ref.run(nIter=20, lambdaEDS=0.05, lambdaTV=0.05, plot_images=False, plot_convergence=False)
    theirs = np.stack([ref.get_results()[e] for e in sample.elements])
    assert np.all(_relative_l2(ours.maps, theirs) < 1e-5)


def test_quirk_reference_tv_discards_its_last_dual_update():
    """``fgp_tv(f, lam, ng)`` equals fusex's ``gp`` with ``ng - 1`` updates, not ``ng``."""
    f = np.random.default_rng(0).random((32, 32)).astype(np.float32)
    for ng in (2, 15):
        theirs = ctvlib(32, 32).fgp_tv(f.ravel().copy(), 0.1, ng).reshape(32, 32)
        np.testing.assert_allclose(fusex.tv_denoise(f, 0.1, ng - 1, method="gp"), theirs, atol=1e-6)
        assert np.abs(fusex.tv_denoise(f, 0.1, ng, method="gp") - theirs).max() > 1e-3


def test_quirk_reference_tv_scrambles_non_square_maps():
    """The reference's C++ TV reads a row-major (H, W) map as column-major.

    For square maps that is a transpose, harmless for isotropic TV; for
    non-square maps the pixels' neighbours are wrong.  fusex denoises the map
    itself, so on non-square data the two disagree by design.
    """
    f = np.random.default_rng(1).random((24, 40)).astype(np.float32)
    theirs = ctvlib(24, 40).fgp_tv(f.ravel().copy(), 0.1, 15)
    scrambled = f.ravel().reshape(40, 24).T
    np.testing.assert_allclose(fusex.tv_denoise(scrambled, 0.1, 14, method="gp").T.ravel(), theirs, atol=1e-6)
    assert np.abs(fusex.tv_denoise(f, 0.1, 14, method="gp").ravel() - theirs).max() > 0.05


def test_quirk_reference_normalizes_the_callers_arrays_in_place():
    sample = phantom((16, 16), seed=3)
    maps = {e: m.copy() for e, m in zip(sample.elements, sample.maps)}
    DataFusion(list(sample.elements)).load_chemical_maps(maps)
    assert maps["Sr"].max() == 1.0 and sample.maps[0].max() > 1.0
    fusex.fuse(sample.haadf, dict(maps), params=FusionParams.published(n_iter=1))
    assert maps["Sr"].max() == 1.0  # fusex leaves them alone (more in test_api)


@pytest.mark.parametrize(("method", "scheme"), [(1, "z_mean"), (3, "z_sum")])
def test_weighted_models_match_up_to_the_references_float16_weights(method, scheme):
    """The reference stores the weights in float16 (about 3 significant digits)."""
    sample = phantom((32, 32), seed=4)
    ours = fusex.fuse(
        sample.haadf,
        sample.maps,
        elements=sample.elements,
        params=FusionParams.published(n_iter=20, haadf_weights=scheme),
    )
    theirs = _reference(sample, n_iter=20, method=method)
    assert np.all(_relative_l2(ours.maps, theirs) < 0.01)


@pytest.mark.parametrize("method", [2, 4])
def test_quirk_reference_z_gamma_weights_fail(method):
    """Methods 2 and 4 raise ``list ** float``; fusex's ``zgamma_*`` schemes work."""
    sample = phantom((16, 16), seed=5)
    with pytest.raises(TypeError):
        _reference(sample, n_iter=1, method=method)


def test_the_tutorial_parameters_reproduce_the_reference_on_dysco3():
    """The published tutorial's DyScO3 fusion, as `fusex.datasets.dysco3` documents it."""
    data = fusex.datasets.dysco3()
    ref = DataFusion(list(data.elements), gamma=1.6)
    ref.load_chemical_maps({e: m.copy() for e, m in zip(data.elements, data.maps)}, method=1)  # w = Z / mean(Z)
    ref.load_haadf(data.haadf.copy())
    ref.run(nIter=30, lambdaEDS=0.08, lambdaTV=0.15, ng=3, bkg=0.24, plot_images=False, plot_convergence=False)
    theirs = np.stack([ref.get_results()[e] for e in data.elements])
    tutorial = data.params
    assert tutorial == FusionParams.published(
        gamma=1.6, lambda_chem=0.08, lambda_tv=0.15, eps=0.24, n_iter=30, n_tv=2, haadf_weights="z_mean"
    )
    ours = fusex.fuse(data.haadf, data.maps, elements=data.elements, params=tutorial)
    assert np.all(_relative_l2(ours.maps, theirs) < 1e-4)  # about 4e-5: the reference's weights are float16
    z = np.asarray(data.z, dtype=float)
    same_weights = tutorial.replace(haadf_weights=tuple((z / z.mean()).astype(np.float16).astype(float)))
    ours = fusex.fuse(data.haadf, data.maps, elements=data.elements, params=same_weights)
    assert np.all(_relative_l2(ours.maps, theirs) < 1e-6)
