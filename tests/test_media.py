"""Images in the prompt: decoded once at admission (formats, EXIF, alpha, caps, corrupt input named by
field), carried to the runner as raw pixels, and part of every KV-cache key, so the same text beside a
different picture never reuses the other picture's cache."""
from __future__ import annotations

import base64
import io
import threading
from typing import Any, Callable, Iterator

import pytest
from aiohttp.test_utils import TestClient
from PIL import Image as Pil
from test_inproc_http import models, run  # noqa: F401  (fixtures)
from test_rkllm_backend import Recorder
from test_rkllm_turns import model  # noqa: F401  (fixture)

from rk.daemon import media
from rk.daemon.backends.base import reusable_prefix
from rk.daemon.backends.llamacpp_kv import PrefixStates
from rk.daemon.backends.rkllm.backend import RkllmModel
from rk.daemon.errors import RkError
from rk.daemon.jobs import GenSpec, Message
from rk.daemon.runner import wire
from rk.daemon.service import Service

from fake_runner import FakeRunner
from native_build import rkllm_libs  # noqa: F401  (fixture)

PIXELS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 0, 0), (255, 255, 255)]  # 3x2, few colours


def picture() -> Pil.Image:
    im = Pil.new("RGB", (3, 2))
    im.putdata(PIXELS)
    return im


def encoded(im: Pil.Image, fmt: str, **kw: Any) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# ---- decoding ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("fmt", "kw"), [("PNG", {}), ("BMP", {}), ("GIF", {}), ("WEBP", {"lossless": True})])
def test_every_lossless_format_gives_the_same_pixels_and_digest(fmt: str, kw: dict[str, Any]) -> None:
    img = media.decode(encoded(picture(), fmt, **kw), "x")
    assert (img.width, img.height) == (3, 2)
    assert img.rgb == bytes(c for px in PIXELS for c in px)
    assert img.digest == media.decode(encoded(picture(), "PNG"), "x").digest


def test_exif_rotation_is_applied() -> None:
    stored = picture().transpose(Pil.Transpose.ROTATE_90)  # what a camera held sideways writes
    exif = Pil.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 CW to display
    upright = media.decode(encoded(stored, "PNG", exif=exif), "x")
    assert upright.rgb == media.decode(encoded(picture(), "PNG"), "x").rgb


def test_transparency_is_flattened_onto_white_and_a_gif_gives_its_first_frame() -> None:
    rgba = Pil.new("RGBA", (2, 1))
    rgba.putdata([(10, 20, 30, 255), (10, 20, 30, 0)])
    assert media.decode(encoded(rgba, "PNG"), "x").rgb == bytes([10, 20, 30, 255, 255, 255])
    frames = [Pil.new("RGB", (2, 2), c) for c in ((200, 0, 0), (0, 0, 200))]
    gif = io.BytesIO()
    frames[0].save(gif, "GIF", save_all=True, append_images=frames[1:])
    assert media.decode(gif.getvalue(), "x").rgb[:3] == bytes([200, 0, 0])


