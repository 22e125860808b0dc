"""What the fuzz campaign sends: the `Probe` type, the method table, hostile strings, and the
seeded source that draws each next input (random bytes, random wire, mutated valid messages,
raw HTTP/2, and the typed hostile inputs of loadtest/fuzz_typed.py).

A probe says what an honest server must answer (`expect`, a set of gRPC status names, None for
"any ordinary answer") and which deeper check its answer gets (`check`, see fuzz_checks.py).
"""

from __future__ import annotations

import itertools
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from google.protobuf.message import DecodeError, Message
from google.protobuf.message_factory import GetMessageClass

from loadtest import fuzz_wire as wire
from loadtest import fuzz_world as w
from proto.passgate.v1 import gate_pb2, passes_pb2, quota_pb2

UNARY, CLIENT_STREAM, SERVER_STREAM, BIDI, RAW = (
    "unary",
    "client_stream",
    "server_stream",
    "bidi",
    "raw",
)
REFUSE = frozenset({"INVALID_ARGUMENT"})
REFUSE_OR_MISSING = frozenset({"INVALID_ARGUMENT", "NOT_FOUND"})
# Undecodable bytes on a stream may end the call, or be answered in-band and the call goes on.
UNDECODABLE_STREAM = frozenset({"INVALID_ARGUMENT", "OK"})


@dataclass(frozen=True)
class Method:
    path: str
    shape: str
    request: type[Message]
    response: type[Message]


def _methods() -> dict[str, Method]:
    out = {}
    for module, name in ((gate_pb2, "Gate"), (passes_pb2, "Passes"), (quota_pb2, "Quota")):
        service = module.DESCRIPTOR.services_by_name[name]
        for m in service.methods:
            shape = {(False, False): UNARY, (True, False): CLIENT_STREAM}.get(
                (m.client_streaming, m.server_streaming),
                BIDI if m.client_streaming else SERVER_STREAM,
            )
            path = f"/{service.full_name}/{m.name}"
            req, resp = GetMessageClass(m.input_type), GetMessageClass(m.output_type)
            out[path] = Method(path, shape, req, resp)
    return out


METHODS = _methods()


def path(service: str, method: str) -> str:
    return f"/passgate.v1.{service}/{method}"


@dataclass
class Probe:
    category: str
    method: str
    payloads: list[bytes]
    label: str
    expect: frozenset[str] | None = None
    check: str = ""
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def shape(self) -> str:
        if not self.method:
            return RAW
        m = METHODS.get(self.method)
        return m.shape if m is not None else UNARY

    @property
    def size(self) -> int:
        return sum(len(p) for p in self.payloads)


@dataclass
class Ctx:
    """State shared by the input builders of one campaign."""

    rng: random.Random
    token: str
    # Canary calls that have been answered: (request_id, venue, gate number, pass_id, card).
    completed: list[tuple[str, str, int, str, str]] = field(default_factory=list)
    huge_left: int = 20
    giant_left: int = 2
    seq: Any = field(default_factory=itertools.count)
    # time.monotonic() when the campaign started: samples say when they happened.
    t0: float = 0.0
    # The bearer token raw HTTP/2 inputs carry (so they reach the decoders, not just the auth
    # check), and whether the server speaks TLS (raw inputs then go inside a TLS session).
    bearer: str = ""
    tls: bool = True

    def elapsed(self) -> float:
        return round(time.monotonic() - self.t0, 1)

    def rid(self, prefix: str) -> str:
        return f"{prefix}-{self.token}-{next(self.seq)}"


def enum(number: int) -> Any:
    """Any number for an enum field: proto3 enums are open, whatever the stubs' types say."""
    return number


# -- hostile strings ----------------------------------------------------------------------------

EMOJI = "\U0001f600"
CONTROL = ("\x00", "\n", "\r", "\x1f", "\x7f", "\x1b", "\x08", "\t")


