"""w4a8's compile-time layouts (ir/weight_layouts.py): tile_w4a8's nibble panels and the group-major scales / zero
points, checked against the layout as documented (written out element by element here), their inverses, the
sizes that let them replace their tensors, and the loader's refusal of another version."""
import numpy as np
import pytest

from moec.ir import weight_layouts as wl


def _nibble_at(w, n, k):
    return (w[n, k // 2] >> (4 * (k % 2))) & 15


# K, N, G (0: whole row): N not a multiple of 32 or 16, G not a multiple of 4
CASES = [(64, 40, 32), (96, 64, 32), (60, 33, 6), (30, 17, 0), (256, 32, 128), (128, 96, 64)]


@pytest.mark.parametrize("K,N,G", CASES)
def test_nibble_panels_as_documented(K, N, G):
    rng = np.random.default_rng(K + N)
    w = rng.integers(0, 256, (N, K // 2)).astype(np.uint8)
    p = wl.pack_w4a8_nibbles(w, G)
    Gx = G or K
    G4, ng, nb = -(-Gx // 4) * 4, K // Gx, -(-N // 32)
    assert p.shape == (nb, ng, G4 // 4, 64) and p.dtype == np.uint8
    for b in range(nb):
        for g in range(ng):
            for s in range(G4 // 4):
                for c in range(16):
                    for i in range(4):
                        k = 4 * s + i
                        lo = _nibble_at(w, 32 * b + c, g * Gx + k) if 32 * b + c < N and k < Gx else 0
                        hi = _nibble_at(w, 32 * b + c + 16, g * Gx + k) if 32 * b + c + 16 < N and k < Gx else 0
                        assert p[b, g, s, 4 * c + i] == lo | (hi << 4), (b, g, s, c, i)
    np.testing.assert_array_equal(wl.unpack_w4a8_nibbles(p.reshape(-1), w.shape, G), w)
    # the same bytes as the weight exactly when N % 32 == 0 and G % 4 == 0
    assert (p.nbytes == w.nbytes) == (N % 32 == 0 and Gx % 4 == 0)


def test_stacked_experts_and_group_major():
    rng = np.random.default_rng(0)
    w = rng.integers(0, 256, (3, 70, 48)).astype(np.uint8)
    p = wl.pack_w4a8_nibbles(w, 32)
    for e in range(3):
        np.testing.assert_array_equal(p[e], wl.pack_w4a8_nibbles(w[e], 32))
    np.testing.assert_array_equal(wl.unpack(p.reshape(-1), wl.w4a8_layout(32), w.shape), w)
    s = rng.random((3, 70, 3)).astype(np.float32)
    q = wl.pack_group_major(s)
    assert q.shape == (3, 3, 3, 32)
    for e, n, g in [(0, 0, 0), (2, 69, 2), (1, 33, 1)]:
        assert q[e, n // 32, g, n % 32] == s[e, n, g]
    assert not q[:, 2, :, 70 - 64:].any()  # zero past N
    np.testing.assert_array_equal(wl.unpack(q.reshape(-1), wl.gmajor_layout(), s.shape), s)


def test_loader_refuses_another_version():
    bad = dict(wl.w4a8_layout(32), version=wl.W4A8_LAYOUT_VERSION + 1)
    with pytest.raises(ValueError, match="recompile"):
        wl.check_layout(bad)
    with pytest.raises(ValueError, match="recompile"):
        wl.check_layout(dict(wl.gmajor_layout(), nr=16))