def test_garbage_a_truncated_file_and_a_bomb_are_refused_naming_the_field() -> None:
    png = encoded(picture(), "PNG")
    for data in (b"not an image", png[: len(png) // 2], encoded(picture(), "TIFF")):
        with pytest.raises(RkError) as e:
            media.decode(data, "messages[0].images[1]")
        assert e.value.code == "bad_request" and e.value.param == "messages[0].images[1]"
    bomb = encoded(Pil.new("1", (8000, 6000)), "PNG")  # 48 MP of one bit: a few kB on the wire
    with pytest.raises(RkError) as e:
        media.decode(bomb, "images[0]")
    assert "8000x6000" in e.value.message and len(bomb) < 20_000


# ---- the wire --------------------------------------------------------------------------------------

def test_the_runner_gets_the_pixels_as_raw_bytes() -> None:
    img = media.decode(encoded(Pil.new("RGB", (64, 64), (9, 8, 7)), "PNG"), "x")
    cmd = wire.Generate(1, "m", GenSpec(messages=(Message("user", "what is it?", images=(img,)),)))
    frame = wire.encode(cmd)
    assert len(frame) < len(img.rgb) * 1.1  # base64 would be a third larger
    body = wire.read_frame_sync(io.BytesIO(frame))
    assert body is not None and wire.decode(body) == cmd


def test_corrupt_or_too_many_images_are_400s_on_each_api_and_nothing_is_queued(run: Callable[..., None]) -> None:
    good, bad = b64(encoded(picture(), "PNG")), b64(b"\x89PNG broken")

    async def body(c: TestClient, svc: Service, runner: FakeRunner) -> None:
        r = await c.post("/api/chat", json={"model": "chat:a", "messages": [
            {"role": "user", "content": "see", "images": [good, bad]}]})
        assert r.status == 400 and "messages[0].images[1]" in (await r.json())["error"]
        r = await c.post("/api/generate", json={"model": "chat:a", "prompt": "see", "images": [bad]})
        assert r.status == 400 and "images[0]" in (await r.json())["error"]
        parts = [{"type": "text", "text": "see"}, {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{bad}"}}]
        r = await c.post("/v1/chat/completions", json={"model": "chat:a", "messages": [{"role": "user", "content": parts}]})
        assert r.status == 400 and (await r.json())["error"]["param"] == "messages[0].content[1]"
        many = [{"role": "user", "content": "x", "images": [good] * 9}] * 2
        r = await c.post("/api/chat", json={"model": "chat:a", "messages": many})
        assert r.status == 400 and "at most 16" in (await r.json())["error"]
        r = await c.post("/api/chat", json={"model": "chat:a", "messages": [
            {"role": "user", "content": "x", "images": ["https://example.com/cat.png"]}]})
        assert r.status == 400 and "send the image itself" in (await r.json())["error"]
        assert [cmd for cmd, _ in runner.log if cmd == "generate"] == []
    run(body)


# ---- cache keys --------------------------------------------------------------------------------------

def test_a_token_cache_is_reused_only_beside_the_same_images() -> None:
    assert reusable_prefix([1, 2, 3], ("a",), [1, 2, 3, 4], ("a",)) == 3
    assert reusable_prefix([1, 2, 3], ("a",), [1, 2, 3, 4], ("b",)) == 0
    assert reusable_prefix([1, 2, 3], (), [1, 2, 3, 4], ("a",)) == 0
    states = PrefixStates(capacity=4)
    states.put([1, 2, 3], ("a",), b"A")
    states.put([1, 2, 3], ("b",), b"B")  # the same tokens beside another picture: a state of its own
    assert len(states) == 2
    found, n = states.best([1, 2, 3, 9], ("b",))
    assert found is not None and found.blob == b"B" and n == 3
    assert states.best([1, 2, 3, 9], ("c",)) == (None, 0)


@pytest.fixture
def two_pictures() -> Iterator[tuple[media.Image, media.Image]]:
    yield (media.decode(encoded(Pil.new("RGB", (4, 4), (1, 2, 3)), "PNG"), "x"),
           media.decode(encoded(Pil.new("RGB", (4, 4), (3, 2, 1)), "PNG"), "x"))


def say(m: RkllmModel, msgs: list[Message]) -> tuple[list[Message], int]:
    """Run one turn on the NPU double; the history with the reply, and the tokens served from the cache."""
    sink = Recorder()
    result = m.generate(GenSpec(messages=tuple(msgs)), sink, threading.Event())
    return [*msgs, Message("assistant", sink.text)], result.cached_tokens


def test_the_npu_conversation_cache_continues_only_beside_the_same_image(
        model: RkllmModel, two_pictures: tuple[media.Image, media.Image]) -> None:
    a, b = two_pictures
    history, cached = say(model, [Message("user", "#q1 what is this? [[ctx]]", images=(a,))])
    assert cached == 0
    follow_up = Message("user", "#q2 and now? [[ctx]]")
    _, again = say(model, [*history, follow_up])
    assert again > 0  # the same picture: the follow-up continues the cached conversation
    say(model, [Message("user", "#q1 what is this? [[ctx]]", images=(a,))])  # the cache holds turn 1 beside `a` again
    swapped = [Message(h.role, h.content, images=(b,) if h.images else ()) for h in history]
    _, other = say(model, [*swapped, follow_up])
    assert other == 0  # the same words beside another picture: that cache is not this conversation's
