"""cpu/intrinsics.py: a variant is available exactly when the CPU Numba compiles for has its
instructions (NUMBA_CPU_FEATURES overrides the host), and the dot products refuse operands
they would misread. Their arithmetic is tested through every GEMV version (test_gemv.py)."""
from unittest import mock

import numpy as np
import pytest
from numba import njit
from numba.core.errors import TypingError

from cpu import gemv, intrinsics


def test_features_follow_numba_cpu_features():
    with mock.patch.object(intrinsics.config, "CPU_FEATURES", "+avx2,+fma,-avx512vnni"):
        assert intrinsics.target_features() == {"avx2", "fma"}
        assert intrinsics.available("avx2") and not intrinsics.available("vnni")
        assert gemv.best_kernel() == "avx2"
    with mock.patch.object(intrinsics.config, "CPU_FEATURES", "-avx2"):
        assert gemv.best_kernel() == "generic"
        with pytest.raises(ValueError, match="needs CPU features this machine lacks"):
            gemv.gemv(*[None] * 7, kernel="avx2")


def test_dot_refuses_other_dtypes():
    dot = intrinsics.DOTS["generic"][1]

    @njit
    def call(codes, x):
        return dot(codes, 0, x, 0)

    codes = np.zeros((1, 64), np.uint8)
    assert call(codes, np.zeros((1, 256), np.int8)) == (0,)
    with pytest.raises(TypingError):
        call(codes, np.zeros((1, 256), np.int16))
