import numpy as np
import pytest
from array_api_compat import device

from fusex._xp import convert, namespace_of, resolve_backend, to_numpy


def test_namespace_of_returns_common_namespace_and_device(backend, xp):
    a, b = backend.asarray(np.ones(3)), backend.asarray(np.zeros(3))
    space, dev = namespace_of(a=a, b=b)
    assert dev == device(a) == backend.device
    assert space is xp


def test_convert_copies_and_moves(backend, xp):
    host = np.arange(6.0).reshape(2, 3)
    dev_array = convert(host, xp, backend.device)
    assert device(dev_array) == backend.device
    back = convert(dev_array, *namespace_of(h=host))
    assert isinstance(back, np.ndarray) and back is not host
    np.testing.assert_array_equal(back, host)
    np.testing.assert_array_equal(to_numpy(dev_array), host)


def test_convert_within_a_namespace_never_aliases(backend, xp):
    a = backend.asarray(np.ones(4))
    b = convert(a, xp, backend.device)
    b[0] = 5.0
    assert backend.numpy(a)[0] == 1.0


def test_resolve_backend_keeps_or_switches_library():
    import array_api_compat.numpy as npx

    assert resolve_backend(None, None, npx, "cpu") == (npx, "cpu")
    torch = pytest.importorskip("torch")
    space, dev = resolve_backend("torch", None, npx, "cpu")
    assert space.asarray(1.0).__class__ is torch.Tensor and dev == torch.device("cpu")
