"""Hub names and the choice of files, in process: tags, the SoC fallback, projectors, tokenizers, unsafe paths."""
from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rk.daemon.errors import RkError
from rk.daemon.store.pull.blobs import check_space
from rk.daemon.store.pull.refs import Digest, RepoFile, parse_ref, plan, safe_path

SHA = "a" * 64


def f(path: str) -> RepoFile:
    return RepoFile(path, 10, Digest("sha256", SHA))


GGUF = [f("Qwen3-0.6B-Q4_K_M.gguf"), f("Qwen3-0.6B-Q4_K_S.gguf"), f("Qwen3-0.6B-Q8_0.gguf"), f("README.md"),
        f("mmproj-Qwen3-F16.gguf"), f("mmproj-Qwen3-Q8_0.gguf")]
RKLLM = [f("Qwen3-0.6B-rk3588-w8a8.rkllm"), f("Qwen3-0.6B-rk3576-w8a8.rkllm"), f("tokenizer.json"),
         f("tokenizer_config.json"), f("config.json"), f("README.md")]


def picked(files: list[RepoFile], name: str, soc: str = "n/a") -> list[tuple[str, str, str]]:
    ref = parse_ref(name)
    assert ref is not None
    return [(w.role, w.file.path, w.dest) for w in plan(files, ref, soc)]


def test_names() -> None:
    ref = parse_ref("hf.co/Qwen/Qwen3-0.6B-GGUF:Q4_K_M")
    assert ref is not None and (ref.repo, ref.tag, ref.name) == ("Qwen/Qwen3-0.6B-GGUF", "Q4_K_M",
                                                                  "hf.co/Qwen/Qwen3-0.6B-GGUF:Q4_K_M")  # as typed
    bare = parse_ref("huggingface.co/a/b")
    assert bare is not None and (bare.tag, bare.name) == (None, "hf.co/a/b:latest")
    assert parse_ref("smollm2:135m") is None and parse_ref("library/smollm2") is None
    for bad in ("hf.co/a", "hf.co/a/b/c", "hf.co/../b", "hf.co/a/.."):
        with pytest.raises(RkError):
            parse_ref(bad)


def test_quant_tag_is_case_insensitive_and_exact() -> None:
    assert picked(GGUF, "hf.co/o/r:q4_k_m") == [("model", "Qwen3-0.6B-Q4_K_M.gguf", "Qwen3-0.6B-Q4_K_M.gguf"),
                                                 ("mmproj", "mmproj-Qwen3-F16.gguf", "mmproj-Qwen3-F16.gguf")]
    assert picked(GGUF, "hf.co/o/r:Q8_0")[0][1] == "Qwen3-0.6B-Q8_0.gguf"  # not the Q8_0 projector


def test_ambiguous_or_unknown_tag_lists_the_choices() -> None:
    with pytest.raises(RkError, match="several files.*Q4_K_M.gguf, .*Q4_K_S.gguf"):
        picked(GGUF, "hf.co/o/r:q4_k")
    with pytest.raises(RkError, match="no file .* match ':q2_k'") as e:
        picked(GGUF, "hf.co/o/r:q2_k")
    assert e.value.code == "model_not_found"


def test_no_tag_takes_the_board_soc_or_asks() -> None:
    assert [p[1] for p in picked(RKLLM, "hf.co/o/r", soc="RK3588")] == [
        "Qwen3-0.6B-rk3588-w8a8.rkllm", "tokenizer.json", "tokenizer_config.json", "config.json"]
    with pytest.raises(RkError, match="several model files.*rk3576.*rk3588"):
        picked(RKLLM, "hf.co/o/r", soc="n/a")
    assert picked(RKLLM, "hf.co/o/r:rk3576-w8a8")[0][1] == "Qwen3-0.6B-rk3576-w8a8.rkllm"
    assert picked([f("only.gguf")], "hf.co/o/r") == [("model", "only.gguf", "only.gguf")]


def test_tokenizer_next_to_the_model_wins_and_lands_in_tokenizer_dir() -> None:
    files = [f("npu/m.rkllm"), f("npu/tokenizer.json"), f("tokenizer.json"), f("tokenizer_config.json")]
    got = picked(files, "hf.co/o/r")
    assert got == [("model", "npu/m.rkllm", "m.rkllm"), ("tokenizer", "npu/tokenizer.json", "tokenizer/tokenizer.json"),
                   ("tokenizer", "tokenizer_config.json", "tokenizer/tokenizer_config.json")]


def test_repo_without_a_model_file() -> None:
    with pytest.raises(RkError, match="no .gguf or .rkllm"):
        picked([f("README.md")], "hf.co/o/r")


@pytest.mark.parametrize("path", ["../x.gguf", "/etc/passwd", "a/../../b.gguf", "a//b", "a\\..\\b", ""])
def test_unsafe_repo_paths_are_refused(path: str) -> None:
    with pytest.raises(RkError, match="refusing"):
        safe_path(path)
    with pytest.raises(RkError, match="refusing"):
        picked([f("ok.gguf"), f(path)] if path else [f(path)], "hf.co/o/r")


@given(st.text(alphabet="abcXYZ019._-/", min_size=1, max_size=40))
def test_a_plan_never_writes_outside_the_model_dir(path: str) -> None:
    try:
        got = picked([f(path + ".rkllm"), f(path.rsplit("/", 1)[0] + "/tokenizer.json")], "hf.co/o/r")
    except RkError:
        return
    for _, _, dest in got:
        assert not dest.startswith("/") and ".." not in dest.split("/")


def test_digests_are_checked() -> None:
    with pytest.raises(RkError):
        Digest("sha256", "../../etc")
    assert Digest("git", "b" * 40).filename == "git-" + "b" * 40


def test_a_download_the_disk_cannot_hold_is_refused_first(tmp_path) -> None:
    check_space(tmp_path, 1 << 20)
    with pytest.raises(RkError, match="not enough disk space") as e:
        check_space(tmp_path, 1 << 62)
    assert e.value.code == "insufficient_storage"
