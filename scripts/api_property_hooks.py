"""Schemathesis hooks for scripts/api-property-test.sh: signs generated requests as the
devices `center init` installed, so the property test reaches the handlers and the center
behind the signature check, not only the 401 in front of it.

A `/v1/` request whose generated authentication headers are well-formed (as the document
declares them) is signed for real: by the dispenser, the payment terminal or the settlement
terminal, whichever the operation is for, with a fresh sequence, over the exact bytes sent;
the device a body names (`dispenser_id`, `terminal_id`) becomes the signing device. A
request whose generated headers break the document is sent as generated, so malformed and
missing credentials stay under test too.

VALUECARD_API_TEST_DATA names the data directory of the center under test.
"""

import hashlib
import os
import re
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import requests
import schemathesis
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

CONTEXT = b"valuecard/http/v1"
DATA = Path(os.environ["VALUECARD_API_TEST_DATA"])

# The SAM image (`SoftwareSam::to_image`) opens with three TLV fields, each a one-byte tag
# and a one-byte length: the magic (0x8F), the device ID (0x80), the Ed25519 seed (0x81).
TAG_DEVICE_ID = 0x80
TAG_SIGNING_SEED = 0x81


def load_device(name):
    image = (DATA / "devices" / name / "sam.key").read_bytes()
    fields = {}
    offset = 0
    while len(fields) < 3 and offset + 2 <= len(image):
        tag, length = image[offset], image[offset + 1]
        fields[tag] = image[offset + 2 : offset + 2 + length]
        offset += 2 + length
    device_id = fields[TAG_DEVICE_ID]
    seed = fields[TAG_SIGNING_SEED]
    if len(device_id) != 8 or len(seed) != 32:
        raise ValueError(f"{name}: not a SAM image this hook reads")
    return device_id.hex(), Ed25519PrivateKey.from_private_bytes(seed)


DEVICES = {
    "dispenser": load_device("dispenser-1"),
    "payment": load_device("terminal-1"),
    "settlement": load_device("settlement-1"),
}


def device_for(path):
    if path.startswith(("/v1/cards", "/v1/loads")):
        return DEVICES["dispenser"]
    if path.startswith("/v1/transfers"):
        return DEVICES["settlement"]
    return DEVICES["payment"]


_sequence_lock = threading.Lock()
_last_sequence = 0


def next_sequence():
    """Above every sequence used so far, and at the clock in microseconds (the center's
    window), so it is fresh for whichever device signs."""
    global _last_sequence
    with _sequence_lock:
        _last_sequence = max(_last_sequence + 1, time.time_ns() // 1000)
        return _last_sequence


class DeviceSignature(requests.auth.AuthBase):
    """Signs the prepared request, so the signature covers the bytes that are sent."""

    def __init__(self, device_id, key):
        self.device_id = device_id
        self.key = key

    def __call__(self, request):
        body = request.body or b""
        if isinstance(body, str):
            body = body.encode("utf-8")
        sequence = next_sequence()
        path = urlsplit(request.url).path
        message = (
            CONTEXT
            + request.method.encode()
            + b"\0"
            + path.encode()
            + b"\0"
            + sequence.to_bytes(8, "big")
            + hashlib.sha256(body).digest()
        )
        request.headers["Valuecard-Device"] = self.device_id
        request.headers["Valuecard-Sequence"] = str(sequence)
        request.headers["Valuecard-Signature"] = self.key.sign(message).hex()
        return request


WELL_FORMED = {
    "valuecard-device": re.compile(r"[0-9a-fA-F]{16}"),
    "valuecard-sequence": re.compile(r"[0-9]{1,20}"),
    "valuecard-signature": re.compile(r"[0-9a-fA-F]{128}"),
}


def well_formed(headers):
    given = {str(name).lower(): value for name, value in (headers or {}).items()}
    return all(
        isinstance(given.get(name), str) and pattern.fullmatch(given[name])
        for name, pattern in WELL_FORMED.items()
    )


@schemathesis.hook
def before_call(context, case, kwargs):
    path = case.operation.path
    if not path.startswith("/v1/") or not well_formed(case.headers):
        return
    device_id, key = device_for(path)
    if isinstance(case.body, dict):
        for field in ("dispenser_id", "terminal_id"):
            if field in case.body:
                case.body[field] = device_id
    kwargs["auth"] = DeviceSignature(device_id, key)
