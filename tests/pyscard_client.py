#!/usr/bin/python3
"""A PC/SC client of the valuecard purse, written from docs/card-commands.md alone.

It talks to the card through pcscd with pyscard (Debian: python3-pyscard) and prints one
JSON object on standard output:

    pyscard_client.py readers
        the PC/SC readers, in PC/SC order
    pyscard_client.py [--reader R] [--wait S] info
        SELECT the purse by its AID (section 1), READ PURSE (section 6.5), and the purse's
        card ID, balance (minor units), counter, state and abnormal-event count
    pyscard_client.py [--reader R] [--wait S] send APDU...
        send raw command APDUs (hex) within one connection, as they are, and print each
        response's data and status word

R is a reader index (0-based, PC/SC order) or part of a reader's name; without --reader the
first reader that holds a card is used. Exit status: 0 on success, 1 when the card refused a
command of `info` or the reader could not be reached, 2 for bad arguments, 3 when this Python
cannot import pyscard.

Which Python: Debian's python3-pyscard installs pyscard for /usr/bin/python3 only (hence the
first line of this file). Another interpreter (pyenv, conda, a python3 earlier on PATH) needs
pyscard of its own, best in a virtual environment:

    python3 -m venv ~/.venvs/pyscard && ~/.venvs/pyscard/bin/pip install pyscard
    ~/.venvs/pyscard/bin/python tests/pyscard_client.py readers
"""

import argparse
import json
import sys
import time

try:
    from smartcard.Exceptions import CardConnectionException, NoCardException
    from smartcard.System import readers as pcsc_readers
except ImportError as missing:
    print(
        f"pyscard_client: this Python ({sys.executable}) cannot import pyscard ({missing}); "
        "run it with /usr/bin/python3 on Debian (package python3-pyscard), or with a virtual "
        "environment's python after `pip install pyscard` (see the top of this file)",
        file=sys.stderr,
    )
    sys.exit(3)

# Section 1: "F0" + ASCII "VCPURSE".
PURSE_AID = bytes.fromhex("F056435055525345")
# Section 6.1: SELECT by DF name, P1-P2 = 04 00, Le = 00.
SELECT = bytes([0x00, 0xA4, 0x04, 0x00, len(PURSE_AID)]) + PURSE_AID + b"\x00"
# Section 6.5: READ PURSE with an extended Le (the short 80 30 00 00 00 works too).
READ_PURSE = bytes.fromhex("80300000000000")

# Section 2: life-cycle state codes.
STATES = {0x01: "Manufactured", 0x02: "KeysGenerated", 0x03: "Active", 0x7F: "Blocked"}
# Section 6.12: usage-record kinds.
KINDS = {0x01: "purchase", 0x02: "load"}


class ClientError(Exception):
    """A failure worth one line on standard error and exit status 1."""


def parse_tlv(data):
    """Splits BER-TLV data objects (section 3.3) into a list of (tag, value) pairs.

    Tags are one to three bytes (a first byte whose low five bits are all set announces
    more tag bytes, each with bit 8 set while another follows); lengths are one byte below
    80, or 81 xx, or 82 xx xx.
    """
    objects = []
    i = 0
    while i < len(data):
        start = i
        i += 1
        if data[start] & 0x1F == 0x1F:
            while True:
                if i >= len(data):
                    raise ClientError("truncated tag")
                i += 1
                if data[i - 1] & 0x80 == 0:
                    break
        tag = data[start:i].hex().upper()
        if i >= len(data):
            raise ClientError(f"tag {tag} without a length")
        first = data[i]
        i += 1
        if first < 0x80:
            length = first
        elif first in (0x81, 0x82):
            count = first - 0x80
            if i + count > len(data):
                raise ClientError(f"tag {tag}: truncated length")
            length = int.from_bytes(data[i : i + count], "big")
            i += count
        else:
            raise ClientError(f"tag {tag}: unsupported length byte {first:02X}")
        if i + length > len(data):
            raise ClientError(f"tag {tag}: {length} bytes announced, {len(data) - i} present")
        objects.append((tag, data[i : i + length]))
        i += length
    return objects


def tlv_dict(data):
    """The data objects as a dict; a repeated tag is an error (none repeats in a purse answer)."""
    result = {}
    for tag, value in parse_tlv(data):
        if tag in result:
            raise ClientError(f"tag {tag} appears twice")
        result[tag] = value
    return result


def fixed(objects, tag, size, what):
    value = objects.get(tag)
    if value is None:
        raise ClientError(f"{what} (tag {tag}) missing")
    if len(value) != size:
        raise ClientError(f"{what} (tag {tag}) is {len(value)} bytes, not {size}")
    return value


def pick_reader(selector, names):
    """The indexes of the readers `selector` names: an index, or part of a name."""
    if selector is None:
        return list(range(len(names)))
    if selector.isdigit() and int(selector) < len(names):
        return [int(selector)]
    return [i for i, name in enumerate(names) if selector.lower() in name.lower()]


