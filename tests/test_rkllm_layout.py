"""The ctypes mirror of rkllm.h against the C compiler's view of the same header, field by field."""
from __future__ import annotations

import ctypes

import pytest

from rk.daemon.backends.rkllm._lib import ABIS

from native_build import rkllm_layout  # noqa: F401  (fixture)


def _ctypes_fields(cls: type[ctypes.Structure], prefix: str = "") -> dict[str, tuple[int, int]]:
    """field path -> (offset, size), with anonymous unions flattened and nested anonymous-type structs expanded."""
    out: dict[str, tuple[int, int]] = {}
    anonymous = set(getattr(cls, "_anonymous_", ()))
    for name, ftype, *_ in cls._fields_:
        desc = getattr(cls, name)
        if name in anonymous:
            for sub, (off, size) in _ctypes_fields(ftype).items():
                out[prefix + sub] = (desc.offset + off, size)
            continue
        out[prefix + name] = (desc.offset, desc.size)
        if ftype.__name__.startswith("_") and issubclass(ftype, ctypes.Structure):  # `struct { ... } image;`
            for sub, (off, size) in _ctypes_fields(ftype).items():
                out[f"{prefix}{name}.{sub}"] = (desc.offset + off, size)
    return out


def _c_layout(text: str) -> tuple[dict[str, int], dict[str, dict[str, tuple[int, int]]]]:
    sizes: dict[str, int] = {}
    fields: dict[str, dict[str, tuple[int, int]]] = {}
    for line in text.splitlines():
        kind, name, *nums = line.split()
        if kind == "STRUCT":
            sizes[name] = int(nums[0])
        else:
            struct, _, field = name.partition(".")
            fields.setdefault(struct, {})[field] = (int(nums[0]), int(nums[1]))
    return sizes, fields


@pytest.mark.parametrize("version", ["1.2", "1.3"])
def test_every_struct_and_field_matches_the_header(version: str, rkllm_layout: dict[str, str]) -> None:
    sizes, c_fields = _c_layout(rkllm_layout[version])
    structs = ABIS[version].structs()
    assert set(structs) == set(sizes), "the ctypes mirror and the header declare different structs"
    for name, cls in structs.items():
        assert ctypes.sizeof(cls) == sizes[name], f"sizeof({name})"
        assert _ctypes_fields(cls) == c_fields[name], f"fields of {name}"


def test_reference_sizes_of_1_3_0() -> None:
    """The LP64 figures in the runtime reference, so a wrong header in tests/native cannot hide a wrong mirror."""
    abi = ABIS["1.3"]
    got = {n: ctypes.sizeof(c) for n, c in abi.structs().items()}
    assert {k: got[k] for k in ("RKLLMParam", "RKLLMExtendParam", "RKLLMMultiModalInput", "RKLLMInput",
                                "RKLLMSamplingParam", "RKLLMInferParam", "RKLLMResult", "RKLLMPerfStat",
                                "RKLLMCallback", "RKLLMResultLastHiddenLayer")} == {
        "RKLLMParam": 184, "RKLLMExtendParam": 120, "RKLLMMultiModalInput": 144, "RKLLMInput": 160,
        "RKLLMSamplingParam": 36, "RKLLMInferParam": 40, "RKLLMResult": 72, "RKLLMPerfStat": 20,
        "RKLLMCallback": 48, "RKLLMResultLastHiddenLayer": 16}
    assert abi.RKLLMParam.extend_param.offset == 60
    assert [getattr(abi.RKLLMInferParam, f).offset for f, *_ in abi.RKLLMInferParam._fields_] == [0, 8, 16, 24, 32, 36]
    result = abi.structs()["RKLLMResult"]
    assert [getattr(result, f).offset for f in ("text", "token_id", "last_hidden_layer", "logits", "perf")] == [0, 8, 16, 32, 48]