def hostile_id(rng: random.Random, base: str) -> tuple[str, str, bool]:
    """An id the contract refuses: (label, value, spoil). With spoil the value is a marker the
    caller must turn into bytes that are not UTF-8 after serializing (see fuzz_wire.spoil_utf8)."""
    roll = rng.random()
    if roll < 0.12:
        return "128 emoji (512 B)", EMOJI * 128, False
    if roll < 0.18:
        return "171 CJK chars (513 B)", "\u666f" * 171, False
    if roll < 0.26:
        return "600 B ASCII", (base + "a" * 600)[:600], False
    if roll < 0.33:
        return "empty", "", False
    if roll < 0.45:
        return "not UTF-8", wire.placeholder(rng), True
    c = rng.choice(CONTROL)
    at = rng.choice((0, len(base), rng.randint(0, len(base))))
    return f"control {c!r}", base[:at] + c + base[at:], False


# Odd but not necessarily invalid: sent only with unknown credentials or at fuzz venues.
ODD_STRINGS = (
    "\u573a\u9986-1",
    "e\u0301",
    "\u202eevil",
    "\u200b",
    " ",
    "  padded  ",
    "%s%n%x{0}",
    "../../etc/passwd",
    "'; DROP TABLE passes; --",
    "<script>alert(1)</script>",
    "\ufeffbom",
    EMOJI * 127,
    EMOJI * 64,
    "\u666f" * 128,
    "a" * 128,
    "a" * 129,
)


def finish(msg: Message, markers: list[str], rng: random.Random) -> bytes:
    """Serializes `msg` and spoils each marker's UTF-8."""
    data = msg.SerializeToString()
    for marker in markers:
        data = wire.spoil_utf8(data, marker, rng)
    return data


# -- the bytes-level sources --------------------------------------------------------------------


def classify(method: str, payloads: list[bytes]) -> tuple[bool, bool]:
    """(decodable, names_protected) of each payload parsed as the method's request type, exactly
    as the server's deserializer will."""
    m = METHODS[method]
    decodable = True
    for p in payloads:
        try:
            msg = m.request.FromString(p)
        except DecodeError:
            decodable = False
            continue
        if w.names_protected(msg):
            return decodable, True
    return decodable, False


def _bytes_probe(category: str, method: str, payloads: list[bytes], label: str) -> Probe | None:
    decodable, protected = classify(method, payloads)
    if protected:
        return None
    shape = METHODS[method].shape
    if decodable:
        expect = None
    else:
        expect = REFUSE if shape in (UNARY, SERVER_STREAM) else UNDECODABLE_STREAM
    return Probe(category, method, payloads, label, expect, info={"decodable": decodable})


def random_bytes_probe(ctx: Ctx) -> Probe | None:
    method = ctx.rng.choice(list(METHODS))
    n = 1 if METHODS[method].shape in (UNARY, SERVER_STREAM) else ctx.rng.randint(1, 3)
    payloads = [wire.random_bytes(ctx.rng) for _ in range(n)]
    return _bytes_probe("random_bytes", method, payloads, f"{n} x random bytes")


def random_wire_probe(ctx: Ctx) -> Probe | None:
    method = ctx.rng.choice(list(METHODS))
    n = 1 if METHODS[method].shape in (UNARY, SERVER_STREAM) else ctx.rng.randint(1, 3)
    payloads = [wire.random_wire(ctx.rng) for _ in range(n)]
    return _bytes_probe("random_wire", method, payloads, f"{n} x random protobuf fields")


def mutated_probe(ctx: Ctx, templates: Callable[[Ctx, str], list[bytes]]) -> Probe | None:
    method = ctx.rng.choice(list(METHODS))
    payloads = templates(ctx, method)
    k = ctx.rng.randrange(len(payloads))
    payloads[k], how = wire.mutate(ctx.rng, payloads[k])
    name = method.rsplit("/", 1)[1]
    return _bytes_probe("mutated", method, payloads, f"{name} item {k}: {how}")


def unknown_method_probe(ctx: Ctx) -> Probe:
    rng = ctx.rng
    name = rng.choice(
        (
            "/passgate.v1.Gate/Nope",
            "/passgate.v1.Gate/validate",
            "/passgate.v1.Gate/Validate/extra",
            "/passgate.v1.Nope/Validate",
            "/passgate.v2.Gate/Validate",
            "/grpc.health.v1.Health/Nope",
            "/passgate.v1.Gate/",
            "/" + "x" * rng.randint(1, 200),
        )
    )
    return Probe(
        "unknown_method", name, [wire.random_bytes(rng)], name[:60], frozenset({"UNIMPLEMENTED"})
    )