def connect(selector, wait_seconds):
    """Connects to the card in the chosen reader, waiting up to `wait_seconds` for one."""
    deadline = time.monotonic() + wait_seconds
    last_error = "no card"
    while True:
        available = pcsc_readers()
        names = [str(reader) for reader in available]
        chosen = pick_reader(selector, names)
        if not chosen and names:
            raise ClientError(f"no reader matches {selector!r}; readers: {names}")
        for index in chosen:
            connection = available[index].createConnection()
            try:
                connection.connect()
                return connection, names[index]
            except (NoCardException, CardConnectionException) as error:
                last_error = f"{names[index]}: {error}"
        if time.monotonic() >= deadline:
            raise ClientError(f"no card within {wait_seconds} s ({last_error})")
        time.sleep(0.2)


def transmit(connection, apdu):
    """Sends one APDU; returns (data, status word as 4 hex digits)."""
    data, sw1, sw2 = connection.transmit(list(apdu))
    return bytes(data), f"{sw1:02X}{sw2:02X}"


def read_info(connection):
    """Section 6.1 then 6.5: the purse's identity and balance."""
    fci, sw = transmit(connection, SELECT)
    if sw not in ("9000", "6283"):
        raise ClientError(f"SELECT answered {sw}")
    outer = tlv_dict(fci)
    template = outer.get("6F")
    if template is None:
        raise ClientError("SELECT: no FCI template (tag 6F)")
    fci_objects = tlv_dict(template)
    if fci_objects.get("84") != PURSE_AID:
        raise ClientError("SELECT: the FCI names another DF")
    proprietary = tlv_dict(fci_objects.get("A5", b""))
    fci_card_id = proprietary.get("86")

    purse, sw = transmit(connection, READ_PURSE)
    if sw != "9000":
        raise ClientError(f"READ PURSE answered {sw}")
    objects = tlv_dict(purse)
    state = fixed(objects, "89", 1, "state")[0]
    card_id = fixed(objects, "86", 8, "card ID")
    balance = int.from_bytes(fixed(objects, "83", 8, "balance"), "big")
    counter = int.from_bytes(fixed(objects, "84", 4, "counter"), "big")
    events = fixed(objects, "8E", 1, "abnormal events")[0]
    if fci_card_id is not None and fci_card_id != card_id:
        raise ClientError("SELECT and READ PURSE name different cards")
    info = {
        "card": card_id.hex().upper(),
        "state": STATES.get(state, f"{state:02X}"),
        "balance": balance,
        "balance_text": f"{balance // 100}.{balance % 100:02d}",
        "counter": counter,
        "abnormal_events": events,
        "last_record": None,
    }
    record = objects.get("A2")
    if record is not None:
        fields = tlv_dict(record)
        info["last_record"] = {
            "kind": KINDS.get(fixed(fields, "8A", 1, "kind")[0], "unknown"),
            "counter": int.from_bytes(fixed(fields, "84", 4, "record counter"), "big"),
            "amount": int.from_bytes(fixed(fields, "82", 8, "amount"), "big"),
            "balance_after": int.from_bytes(fixed(fields, "83", 8, "balance after"), "big"),
            "party": fixed(fields, "87", 8, "writer").hex().upper(),
        }
    return info


def send_all(connection, apdus):
    exchanges = []
    for text in apdus:
        apdu = bytes.fromhex(text.replace(":", "").replace(" ", ""))
        entry = {"command": apdu.hex().upper()}
        try:
            data, sw = transmit(connection, apdu)
            entry["data"] = data.hex().upper()
            entry["sw"] = sw
        except CardConnectionException as error:
            # The PC/SC stack itself may refuse to send some byte strings.
            entry["error"] = str(error)
        exchanges.append(entry)
    return exchanges


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reader", help="reader index (0-based) or part of its name")
    parser.add_argument("--wait", type=float, default=10.0, help="seconds to wait for a card")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("readers", help="list the PC/SC readers")
    commands.add_parser("info", help="SELECT the purse and READ PURSE")
    send = commands.add_parser("send", help="send raw command APDUs (hex)")
    send.add_argument("apdus", nargs="+")
    args = parser.parse_args()

    try:
        if args.command == "readers":
            print(json.dumps({"readers": [str(reader) for reader in pcsc_readers()]}))
            return 0
        connection, name = connect(args.reader, args.wait)
        try:
            atr = bytes(connection.getATR()).hex().upper()
            if args.command == "info":
                result = read_info(connection)
            else:
                result = {"exchanges": send_all(connection, args.apdus)}
        finally:
            connection.disconnect()
        result["reader"] = name
        result["atr"] = atr
        print(json.dumps(result))
        return 0
    except ClientError as error:
        print(f"pyscard_client: {error}", file=sys.stderr)
        return 1
    except ValueError as error:
        print(f"pyscard_client: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
